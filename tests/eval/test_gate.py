"""The promotion gate: the pure decision, the evaluation sets, and a worse adapter refused end to end
with the keyed fake generator (the tiny-model training run is in tests/finetune/test_gate_run.py)."""

from __future__ import annotations

import json

import pytest

from kb.config import load_config
from kb.errors import DataError
from kb.eval.gate import decide, gate_lines, gate_sets, run_gate
from kb.eval.runner import read_qa
from kb.generate import get_generator
from tests.eval.conftest import fake_adapter

METRICS = ["answer.contains", "refusal.recall"]


def test_decide_accepts_within_tolerance_and_refuses_beyond():
    inc = {"gold": {"answer.contains": 0.50, "refusal.recall": 0.8}}
    ok = decide(
        {"gold": {"answer.contains": 0.49, "refusal.recall": 0.9}}, inc, metrics=METRICS, tolerance=0.02
    )
    assert ok.accepted and ok.regressions == []
    edge = decide(
        {"gold": {"answer.contains": 0.48, "refusal.recall": 0.8}}, inc, metrics=METRICS, tolerance=0.02
    )
    assert edge.accepted  # exactly at the tolerance is not a regression
    bad = decide(
        {"gold": {"answer.contains": 0.47, "refusal.recall": 0.9}}, inc, metrics=METRICS, tolerance=0.02
    )
    assert not bad.accepted and bad.regressions == ["gold answer.contains 0.4700 < 0.5000 - 0.02"]


def test_decide_checks_every_set_and_only_configured_metrics():
    inc = {"validation": {"answer.contains": 0.5, "answer.f1": 0.9}, "gold": {"answer.contains": 0.5}}
    cand = {"validation": {"answer.contains": 0.6, "answer.f1": 0.1}, "gold": {"answer.contains": 0.3}}
    d = decide(cand, inc, metrics=["answer.contains"], tolerance=0.0, names=("lora-v2", "lora-v1"))
    assert not d.accepted and len(d.regressions) == 1 and d.regressions[0].startswith("gold ")
    assert decide(cand, inc, metrics=["answer.contains"], tolerance=0.25).accepted
    lines = gate_lines(d.to_dict())
    assert lines[0] == "gate: lora-v2 against lora-v1 (tolerance 0)"
    assert any("gold" in x and "REGRESSED" in x for x in lines)


def test_decide_missing_values():
    # Not measured by the candidate while the incumbent was: counts as 0. Measured by neither: skipped.
    inc = {"gold": {"grounding.citation": 0.5, "grounding.faithfulness": None}}
    cand = {"gold": {"grounding.citation": None, "grounding.faithfulness": None}}
    metrics = ["grounding.citation", "grounding.faithfulness"]
    assert not decide(cand, inc, metrics=metrics, tolerance=0.1).accepted
    assert decide(cand, inc, metrics=metrics[1:], tolerance=0.0).accepted


def test_gate_sets(tmp_path, kb_env):
    kb, qa, _ = kb_env
    cfg = load_config(overrides=[f"kb_dir={kb}", "embedder.name=hashing"])
    assert gate_sets(cfg) == {}
    synth = kb / "synth"
    synth.mkdir()
    (synth / "validation_qa.jsonl").write_text(qa.read_text())
    cfg.eval.gate.gold = str(qa)
    cfg.eval.gate.limit = 2
    sets = gate_sets(cfg, train_path=tmp_path / "elsewhere" / "train.jsonl")
    assert list(sets) == ["validation", "gold"] and [i.id for i in sets["gold"]] == ["q1", "q2"]
    beside = tmp_path / "data"
    beside.mkdir()
    (beside / "validation_qa.jsonl").write_text(qa.read_text().splitlines()[3] + "\n")
    assert [i.id for i in gate_sets(cfg, beside / "train.jsonl")["validation"]] == ["q4"]
    cfg.eval.gate.validation = False
    assert list(gate_sets(cfg)) == ["gold"]
    cfg.eval.gate.gold = str(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no such QA file"):
        gate_sets(cfg)


def test_worse_adapter_refused_better_accepted(kb_env):
    kb, qa, _ = kb_env
    fake_adapter(kb, "lora-v1")  # the keyed generator's adapter answers worse than its base model
    cfg = load_config(
        overrides=[
            f"kb_dir={kb}",
            "embedder.name=hashing",
            "generator.name=keyed",
            f"eval.gate.gold={qa}",
            "answer.quote_min_alignment=0",  # see conftest.kb_env
        ]
    )
    cfg.eval.gate.metrics = ["answer.contains", "refusal.recall"]
    opened = []

    def open_generator(c):
        opened.append(c.generator.adapter)
        return get_generator(c.generator)

    sets = {"gold": read_qa(qa)}
    d = run_gate(cfg, "lora-v1", None, sets, open_generator=open_generator, progress=False)
    assert opened == ["none", "lora-v1"]  # each model loaded once
    assert not d.accepted and d.incumbent == "base"
    assert d.scores["candidate"]["gold"]["answer.contains"] == round(1 / 3, 4)
    assert d.scores["incumbent"]["gold"]["answer.contains"] == round(2 / 3, 4)
    assert d.regressions == ["gold answer.contains 0.3333 < 0.6667 - 0.02"]
    # The other way round (the base model as the candidate against lora-v1) is an improvement.
    flipped = run_gate(cfg, "base", "lora-v1", sets, progress=False)
    assert flipped.accepted and flipped.incumbent == "lora-v1"
    json.dumps(d.to_dict())  # storable in meta.json as it is
