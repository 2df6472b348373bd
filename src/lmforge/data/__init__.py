"""Data stages: reading sources into documents (and, later, cleaning and deduplication)."""

from lmforge.data.sources import Document, SourceStats, iter_documents

__all__ = ["Document", "SourceStats", "iter_documents"]
