"""Load on the retrieval path: T threads share one Store and Retriever (as the UI's server process
does) and each runs N searches with questions from corpus/qa.jsonl; optionally a re-ingest runs in a
background thread meanwhile, readers refreshing to its generation. In-process, no HTTP.

Prints one JSON line: latency p50/p95/p99/max (ms), throughput (searches/s), errors (must be 0),
the 1-minute load average (a shared 2-core machine: compare figures only at similar load).

    .venv/bin/python bench/load.py                                    # e5-small, 4 threads x 200
    .venv/bin/python bench/load.py --embedder hashing --reingest      # model-free, with a re-ingest
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedder", default="e5-small", help="embedder.name (e5-small, hashing, ...)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--searches", type=int, default=200, help="per thread")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--kb", help="an ingested knowledge base; default: corpus/ ingested into a temp dir")
    ap.add_argument("--reingest", action="store_true", help="re-ingest a changed corpus while searching")
    args = ap.parse_args()

    from ingest.pipeline import ingest
    from kb.config import load_config
    from kb.embed import get_embedder
    from kb.retrieve import Retriever
    from kb.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="kb-load-"))
    kb_dir = args.kb or str(tmp / "kb")
    cfg = load_config(data={"kb_dir": kb_dir, "embedder": {"name": args.embedder}})
    embedder = get_embedder(cfg.embedder)
    corpus = tmp / "corpus"
    shutil.copytree(ROOT / "corpus", corpus, ignore=shutil.ignore_patterns("*.py", "qa.jsonl", "src"))
    t = time.perf_counter()
    if not args.kb:
        ingest([corpus], cfg, embedder, progress=False)
    ingest_s = time.perf_counter() - t
    questions = [
        json.loads(line)["question"]
        for line in (ROOT / "corpus" / "qa.jsonl").read_text().splitlines()
        if line
    ]
    store = Store.open(kb_dir)
    retriever = Retriever(store, embedder, cfg.retrieval)
    retriever.search(questions[0], args.k)  # warm-up: tokenizer dictionaries, first allocations

    latencies: list[float] = []
    errors: list[str] = []
    generations: set[int] = set()
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine, gens = [], set()
        for i in range(args.searches):
            q = questions[(n * args.searches + i) % len(questions)]
            t0 = time.perf_counter()
            try:
                store.refresh()
                hits = retriever.search(q, args.k)
                if not hits:
                    raise RuntimeError(f"no hits for {q!r}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            mine.append(time.perf_counter() - t0)
            gens.add(store.generation)
        with lock:
            latencies.extend(mine)
            generations.update(gens)

    def reingest() -> None:
        extra = corpus / "general" / "load_test_notice.md"
        extra.write_text("# 负载测试通知\n\n本周五晚上十点进行系统维护，预计两小时。\n", encoding="utf-8")
        ingest([corpus], cfg, embedder, progress=False)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
    side = threading.Thread(target=reingest) if args.reingest else None
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    if side:
        side.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if side:
        side.join()
    ms = np.asarray(latencies) * 1000
    store.refresh()  # this thread's view, for the chunk count after a re-ingest
    print(
        json.dumps(
            {
                "embedder": embedder.name,
                "threads": args.threads,
                "searches": len(latencies),
                "errors": len(errors),
                "first_errors": errors[:3],
                "k": args.k,
                "chunks": len(store),
                "generations_seen": sorted(generations),
                "reingest": args.reingest,
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p95_ms": round(float(np.percentile(ms, 95)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "max_ms": round(float(ms.max()), 2),
                "throughput_per_s": round(len(latencies) / wall, 1),
                "wall_s": round(wall, 2),
                "ingest_s": round(ingest_s, 1),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
            },
            ensure_ascii=False,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
