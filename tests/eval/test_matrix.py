"""`kb eval --matrix`: every row equals the single run with the same settings; outputs and notes."""

from __future__ import annotations

import json

from kb.cli import main
from kb.eval.runner import flatten
from kb.registry import Registry
from tests.eval.conftest import fake_adapter


def _run(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _no_latency(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("latency_s")}


def test_matrix_rows_equal_single_runs(kb_env, capsys):
    kb, qa, common = kb_env
    fake_adapter(kb, "lora-v1")
    Registry(kb).activate("lora-v1")
    out = _run(capsys, str(qa), "--matrix", *common)
    rows = out["matrix"]
    assert [(r["model"], r["retrieval"]) for r in rows] == [
        ("base", True),
        ("base", False),
        ("lora-v1", True),
        ("lora-v1", False),
    ]
    for row in rows:
        flags = ["--base"] if row["model"] == "base" else ["--adapter", row["model"]]
        single = _run(capsys, str(qa), *flags, *([] if row["retrieval"] else ["--no-retrieval"]), *common)
        assert _no_latency({"model": row["model"], "retrieval": row["retrieval"], **flatten(single)}) == (
            _no_latency(row)
        )
    # The rows differ where the models do. With retrieval the base model answers q1 and q2 and refuses
    # q3 ("不知道") and q4 (its gym is in no source); the adapter answers q3 only.
    base, tuned = rows[0], rows[2]
    assert base["answer.contains"] == round(2 / 3, 4) and tuned["answer.contains"] == round(1 / 3, 4)
    assert base["refusal.precision"] == 0.5 and tuned["refusal.precision"] == round(1 / 3, 4)
    assert rows[1]["refusal.recall"] == 0.0 and rows[3]["refusal.precision"] == 1.0  # without retrieval
    assert base["retrieval.hit@1"] == tuned["retrieval.hit@1"] and rows[1]["retrieval.hit@1"] is None
    assert rows[1]["grounding.citation"] is None and base["grounding.citation"] == 1.0


def test_matrix_without_active_adapter_runs_base_rows_and_says_so(kb_env, capsys):
    kb, qa, common = kb_env
    out = _run(capsys, str(qa), "--matrix", *common)
    assert [(r["model"], r["retrieval"]) for r in out["matrix"]] == [("base", True), ("base", False)]
    assert "no adapter is active" in out["note"]
    assert main(["eval", str(qa), "--matrix", *common]) == 0
    captured = capsys.readouterr()
    assert "no adapter is active" in captured.err and "no adapter is active" in captured.out.splitlines()[-1]


def test_named_adapters_and_per_configuration_items(kb_env, capsys, tmp_path):
    kb, qa, common = kb_env
    fake_adapter(kb, "lora-v1")
    fake_adapter(kb, "lora-v2")
    out_dir = tmp_path / "run"
    out = _run(capsys, str(qa), "--adapters", "lora-v1,lora-v2", "--out", str(out_dir), *common)
    assert [r["model"] for r in out["matrix"]] == ["base", "base", "lora-v1", "lora-v1", "lora-v2", "lora-v2"]
    items = [json.loads(x) for x in (out_dir / "lora-v1.retrieval" / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in items] == ["q1", "q2", "q3", "q4"]
    assert items[2]["contains"] and items[3]["refused"]
    assert json.loads((out_dir / "matrix.json").read_text())["matrix"] == out["matrix"]
    assert (out_dir / "base.no-retrieval" / "summary.json").is_file() and (out_dir / "config.yaml").is_file()


def test_matrix_refuses_conflicting_flags_and_unknown_adapters(kb_env, capsys):
    kb, qa, common = kb_env
    assert main(["eval", str(qa), "--matrix", "--no-retrieval", *common]) == 2
    assert "--no-retrieval cannot be combined" in capsys.readouterr().err
    assert main(["eval", str(qa), "--adapters", "nope", *common]) == 2
    assert "no adapter named 'nope'" in capsys.readouterr().err
