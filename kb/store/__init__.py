"""The knowledge base on disk: generations of (SQLite chunks + FAISS vectors + BM25), and a manifest
naming the live one. Writers build a new generation beside the live one and switch atomically, so a
crash at any point leaves the previous generation live and readable."""

from kb.store.store import FileRecord, Store, Writer

__all__ = ["FileRecord", "Store", "Writer"]
