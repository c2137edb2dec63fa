"""Fine-tuning throughput: the plain recipe against `kb finetune`'s trainer, side by side in one process.

Run (one H200):
    python bench/finetune_throughput.py --shapes chatglm3-6b,llama2-7b --out bench/results/finetune_throughput_h200.jsonl
Smoke (CPU, tiny shape, no timing meaning):
    .venv/bin/python bench/finetune_throughput.py --shapes tiny --steps 3 --warmup 1

Models are random-initialised from config (no downloads): the shapes of Llama-2-7B and ChatGLM3-6B (as
native GLM: 28 layers, 2 KV heads, ffn 13,696, vocab 65,024). Data is a synthetic length mix (log-normal,
median ~300 tokens, 2,000 examples, prompt tokens masked) with random ids; tokens/s counts real tokens
only, over the steps after `--warmup` (compilation and allocator warm-up excluded).

- plain: peft on transformers with SDPA, bf16, right-padded batches of 2, the model's own loss, HF Trainer.
- kb: finetune.train.build_trainer, exactly what `kb finetune` runs on a GPU: packed rows of
  `--budget` tokens with per-example varlen attention, fused chunked lm_head + cross-entropy, compiled layers.

mfu counts 4·N FLOPs per token (forward 2N + activation gradients 2N; the base weights get no gradient,
attention FLOPs not counted) against 790 TFLOP/s, the bf16 rate the H200 reaches (issue 6).

stdout: one JSON line per configuration with exactly the keys shape, method, targets, recipe, tok_per_s,
mfu, peak_gib, loss_first, loss_last. `--details FILE` also writes budgets, step times and loss curves.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK_FLOPS = 790e12
KEYS = ("shape", "method", "targets", "recipe", "tok_per_s", "mfu", "peak_gib", "loss_first", "loss_last")
TARGETS = {
    "qv": ("lora", {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}),
    "all-linear": ("lora", {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"}),
    "prefix": ("ptuning-v2", {"num_virtual_tokens": 128}),
}


def model_config(shape: str) -> Any:
    from transformers import GlmConfig, LlamaConfig

    if shape == "llama2-7b":
        return LlamaConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        )  # fmt: skip
    if shape == "chatglm3-6b":
        return GlmConfig(
            vocab_size=65024, hidden_size=4096, intermediate_size=13696, num_hidden_layers=28,
            num_attention_heads=32, num_key_value_heads=2, head_dim=128, partial_rotary_factor=0.5,
            attention_bias=True, max_position_embeddings=8192, pad_token_id=0, eos_token_id=[2],
        )  # fmt: skip
    if shape == "tiny":
        return LlamaConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        )  # fmt: skip
    raise SystemExit(f"unknown shape {shape!r}: llama2-7b, chatglm3-6b or tiny")


def length_mix(n: int, vocab: int, max_len: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Realistic instruction data: log-normal lengths around 300 tokens, the first ~70% is the prompt."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(min(max_len, max(32, rng.lognormvariate(math.log(300), 0.6))))
        prompt = int(length * 0.7)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


class StepTimer:
    """Wall time and real tokens of every optimizer step (device synchronised at step boundaries)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []
        self._t = 0.0
        self._seen = 0
        self.trainer: Any = None

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer._t = time.perf_counter()
                timer._seen = timer.trainer.tokens_seen

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.times.append(time.perf_counter() - timer._t)
                timer.tokens.append(timer.trainer.tokens_seen - timer._seen)

        return _CB()


def budget_for(spec: str, targets: str) -> int:
    """'qv=12288,all-linear=8192' or a plain number for all."""
    if spec.isdigit():
        return int(spec)
    table = dict(item.split("=") for item in spec.split(","))
    return int(table.get(targets, 8192))


def run_one(
    shape: str,
    targets: str,
    recipe: str,
    args: argparse.Namespace,
    data: list[dict],
    low_memory: bool = False,
) -> dict:
    from transformers import AutoModelForCausalLM

    from finetune.config import load_finetune_config
    from finetune.methods import get_method
    from finetune.speed import varlen
    from finetune.train import build_trainer

    method, settings = TARGETS[targets]
    budget = 6144 if low_memory else budget_for(args.budget, targets)
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(
            model_config(shape), dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa"
        )
    n_params = sum(p.numel() for p in model.parameters())
    if low_memory:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_method(method).wrap(model, settings)
    training = {
        "max_steps": args.steps if recipe == "kb" else args.plain_steps, "logging_steps": 1, "learning_rate": 1e-4, "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 2, "save_strategy": "no", "report_to": "none", "seed": 0,
        "dataloader_drop_last": True,
    }  # fmt: skip
    cfg = load_finetune_config(
        data={
            "method": method,
            "training": training,
            "data": {"max_source_len": args.max_len - 256, "max_target_len": 256},
            "speed": {
                "fast_path": "always" if recipe == "kb" else "never",
                "token_budget": budget,
                "compile": not args.no_compile,
            },
        }
    )
    varlen.STATS.update(flash=0, reference=0)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _, fast = build_trainer(
            cfg, model, 0, data, [], Path(tmp), progress=False, callbacks=[timer.callback()]
        )
        timer.trainer = trainer
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # stdout carries only the result lines
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        if fast is not None:
            fast.restore()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    steady = slice(args.warmup, None)
    secs, toks = sum(timer.times[steady]), sum(timer.tokens[steady])
    tok_s = toks / secs if secs else 0.0
    row = {
        "shape": shape,
        "method": method,
        "targets": targets,
        "recipe": recipe,
        "tok_per_s": round(tok_s, 1),
        "mfu": round(tok_s * 4 * n_params / PEAK_FLOPS, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
    }
    details = {
        **row,
        "params": n_params,
        "budget": budget if recipe == "kb" else None,
        "gradient_checkpointing": low_memory,
        "step_seconds": [round(t, 4) for t in timer.times],
        "step_tokens": timer.tokens,
        "losses": [round(v, 4) for v in losses],
        "compiled": bool(fast and fast.compiled),
        "attention_calls": dict(varlen.STATS),
    }
    del trainer, model, fast
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return details


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="chatglm3-6b,llama2-7b")
    p.add_argument("--targets", default="qv,prefix,all-linear")
    p.add_argument("--recipes", default="plain,kb")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument(
        "--plain-steps", type=int, default=40, help="plain: more steps, its padded shapes keep changing early"
    )
    p.add_argument("--warmup", type=int, default=3, help="steps left out of tokens/s (compilation)")
    p.add_argument(
        "--budget",
        default="qv=12288,prefix=12288,all-linear=8192",
        help="kb: tokens per packed row, per targets (keeps peak memory under 80 GiB on the 6-7B shapes)",
    )
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="also run kb LoRA q/v with checkpointing, budget 6144 (the 24 GiB setting)",
    )
    p.add_argument("--max-len", type=int, default=2048, help="longest example")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", help="append the JSON lines to this file too")
    p.add_argument("--details", help="append per-step details as JSON lines to this file")
    args = p.parse_args()
    for shape in args.shapes.split(","):
        vocab = model_config(shape).vocab_size
        data = length_mix(2000, vocab, args.max_len)
        runs = [(t, r, False) for t in args.targets.split(",") for r in args.recipes.split(",")]
        if args.low_memory:
            runs.append(("qv", "kb", True))
        for targets, recipe, low_memory in runs:
            try:
                details = run_one(shape, targets, recipe, args, data, low_memory)
            except torch.OutOfMemoryError as e:
                print(f"# {shape} {targets} {recipe}: out of memory: {str(e)[:200]}", file=sys.stderr)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            row = {k: details[k] for k in KEYS}
            if low_memory:
                row["recipe"] = "kb-low-memory"
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            if args.details:
                with open(args.details, "a", encoding="utf-8") as f:
                    f.write(json.dumps(details) + "\n")


if __name__ == "__main__":
    main()
