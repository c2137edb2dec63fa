"""Trainer pieces: real-token counting (tokens/s in every log line) and a training curve on disk."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback


def real_tokens(inputs: dict[str, Any]) -> int:
    """Tokens of real examples in a batch (not padding), from whatever the collator gives."""
    if "real_tokens" in inputs:  # VarlenCollator counts them itself
        return int(inputs["real_tokens"])
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    # PackedCollator: padding is a trailing segment with positions 0, 1, 2, ... and labels -100; a row's
    # real tokens end where the last label that counts is (prompt-only tails cannot be told from padding).
    labels = inputs["labels"]
    counted = labels != -100
    last = torch.where(counted.any(1), counted.shape[1] - counted.flip(1).int().argmax(1), 0)
    return int(last.sum())


class TokenCountingTrainer(Trainer):
    """Counts the real (non-padding) tokens it trains on, so tokens/s cannot be inflated by padding."""

    tokens_seen = 0
    _t0: float | None = None

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        self.tokens_seen += real_tokens(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._t0 is not None:
            # Every rank logs at the same steps (the Trainer gathers the loss there), so the ranks' token
            # counts can be summed: packed rows differ in length, so rank 0's count × N would be off.
            tokens = self.tokens_seen
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                t = torch.tensor([tokens], dtype=torch.long, device=self.args.device)
                torch.distributed.all_reduce(t)
                tokens = int(t.item())
            elapsed = time.perf_counter() - self._t0
            logs["tokens"] = tokens
            logs["elapsed_s"] = round(elapsed, 3)  # since the first step began: bench/multigpu.py's clock
            logs["tok_s"] = round(tokens / max(elapsed, 1e-9), 1)
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not _zero3_prompt_learning(self.model):
            return super()._save(output_dir, state_dict)
        # The Trainer's _save runs on rank 0 only, but P-Tuning v2's saved prefix is a forward of its
        # encoder, whose weights ZeRO-3 shards: rank 0 would wait forever for the others to gather them.
        # Every rank runs peft's save (the state dict is computed everywhere, written by rank 0 alone).
        out = output_dir or self.args.output_dir
        self.model.save_pretrained(out, is_main_process=self.args.should_save)
        if self.args.should_save:
            torch.save(self.args, os.path.join(out, "training_args.bin"))


def _zero3_prompt_learning(model: Any) -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from finetune.speed.apply import prompt_learning

    return is_deepspeed_zero3_enabled() and prompt_learning(model)


class CurveCallback(TrainerCallback):
    """Appends every log record (loss, learning rate, tokens/s, eval loss) to curve.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("", encoding="utf-8")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class FastPathTrainer(TokenCountingTrainer):
    """Trainer on the GPU fast path: the model returns hidden states, the loss fuses lm_head and
    cross-entropy (finetune.speed.FastPath.loss)."""

    def __init__(self, *args: Any, fast_path: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path
        # compute_loss divides by the Trainer's num_items_in_batch (all accumulated micro-batches), so the
        # Trainer must not divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        inputs.pop("real_tokens", None)
        labels = inputs.pop("labels")
        if self.fast_path.compiled:
            # The number of packed examples changes from batch to batch: compile for any count at once.
            for key in ("cu_seq_lens_q", "cu_seq_lens_k", "kb_key_index"):
                if key in inputs:
                    torch._dynamo.mark_dynamic(inputs[key], 0)
        outputs = self.fast_path.forward(model, inputs)
        loss = self.fast_path.loss(outputs, labels, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts the tokens of every rank, and DDP / DeepSpeed average the ranks'
            # gradients: each rank's loss is scaled by the number of ranks, as Trainer.compute_loss does,
            # so N ranks give the gradient (and the logged loss) of one process with N× the batch.
            loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss
