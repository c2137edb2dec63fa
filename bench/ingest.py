"""First ingest and re-ingest: `kb ingest` against the plain LangChain tutorial pipeline, same corpus,
same embedder, in one process run.

    .venv/bin/python bench/ingest.py                      # corpus/
    .venv/bin/python bench/ingest.py --copies 3 --runs 2  # + a synthetic copy: corpus/ 3x with variations

LangChain side, as the tutorials write it: langchain_community loaders (PyPDFLoader, Docx2txtLoader,
BSHTMLLoader, TextLoader) → RecursiveCharacterTextSplitter(chunk.size, chunk.overlap) →
FAISS.from_documents with an `Embeddings` wrapper around the same e5-small (float32, one forward at a
time on torch's threads: no kb worker threads) that embeds the embedder's batch size
(`embedder.batch_size`, e5-small: 8) of texts at a time in document order. A second variant,
`langchain_sorted`, hands all texts to the embedder at once so they are length-sorted like kb's
(sentence-transformers' encode, behind HuggingFaceEmbeddings, also sorts by length): the ratio against
it shows what is left without the batching gain.
kb side: ingest.pipeline.ingest, i.e. `kb ingest` (loaders, cleaning, chunking, e5 with the config's
embedder settings, jieba tokens, SQLite, FAISS, BM25, atomic switch), then the same call again on the
unchanged corpus (re-ingest), then after one file changed; also at the other embedder precision
(kb_float32 beside the int8 default) and any `--side NAME:KEY=VALUE[,KEY=VALUE]`.
Both sides get an already-loaded embedder (model load excluded from both). Each side's wall time and
process CPU time are printed: on a machine shared with other jobs the load changes from minute to
minute and moves wall-time ratios; CPU time (torch threads sleep when idle: OMP_WAIT_POLICY=PASSIVE)
is much less sensitive to it. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".md", ".markdown", ".txt"}


def synthetic_copy(src: Path, dst: Path, copies: int, seed: int = 0) -> None:
    """corpus/ `copies` times; in copy i every text file's sentences are shuffled within paragraphs
    and numbers changed, so chunks differ from the original (no duplicate chunk across copies).
    PDF/DOCX/HTML and text files that are not UTF-8 are copied as they are in copy 0 only."""
    rng = random.Random(seed)
    for i in range(copies):
        for p in sorted(src.rglob("*")):
            if not p.is_file() or p.name.startswith(".") or "src" in p.parts or p.name == "README.md":
                continue
            rel = p.relative_to(src)
            out = dst / f"copy{i}" / rel
            try:
                original = p.read_text(encoding="utf-8") if p.suffix.lower() in TEXT_SUFFIXES else None
            except UnicodeDecodeError:  # corpus/ holds a GBK file on purpose (encoding detection)
                original = None
            if original is None:
                if i == 0:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, out)
                continue
            paras = []
            for para in original.split("\n\n"):
                sents = [s for s in para.replace("。", "。\n").split("\n") if s.strip()]
                if i and len(sents) > 1 and not para.lstrip().startswith("#"):
                    rng.shuffle(sents)
                text = "".join(sents)
                paras.append(
                    "".join(str((int(c) + i) % 10) if c.isdigit() else c for c in text) if i else text
                )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n\n".join(paras), encoding="utf-8")


def langchain_ingest(root: Path, embedder, cfg, out_dir: Path, sorted_batches: bool) -> dict:
    from langchain_community.document_loaders import BSHTMLLoader, Docx2txtLoader, PyPDFLoader, TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from ingest.pipeline import scan

    class E5Embeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            step = len(texts) if sorted_batches else embedder.batch_size
            out: list[list[float]] = []
            for i in range(0, len(texts), max(step, 1)):
                out.extend(embedder.embed_batch(texts[i : i + step]).tolist())
            return out

        def embed_query(self, text: str) -> list[float]:
            return embedder.embed_batch([text], query=True)[0].tolist()

    loaders = {".pdf": PyPDFLoader, ".docx": Docx2txtLoader, ".html": BSHTMLLoader, ".htm": BSHTMLLoader}
    t0, c0 = time.perf_counter(), time.process_time()
    docs = []
    for p, _ in scan([root], cfg)[0]:  # the files kb ingests (.kbignore honoured), so both get the same
        loader = loaders.get(p.suffix.lower())
        docs.extend(loader(str(p)).load() if loader else TextLoader(str(p), autodetect_encoding=True).load())
    splitter = RecursiveCharacterTextSplitter(chunk_size=cfg.chunk.size, chunk_overlap=cfg.chunk.overlap)
    chunks = splitter.split_documents(docs)
    t_split = time.perf_counter() - t0
    store = FAISS.from_documents(chunks, E5Embeddings())
    store.save_local(str(out_dir))
    secs = time.perf_counter() - t0
    return {
        "cpu_s": round(time.process_time() - c0, 2),
        "chunks": len(chunks),
        "chars": sum(len(c.page_content) for c in chunks),
        "seconds": round(secs, 2),
        "load_split_s": round(t_split, 2),
        "chunks_per_s": round(len(chunks) / secs, 2),
    }


def kb_ingest(root: Path, embedder, cfg) -> dict:
    from ingest.pipeline import ingest
    from kb.store import Store

    c0 = time.process_time()
    report = ingest([root], cfg, embedder, progress=False)
    cpu = time.process_time() - c0
    store = Store.open(cfg.kb_dir)
    chars = sum(len(c.text) for c in store.iter_chunks())
    return {
        "cpu_s": round(cpu, 3),
        "chunks": report.chunks,
        "embedded": report.embedded,
        "chars": chars,
        "seconds": round(report.seconds, 3),
        "chunks_per_s": round(report.embedded / report.seconds, 2) if report.embedded else None,
        "index": store.manifest.get("index", {}).get("built"),
    }


def other_precision(quantize: str) -> tuple[str, list[str]]:
    if quantize == "int8":
        return "kb_float32", ["embedder.quantize=none"]
    return "kb_int8", ["embedder.quantize=int8"]


def one_run(root: Path, args, tmp: Path, run: int) -> dict:
    from ingest.pipeline import scan
    from kb.config import load_config
    from kb.embed import get_embedder

    # the plain float32 e5-small: one forward at a time on torch's threads, no kb worker threads
    plain = ["embedder.quantize=none", "embedder.workers=1"]
    base = load_config(overrides=[f"kb_dir={tmp}/unused", *args.set, *plain])
    lc_embedder = get_embedder(base.embedder)
    # kb as configured (defaults + --set); kb at the other embedder precision (float32 when the config
    # says int8, the default, and the reverse) unless --one-kb-side; then any --side NAME:KEY=V,KEY=V
    variants = {"kb": load_config(overrides=[f"kb_dir={tmp}/kb{run}", *args.set])}
    extra = {} if args.one_kb_side else dict([other_precision(variants["kb"].embedder.quantize)])
    for spec in args.side:
        name, _, sets = spec.partition(":")
        extra[name] = sets.split(",") if sets else []
    for name, sets in extra.items():
        variants[name] = load_config(overrides=[f"kb_dir={tmp}/{name}{run}", *args.set, *sets])
    embedders = {side: get_embedder(cfg.embedder) for side, cfg in variants.items()}
    for e in (lc_embedder, *embedders.values()):
        e.embed_batch(["warm-up"])
    # One-time process costs are paid before timing, on both sides alike: module imports (loaders,
    # pypdf, docx, bs4, LangChain) and jieba's dictionary (~1 s, which `kb ingest` pays once per run).
    import langchain_community.document_loaders  # noqa: F401
    import langchain_community.vectorstores  # noqa: F401

    import ingest.loaders  # noqa: F401
    from kb.keyword import tokenize

    tokenize("预热")
    row: dict = {"run": run, "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    # Alternate the order between runs so neither side always gets the quieter minutes.
    sides = ["langchain", "langchain_sorted", *variants]
    if run % 2:
        sides.reverse()
    for side in sides:
        if side in variants:
            cfg, docs = variants[side], tmp / f"{side}_docs{run}"
            shutil.copytree(root, docs)
            row[f"{side}_first"] = kb_ingest(docs, embedders[side], cfg)
            row[f"{side}_reingest"] = kb_ingest(docs, embedders[side], cfg)
            changed = next(p for p, _ in scan([docs], cfg)[0] if p.suffix == ".md")
            changed.write_text(
                changed.read_text(encoding="utf-8") + "\n\n新增一段说明：本制度自发布之日起施行。\n"
            )
            row[f"{side}_one_file_changed"] = kb_ingest(docs, embedders[side], cfg)
        else:
            row[side] = langchain_ingest(
                root, lc_embedder, base, tmp / f"{side}{run}", side == "langchain_sorted"
            )
    row["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    # Same corpus on both sides, but the two chunkers cut it into different numbers of chunks:
    # the time ratio (= corpus throughput) is the fair one; the chunks/s ratio is printed too.
    for side in variants:
        first = row[f"{side}_first"]
        for lc in ("langchain", "langchain_sorted"):
            row[f"ratio_time_{side}_vs_{lc}"] = round(row[lc]["seconds"] / first["seconds"], 2)
            row[f"ratio_cpu_{side}_vs_{lc}"] = round(row[lc]["cpu_s"] / first["cpu_s"], 2)
            row[f"ratio_chunks_per_s_{side}_vs_{lc}"] = round(
                first["chunks_per_s"] / row[lc]["chunks_per_s"], 2
            )
        row[f"ratio_{side}_first_vs_reingest"] = round(
            first["seconds"] / row[f"{side}_reingest"]["seconds"], 1
        )
        row[f"{side}_embedder"] = embedders[side].name
    return row


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    ap.add_argument("--copies", type=int, default=0, help="ingest a synthetic copy: corpus/ N times, varied")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--one-kb-side",
        action="store_true",
        help="skip the extra kb side at the other embedder precision (int8 <-> float32)",
    )
    ap.add_argument(
        "--side",
        action="append",
        default=[],
        help="another kb side, NAME:KEY=VALUE[,KEY=VALUE], e.g. kb_1worker:embedder.workers=1",
    )
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    args = ap.parse_args()
    lines = [
        {
            "bench": "ingest.setup",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} cores (shared with other jobs)",
            "torch_threads": torch.get_num_threads(),
            "corpus": str(args.corpus.relative_to(ROOT))
            if args.corpus.is_relative_to(ROOT)
            else str(args.corpus),
            "copies": args.copies,
            "config": args.set,
        }
    ]
    print(json.dumps(lines[0], ensure_ascii=False), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            root = Path(tmp) / f"docs{run}"
            if args.copies:
                synthetic_copy(args.corpus, root, args.copies)
            else:
                shutil.copytree(args.corpus, root)
            row = {"bench": "ingest", **one_run(root, args, Path(tmp), run)}
            lines.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    if args.out:
        args.out.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
