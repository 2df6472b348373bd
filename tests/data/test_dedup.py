import random
import tracemalloc

import numpy as np

from conftest import make_prose
from lmforge.config import PrepareConfig
from lmforge.data.dedup import MinHasher, band, exact_key, jaccard, shingle_hashes


def edit_words(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(w if rng.random() > rate else "zzz" + str(rng.randint(0, 9999)) for w in text.split())


def test_default_bands_find_80_percent_similar_pairs_and_not_dissimilar_ones():
    """prepare's bands (14 x 8) on real signatures: pairs at Jaccard >= 0.8 share a bucket (the theory,
    1 - (1 - J^8)^14, says 92% at 0.8), pairs at <= 0.4 do not."""
    cfg = PrepareConfig()
    hasher = MinHasher(cfg.minhash_bands * cfg.minhash_rows, seed=cfg.seed)
    near, far = [], []
    for seed in range(100):
        a = make_prose(seed, 6)
        for rate in (0.02, 0.15):
            ha, hb = (shingle_hashes(t, cfg.ngram_words) for t in (a, edit_words(a, rate, seed)))
            sig_a, sig_b = (hasher.signature(h) for h in (ha, hb))
            shared = any(np.array_equal(band(sig_a, i, cfg.minhash_rows), band(sig_b, i, cfg.minhash_rows))
                         for i in range(cfg.minhash_bands))
            similarity = jaccard(ha, hb)
            if similarity >= 0.8 or similarity <= 0.4:
                (near if similarity >= 0.8 else far).append(shared)
    assert len(near) > 50 and len(far) > 50
    assert np.mean(near) >= 0.9 and np.mean(far) <= 0.01


def test_minhash_estimates_jaccard():
    hasher = MinHasher(112, seed=1)
    errors = []
    for seed in range(20):
        a = make_prose(seed, 6)
        b = edit_words(a, 0.02 * (seed % 8), seed)
        ha, hb = shingle_hashes(a, 5), shingle_hashes(b, 5)
        estimate = float((hasher.signature(ha) == hasher.signature(hb)).mean())
        errors.append(abs(estimate - jaccard(ha, hb)))
    assert np.mean(errors) < 0.06


def test_exact_key_ignores_case_and_spacing_only():
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello, world")


def test_short_documents_have_no_shingles_not_a_shared_empty_signature():
    assert len(shingle_hashes("only four words here", 5)) == 0
    assert MinHasher(16).signature(shingle_hashes("tiny", 5)) is None


def test_signature_in_chunks_is_the_whole_documents_signature_in_bounded_memory():
    """A real long document (every pydoc topic, ~50,000 distinct shingles, several chunks): its
    signature equals the minimum over all shingles computed one permutation at a time, and hashing
    it holds one chunk's shingles x permutations table at a time, never the whole (~45 MB here,
    ~1 GB for a book)."""
    from pydoc_data.topics import topics

    from lmforge.data import dedup

    text = "\n".join(topics[name] for name in sorted(topics))
    shingles = shingle_hashes(text, 5)
    hasher = MinHasher(112, seed=1)
    assert len(shingles) > 3 * dedup.SIGNATURE_CHUNK
    with np.errstate(over="ignore"):
        whole = np.array([((shingles * a + b) >> np.uint64(32)).min() for a, b in zip(hasher.a, hasher.b)],
                         dtype=np.uint32)
    tracemalloc.start()
    try:
        signature = hasher.signature(shingles)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert signature.tobytes() == whole.tobytes()
    chunk_table = dedup.SIGNATURE_CHUNK * len(hasher.a) * 8
    assert peak < 1.25 * chunk_table, f"signature peaked at {peak:,} bytes; one chunk's table is {chunk_table:,}"
