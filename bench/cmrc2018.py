"""CMRC2018 dev (Cui et al., EMNLP 2019; CC BY-SA 4.0) as an external benchmark for kb's defaults.

    .venv/bin/python bench/cmrc2018.py                       # retrieval: question → its paragraph
    .venv/bin/python bench/cmrc2018.py --answer 40           # + answering 40 questions with retrieval
    .venv/bin/python bench/cmrc2018.py --set embedder.name=hashing   # any config override

The data is read from ../shared/data/cmrc2018/ (not copied into the project). Each of the 848
paragraphs becomes one .txt document ingested through the real pipeline (loader, chunker, embedder,
store); a question's hit is a retrieved chunk from its paragraph. Prints JSON lines.

`--answer N` answers N questions spread over the set through `kb eval`'s runner (kb/eval/runner.py), so
the line it prints carries the same metrics as `kb eval --json`, flattened (metric definitions:
kb/eval/metrics.py); there a relevant chunk must also contain a gold answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_dev.json"


def load_cmrc(path: Path) -> tuple[dict[str, str], list[dict]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs, questions = {}, []
    for article in data:
        for para in article["paragraphs"]:
            pid = para["id"]
            paragraphs[pid] = para["context"]
            for qa in para["qas"]:
                golds = sorted({a["text"] for a in qa["answers"]})
                questions.append({"id": qa["id"], "question": qa["question"], "pid": pid, "answers": golds})
    return paragraphs, questions


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from ingest.pipeline import ingest
    from kb.config import load_config
    from kb.embed import get_embedder
    from kb.eval import metrics as M
    from kb.retrieve import Retriever
    from kb.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--limit", type=int, help="questions to evaluate (default all)")
    ap.add_argument(
        "--answer", type=int, default=0, help="also answer this many questions with the generator"
    )
    args = ap.parse_args()

    paragraphs, questions = load_cmrc(args.data)
    questions = questions[: args.limit] if args.limit else questions
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for pid, text in paragraphs.items():
            (docs / f"{pid}.txt").write_text(text, encoding="utf-8")
        cfg = load_config(overrides=[f"kb_dir={tmp}/kb", *args.set])
        embedder = get_embedder(cfg.embedder)
        report = ingest([docs], cfg, embedder, progress=False)
        print(
            json.dumps(
                {
                    "bench": "cmrc2018.ingest",
                    "paragraphs": len(paragraphs),
                    "chunks": report.chunks,
                    "seconds": round(report.seconds, 2),
                    "chunks_per_s": round(report.chunks / report.seconds, 1),
                    "embedder": embedder.name,
                }
            )
        )
        retriever = Retriever(Store.open(cfg.kb_dir), embedder, cfg.retrieval)
        ranks, t0 = [], time.perf_counter()
        for q in questions:
            pids: list[str] = []
            for h in retriever.search(q["question"], k=30):
                pid = h.chunk.source.removesuffix(".txt")
                if pid not in pids:
                    pids.append(pid)
            ranks.append(pids.index(q["pid"]) + 1 if q["pid"] in pids else None)
        secs = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "bench": "cmrc2018.retrieval",
                    "questions": len(questions),
                    "hit@1": round(M.hit_at(ranks, 1), 4),
                    "hit@5": round(M.hit_at(ranks, 5), 4),
                    "mrr@10": round(M.mrr_at(ranks, 10), 4),
                    "ms_per_query": round(1000 * secs / len(questions), 1),
                    "config": args.set,
                }
            )
        )
        if args.answer:
            from kb.answer import Answerer
            from kb.eval.runner import QAItem, evaluate, flatten
            from kb.generate import get_generator

            answerer = Answerer(retriever, get_generator(cfg.generator), cfg)
            step = max(1, len(questions) // args.answer)
            sample = questions[::step][: args.answer]  # spread over the dev set, not its first article
            items = [QAItem(q["id"], q["question"], q["answers"], True, f"{q['pid']}.txt") for q in sample]
            summary, _ = evaluate(items, answerer, desc="cmrc2018 answer")
            print(
                json.dumps(
                    {
                        "bench": "cmrc2018.answer",
                        **flatten(summary),
                        "generator": f"{cfg.generator.name}:{cfg.generator.model}",
                        "config": args.set,
                    }
                )
            )


if __name__ == "__main__":
    main()
