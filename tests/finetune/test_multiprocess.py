"""Two training processes on the CPU (gloo) under DeepSpeed ZeRO-2, through `kb finetune --gpus 2`:
the per-step losses must match a single-process run with the same global batch."""

from __future__ import annotations

import json

import pytest

from kb.cli import main
from kb.registry import Registry
from tests.finetune.test_run import tiny_model, train_file  # noqa: F401 - fixtures

pytest.importorskip("deepspeed")

COMMON = [
    "--set",
    "finetune.training.max_steps=6",
    "--set",
    "finetune.training.logging_steps=1",
    "--set",
    "finetune.training.lr_scheduler_type=constant",
    "--set",
    "finetune.training.warmup_steps=0",
    "--set",
    "finetune.training.seed=7",
    "--set",
    "finetune.lora.target_modules=all-linear",
    "--set",
    "finetune.lora.dropout=0.0",
    "--set",
    "finetune.training.learning_rate=0.02",
]


def _losses(kb) -> list[float]:
    a = Registry(kb).active()
    return [
        r["loss"] for r in map(json.loads, (a.path / "curve.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.slow
def test_zero2_two_processes_matches_one(tiny_model, train_file, tmp_path):  # noqa: F811
    base = ["finetune", "--model", str(tiny_model), "--data", str(train_file), "--method", "lora", *COMMON]
    # Global batch 4 both ways: 1 process × 4, or 2 processes × 2.
    assert (
        main(
            [
                *base,
                "--kb",
                str(tmp_path / "one"),
                "--set",
                "finetune.training.per_device_train_batch_size=4",
                "--deepspeed",
                "zero2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *base,
                "--kb",
                str(tmp_path / "two"),
                "--gpus",
                "2",
                "--deepspeed",
                "zero2",
                "--set",
                "finetune.training.per_device_train_batch_size=2",
            ]
        )
        == 0
    )
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert one[-1] < one[0]
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-3, (one, two)
