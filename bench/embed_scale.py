"""How embedding at ingest scales with workers: one GPU, and N CPU worker processes on one host.

The model is e5-small's architecture (BERT, 12 layers, hidden 384, XLM-R vocabulary) with RANDOM
weights: throughput depends on the shapes, not the weights, and the bundled weights (~470 MB once
converted) need not travel to the GPU machine. Inputs are random token ids of a fixed length
(--seq, default 256: a 400-character chunk is about that many e5 tokens), mean-pooled and
normalised as kb.embed.e5 does. Prints one JSON line per configuration.

    python bench/embed_scale.py --out bench/results/embed_scale.json      # on a GPU machine
    python bench/embed_scale.py --no-gpu --workers 1 2                     # CPU only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 250037, 384, 12, 12, 1536


def _model(device: str, dtype):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=514,
    )
    return BertModel(cfg).to(device=device, dtype=dtype).eval()


def _embed(model, ids, mask):
    import torch

    with torch.inference_mode():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(v.float(), dim=-1)


def gpu(batch: int, seq: int, dtype_name: str, seconds: float) -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    model = _model("cuda", dtype)
    ids = torch.randint(5, VOCAB, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    for _ in range(3):
        _embed(model, ids, mask)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _embed(model, ids, mask)
        n += batch
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "device": torch.cuda.get_device_name(),
        "dtype": dtype_name,
        "batch": batch,
        "seq": seq,
        "chunks_per_s": round(n / dt, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def _cpu_worker(threads: int, batch: int, seq: int, seconds: float, start, out) -> None:
    import torch

    torch.set_num_threads(threads)
    model = _model("cpu", torch.float32)
    ids = torch.randint(5, VOCAB, (batch, seq))
    mask = torch.ones_like(ids)
    _embed(model, ids, mask)
    start.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _embed(model, ids, mask)
        n += batch
    out.put((n, time.perf_counter() - t0))


def cpu(workers: int, cores: int, batch: int, seq: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    threads = max(1, cores // workers)
    procs = [
        ctx.Process(target=_cpu_worker, args=(threads, batch, seq, seconds, start, out))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    time.sleep(2 + workers)  # let every worker load its model before the clock starts
    start.set()
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return {
        "device": f"cpu ({cores} cores)",
        "workers": workers,
        "threads_per_worker": threads,
        "batch": batch,
        "seq": seq,
        "chunks_per_s": round(sum(n / dt for n, dt in done), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    import torch

    if not args.no_gpu and torch.cuda.is_available():
        for dtype in ("float32", "bfloat16"):
            for batch in (64, 256, 1024):
                results.append(gpu(batch, args.seq, dtype, args.seconds))
                print(json.dumps(results[-1]), flush=True)
    for w in args.workers:
        results.append(cpu(w, args.cores, 16, args.seq, args.seconds))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "note": "e5-small architecture with random weights (speed only), fixed-length random token ids",
        }
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
