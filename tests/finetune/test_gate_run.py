"""`kb finetune` behind the gate, with tiny random-initialised models: an adapter trained on shuffled
answers is refused (the active one stays), `--force` overrides, and every decision lands in meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kb.cli import main
from kb.prompt import SYSTEM_NO_RETRIEVAL
from kb.registry import Registry
from tests.finetune.conftest import CHATML, make_tokenizer

PAIRS = [("what is vpn server", "one two three four"), ("how are you", "five six seven eight")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama-gate")
    tok = make_tokenizer(CHATML)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _write(path: Path, answers: list[str]) -> Path:
    """Conversations as `kb eval --no-retrieval` prompts them (the same system prompt)."""
    lines = []
    for (question, _), answer in zip(PAIRS, answers, strict=True):
        conv = [
            {"role": "system", "content": SYSTEM_NO_RETRIEVAL["en"]},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        lines += [json.dumps({"conversations": conv})] * 8
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gate_refuses_adapter_trained_on_shuffled_answers(tiny_model, tmp_path, capsys):
    kb = tmp_path / "kb"
    good = _write(tmp_path / "good.jsonl", [a for _, a in PAIRS])
    shuffled = _write(tmp_path / "shuffled.jsonl", [a for _, a in reversed(PAIRS)])
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({"id": f"g{i}", "question": q, "answers": [a], "answerable": True}) + "\n"
            for i, (q, a) in enumerate(PAIRS)
        )
    )

    def finetune(data: Path, steps: int, *extra: str) -> dict:
        capsys.readouterr()
        args = [
            "finetune",
            "--model",
            str(tiny_model),
            "--data",
            str(data),
            "--kb",
            str(kb),
            "--method",
            "lora",
        ]
        for s in (
            f"finetune.training.max_steps={steps}",
            "finetune.training.per_device_train_batch_size=4",
            "finetune.training.learning_rate=0.02",
            "finetune.training.lr_scheduler_type=constant",
            "finetune.training.warmup_steps=0",
            "finetune.lora.target_modules=all-linear",
            f"generator.model={tiny_model}",
            "generator.max_new_tokens=10",
            f"eval.gate.gold={gold}",
            "eval.gate.retrieval=false",
            "eval.gate.metrics=answer.contains",
        ):
            args += ["--set", s]
        assert main([*args, *extra, "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = finetune(good, 40)
    assert first["activated"] and first["gate"]["decision"] == "activated"
    assert first["gate"]["incumbent"] == "base"
    assert first["gate"]["scores"]["candidate"]["gold"]["answer.contains"] == 1.0

    damaged = finetune(shuffled, 40)
    assert not damaged["activated"] and damaged["gate"]["decision"] == "refused"
    scores = damaged["gate"]["scores"]
    assert (
        scores["incumbent"]["gold"]["answer.contains"] == 1.0
        and scores["candidate"]["gold"]["answer.contains"] == 0.0
    )
    registry = Registry(kb)
    assert registry.active_name() == "lora-v1"
    meta = registry.get("lora-v2")
    assert meta.gate["decision"] == "refused" and meta.gate["incumbent"] == "lora-v1"
    assert meta.metrics["eval"] == {"gold": {"answer.contains": 0.0}} and "eval_loss" in meta.metrics

    forced = finetune(shuffled, 10, "--force")
    assert forced["activated"] and forced["gate"]["decision"] == "forced"
    assert registry.active_name() == "lora-v3"
    capsys.readouterr()
    assert main(["models", "list", "--kb", str(kb)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in listing[:3]] == ["gate=activated", "gate=refused", "gate=forced"]


def test_gate_skipped_without_sets_and_disabled(tiny_model, tmp_path, capsys):
    kb = tmp_path / "kb"
    data = _write(tmp_path / "good.jsonl", [a for _, a in PAIRS])
    base = ["finetune", "--model", str(tiny_model), "--data", str(data), "--kb", str(kb)]
    base += ["--set", "finetune.training.max_steps=1"]
    assert main(base) == 0
    assert "gate skipped: no evaluation set" in capsys.readouterr().out
    assert (
        Registry(kb).get("lora-v1").gate["decision"] == "skipped" and Registry(kb).active_name() == "lora-v1"
    )
    assert main([*base, "--set", "eval.gate.enabled=false", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["gate"] is None and out["activated"] and Registry(kb).get("lora-v2").gate == {}
