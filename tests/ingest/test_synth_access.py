"""Training data respects access control: `kb synth` labels every pair and example with its source's
departments, never shows a restricted distractor in a public example, and `kb finetune` keeps only
its audience's examples (public by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.config import FinetuneConfig
from finetune.data import OTHER_AUDIENCE, read_examples
from ingest.pipeline import ingest
from ingest.synth import synthesize
from kb.config import load_config
from kb.embed.hashing import HashingEmbedder
from kb.errors import ConfigError
from kb.store import Store
from tests.conftest import write_corpus

DOCS = {
    **{
        f"finance/budget{i}.md": f"# 预算{i}\n\n第{i}号项目的预算为{300 + i}万元，由财务总监审批。\n"
        for i in range(4)
    },
    **{
        f"general/room{i}.md": f"# 会议室{i}\n\n第{i}号会议室可容纳{10 + i}人，需提前一天预订。\n"
        for i in range(4)
    },
}


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture
def synth_out(tmp_path: Path):
    cfg = load_config(
        data={
            "kb_dir": str(tmp_path / "kb"),
            "embedder": {"name": "hashing"},
            "access": {"folders": {"finance": ["finance"]}},
        }
    )
    ingest([write_corpus(tmp_path / "docs", DOCS)], cfg, HashingEmbedder(), progress=False)
    out = tmp_path / "out"
    synthesize(
        cfg, Store.open(cfg.kb_dir), None, out_dir=out, use_llm=False, progress=False, validation_share=0.0
    )
    return cfg, out


def test_pairs_and_examples_are_labelled_and_public_examples_show_no_restricted_text(synth_out) -> None:
    cfg, out = synth_out
    pairs = _read(Path(cfg.kb_dir) / "synth" / "pairs.jsonl")
    assert pairs and all(
        p["departments"] == (["finance"] if p["source"].startswith("finance/") else []) for p in pairs
    )
    assert {p["collection"] for p in pairs} == {"finance", "general"}
    train = _read(out / "train.jsonl")
    assert {tuple(r["departments"]) for r in train} == {(), ("finance",)}
    public = [r for r in train if not r["departments"]]
    assert public
    for r in public:
        text = json.dumps(r["conversations"], ensure_ascii=False)
        assert "finance/" not in text and "预算" not in text and "万元" not in text


def test_finetune_audience_filter(synth_out, tmp_path: Path) -> None:
    _, out = synth_out
    path = out / "train.jsonl"
    n_all = len(_read(path))
    n_fin = sum(bool(r["departments"]) for r in _read(path))

    def kept(audience: str) -> tuple[int, int]:
        cfg = FinetuneConfig()
        cfg.data.audience = audience
        convs, stats = read_examples(path, keep=cfg.audience_filter())
        return len(convs), stats.skipped.get(OTHER_AUDIENCE, 0)

    assert kept("public") == (n_all - n_fin, n_fin)  # the default
    assert FinetuneConfig().data.audience == "public"
    assert kept("finance") == (n_all, 0)
    assert kept("hr") == (n_all - n_fin, n_fin)
    assert kept("all") == (n_all, 0)
    # Data not from kb synth has no labels: public; strict mode does not turn the exclusion into an error.
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"instruction": "q?", "output": "a"}) + "\n", encoding="utf-8")
    assert len(read_examples(plain, strict=True, keep=FinetuneConfig().audience_filter())[0]) == 1
    bad = FinetuneConfig()
    bad.data.audience = "hr, no way"
    with pytest.raises(ConfigError, match="data.audience"):
        bad.validate()
