"""Personal data out: e-mail addresses, public IP addresses (v4 and v6), card numbers, phone
numbers and US social security numbers become placeholders, counted per kind.

Each pattern is written for precision, since every false hit damages text that was fine:
- e-mail: the domain must end in a real top-level domain (`icon@2x.png` is a file name);
- IP addresses: only public ones (`ipaddress`'s `is_global`; for IPv6 also the documentation
  prefix 2001:db8::/32, which is how addresses appear in prose), never a dotted number with more
  than four parts (an OID) or one that follows "version"/"v"/"release" or a product's name
  ("Git 2.39.2", "Python 3.10.2.1"), a section word ("Section 7.1.1.1", "§ 4.2.1.3") or a word it is
  hyphenated to (`rfc7231#section-7.1.1.1`);
- cards: 13-19 digits in groups of four (or Amex's 4-6-5) with one separator throughout, passing
  the Luhn check, not inside a longer number or after a decimal point; only the digits are
  replaced, the text around them stays;
- phones: a phone's shape, not any digit run: "+" and a country code (+33 1 42 68 53 00,
  +49 30 901820), a North American 3-3-4 number, or a national number with its trunk 0
  (07700 900123, 020 7946 0958) — never year lists or a number grouped in thousands;
- SSN: ddd-dd-dddd with the area, group and serial numbers the SSA issues.
Source code gets the e-mail and IP rules only (the digit rules would rewrite numeric literals),
and a Python file whose redacted text would no longer parse keeps its original text.
"""

from __future__ import annotations

import ast
import ipaddress
import re
from collections import Counter

from lmforge.data.clean import Doc, Filter

# Generic top-level domains in common use, and every ISO 3166 country code in the root zone
GENERIC_TLDS = ("com org net edu gov mil int info biz name pro aero coop museum mobi asia tel travel jobs cat xxx "
                "io ai app dev page cloud online site tech store shop blog news media email web wiki xyz top club "
                "live link space website digital agency company solutions systems network services email group "
                "global world today studio design art academy center city life works zone tools support center")
COUNTRY_TLDS = ("ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt bw "
                "by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et "
                "eu fi fj fk fm fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie "
                "il im in iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly "
                "ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu "
                "nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sk sl sm "
                "sn so sr ss st su sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz va "
                "vc ve vg vi vn vu wf ws ye yt za zm zw")
TLDS = frozenset((GENERIC_TLDS + " " + COUNTRY_TLDS).split())

EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                   r"([A-Za-z]{2,24}))(?![\w-]|\.[A-Za-z0-9])")
IMAGE_DENSITY = re.compile(r"\d+(?:\.\d+)?x\.", re.I)  # icon@2x.jp: a retina image, not a mailbox
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
DOCUMENTATION_V6 = ipaddress.ip_network("2001:db8::/32")
# what makes a dotted number a version: a version word right before it, or a product's name
VERSION_WORD = re.compile(r"\b(?:version|ver|release|rel|revision|rev|build|update|patch|firmware|v)\.?:?\s*$", re.I)
# what makes a dotted number a section number: "section-7.1.1.1" (an RFC's anchor), "Section 7.1.1.1", "§ 4.2.1.3"
SECTION_WORD = re.compile(r"(?:§|\b(?:sections?|sect?|chapter|clause|paragraph|para|figure|fig|"
                          r"article|appendix)\.?)[\s:#\"'(-]*$", re.I)  # 'sections "8.2.4.44 Bogus...' (a quoted one)
HYPHENATED = re.compile(r"[A-Za-z]-$")  # "rfc-7.1.1.1", "sec-4.2.2.1": a word's numbered suffix, not an address
PRODUCT_NAME = re.compile(r"\b([A-Z][\w+-]*)\s$")  # "Git 2.39.2", "Python 3.10.2.1", "OpenSSL 1.1.1.4"
NETWORK_WORDS = frozenset("ip address server host from to at gateway dns proxy router client peer node via".split())
CARD = re.compile(r"(?<![\w.,-])(?<!\d[ -])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}|3[47]\d{2}([ -]?)\d{6}\2\d{5})(?!\w|[.,-]\d)")
SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
PHONE = re.compile(r"""(?<![\w+.,-])(?<!\d[ .-])(?:  # never the tail of a digit group: "9 060 487 536"
      \+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}[ .-]?\d{2,4}    # +33 1 42 68 53 00, +49 30 901820, +1 415-555-0123
    | \(\d{3}\)[ .-]?\d{3}[ .-]\d{4}                       # (415) 555-0123
    | \d{3}([ .-])\d{3}\1\d{4}                             # 415-555-0123, 415.555.0123
    | 0\d{2,4}[ -]\d{3,4}(?:[ -]?\d{3,4})?                 # 07700 900123, 020 7946 0958 (trunk prefix 0)
    )(?!\w|[.,-]\d)""", re.X)

PLACEHOLDERS = {"email": "<EMAIL>", "ip_address": "<IP_ADDRESS>", "ssn": "<SSN>", "credit_card": "<CREDIT_CARD>",
                "phone": "<PHONE>"}
CODE_KINDS = ("email", "ip_address")  # the rules that cannot turn a numeric literal into a placeholder


def _digits(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return 13 <= len(digits) <= 19 and total % 10 == 0


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_global or (ip.version == 6 and ip in DOCUMENTATION_V6)


def _is_numbering(text: str, start: int) -> bool:
    """A version or section number, by what precedes it: a version word, a product's name, a
    section word, or a word it is hyphenated to."""
    window = text[max(0, start - 30):start]
    if VERSION_WORD.search(window) or SECTION_WORD.search(window) or HYPHENATED.search(window):
        return True
    product = PRODUCT_NAME.search(window)
    return product is not None and product.group(1).lower() not in NETWORK_WORDS


def _email(m: re.Match, text: str) -> bool:
    return m.group(2).lower() in TLDS and not IMAGE_DENSITY.match(m.group(1))


def _ipv4(m: re.Match, text: str) -> bool:
    return _public(m.group()) and not _is_numbering(text, m.start())


def _ipv6(m: re.Match, text: str) -> bool:
    s = m.group()
    groups = s.split(":")
    # an address has digits and either three colons or a full group: `a::b` in C++ has neither
    looks_like = any(c.isdigit() for c in s) and (s.count(":") >= 3 or max(map(len, groups)) == 4)
    return looks_like and _public(s)


def _card(m: re.Match, text: str) -> bool:
    return luhn_ok(m.group())


def _phone(m: re.Match, text: str) -> bool:
    return 8 <= _digits(m.group()) <= 15


def _scan(*patterns: str):
    """True where every pattern is found. A pattern that starts with a literal character is searched
    for at memchr speed, one that starts with \\d tests every position: a literal part of the
    pattern, searched first, rules most texts out before the full scan runs."""
    searches = [re.compile(p).search for p in patterns]
    return lambda text: all(search(text) for search in searches)


RULES = (  # kind, pattern, check, cheap scan that rules the pattern out (at C speed), fewest ASCII digits
    ("email", EMAIL, _email, _scan(r"@[A-Za-z0-9-]+\."), 0),
    ("ip_address", IPV6, _ipv6, _scan(r":[0-9A-Fa-f]{0,4}:"), 0),
    ("ip_address", IPV4, _ipv4, _scan(r"\.\d+\.\d", r"\d\.\d+\.\d"), 4),
    ("ssn", SSN, lambda m, t: True, _scan(r"-\d\d-\d", r"\d-\d\d-\d"), 9),
    ("credit_card", CARD, _card, _scan(r"\d{4}[ -]?\d{4}"), 13),
    ("phone", PHONE, _phone, _scan(r"\d[\d ().+-]{6,}\d"), 8),
)
OTHER_DIGIT = re.compile(r"[^\D0-9]")  # a Unicode digit outside 0-9


class RedactPII(Filter):
    """Placeholders for the kinds above; `counts` per kind, each document's edits by rule."""

    name = "pii"
    kinds = ("prose", "web", "code")

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __call__(self, doc: Doc) -> str | None:
        text, found = redact(doc.text, doc.kind)
        if not found:
            return None
        if doc.kind == "code" and doc.source.endswith(".py") and not _still_parses(doc.text, text):
            self.counts["kept_to_keep_code_parsing"] += 1
            return None
        self.counts.update(found)
        doc.set_text(text)
        doc.edits += [{"rule": f"pii:{kind}", "count": n} for kind, n in sorted(found.items())]
        return None


def redact(text: str, kind: str = "prose") -> tuple[str, Counter]:
    """`text` with the placeholders in, and how many of each kind were replaced. `kind` is the
    document's (clean.kind_of): code gets the e-mail and IP rules only."""
    # counting ASCII digits is ten memchr-speed scans; a pattern needing more digits cannot match
    # (unless the text holds other Unicode digits, which the patterns' \d also matches)
    digits = sum(map(text.count, "0123456789"))
    if not text.isascii() and OTHER_DIGIT.search(text):
        digits = None
    found: Counter = Counter()
    for rule, pattern, check, scan, min_digits in RULES:
        if kind == "code" and rule not in CODE_KINDS:
            continue
        if (digits is not None and digits < min_digits) or not scan(text):
            continue
        def sub(m: re.Match, rule=rule, check=check, source=text) -> str:
            if not check(m, source):
                return m.group()
            found[rule] += 1
            return PLACEHOLDERS[rule]
        text = pattern.sub(sub, text)
    return text, found


def redacted(text: str) -> str:
    """Text shown outside the cleaned corpus (a report, a summary, a log) with every rule applied:
    a rejected document is stored as it was read, and must not carry its personal data further."""
    return redact(text)[0]


def _still_parses(before: str, after: str) -> bool:
    """False only when the redaction broke a file that parsed (a file that never parsed stays as it is)."""
    try:
        ast.parse(after)
        return True
    except (SyntaxError, ValueError):
        pass
    try:
        ast.parse(before)
        return False
    except (SyntaxError, ValueError):
        return True
