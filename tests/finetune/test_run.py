"""`kb finetune` end to end on a tiny random-initialised model: train, publish, activate, serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kb.cli import main
from kb.config import GeneratorConfig
from kb.registry import Registry
from tests.finetune.conftest import CHATML, make_tokenizer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer(CHATML)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )  # the default 0.02 caps logits below what any adapter can fix
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "train.jsonl"
    conv = {
        "conversations": [
            {"role": "user", "content": "what is vpn server"},
            {"role": "assistant", "content": "one two three four"},
        ]
    }
    f.write_text("\n".join(json.dumps(conv) for _ in range(16)) + "\n")
    return f


def _finetune(tiny_model, train_file, kb, method, *extra) -> list[str]:
    args = [
        "finetune",
        "--model",
        str(tiny_model),
        "--data",
        str(train_file),
        "--kb",
        str(kb),
        "--method",
        method,
        "--json",
        "--set",
        "finetune.training.max_steps=15",
        "--set",
        "finetune.training.logging_steps=1",
        "--set",
        "finetune.training.per_device_train_batch_size=4",
        "--set",
        "finetune.training.lr_scheduler_type=constant",
        "--set",
        "finetune.training.warmup_steps=0",
        *extra,
    ]
    return args


@pytest.mark.parametrize("method,lr", [("lora", "0.02"), ("ptuning-v2", "0.2")])
def test_finetune_publishes_activates_and_serves(tiny_model, train_file, tmp_path, capsys, method, lr):
    kb = tmp_path / "kb"
    extra = ["--set", f"finetune.training.learning_rate={lr}"]
    if method == "ptuning-v2":
        extra += ["--set", "finetune.ptuning.num_virtual_tokens=4"]
    else:  # q/v alone barely moves a random 2-layer model in 15 steps
        extra += ["--set", "finetune.lora.target_modules=all-linear"]
    assert main(_finetune(tiny_model, train_file, kb, method, *extra)) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["name"] == f"{method}-v1" and report["activated"] and report["steps"] == 15
    adapter = Registry(kb).active()
    assert adapter.name == f"{method}-v1" and adapter.base_model == str(tiny_model)
    for f in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_config.yaml",
        "curve.jsonl",
        "meta.json",
    ):
        assert (adapter.path / f).is_file(), f
    losses = [
        r["loss"]
        for r in map(json.loads, (adapter.path / "curve.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert losses[-1] < losses[0] * 0.7, losses
    meta = json.loads((adapter.path / "meta.json").read_text())
    assert len(meta["data_sha256"]) == 64 and meta["metrics"]["tokens_per_s"] > 0
    assert not (kb / "models" / ".runs" / adapter.name).exists()

    from kb.generate.hf import HFGenerator

    msgs = [{"role": "user", "content": "what is vpn server"}]
    gcfg = GeneratorConfig(model=str(tiny_model), max_new_tokens=4)
    tuned = HFGenerator(gcfg, adapter_dir=str(adapter.path)).generate(msgs)
    base = HFGenerator(gcfg).generate(msgs)
    assert tuned != base and "one" in tuned

    # A second run, not activated; the later max_steps=1 overrides _finetune's 15.
    args = _finetune(
        tiny_model, train_file, kb, method, "--no-activate", "--set", "finetune.training.max_steps=1"
    )
    assert main([*args, *extra]) == 0
    assert [a.name for a in Registry(kb).list()] == [f"{method}-v1", f"{method}-v2"]
    assert Registry(kb).active_name() == f"{method}-v1"


def test_models_cli_and_merge(tiny_model, train_file, tmp_path, capsys):
    kb = tmp_path / "kb"
    assert (
        main(_finetune(tiny_model, train_file, kb, "lora", "--set", "finetune.training.learning_rate=0.02"))
        == 0
    )
    capsys.readouterr()
    assert main(["models", "list", "--kb", str(kb), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "lora-v1" and listed[0]["active"]
    assert main(["models", "activate", "none", "--kb", str(kb)]) == 0
    assert Registry(kb).active_name() is None
    out = tmp_path / "merged"
    assert main(["models", "merge", "lora-v1", "--kb", str(kb), "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and LlamaForCausalLM.from_pretrained(out) is not None


def test_bad_training_key_is_named(tiny_model, train_file, tmp_path, capsys):
    rc = main(
        _finetune(tiny_model, train_file, tmp_path / "kb", "lora", "--set", "finetune.training.no_such_arg=1")
    )
    assert rc == 2 and "no_such_arg" in capsys.readouterr().err


def test_missing_data_says_run_synth(tiny_model, tmp_path, capsys):
    rc = main(["finetune", "--model", str(tiny_model), "--kb", str(tmp_path / "kb")])
    assert rc == 2 and "kb synth" in capsys.readouterr().err
