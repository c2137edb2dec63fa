"""Keyword side of retrieval: jieba tokens for Chinese, words for English, scored with BM25.

The index keeps term counts, not BM25 weights: a (chunks × terms) sparse matrix stored by column
(CSC, float32 counts, int32 row positions) plus each chunk's length. A query reads only the columns
of its terms and applies Okapi BM25 to those postings, so search costs O(postings of the query
terms). Because nothing global (N, avgdl, df) is baked into the stored numbers, a new generation is
the previous matrix minus the rows of deleted chunks plus rows for new ones: re-ingesting one file
counts only that file's tokens (`updated`). Saved as plain .npy/.json files (no pickle).
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
    """Okapi BM25 over pre-tokenised chunks; matrix row i is the store's chunk row `rows[i]`."""

    FILES = ("bm25_tf_data.npy", "bm25_tf_indices.npy", "bm25_tf_indptr.npy", "bm25_dl.npy", "bm25_rows.npy")

    def __init__(
        self,
        tf: sparse.csc_matrix,
        dl: np.ndarray,
        vocab: dict[str, int],
        rows: np.ndarray,
        k1: float = 1.2,
        b: float = 0.75,
    ):
        self.tf = tf  # (n_chunks, n_terms) term counts, CSC so that a term's postings are contiguous
        self.dl = np.asarray(dl, np.float32)  # (n_chunks,) tokens per chunk
        self.vocab = vocab
        self.rows = np.asarray(rows, np.int64)  # (n_chunks,) store row id of matrix row i
        self.k1, self.b = k1, b
        n = tf.shape[0]
        self._df = np.diff(tf.indptr)  # non-zeros per column = document frequency
        # idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)), BM25+ style, never negative
        self._idf = np.log(1.0 + (n - self._df + 0.5) / (self._df + 0.5)).astype(np.float32)
        avgdl = float(self.dl.mean()) if n else 1.0
        # the length part of the BM25 denominator, per chunk: k1 * (1 - b + b * dl / avgdl)
        self._norm = (k1 * (1 - b + b * self.dl / max(avgdl, 1e-6))).astype(np.float32)

    @staticmethod
    def _count(token_lists: list[list[str]], vocab: dict[str, int], n_cols: int = 0) -> sparse.csr_matrix:
        """Rows of term counts; new terms are added to `vocab`. One dict lookup per token, the
        counting itself in scipy (duplicate (row, term) pairs are summed)."""
        lengths = np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))
        ids = np.fromiter(
            (vocab.setdefault(t, len(vocab)) for toks in token_lists for t in toks),
            np.int32,
            int(lengths.sum()),
        )
        row_of = np.repeat(np.arange(len(token_lists), dtype=np.int32), lengths)
        m = sparse.csr_matrix(
            (np.ones(ids.size, np.float32), (row_of, ids)),
            shape=(len(token_lists), max(len(vocab), n_cols, 1)),
        )
        m.sum_duplicates()
        return m

    @classmethod
    def build(
        cls, rows: list[int], token_lists: list[list[str]], k1: float = 1.2, b: float = 0.75
    ) -> BM25Index:
        vocab: dict[str, int] = {}
        tf = cls._count(token_lists, vocab)
        dl = np.fromiter((len(t) for t in token_lists), np.float32, len(token_lists))
        return cls(tf.tocsc(), dl, vocab, np.asarray(rows, np.int64), k1, b)

    def updated(self, removed_rows: np.ndarray, rows: list[int], token_lists: list[list[str]]) -> BM25Index:
        """A new index: this one without `removed_rows`, plus `rows` (all greater than the rows kept,
        as the store's autoincrement rows are) with their tokens. Only the new tokens are counted."""
        keep = ~np.isin(self.rows, np.asarray(removed_rows, np.int64))
        vocab = dict(self.vocab)
        new = self._count(token_lists, vocab)
        old = self.tf.tocsr()[keep]
        width = max(len(vocab), 1)
        old.resize((old.shape[0], width))
        new.resize((new.shape[0], width))
        tf = sparse.vstack([old, new], format="csr").tocsc()
        dl = np.concatenate([self.dl[keep], np.fromiter((len(t) for t in token_lists), np.float32)])
        all_rows = np.concatenate([self.rows[keep], np.asarray(rows, np.int64)])
        return BM25Index(tf, dl, vocab, all_rows, self.k1, self.b)

    def __len__(self) -> int:
        return int(self.tf.shape[0])

    def idf(self, term: str) -> float:
        """BM25 idf of a term; a term the index has never seen gets the highest (df = 0)."""
        n = self.tf.shape[0]
        j = self.vocab.get(term)
        df = int(self._df[j]) if j is not None else 0
        return float(np.log(1.0 + (n - df + 0.5) / (df + 0.5)))

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (store row, score) with a positive score. `allowed`: a boolean mask over this index's
        rows (aligned with self.rows; kb.store.acl builds it); rows outside it are never returned, and
        k is filled from the allowed rows alone."""
        ids = sorted({self.vocab[t] for t in tokenize(query) if t in self.vocab})
        if not ids or self.tf.shape[0] == 0:
            return []
        tf, k1 = self.tf, self.k1
        hit_rows, contrib = [], []
        for j in ids:  # each query term once, as in the sum over distinct query terms
            lo, hi = tf.indptr[j], tf.indptr[j + 1]
            r, f = tf.indices[lo:hi], tf.data[lo:hi]
            hit_rows.append(r)
            # tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)) * idf
            contrib.append(f * (k1 + 1) / (f + self._norm[r]) * self._idf[j])
        r_all = np.concatenate(hit_rows)
        scores = np.bincount(r_all, weights=np.concatenate(contrib), minlength=self.tf.shape[0])  # (rows,)
        if allowed is not None:
            if allowed.shape != scores.shape or allowed.dtype != np.bool_:
                raise ValueError(
                    f"allowed: expected a bool mask of shape {scores.shape}, got {allowed.shape}"
                )
            scores = np.where(allowed, scores, 0.0)  # a hidden row scores 0: never a candidate
        cand = np.flatnonzero(scores)
        k = min(k, cand.size)
        if k == 0:
            return []
        top = cand[np.argpartition(-scores[cand], k - 1)[:k]]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.rows[i]), float(scores[i])) for i in top]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tf = self.tf
        np.save(directory / "bm25_tf_data.npy", tf.data.astype(np.float32))
        np.save(directory / "bm25_tf_indices.npy", tf.indices.astype(np.int32))
        np.save(directory / "bm25_tf_indptr.npy", tf.indptr.astype(np.int64))
        np.save(directory / "bm25_dl.npy", self.dl)
        np.save(directory / "bm25_rows.npy", self.rows)
        meta = {"shape": list(tf.shape), "k1": self.k1, "b": self.b, "vocab": self.vocab}
        (directory / "bm25_vocab.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def exists(cls, directory: Path) -> bool:
        """True when `directory` holds an index in this format (generations written before counts
        were stored hold BM25 weights only; their keyword index is rebuilt from the stored tokens)."""
        return all((directory / f).exists() for f in (*cls.FILES, "bm25_vocab.json"))

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        meta = json.loads((directory / "bm25_vocab.json").read_text(encoding="utf-8"))

        def arr(name: str) -> np.ndarray:
            return np.load(directory / name, allow_pickle=False)

        tf = sparse.csc_matrix(
            (arr("bm25_tf_data.npy"), arr("bm25_tf_indices.npy"), arr("bm25_tf_indptr.npy")),
            shape=tuple(meta["shape"]),
        )
        return cls(tf, arr("bm25_dl.npy"), meta["vocab"], arr("bm25_rows.npy"), meta["k1"], meta["b"])
