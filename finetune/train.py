"""The training run behind `kb finetune`: load base → wrap with the method → encode data → HF Trainer.

Runs in-process for one device, or as each rank under torchrun for several (`python -m finetune.train
RUN_DIR`, started by finetune.launch). Rank 0 saves the adapter into RUN_DIR/adapter; publishing it in
the registry is the caller's job (finetune.run).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.config import FinetuneConfig, load_finetune_config
from kb.errors import ConfigError, DataError


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    eval_loss: float | None
    tokens: int
    tokens_per_s: float
    peak_memory_gib: float
    seconds: float
    train_examples: int
    skipped: dict[str, int]
    fast_path: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def one_gpu_per_process(args: Any) -> None:
    """Train on one GPU per process. One process on a host with several GPUs would otherwise have the
    Trainer wrap the model in nn.DataParallel over all of them (n_gpu micro-batches per step, which
    breaks the fast path's one packed row per batch and is slower than one GPU for adapters).
    `kb finetune --gpus N` is how to use N."""
    if args.n_gpu > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        print(f"kb finetune: training on 1 of {args.n_gpu} GPUs; --gpus N uses N", file=sys.stderr)
        args._n_gpu = 1  # read by TrainingArguments.n_gpu, which decides DataParallel and batch sizes


def pick_precision(cfg: FinetuneConfig) -> dict[str, Any]:
    """TrainingArguments precision flags and the load dtype. bf16 where supported; fp16 on older GPUs with
    loss scaling and a larger Adam epsilon (1e-4: 1e-8 underflows to 0 in fp16 and the update blows up);
    fp32 on CPU, where half-precision kernels are slow or missing."""
    cuda = torch.cuda.is_available()
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else "float32"
    if dtype != "float32" and not cuda:
        raise ConfigError(f"dtype: {dtype} training needs a GPU; use float32 (or auto) on the CPU")
    flags: dict[str, Any] = {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}
    if dtype == "float16":
        flags["adam_epsilon"] = 1e-4
    # Weights stay fp32 under fp16 AMP (the scaler needs fp32 master weights); bf16 loads in bf16.
    return {"flags": flags, "load_dtype": torch.bfloat16 if dtype == "bfloat16" else torch.float32}


def load_base(cfg: FinetuneConfig, load_dtype: torch.dtype) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kb.generate.resolve import load_error, resolve_model

    source = resolve_model(cfg.model)
    kwargs: dict[str, Any] = {"dtype": load_dtype}
    if cfg.load_in:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"load_in: {cfg.load_in} loading needs a CUDA GPU (bitsandbytes); none is visible"
            )
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise ConfigError(
                f"load_in: {cfg.load_in} needs the bitsandbytes package: pip install bitsandbytes"
            ) from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=cfg.load_in == "8bit",
            load_in_4bit=cfg.load_in == "4bit",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as e:  # noqa: BLE001 - every load failure means "cannot use this model"
        raise load_error(source, e) from e
    return model, tokenizer, str(source)


def is_zero3(cfg: FinetuneConfig) -> bool:
    ds = cfg.deepspeed_config()
    return bool(ds) and int((ds.get("zero_optimization") or {}).get("stage", 0)) == 3


def gathered_trainable(model: Any, *, zero3: bool) -> Any:
    """Under ZeRO-3 each rank holds only a shard of every parameter (the others are empty tensors of
    shape [0]), so saving would write an empty adapter. This gathers the trainable ones (the adapter:
    LoRA matrices or the prefix encoder, a few MB) on every rank for the duration of the block."""
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def data_paths(cfg: FinetuneConfig) -> tuple[Path, Path | None]:
    train = Path(cfg.data.train) if cfg.data.train else Path(cfg.kb_dir) / "synth" / "train.jsonl"
    if not train.is_file():
        raise DataError(f"{train}: training data not found (run `kb synth` first, or set data.train)")
    val = (
        Path(cfg.data.validation) if cfg.data.validation else Path(cfg.kb_dir) / "synth" / "validation.jsonl"
    )
    return train, (val if val.is_file() else None)


def encode_file(
    path: Path, cfg: FinetuneConfig, tokenizer: Any, template: str
) -> tuple[list[dict], dict[str, int]]:
    from finetune.data import read_examples
    from finetune.templates import encode

    convs, stats = read_examples(
        path, strict=cfg.data.strict, max_chars=cfg.data.max_example_chars, keep=cfg.audience_filter()
    )
    out, skipped = [], dict(stats.skipped)
    for i, conv in enumerate(convs):
        try:
            ex = encode(conv, tokenizer, template, cfg.data.max_source_len, cfg.data.max_target_len)
        except DataError as e:
            raise DataError(f"{path}: example {i + 1}: {e}") from None
        if not any(label != -100 for label in ex["labels"]):
            skipped["no target tokens after truncation"] = (
                skipped.get("no target tokens after truncation", 0) + 1
            )
            continue
        out.append(ex)
    if not out:
        raise DataError(f"{path}: no usable examples ({stats.summary()})")
    return out, skipped


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(
    cfg: FinetuneConfig, run_dir: Path, *, resume: bool = False, verbose: bool = False, progress: bool = True
) -> TrainResult:
    from transformers import set_seed

    from finetune.methods import get_method
    from finetune.templates import ensure_pad_token, explain, template_for

    t0 = time.perf_counter()
    seed = int(cfg.training.get("seed", 42))
    set_seed(seed)
    random.seed(seed)
    precision = pick_precision(cfg)
    model, tokenizer, source = load_base(cfg, precision["load_dtype"])
    pad_id = ensure_pad_token(tokenizer)
    template = template_for(model.config, tokenizer) if cfg.data.template == "auto" else cfg.data.template
    train_path, val_path = data_paths(cfg)
    train_set, skipped = encode_file(train_path, cfg, tokenizer, template)
    val_set = encode_file(val_path, cfg, tokenizer, template)[0] if val_path else []
    if verbose and is_main_process():
        print(explain(train_set[0], tokenizer), file=sys.stderr)

    method = get_method(cfg.method)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = method.wrap(model, cfg.method_settings())
    trainer, curve, fast = build_trainer(cfg, model, pad_id, train_set, val_set, run_dir, progress=progress)
    if cuda := torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    last_ckpt = _last_checkpoint(run_dir / "checkpoints") if resume else None
    out = trainer.train(resume_from_checkpoint=str(last_ckpt) if last_ckpt else None)
    eval_loss = trainer.evaluate().get("eval_loss") if val_set else None
    if fast is not None:
        fast.restore()
    with gathered_trainable(trainer.model, zero3=is_zero3(cfg)):  # every rank enters: a collective
        method.save(trainer.model, run_dir / "adapter", main_process=is_main_process())
    if is_main_process():
        tokenizer.save_pretrained(run_dir / "adapter")  # pad token and chat template travel with it
    seconds = time.perf_counter() - t0
    train_secs = float(out.metrics.get("train_runtime", seconds))
    tokens = trainer.tokens_seen * int(os.environ.get("WORLD_SIZE", "1"))
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    losses = [r["loss"] for r in (curve.rows if curve else []) if "loss" in r]
    return TrainResult(
        steps=int(out.global_step),
        final_loss=losses[-1] if losses else out.training_loss,
        eval_loss=eval_loss,
        tokens=tokens,
        tokens_per_s=tokens / max(train_secs, 1e-9),
        peak_memory_gib=peak / 2**30,
        seconds=seconds,
        train_examples=len(train_set),
        fast_path=fast is not None,
        skipped=skipped,
    )


def build_trainer(
    cfg: FinetuneConfig,
    model: Any,
    pad_id: int,
    train_set: list[dict],
    val_set: list[dict],
    run_dir: Path,
    *,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> tuple[Any, Any, Any]:
    """The HF Trainer for an already wrapped model and encoded examples: (trainer, curve, fast_path).

    On a GPU (speed.fast_path) batches are packed rows of speed.token_budget tokens with varlen
    attention and a fused loss; `fast_path.restore()` must run before the model is saved or used.
    """
    from transformers import TrainingArguments

    from finetune.collate import PackedCollator, PadCollator, pack_examples, prepare_model_for_packing
    from finetune.speed import FastPath, VarlenCollator, fast_path_active
    from finetune.trainer_utils import CurveCallback, FastPathTrainer, TokenCountingTrainer

    precision = pick_precision(cfg)
    targs = dict(cfg.training)
    max_len = cfg.data.max_source_len + cfg.data.max_target_len
    ds = cfg.deepspeed_config()
    zero3 = is_zero3(cfg)
    fast = None
    if fast_path_active(cfg.speed.fast_path) and not cfg.load_in:
        budget = cfg.speed.token_budget or int(targs.get("per_device_train_batch_size", 8)) * max_len
        if budget < max_len:
            raise ConfigError(
                f"speed.token_budget: {budget} is below the longest example (max_source_len + max_target_len "
                f"= {max_len})"
            )
        # ZeRO-3 gathers each layer's weights in hooks around its forward, which compiled layers skip.
        fast = FastPath(
            model, loss_chunk=cfg.speed.loss_chunk, compile=cfg.speed.compile and not zero3, top_level=zero3
        )
        train_set = pack_examples(train_set, budget)
        val_set = pack_examples(val_set, budget) if val_set else []
        collator: Any = VarlenCollator(pad_id, budget, fast.prefix_len, max_length=max_len)
        targs.update(per_device_train_batch_size=1, per_device_eval_batch_size=1, prediction_loss_only=True)
    elif cfg.data.packing:
        train_set = pack_examples(train_set, max_len)
        val_set = pack_examples(val_set, max_len) if val_set else []
        collator = PackedCollator(pad_id, flatten=prepare_model_for_packing(model))
    else:
        collator = PadCollator(pad_id)

    targs.update({k: v for k, v in precision["flags"].items() if k not in cfg.training})
    targs.update(
        output_dir=str(run_dir / "checkpoints"),
        remove_unused_columns=False,
        disable_tqdm=not progress or not is_main_process(),
    )
    if ds:
        targs["deepspeed"] = ds
    if val_set:
        targs.setdefault("eval_strategy", "epoch")
    if not torch.cuda.is_available():
        targs.setdefault("use_cpu", True)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            targs.setdefault("ddp_backend", "gloo")
    try:
        args = TrainingArguments(**targs)
    except TypeError as e:
        raise ConfigError(f"training: {e} (keys pass through to transformers.TrainingArguments)") from None
    except ValueError as e:
        raise ConfigError(f"training: {e}") from None
    one_gpu_per_process(args)

    curve = CurveCallback(run_dir / "curve.jsonl") if is_main_process() else None
    kwargs: dict[str, Any] = {"fast_path": fast} if fast is not None else {}
    trainer = (FastPathTrainer if fast is not None else TokenCountingTrainer)(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=collator,
        callbacks=[*([curve] if curve else []), *(callbacks or [])],
        **kwargs,
    )
    return trainer, curve, fast


def _last_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a checkpoint
    without a readable one was cut off by a crash; it is removed (resuming from it would fail)."""
    if not path.is_dir():
        return None
    ckpts = sorted(
        (p for p in path.iterdir() if p.name.startswith("checkpoint-") and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in ckpts:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return ckpt
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of each rank under torchrun: `python -m finetune.train RUN_DIR [--resume]`."""
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    cfg = load_finetune_config(run_dir / "train_config.yaml")
    result = train(cfg, run_dir, resume="--resume" in argv)
    if is_main_process():
        (run_dir / "result.json").write_text(json.dumps(result.to_json()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
