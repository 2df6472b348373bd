"""Data stages: reading sources into documents (sources.py), cleaning them (clean.py: repairs and
filters; pii.py: redaction), deduplication (dedup.py) and the sharded, resumable `prepare` stage
that runs them all (prepare.py)."""

from lmforge.data.sources import Document, SourceStats, iter_documents

__all__ = ["Document", "SourceStats", "iter_documents"]
