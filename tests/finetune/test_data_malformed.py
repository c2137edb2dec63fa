"""Malformed training data: an error naming file and line, or a skip counted in the summary."""

from __future__ import annotations

import json

import pytest

from finetune.data import BAD_MESSAGE, BAD_ROLE, EMPTY, NO_ASSISTANT, TOO_LONG, read_examples
from kb.cli import main
from kb.errors import DataError
from tests.finetune.test_run import _finetune, tiny_model  # noqa: F401 - tiny_model is a fixture

GOOD = {
    "conversations": [{"role": "user", "content": "what is vpn"}, {"role": "assistant", "content": "one"}]
}


def _jsonl(path, *lines) -> str:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return str(path)


def test_not_utf8_names_the_line(tmp_path):
    f = _jsonl(
        tmp_path / "gbk.jsonl",
        json.dumps(GOOD),
        json.dumps(GOOD),
        '{"prompt": "年假", "response": "x"}'.encode("gbk"),
    )
    with pytest.raises(DataError, match=r"gbk\.jsonl:3: not UTF-8 text"):
        read_examples(f)


@pytest.mark.parametrize(
    "broken",
    ['{"conversations": [', "[" * 100_000 + "]" * 100_000, "not json at all", '{"a": 1} trailing'],
)
def test_broken_json_lines_name_the_line(tmp_path, broken):
    f = _jsonl(tmp_path / "broken.jsonl", json.dumps(GOOD), broken, json.dumps(GOOD))
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        read_examples(f)


def test_deeply_nested_json_list_is_a_data_error(tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep\.json: not valid JSON \(nested too deeply\)"):
        read_examples(f)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"conversations": []}, NO_ASSISTANT),  # empty conversation
        ({"messages": []}, NO_ASSISTANT),
        ({"conversations": "hello"}, BAD_MESSAGE),  # wrong type for the turn list
        ({"conversations": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}, BAD_ROLE),
        (
            {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 42}]},
            BAD_MESSAGE,
        ),
        (
            {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ["a"]}]},
            BAD_MESSAGE,
        ),
        (
            {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
            EMPTY,
        ),
        ({"conversations": [{"role": 1, "content": "q"}]}, BAD_MESSAGE),
        ({"conversations": ["just a string"]}, BAD_MESSAGE),
        ({"instruction": None, "output": "x"}, BAD_MESSAGE),
        ({"prompt": "q", "response": {"text": "a"}}, BAD_MESSAGE),
        ({"prompt": "q", "response": "a", "history": [[1, 2]]}, BAD_MESSAGE),
        ({"prompt": "q" * 200, "response": "a"}, TOO_LONG),  # over-long (limit 100 chars below)
    ],
)
def test_unusable_records_are_counted_skips_with_lines(tmp_path, record, reason):
    f = _jsonl(tmp_path / "d.jsonl", json.dumps(GOOD), json.dumps(record), json.dumps(GOOD))
    convs, stats = read_examples(f, max_chars=100)
    assert len(convs) == 2 and stats.skipped == {reason: 1} and stats.lines == {reason: [2]}
    assert f"skipped 1: {reason} (lines 2)" in stats.summary()
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {reason}"):
        read_examples(f, strict=True, max_chars=100)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"prompt": "q", "response": "a", "history": "not a list"}, r"history must be a list"),
        ({"prompt": "q", "response": "a", "history": [["only a question"]]}, r"history must be a list"),
        ({"question": "q", "answer": "a"}, r"unknown record shape"),
        ([1, 2, 3], r"expected a JSON object, got list"),
        (None, r"expected a JSON object, got NoneType"),
    ],
)
def test_records_of_the_wrong_shape_are_errors_naming_the_line(tmp_path, record, match):
    f = _jsonl(tmp_path / "shape.jsonl", json.dumps(GOOD), json.dumps(record))
    with pytest.raises(DataError, match=rf"shape\.jsonl:2: {match}"):
        read_examples(f)


def test_finetune_reports_skips_in_its_summary(tiny_model, tmp_path, capsys):  # noqa: F811
    data = _jsonl(
        tmp_path / "mixed.jsonl",
        *[json.dumps(GOOD)] * 6,
        json.dumps({"conversations": []}),
        json.dumps({"conversations": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}),
        json.dumps({"prompt": "what " * 100, "response": "one"}),
    )
    args = _finetune(tiny_model, data, tmp_path / "kb", "lora", "--set", "finetune.training.max_steps=1")
    args.remove("--json")
    args += ["--set", "finetune.data.max_example_chars=200"]
    assert main(args) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "6 examples, 3 skipped" in summary, summary
    assert f"{NO_ASSISTANT}: 1" in summary and f"{BAD_ROLE}: 1" in summary and f"{TOO_LONG}: 1" in summary


def test_finetune_on_nothing_usable_is_a_clear_error(tiny_model, tmp_path, capsys):  # noqa: F811
    data = _jsonl(tmp_path / "bad.jsonl", json.dumps({"conversations": []}), json.dumps({"messages": []}))
    assert main(_finetune(tiny_model, data, tmp_path / "kb", "lora")) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: no usable examples" in err and f"skipped 2: {NO_ASSISTANT} (lines 1, 2)" in err
    assert main(_finetune(tiny_model, _jsonl(tmp_path / "x.jsonl", "{oops"), tmp_path / "kb", "lora")) == 2
    assert "x.jsonl:1: not valid JSON" in capsys.readouterr().err
