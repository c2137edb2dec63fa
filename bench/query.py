"""Query latency, recall and memory of `kb search` on synthetic knowledge bases of 10k, 100k and 1M chunks.

    .venv/bin/python bench/query.py                          # 10k, 100k, 1M (~15 min on 2 cores)
    .venv/bin/python bench/query.py --sizes 10000 --queries 50 --set index.type=hnsw
    .venv/bin/python bench/query.py --sizes 100000 --types ivf,hnsw   # vector index types side by side

SYNTHETIC DATA (latency and memory, not retrieval quality):
- vectors: 384-d unit vectors with the low intrinsic dimension of real sentence embeddings: a mixture
  of 1,000 Gaussian topics in a 48-d latent space, projected to 384-d, plus isotropic noise. Recall
  queries are chunks' latent points moved a little (a paraphrase), projected the same way.
- text: each chunk is 100–300 words drawn Zipf-like from the 100k most frequent words of jieba's
  dictionary; a query is 4 words of one chunk, tokenized by the real `tokenize` (jieba).

What runs the real code: the vector index is built by kb.store.faiss_index.build (what Writer.commit
calls, with the config's `index.*`), the keyword index is a kb.keyword.BM25Index, both saved in a
generation directory beside a chunks.sqlite with the same schema, then opened by `Store.open` and
searched by `Retriever.search` with the real e5-small query embedder: end to end = query embedding +
dense + keyword + RRF fusion + reading the hits from SQLite. What is shortcut: the synthetic token ids
go straight into the count matrix (BM25Index._count, the per-token dict lookup of a real commit, is
timed separately on 20k chunks), and rows are inserted into SQLite directly, not through Writer.put_file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM, LATENT, TOPICS, VOCAB = 384, 48, 1000, 100_000


def percentile(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else 0.0


class Synth:
    """Deterministic generator of vectors and token ids for chunk i (blocks, so 1M fits in memory)."""

    def __init__(self, seed: int = 0, spread: float = 0.6):
        self.spread = spread  # within-topic spread in latent units (topic centres ~ N(0, 1))
        rng = np.random.default_rng(seed)
        self.topics = rng.normal(size=(TOPICS, LATENT)).astype(np.float32)
        q, _ = np.linalg.qr(rng.normal(size=(DIM, LATENT)))
        self.proj = q.T.astype(np.float32)  # (LATENT, DIM), orthonormal rows
        ranks = np.arange(VOCAB, dtype=np.float64)
        p = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot word frequencies
        self.cdf = np.cumsum(p / p.sum())

    def latent(self, start: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(1_000_003 + start)
        t = rng.integers(0, TOPICS, n)
        return self.topics[t] + self.spread * rng.normal(size=(n, LATENT)).astype(np.float32)

    def embed(self, z: np.ndarray, seed: int) -> np.ndarray:
        x = z @ self.proj + 0.02 * np.random.default_rng(seed).normal(size=(len(z), DIM)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def tokens(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(lengths (n,), word ids (sum lengths,)) for chunks start..start+n."""
        rng = np.random.default_rng(2_000_003 + start)
        lengths = rng.integers(100, 301, n)
        ids = np.searchsorted(self.cdf, rng.random(int(lengths.sum()))).astype(np.int32)
        return lengths, np.minimum(ids, VOCAB - 1)


def words() -> list[str]:
    import jieba

    lines = (Path(jieba.__file__).parent / "dict.txt").read_text(encoding="utf-8").splitlines()
    entries = sorted((ln.split() for ln in lines), key=lambda e: -int(e[1]))
    seen, out = set(), []
    for w, *_ in entries:
        if len(w) > 1 and w not in seen:  # multi-character words jieba keeps whole
            seen.add(w)
            out.append(w)
        if len(out) == VOCAB:
            break
    return out


def build_generation(n: int, synth: Synth, vocab: list[str], gen_dir: Path, cfg) -> dict:
    import faiss
    from scipy import sparse

    from kb.keyword import BM25Index
    from kb.store import faiss_index
    from kb.store.store import SCHEMA

    block = 100_000
    t0 = time.perf_counter()
    vecs = np.vstack([synth.embed(synth.latent(s, min(block, n - s)), s) for s in range(0, n, block)])
    rows = np.arange(1, n + 1, dtype=np.int64)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    index, info = faiss_index.build(vecs, rows, cfg.index)
    t_index = time.perf_counter() - t0
    faiss.write_index(index, str(gen_dir / "index.faiss"))
    del index

    db = sqlite3.connect(gen_dir / "chunks.sqlite")
    db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)  # a scratch file
    blocks, dls, t_kw = [], [], 0.0
    for s in range(0, n, block):
        m = min(block, n - s)
        lengths, ids = synth.tokens(s, m)
        t1 = time.perf_counter()
        r = np.repeat(np.arange(m, dtype=np.int32), lengths)
        tf = sparse.csr_matrix((np.ones(ids.size, np.float32), (r, ids)), shape=(m, VOCAB))
        tf.sum_duplicates()
        blocks.append(tf)
        dls.append(lengths.astype(np.float32))
        t_kw += time.perf_counter() - t1
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        db.executemany(
            'INSERT INTO chunks (row, id, source, page, headings, start, "end", hash, text, tokens, vector) '
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    s + i + 1,
                    f"c{s + i}",
                    f"synthetic/{(s + i) // 50}.txt",
                    None,
                    "[]",
                    0,
                    0,
                    "",
                    "".join(vocab[w] for w in ids[bounds[i] : bounds[i] + 40]),
                    "",
                    vecs[s + i].tobytes(),
                )
                for i in range(m)
            ),
        )
    db.commit()
    db.close()
    t1 = time.perf_counter()
    keyword = BM25Index(
        sparse.vstack(blocks, format="csr").tocsc(),
        np.concatenate(dls),
        {w: i for i, w in enumerate(vocab)},
        rows,
    )
    t_kw += time.perf_counter() - t1
    keyword.save(gen_dir)
    kw_bytes = sum(
        a.nbytes for a in (keyword.tf.data, keyword.tf.indices, keyword.tf.indptr, keyword.dl, keyword.rows)
    )
    nnz = int(keyword.tf.nnz)
    del keyword, blocks
    return {
        "vectors": vecs,
        "info": info,
        "generate_s": round(t_gen, 1),
        "index_build_s": round(t_index, 1),
        "keyword_build_s": round(t_kw, 1),
        "index_file_mb": round((gen_dir / "index.faiss").stat().st_size / 2**20, 1),
        "keyword_arrays_mb": round(kw_bytes / 2**20, 1),
        "postings_per_chunk": round(nnz / n, 1),
    }


def count_rate(vocab: list[str], synth: Synth) -> float:
    """Tokens per second of the real commit's counting step (BM25Index._count) on 20k chunks."""
    from kb.keyword import BM25Index

    lengths, ids = synth.tokens(0, 20_000)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    toks = [[vocab[w] for w in ids[bounds[i] : bounds[i + 1]]] for i in range(len(lengths))]
    t0 = time.perf_counter()
    BM25Index._count(toks, {})
    return float(ids.size / (time.perf_counter() - t0))


def store_rss(kb_dir: Path) -> int:
    """Resident memory Store.open adds, measured in a fresh process (this one has freed build memory
    that a later allocation could reuse unseen)."""
    code = (
        "import sys, psutil, faiss; from kb.store import Store; p = psutil.Process(); a = p.memory_info().rss; "
        "s = Store.open(sys.argv[1]); print(p.memory_info().rss - a)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(kb_dir)], capture_output=True, text=True, env=env, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def run_size(n: int, args, cfg, synth: Synth, vocab: list[str], embedder, tmp: Path) -> dict:
    import faiss

    from kb.retrieve import Retriever
    from kb.store import Store, faiss_index
    from kb.store.manifest import write_manifest

    kb_dir = tmp / f"kb{n}"
    gen_dir = kb_dir / "generations" / "1"
    gen_dir.mkdir(parents=True)
    built = build_generation(n, synth, vocab, gen_dir, cfg)
    vecs, info = built.pop("vectors"), built.pop("info")
    write_manifest(
        kb_dir,
        {"live": 1, "embedder": {"name": embedder.name, "dim": DIM}, "index": info, "stats": {"chunks": n}},
    )
    rss_store = store_rss(kb_dir)
    t0 = time.perf_counter()
    store = Store.open(kb_dir)
    load_s = time.perf_counter() - t0

    rng = np.random.default_rng(7)
    picks = rng.integers(0, n, args.queries)
    lat = np.zeros((len(picks), LATENT), np.float32)  # each query: its chunk's latent point, moved a little
    for start in sorted({int(p) // 100_000 * 100_000 for p in picks}):
        block = synth.latent(start, min(100_000, n - start))
        for j, p in enumerate(picks):
            if start <= p < start + 100_000:
                lat[j] = block[p - start]
    qvecs = synth.embed(lat + 0.15 * rng.normal(size=lat.shape).astype(np.float32), seed=99)
    truth = faiss_index.exact_neighbours(vecs, qvecs, 10) + 1  # positions → rows (1-based)

    index = store._snap.index  # the live generation's FAISS index, as Store.search_vectors reads it

    def timed_vector(params, k: int) -> tuple[list[float], np.ndarray]:
        ms, found = [], []
        for q in qvecs:
            t = time.perf_counter()
            _, ids = index.search(q.reshape(1, -1), k, params=params)
            ms.append(1000 * (time.perf_counter() - t))
            found.append(ids[0][:10])
        return ms, np.vstack(found)

    sweep = []
    knob = {"ivf": ("nprobe", [16, 32, 48, 64]), "hnsw": ("ef_search", [32, 64, 96, 128])}.get(info["type"])
    for value in knob[1] if knob else [None]:
        i2 = {**info, knob[0]: value} if knob else info
        ms, found = timed_vector(faiss_index.search_params(i2), cfg.retrieval.dense_k)
        sweep.append(
            {
                (knob[0] if knob else "setting"): value if knob else "exact",
                "vector_p50_ms": round(percentile(ms, 50), 2),
                "vector_p95_ms": round(percentile(ms, 95), 2),
                "recall@10": round(faiss_index.recall_at_k(found, truth), 4),
            }
        )
    ms_vec, found = timed_vector(faiss_index.search_params(store.manifest["index"]), cfg.retrieval.dense_k)
    recall = faiss_index.recall_at_k(found, truth)

    flat_ms = []
    if info["type"] != "flat":  # the exact search auto would use below flat_max, at this size
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vecs)
        for q in qvecs[: args.flat_queries]:
            t = time.perf_counter()
            flat.search(q.reshape(1, -1), cfg.retrieval.dense_k)
            flat_ms.append(1000 * (time.perf_counter() - t))
        del flat

    retriever = Retriever(store, embedder, cfg.retrieval)
    texts = []
    for p in picks:
        lengths, ids = synth.tokens(int(p), 1)
        texts.append("".join(vocab[w] for w in rng.choice(ids, 4, replace=False)))
    retriever.search(texts[0])  # warm-up: jieba's dictionary, first torch call
    ms_e2e, ms_kw, ms_embed = [], [], []
    for text in texts:
        t = time.perf_counter()
        retriever.search(text)
        ms_e2e.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        store.keyword.search(text, cfg.retrieval.keyword_k)
        ms_kw.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        embedder.embed_batch([text], query=True)
        ms_embed.append(1000 * (time.perf_counter() - t))
    per_m = 1e6 / n
    return {
        "bench": "query",
        "chunks": n,
        "synthetic": True,
        "index": info,
        **built,
        "store_open_s": round(load_s, 2),
        "rss_after_open_mb": round(rss_store / 2**20, 1),
        "memory_per_million_chunks_mb": {
            "vector_index": round(built["index_file_mb"] * per_m, 0),
            "keyword_index": round(built["keyword_arrays_mb"] * per_m, 0),
            "process_rss_after_open": round(rss_store / 2**20 * per_m, 0),
        },
        "queries": len(texts),
        "e2e_p50_ms": round(percentile(ms_e2e, 50), 1),
        "e2e_p95_ms": round(percentile(ms_e2e, 95), 1),
        "vector_p50_ms": round(percentile(ms_vec, 50), 2),
        "vector_p95_ms": round(percentile(ms_vec, 95), 2),
        "recall@10": round(recall, 4),
        "keyword_p50_ms": round(percentile(ms_kw, 50), 2),
        "keyword_p95_ms": round(percentile(ms_kw, 95), 2),
        "query_embed_p50_ms": round(percentile(ms_embed, 50), 1),
        "exact_flat_p95_ms": round(percentile(flat_ms, 95), 1) if flat_ms else None,
        "sweep": sweep,
    }


def compare_types(n: int, types: list[str], args, cfg, synth: Synth) -> list[dict]:
    """Vector index types side by side on the same n vectors: build time, single-query p50/p95 and
    recall@10 against exact search (no SQLite, keyword or embedding: the vector part only)."""
    from kb.store import faiss_index

    vecs = np.vstack([synth.embed(synth.latent(s, min(100_000, n - s)), s) for s in range(0, n, 100_000)])
    rng = np.random.default_rng(7)
    picks = rng.integers(0, min(n, 100_000), args.queries)
    lat = synth.latent(0, min(n, 100_000))[picks]
    qvecs = synth.embed(lat + 0.15 * rng.normal(size=lat.shape).astype(np.float32), seed=99)
    truth = faiss_index.exact_neighbours(vecs, qvecs, 10)
    out = []
    for kind in types:
        t0 = time.perf_counter()
        index, info = faiss_index.build(vecs, np.arange(n), cfg.index, kind=kind)
        build_s = time.perf_counter() - t0
        params = faiss_index.search_params(info)
        ms, found = [], []
        for q in qvecs:
            t = time.perf_counter()
            _, ids = index.search(q.reshape(1, -1), cfg.retrieval.dense_k, params=params)
            ms.append(1000 * (time.perf_counter() - t))
            found.append(ids[0][:10])
        out.append(
            {
                "bench": "query.vector_types",
                "chunks": n,
                "synthetic": True,
                "index": info,
                "build_s": round(build_s, 1),
                "vector_p50_ms": round(percentile(ms, 50), 2),
                "vector_p95_ms": round(percentile(ms, 95), 2),
                "recall@10": round(faiss_index.recall_at_k(np.vstack(found), truth), 4),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
        )
        print(json.dumps(out[-1]), flush=True)
        del index
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from kb.config import load_config
    from kb.embed import get_embedder

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--flat-queries", type=int, default=30)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    ap.add_argument(
        "--spread", type=float, default=0.6, help="with --types: within-topic spread (harder: 1.5)"
    )
    ap.add_argument("--types", help="only compare these vector index types (e.g. ivf,hnsw) at each size")
    args = ap.parse_args()
    cfg = load_config(overrides=["kb_dir=unused", *args.set])
    if args.types:
        rows = [
            r
            for n in args.sizes.split(",")
            for r in compare_types(int(n), args.types.split(","), args, cfg, Synth(spread=args.spread))
        ]
        if args.out:
            args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return
    synth, vocab = Synth(), words()
    embedder = get_embedder(cfg.embedder)
    head = {
        "bench": "query.setup",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "data": "synthetic: clustered 384-d unit vectors + Zipf text over jieba dictionary words",
        "bm25_count_tokens_per_s": round(count_rate(vocab, synth)),
        "embedder": embedder.name,
        "config": args.set,
    }
    lines = [head]
    print(json.dumps(head, ensure_ascii=False), flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            row = run_size(n, args, cfg, synth, vocab, embedder, Path(tmp))
            row["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
            lines.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    if args.out:
        args.out.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
