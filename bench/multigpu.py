"""Multi-GPU fine-tuning: `kb finetune --gpus N --deepspeed zero2|zero3`, LoRA and P-Tuning v2, against
the same command on one GPU with the same global batch.

Run (2 H200s; deepspeed and the pinned transformers/peft carried as wheels, see bench/README.md):
    python bench/multigpu.py --gpus 1,2 --stages zero2,zero3 --out bench/results/multigpu_h200x2.json
A DeepSpeed variant against the same 1-GPU run (bench/ds_variants/):
    python bench/multigpu.py --gpus 1,2 --stages zero3 --methods lora \
        --ds-config bench/ds_variants/zero3_persist.yaml --out bench/results/multigpu_h200x2_zero3_persist.json
Smoke (CPU, tiny GLM, 2 gloo processes; no timing meaning):
    .venv/bin/python bench/multigpu.py --shape tiny --gpus 1,2 --steps 4 --warmup 1 --out /tmp/mg.json

The base is the ChatGLM3-6B shape as transformers-native GLM (bench/finetune_throughput.py's config),
random-initialised and saved once, with a word-level tokenizer holding ChatGLM3's special tokens, so
`kb finetune` picks the chatglm3 template as it would for the real model. Data: synthetic conversations,
log-normal lengths around 300 tokens (70% prompt), words from a 2,000-word list and answers that repeat
the start of the question (something to learn, though 20 steps of a random-initialised base learn little).

Every run is the real command in its own process tree (torchrun + DeepSpeed, as a user runs it), with
the recipe's settings (finetune/configs/lora.yaml, ptuning_v2.yaml) except max_steps, logging every step
and a fixed token budget. The 1-GPU run accumulates N micro-batches per step, the N-GPU run takes one on
each GPU: the same global batch, and (accelerate shards one seeded order) the same examples per step.

tokens/s is measured over steps warmup+1 … steps from each step's log (tokens summed over the ranks,
seconds since the first step), so loading, compilation and the first steps are left out.
scaling efficiency = tok/s(N GPUs) / (N × tok/s(1 GPU)). Loss: per step, N GPUs against 1 GPU.
The output JSON is rewritten after every run, so a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {"zero2": 0.90, "zero3": 0.85}  # issue 7's scaling-efficiency targets
WORDS = 2000
GLM_TEMPLATE = (
    "[gMASK]sop{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def model_config(shape: str) -> Any:
    from transformers import GlmConfig

    from bench.finetune_throughput import model_config as throughput_config

    if shape == "tiny":
        return GlmConfig(
            vocab_size=WORDS + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, partial_rotary_factor=0.5,
            attention_bias=True, max_position_embeddings=4096, pad_token_id=0, eos_token_id=[2],
        )  # fmt: skip
    return throughput_config(shape)


def build_model(shape: str, out: Path) -> None:
    """A random-initialised base with a ChatGLM3-style tokenizer, saved as a model directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    cfg = model_config(shape)
    # <unk> <s> </s> first, so eos is id 2 as in ChatGLM3; then the words (the model's vocabulary is
    # larger than the tokenizer's: the rest of the embedding rows are never used, as with padded vocabs).
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *(f"w{i}" for i in range(WORDS))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.pad_token = "<unk>"
    fast.chat_template = GLM_TEMPLATE
    assert len(fast) <= cfg.vocab_size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialising 6B parameters on the CPU takes minutes, on a GPU seconds
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device == "cuda" else None)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def write_data(path: Path, n: int, max_len: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            length = int(min(max_len - 16, max(24, rng.lognormvariate(math.log(300), 0.6))))
            q = [f"w{rng.randrange(WORDS)}" for _ in range(int(length * 0.7))]
            a = q[: length - len(q)]  # the answer repeats the question's start: learnable
            conv = [{"role": "user", "content": " ".join(q)}, {"role": "assistant", "content": " ".join(a)}]
            f.write(json.dumps({"conversations": conv}) + "\n")


def run_one(args: argparse.Namespace, work: Path, stage: str, method: str, gpus: int) -> dict[str, Any]:
    nmax = max(args.gpus)
    name = f"{stage}-{method}-{gpus}gpu"
    kb = work / "kb" / name
    shutil.rmtree(kb, ignore_errors=True)  # a re-run (--again, or a failed run) starts clean
    cmd = [
        sys.executable, "-m", "kb.cli", "finetune", "--kb", str(kb), "--model", str(work / "model"),
        "--data", str(work / "train.jsonl"), "--method", method, "--name", name, "--gpus", str(gpus),
        "--deepspeed", str(args.ds_config or stage), "--json", "--no-activate",
        "--set", f"finetune.training.max_steps={args.steps}",
        "--set", "finetune.training.logging_steps=1",
        "--set", "finetune.training.save_strategy='no'",  # quoted: YAML reads a bare no as false
        "--set", f"finetune.training.gradient_accumulation_steps={nmax // gpus}",
        "--set", f"finetune.training.per_device_train_batch_size={args.batch}",
        "--set", f"finetune.speed.token_budget={args.budget}",
        "--set", f"finetune.data.max_source_len={args.max_len * 3 // 4}",
        "--set", f"finetune.data.max_target_len={args.max_len // 4}",
        "--set", "eval.gate.enabled=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {"stage": stage, "method": method, "gpus": gpus, "grad_accum": nmax // gpus}
    row["wall_s"] = round(wall, 1)
    if proc.returncode != 0:
        return {**row, "error": f"exit code {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    curve_path = kb / "models" / name / "curve.jsonl"
    logs = [r for r in map(json.loads, curve_path.read_text().splitlines()) if "loss" in r]
    w = logs[args.warmup - 1] if args.warmup else {"tokens": 0, "elapsed_s": 0.0}
    last = logs[-1]
    tok_s = (last["tokens"] - w["tokens"]) / max(last["elapsed_s"] - w["elapsed_s"], 1e-9)
    return {
        **row,
        "steps": len(logs),
        "tok_s": round(tok_s, 1),
        "tok_s_per_gpu": round(tok_s / gpus, 1),
        "tokens_per_step": round((last["tokens"] - w["tokens"]) / max(len(logs) - args.warmup, 1)),
        "peak_gib_rank0": result["peak_memory_gib"],
        "fast_path": result["fast_path"],
        "losses": [round(r["loss"], 5) for r in logs],
        "step_s": [round(b["elapsed_s"] - a["elapsed_s"], 3) for a, b in zip(logs, logs[1:], strict=False)],
    }


def scaling(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    ones = {(r["stage"], r["method"]): r for r in runs if r["gpus"] == 1 and "tok_s" in r}
    for r in runs:
        one = ones.get((r["stage"], r["method"]))
        if r["gpus"] == 1 or one is None or "tok_s" not in r:
            continue
        diffs = [abs(a - b) for a, b in zip(one["losses"], r["losses"], strict=True)]
        rel = [d / abs(a) for d, a in zip(diffs, one["losses"], strict=True)]
        eff = r["tok_s"] / (r["gpus"] * one["tok_s"])
        out.append(
            {
                "stage": r["stage"], "method": r["method"], "gpus": r["gpus"],
                "efficiency": round(eff, 4), "target": TARGETS[r["stage"]],
                "meets_target": eff >= TARGETS[r["stage"]],
                "loss_max_abs_diff": round(max(diffs), 5), "loss_max_rel_diff": round(max(rel), 5),
                "loss_first_last_1gpu": [one["losses"][0], one["losses"][-1]],
            }
        )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="chatglm3-6b", help="chatglm3-6b, llama2-7b or tiny")
    ap.add_argument(
        "--gpus", default="1,2", help="process counts, comma-separated; the largest sets the batch"
    )
    ap.add_argument("--stages", default="zero2,zero3")
    ap.add_argument("--methods", default="lora,ptuning-v2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of tokens/s")
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed row (ZeRO-2 fast path)")
    ap.add_argument("--batch", type=int, default=4, help="padded examples per micro-batch (ZeRO-3)")
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kb-multigpu"))
    ap.add_argument("--out", type=Path, required=True, help="results JSON; runs already in it are skipped")
    ap.add_argument("--again", action="store_true", help="re-run configurations already in --out")
    ap.add_argument(
        "--ds-config",
        type=Path,
        help="a DeepSpeed YAML/JSON used in place of the stage's shipped one (one stage; its own --out)",
    )
    args = ap.parse_args(argv)
    args.gpus = sorted(int(g) for g in args.gpus.split(","))
    if args.ds_config and "," in args.stages:
        ap.error("--ds-config replaces one stage's config: give one --stages")
    if args.shape == "tiny":
        args.max_len, args.budget = min(args.max_len, 512), min(args.budget, 512)
    work = args.work / args.shape
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "model" / "config.json").is_file():
        t0 = time.perf_counter()
        build_model(args.shape, work / "model")
        print(f"built {args.shape} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not (work / "train.jsonl").is_file():
        write_data(work / "train.jsonl", args.examples, args.max_len)

    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work", "ds_config")}
    if args.ds_config:
        settings["ds_config"] = {"path": str(args.ds_config), "content": args.ds_config.read_text()}
    doc.update(
        shape=args.shape,
        settings=settings,
        command="python bench/multigpu.py " + " ".join(argv or sys.argv[1:]),
    )
    for stage in args.stages.split(","):
        for method in args.methods.split(","):
            for gpus in args.gpus:
                done = [
                    r for r in doc["runs"] if (r["stage"], r["method"], r["gpus"]) == (stage, method, gpus)
                ]
                if done and "error" not in done[0] and not args.again:
                    continue  # measured by an earlier call with this --out (device calls are time-limited)
                row = run_one(args, work, stage, method, gpus)
                doc["runs"] = [
                    r for r in doc["runs"] if (r["stage"], r["method"], r["gpus"]) != (stage, method, gpus)
                ] + [row]
                doc["scaling"] = scaling(doc["runs"])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(doc, indent=1) + "\n")
                brief = {
                    k: row.get(k) for k in ("stage", "method", "gpus", "tok_s_per_gpu", "wall_s", "error")
                }
                print(json.dumps(brief), flush=True)
                if "error" in row:  # the log above says why; the next runs would fail the same way
                    return 1
    for s in doc["scaling"]:
        print(json.dumps(s), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
