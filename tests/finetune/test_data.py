from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.data import BAD_MESSAGE, BAD_ORDER, BAD_ROLE, EMPTY, NO_ASSISTANT, read_examples, write_examples
from kb.errors import DataError


def jsonl(path: Path, *records) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def qa(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_conversations_format(tmp_path):
    conv = [{"role": "system", "content": "be brief"}, *qa("年假几天？", "10天"), *qa("病假呢？", "5天")]
    convs, stats = read_examples(
        jsonl(tmp_path / "a.jsonl", {"conversations": conv}, {"messages": qa("q", "a")})
    )
    assert convs == [conv, qa("q", "a")]
    assert (stats.records, stats.kept, stats.n_skipped) == (2, 2, 0)


def test_top_level_tools_move_onto_the_system_turn(tmp_path):
    tools = [{"name": "track"}]
    path = jsonl(
        tmp_path / "t.jsonl",
        {"tools": tools, "conversations": [{"role": "system", "content": "s"}, *qa("q", "a")]},
        {"tools": tools, "conversations": qa("q", "a")},
    )
    (with_system, without), _ = read_examples(path)
    assert with_system[0] == {"role": "system", "content": "s", "tools": tools}
    assert without[0] == {"role": "system", "content": "", "tools": tools}
    assert without[1:] == qa("q", "a")


def test_alpaca_format(tmp_path):
    path = jsonl(
        tmp_path / "alpaca.jsonl",
        {"instruction": "Translate", "input": "你好", "output": "Hello"},
        {"instruction": "Say hi", "input": "", "output": "hi", "system": "be brief"},
        {"instruction": "And now?", "output": "bye", "history": [["hello", "hi"]]},
    )
    convs, stats = read_examples(path)
    assert convs[0] == qa("Translate\n你好", "Hello")
    assert convs[1] == [{"role": "system", "content": "be brief"}, *qa("Say hi", "hi")]
    assert convs[2] == [*qa("hello", "hi"), *qa("And now?", "bye")]
    assert stats.kept == 3


def test_prompt_response_and_advertisegen(tmp_path):
    path = jsonl(
        tmp_path / "pr.jsonl",
        {"prompt": "VPN?", "response": "vpn.example-corp.cn"},
        {"content": "类型#裙*颜色#红色", "summary": "这款红色连衣裙"},
    )
    convs, _ = read_examples(path)
    assert convs == [qa("VPN?", "vpn.example-corp.cn"), qa("类型#裙*颜色#红色", "这款红色连衣裙")]


def test_json_list_blank_lines_and_bom(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"prompt": "q", "response": "a"}] * 2), encoding="utf-8")
    assert read_examples(tmp_path / "list.json")[0] == [qa("q", "a")] * 2
    (tmp_path / "bom.jsonl").write_text('\ufeff{"prompt": "q", "response": "a"}\n\n\n', encoding="utf-8")
    convs, stats = read_examples(tmp_path / "bom.jsonl")
    assert convs == [qa("q", "a")] and stats.records == 1


def test_broken_json_names_the_line(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"prompt": "q", "response": "a"}, "", '{"prompt": "q", "response": ')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        read_examples(path)
    (tmp_path / "bad.json").write_text('[\n{"prompt": "q"},\n{oops}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:3: not valid JSON"):
        read_examples(tmp_path / "bad.json")


def test_unknown_shape_names_the_keys(tmp_path):
    path = jsonl(tmp_path / "odd.jsonl", {"prompt": "q", "response": "a"}, {"question": "q", "answer": "a"})
    with pytest.raises(
        DataError, match=r"odd\.jsonl:2: unknown record shape with keys \['answer', 'question'\]"
    ):
        read_examples(path)
    with pytest.raises(DataError, match=r"text\.jsonl:1: expected a JSON object, got str"):
        read_examples(jsonl(tmp_path / "text.jsonl", '"q and a"'))


BAD = [
    (BAD_ROLE, {"conversations": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]}),
    (EMPTY, {"prompt": "q", "response": "  "}),
    (EMPTY, {"conversations": [{"role": "system", "content": ""}, *qa("q", "a")]}),
    (NO_ASSISTANT, {"conversations": [{"role": "user", "content": "q"}]}),
    (BAD_ORDER, {"conversations": [*qa("q", "a")[:1], *qa("q", "a")]}),
    (BAD_ORDER, {"conversations": [{"role": "assistant", "content": "a"}, *qa("q", "a")]}),
    (BAD_ORDER, {"conversations": [*qa("q", "a"), {"role": "user", "content": "q"}]}),
    (BAD_ORDER, {"conversations": [*qa("q", "a"), {"role": "system", "content": "s"}, *qa("q", "a")]}),
    (BAD_ORDER, {"conversations": [qa("q", "a")[0], {"role": "tool", "content": "r"}, qa("q", "a")[1]]}),
    (
        BAD_MESSAGE,
        {"conversations": [{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}]},
    ),
    (BAD_MESSAGE, {"conversations": "user: q"}),
]


@pytest.mark.parametrize(("reason", "record"), BAD)
def test_malformed_conversation_is_a_counted_skip(tmp_path, reason, record):
    path = jsonl(tmp_path / "d.jsonl", {"prompt": "q", "response": "a"}, record, record)
    convs, stats = read_examples(path)
    assert convs == [qa("q", "a")]
    assert stats.skipped == {reason: 2} and stats.lines == {reason: [2, 3]}
    assert f"skipped 2: {reason} (lines 2, 3)" in stats.summary()
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {reason}"):
        read_examples(path, strict=True)


def test_tool_calls_are_a_sensible_order(tmp_path):
    conv = [
        {"role": "system", "content": "", "tools": [{"name": "weather"}]},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "metadata": "weather", "content": "weather()"},
        {"role": "observation", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    convs, stats = read_examples(jsonl(tmp_path / "tools.jsonl", {"conversations": conv}))
    assert convs == [conv] and stats.n_skipped == 0


def test_stats_keep_only_the_first_line_numbers(tmp_path):
    path = jsonl(tmp_path / "many.jsonl", *[{"prompt": "q", "response": ""}] * 8)
    _, stats = read_examples(path)
    assert stats.skipped == {EMPTY: 8} and stats.lines[EMPTY] == [1, 2, 3, 4, 5]
    assert "lines 1, 2, 3, 4, 5, ..." in stats.summary()


def test_write_round_trip(tmp_path):
    convs = [
        [{"role": "system", "content": "be brief"}, *qa("hello", "hi"), *qa("年假？", "10天")],
        qa("q", "a"),
    ]
    for fmt in ("conversations", "alpaca"):
        assert write_examples(tmp_path / fmt / "out.jsonl", convs, fmt=fmt) == 2
        assert read_examples(tmp_path / fmt / "out.jsonl")[0] == convs
    line = json.loads((tmp_path / "alpaca" / "out.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line == {
        "instruction": "年假？", "input": "", "output": "10天", "system": "be brief", "history": [["hello", "hi"]],
    }  # fmt: skip


def test_write_rejects_what_alpaca_cannot_hold(tmp_path):
    tool_conv = [*qa("q", "call"), {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(DataError, match="tool"):
        write_examples(tmp_path / "o.jsonl", [tool_conv], fmt="alpaca")
    with pytest.raises(DataError, match="unknown output format"):
        write_examples(tmp_path / "o.jsonl", [qa("q", "a")], fmt="sharegpt")
