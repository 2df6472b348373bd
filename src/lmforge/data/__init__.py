"""Data stages: reading sources into documents (sources.py), cleaning them (clean.py: repairs and
filters; classifiers.py: language identification and offensive text, in batches; pii.py: redaction),
deduplication (dedup.py) and the sharded, resumable `prepare` stage that runs them all (prepare.py).

This file imports nothing, so the config can check filter names without loading any of them.
"""

# The filter registry: every filter `prepare` knows, in the order the stack runs them. Language
# identification comes first (the word rules after it read the language it found); the cheap
# whole-document verdicts come before the line rules that edit. clean.py registers one class under
# each name (its import fails on a class with another name, or a name with no class); the config's
# validation and its default `prepare.filters` read this list.
FILTERS = ("language", "blocklist", "offensive", "gopher_quality", "gopher_repetition", "c4", "fineweb", "code")
