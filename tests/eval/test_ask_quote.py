"""`kb ask` when the streamed answer is replaced by a quoted source sentence (kb/fallback.py)."""

from __future__ import annotations

from kb.cli import main
from tests.eval.conftest import fake_adapter


def test_ask_prints_the_quote_after_the_rejected_stream(kb_env, capsys):
    kb, _, common = kb_env
    fake_adapter(kb, "lora-v1")  # its reply to 年假有几天 is the unsupported 年假是5天
    common = [*common, "--adapter", "lora-v1"]
    quoting = [*common, "--set", "answer.quote_min_alignment=0.75"]  # kb_env turns it off
    capsys.readouterr()
    assert main(["ask", "年假有几天？", *quoting]) == 0
    out = capsys.readouterr().out
    streamed, note, quote = out.splitlines()[:3]
    assert streamed == "年假是5天。"
    assert note.startswith("↳ not supported by the sources")
    assert "10天" in quote and quote.endswith("[1]")
    assert main(["ask", "年假有几天？", *common]) == 0  # quoting off: refused, nothing after the stream
    out = capsys.readouterr().out
    assert "↳" not in out and "10天" not in out
