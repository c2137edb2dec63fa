"""Store backends side by side on synthetic knowledge bases: insert rate, search latency, recall, memory.

Random unit vectors (dim 384, e5-small's) and generated text, NOT real embeddings: latency and memory
depend on sizes, not content; recall of an approximate index on random vectors is a pessimistic case
(real text embeddings cluster).
Everything goes through kb's store interface (Writer.put_file/commit, Store.search_vectors), as ingest
and search use it: 10 chunks per file, 10% of chunks restricted to one department. Writing and
searching run in two fresh processes; reader_rss_mb is what opening the store and searching added
to the reader's resident memory (for milvus-lite the engine runs inside the reader).

    .venv/bin/python bench/milvus.py --sizes 10000 100000 --out bench/results/milvus.json

    .venv/bin/python bench/milvus.py --lite-filters 5000   # Milvus Lite: filter spellings, flush

backends: faiss (IndexFlatIP + SQLite), milvus-lite (Milvus Lite file, FLAT), milvus-server
(`milvus-lite server` subprocess over gRPC with HNSW, the code path of a cluster URI).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 384
PER_FILE = 10
QUERIES = 200
K = 30  # retrieval.dense_k


def _files(n: int, rng: np.random.Generator) -> list[list]:
    """Chunks grouped by file, made before the clock starts."""
    from kb.schema import Chunk

    words = np.asarray([f"w{i}" for i in range(5000)])
    picks = rng.integers(0, len(words), (n, 60))
    files = []
    for f in range(0, n, PER_FILE):
        out = []
        for i in range(f, min(f + PER_FILE, n)):
            text = " ".join(words[picks[i]])
            out.append(Chunk(f"c{i}", text, f"doc{f // PER_FILE}.md", None, ["H"], 0, len(text), f"h{i}"))
            if i % 10 == 0:
                out[-1].departments = ["hr"]
        files.append(out)
    return files


def _vectors(n: int) -> np.ndarray:
    vecs = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]) / 1024


def write(backend: str, n: int, uri: str, kb: Path) -> dict:
    """Ingest side: n chunks through Writer.put_file (one call per file) and commit."""
    from kb.config import StoreConfig
    from kb.store import FileRecord, Writer

    vecs = _vectors(n)
    cfg = StoreConfig(backend="faiss" if backend == "faiss" else "milvus", uri=uri, collection=f"b{n}")
    files = _files(n, np.random.default_rng(1))
    tokens = [[c.text.split() for c in chunks] for chunks in files]
    t0 = time.perf_counter()
    with Writer(kb, store=cfg) as w:
        i = 0
        for chunks, toks in zip(files, tokens, strict=True):
            w.put_file(
                FileRecord(chunks[0].source, "x", 1, len(chunks), 0.0),
                chunks,
                vecs[i : i + len(chunks)],
                toks,
            )
            i += len(chunks)
        t_put = time.perf_counter() - t0
        w.commit({"embedder": {"name": "random", "dim": DIM}, "chunk": {}})
    t_insert = time.perf_counter() - t0
    return {
        "put_rows_per_s": round(n / t_put),
        "insert_and_commit_s": round(t_insert, 2),
        "rows_per_s": round(n / t_insert),
        "disk_mb": round(sum(p.stat().st_size for p in kb.rglob("*") if p.is_file()) / 2**20, 1),
    }


def read(n: int, kb: Path) -> dict:
    """Search side, in a fresh process: what a reader holds in memory, latency, recall."""
    from kb.store import Store

    base = _rss_mb()
    t0 = time.perf_counter()
    store = Store.open(kb)
    out: dict = {"open_s": round(time.perf_counter() - t0, 2)}
    # Queries near stored chunks (a stored vector plus noise), like a question close to its passage.
    rng = np.random.default_rng(2)
    vecs = _vectors(n)
    qs = vecs[rng.integers(0, n, QUERIES)] + rng.standard_normal((QUERIES, DIM)).astype(np.float32) * 0.08
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    exact = np.argsort(-(qs @ vecs.T), axis=1)[:, :10] + 1  # rows are 1-based in insertion order
    del vecs
    for q in qs[:5]:
        store.search_vectors(q, K)
    for name, deps in (("search", None), ("search_filtered", frozenset({"it"}))):
        lat, hits = [], []
        for q in qs:
            t = time.perf_counter()
            hits.append(store.search_vectors(q, K, departments=deps))
            lat.append((time.perf_counter() - t) * 1000)
        out[f"{name}_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
        out[f"{name}_p95_ms"] = round(float(np.percentile(lat, 95)), 2)
        if deps is None:
            got = [{r for r, _ in h[:10]} for h in hits]
            recall = [len(g & set(e)) / 10 for g, e in zip(got, exact, strict=True)]
            out["recall_at_10"] = round(float(np.mean(recall)), 4)
        else:  # nothing of department "hr" may come back
            assert not any((r - 1) % 10 == 0 for h in hits for r, _ in h)
    lat = []
    for q in qs[:20]:
        rows = [r for r, _ in store.search_vectors(q, 5)]
        t = time.perf_counter()
        store.chunks(rows), store.vectors(rows)
        lat.append((time.perf_counter() - t) * 1000)
    out["fetch_5_chunks_p50_ms"] = round(float(np.median(lat)), 2)
    out["reader_rss_mb"] = round(_rss_mb() - base - qs.nbytes / 2**20 - exact.nbytes / 2**20)
    return out


def one(backend: str, n: int, uri: str) -> dict:
    kb = Path(tempfile.mkdtemp(prefix="kbbench-"))
    out = {"backend": backend, "chunks": n, "dim": DIM}
    for phase in ("write", "read"):
        cmd = [sys.executable, __file__, "--phase", phase, backend, str(n), uri, str(kb)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    shutil.rmtree(kb, ignore_errors=True)
    return out


def lite_filters(n: int) -> list[dict]:
    """Milvus Lite alone: search latency by filter spelling, before and after flush (why the store
    flushes at commit and spells the access filter with LIKE there)."""
    from kb.schema import Chunk
    from kb.store.milvus_client import client_for, create_collection, row_entity, visible_filter

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    client = client_for(str(Path(tempfile.mkdtemp(prefix="kbbench-")) / "lite.db"))
    create_collection(client, "f", DIM, "FLAT")
    rows = []
    for i in range(n):
        c = Chunk(f"c{i}", "x " * 100, "a.md", None, [], 0, 1, "h", ["hr"] if i % 10 == 0 else [])
        rows.append(row_entity(i + 1, c, vecs[i], 1))
    for i in range(0, n, 1000):
        client.insert("f", rows[i : i + 1000])
    spellings = {
        "none": "",
        "generation": visible_filter(1, None),
        "generation+access (array functions)": visible_filter(1, frozenset({"it"}), True),
        "generation+access (LIKE)": visible_filter(1, frozenset({"it"}), False),
    }
    out = []
    for state in ("unflushed", "flushed"):
        if state == "flushed":
            client.flush("f")
        for name, expr in spellings.items():
            lat = []
            for q in vecs[:20]:
                t = time.perf_counter()
                client.search("f", data=[q.tolist()], limit=K, filter=expr, output_fields=[])
                lat.append((time.perf_counter() - t) * 1000)
            out.append(
                {"rows": n, "segment": state, "filter": name, "p50_ms": round(float(np.median(lat)), 1)}
            )
    return out


def _server(data: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("milvus-lite server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["faiss", "milvus-lite", "milvus-server"])
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--phase", nargs=5, metavar=("PHASE", "BACKEND", "N", "URI", "KB"), help=argparse.SUPPRESS
    )
    ap.add_argument("--lite-filters", type=int, metavar="N", help="only the Milvus Lite filter comparison")
    args = ap.parse_args()
    if args.lite_filters:
        for line in lite_filters(args.lite_filters):
            print(json.dumps(line), flush=True)
        return
    if args.phase:
        phase, backend, n, uri, kb = args.phase
        res = (
            write(backend, int(n), "" if uri == "-" else uri, Path(kb))
            if phase == "write"
            else read(int(n), Path(kb))
        )
        print(json.dumps(res))
        return
    results = []
    for backend in args.backends:
        server = None
        for n in args.sizes:
            uri = "-"
            if backend == "milvus-server":
                server, uri = _server(Path(tempfile.mkdtemp(prefix="kbbench-srv-")) / "server.db")
            line = json.dumps(one(backend, n, uri))
            if server is not None:
                server_rss = Path(f"/proc/{server.pid}/status").read_text()
                rss = next(ln for ln in server_rss.splitlines() if ln.startswith("VmHWM"))
                server.terminate()
                server.wait(30)
                result = {**json.loads(line), "server_peak_rss_mb": round(int(rss.split()[1]) / 1024)}
                line = json.dumps(result)
            print(line, flush=True)
            results.append(json.loads(line))
    if args.out:
        import pymilvus

        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores shared with other jobs",
            "pymilvus": pymilvus.__version__,
            "milvus_lite": __import__("milvus_lite").__version__,
            "command": "python bench/milvus.py " + " ".join(sys.argv[1:]),
            "note": "random unit vectors (dim 384) and generated text; one run per row",
            "load_average_1m_at_end": round(__import__("os").getloadavg()[0], 1),
        }
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
