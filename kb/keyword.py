"""Keyword side of retrieval: jieba tokens for Chinese, words for English, scored with BM25.

The BM25 weight of every (chunk, term) pair is computed once at commit time and stored as a sparse
matrix, so a query is one sparse column-slice and a sum: O(postings of the query terms).
Saved as plain .npy/.json files (no pickle).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
from scipy import sparse

_WORD = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*|[\u3400-\u9fff\uf900-\ufaff]+")
_jieba = None


def _cut(text: str, search: bool = True) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    return _jieba.lcut_for_search(text) if search else _jieba.lcut(text)


def tokenize(text: str, search: bool = True) -> list[str]:
    """Lower-cased English words/numbers and jieba search-mode words for CJK runs.

    Search mode also emits the short words inside long ones (中华人民共和国 → 中华, 华人, ...),
    which matches queries phrased with fewer or more characters than the document. Character
    bigrams (marked '#') are added for CJK runs because jieba's dictionary misses company jargon
    and splits words like 年假 into 年 / 假. `search=False`: jieba's precise mode and no bigrams, for
    reading a question's words (哪一天 stays whole instead of also yielding 一天).
    """
    out: list[str] = []
    for m in _WORD.finditer(text.lower()):
        piece = m.group(0)
        if piece[0].isascii():
            out.append(piece)
        else:
            out.extend(w for w in _cut(piece, search) if w.strip())
            if search:
                out.extend("#" + piece[i : i + 2] for i in range(len(piece) - 1))
    return out


class BM25Index:
    """Okapi BM25 over pre-tokenised chunks; rows are the store's integer chunk rows."""

    def __init__(self, weights: sparse.csc_matrix, vocab: dict[str, int], rows: np.ndarray):
        self.weights = weights  # (n_chunks, n_terms), BM25 weight of term t in chunk i
        self.vocab = vocab
        self.rows = rows  # (n_chunks,) store row id of matrix row i

    @classmethod
    def build(
        cls, rows: list[int], token_lists: list[list[str]], k1: float = 1.2, b: float = 0.75
    ) -> BM25Index:
        vocab: dict[str, int] = {}
        indptr, indices, tfs = [0], [], []
        for toks in token_lists:
            counts: dict[int, int] = {}
            for t in toks:
                tid = vocab.setdefault(t, len(vocab))
                counts[tid] = counts.get(tid, 0) + 1
            indices.extend(counts.keys())
            tfs.extend(counts.values())
            indptr.append(len(indices))
        n = len(token_lists)
        tf = sparse.csr_matrix(
            (np.asarray(tfs, np.float32), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
            shape=(n, max(len(vocab), 1)),
        )
        dl = np.asarray([len(t) for t in token_lists], np.float32)
        avgdl = float(dl.mean()) if n else 1.0
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float32)
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))  # BM25+ style, never negative
        # tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), row-wise length norm.
        norm = np.repeat(k1 * (1 - b + b * dl / max(avgdl, 1e-6)), np.diff(tf.indptr))
        data = tf.data * (k1 + 1) / (tf.data + norm) * idf[tf.indices]
        w = sparse.csr_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape)
        return cls(w.tocsc(), vocab, np.asarray(rows, np.int64))

    def idf(self, term: str) -> float:
        """BM25 idf of a term; a term the index has never seen gets the highest (df = 0)."""
        if not hasattr(self, "_df"):
            self._df = np.diff(self.weights.indptr)  # CSC: non-zeros per column = document frequency
        n = self.weights.shape[0]
        j = self.vocab.get(term)
        df = int(self._df[j]) if j is not None else 0
        return float(np.log(1.0 + (n - df + 0.5) / (df + 0.5)))

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (store row, score) with a positive score. `allowed`: a boolean mask over this index's
        rows (aligned with self.rows; kb.store.acl builds it); rows outside it are never returned, and
        k is filled from the allowed rows alone."""
        ids = sorted({self.vocab[t] for t in tokenize(query) if t in self.vocab})
        if not ids or self.weights.shape[0] == 0:
            return []
        scores = np.asarray(self.weights[:, ids].sum(axis=1)).ravel()
        if allowed is not None:
            if allowed.shape != scores.shape or allowed.dtype != np.bool_:
                raise ValueError(
                    f"allowed: expected a bool mask of shape {scores.shape}, got {allowed.shape}"
                )
            scores = np.where(allowed, scores, 0.0)  # a hidden row scores 0 and is dropped below
        k = min(k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.rows[i]), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        w = self.weights
        np.save(directory / "bm25_data.npy", w.data)
        np.save(directory / "bm25_indices.npy", w.indices)
        np.save(directory / "bm25_indptr.npy", w.indptr)
        np.save(directory / "bm25_rows.npy", self.rows)
        (directory / "bm25_vocab.json").write_text(
            json.dumps({"shape": list(w.shape), "vocab": self.vocab}, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        meta = json.loads((directory / "bm25_vocab.json").read_text(encoding="utf-8"))

        def arr(name: str) -> np.ndarray:
            return np.load(directory / name, allow_pickle=False)

        w = sparse.csc_matrix(
            (arr("bm25_data.npy"), arr("bm25_indices.npy"), arr("bm25_indptr.npy")),
            shape=tuple(meta["shape"]),
        )
        return cls(w, meta["vocab"], arr("bm25_rows.npy"))
