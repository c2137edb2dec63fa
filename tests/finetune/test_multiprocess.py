"""Two training processes on the CPU (gloo) under DeepSpeed ZeRO-2, through `kb finetune --gpus 2`:
the per-step losses must match a single-process run with the same global batch."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from finetune.config import CONFIG_DIR
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


def _ds(stage: str, tmp_path) -> str:
    """The DeepSpeed config for a stage. ZeRO-3 with nothing kept whole (persistence threshold 0): the
    shipped config keeps weights under 1e6 elements (LoRA's) unsharded, which on these tiny models would
    leave nothing sharded to gather, save or reduce."""
    if stage != "zero3":
        return stage
    cfg = yaml.safe_load((CONFIG_DIR / "ds_zero3.yaml").read_text())
    cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / "ds_zero3_all_sharded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


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


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("method,lr", [("lora", "0.02"), ("ptuning-v2", "0.2")])
def test_fast_path_two_processes_matches_one(tiny_model, train_file, tmp_path, method, lr, stage):  # noqa: F811
    """The GPU trainer (packed rows, fused loss; forced on here, uncompiled) under DeepSpeed:
    2 processes × 1 packed row per step against 1 process accumulating 2 rows. Its loss is normalised by
    the token count of all ranks, so it must be scaled by the number of ranks as the Trainer's own
    compute_loss does — else both the gradients and the logged losses are 1/N too small. Under ZeRO-3
    the fused loss gathers the sharded output layer itself (the layer never runs as a module)."""
    base = [
        "finetune", "--model", str(tiny_model), "--data", str(train_file), "--method", method,
        "--deepspeed", _ds(stage, tmp_path), *COMMON,
        "--set", f"finetune.training.learning_rate={lr}",
        "--set", "finetune.speed.fast_path=always",
        "--set", "finetune.speed.compile=false",
        "--set", "finetune.speed.token_budget=40",
        "--set", "finetune.data.max_source_len=24",
        "--set", "finetune.data.max_target_len=16",
    ]  # fmt: skip
    one = [*base, "--kb", str(tmp_path / "one"), "--set", "finetune.training.gradient_accumulation_steps=2"]
    assert main(one) == 0
    assert main([*base, "--kb", str(tmp_path / "two"), "--gpus", "2"]) == 0
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert one[-1] < one[0]
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-3, (one, two)


@pytest.mark.slow
@pytest.mark.parametrize("method,lr", [("lora", "0.02"), ("ptuning-v2", "0.2")])
def test_zero3_two_processes_matches_one(tiny_model, train_file, tmp_path, method, lr):  # noqa: F811
    """ZeRO-3 shards the weights too (the prefix encoder's included), so every forward gathers them:
    2 processes × 2 examples against 1 process × 4, step by step."""
    base = [
        "finetune", "--model", str(tiny_model), "--data", str(train_file), "--method", method,
        "--deepspeed", _ds("zero3", tmp_path), *COMMON, "--set", f"finetune.training.learning_rate={lr}",
    ]  # fmt: skip
    assert (
        main(
            [*base, "--kb", str(tmp_path / "one"), "--set", "finetune.training.per_device_train_batch_size=4"]
        )
        == 0
    )
    two = [*base, "--kb", str(tmp_path / "two"), "--gpus", "2"]
    assert main([*two, "--set", "finetune.training.per_device_train_batch_size=2"]) == 0
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert one[-1] < one[0]
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-3, (one, two)
    # Saved whole, not as each rank's shard (empty tensors of shape [0]): the same weights both ways.
    a, b = (
        load_file(Registry(tmp_path / k).active().path / "adapter_model.safetensors") for k in ("one", "two")
    )
    assert a.keys() == b.keys() and all(a[k].numel() > 0 for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
