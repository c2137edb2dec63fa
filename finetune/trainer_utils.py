"""Trainer pieces: real-token counting (tokens/s in every log line) and a training curve on disk."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback


class TokenCountingTrainer(Trainer):
    """Counts the real (non-padding) tokens it trains on, so tokens/s cannot be inflated by padding."""

    tokens_seen = 0
    _t0: float | None = None

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        mask = inputs.get("attention_mask")
        # Packed batches carry no attention mask; their only padding is a trailing all -100 segment.
        self.tokens_seen += int(mask.sum()) if mask is not None else int((inputs["labels"] != -100).sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._t0 is not None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            logs["tokens"] = self.tokens_seen * world
            logs["tok_s"] = round(self.tokens_seen * world / max(time.perf_counter() - self._t0, 1e-9), 1)
        super().log(logs, *args, **kwargs)


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
