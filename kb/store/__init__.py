"""The knowledge base's storage: generations of chunks + vectors + BM25, and a manifest naming the
live one. Writers build a new generation beside the live one and switch atomically, so a crash at
any point leaves the previous generation live and readable. Two backends (STORES): FAISS + SQLite
on local disk, and Milvus (Milvus Lite file or a cluster)."""

from kb.store.base import STORES, FileRecord, Store, Writer

__all__ = ["STORES", "FileRecord", "Store", "Writer"]
