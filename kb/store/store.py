"""Store and Writer: the names the rest of kb uses. `Store.open(kb_dir)` and `Writer(kb_dir)` return
the backend the knowledge base's manifest names (kb.store.base.STORES); the FAISS + SQLite backend
lives in kb/store/faiss_store.py, the Milvus one in kb/store/milvus_store.py."""

from kb.store.base import STORES, FileRecord, Store, Writer

__all__ = ["STORES", "FileRecord", "Store", "Writer"]
