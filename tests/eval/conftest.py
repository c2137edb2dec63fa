"""An ingested tiny knowledge base, a QA set about it, and a generator whose replies depend on the
question and on the adapter it was opened with (so base and adapter rows differ, deterministically)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb.config import GeneratorConfig
from kb.generate.base import GENERATORS, Generator, Message
from tests.conftest import write_corpus

QA = [
    {"id": "q1", "question": "年假有几天？", "answers": ["10天"], "source": "hr/leave.md",
     "evidence": "享有10天带薪年假", "answerable": True, "lang": "zh"},
    {"id": "q2", "question": "How do I reach the IT helpdesk?", "answers": ["extension 8021"],
     "source": "it/vpn.md", "evidence": "Call the IT helpdesk at extension 8021.", "answerable": True, "lang": "en"},
    {"id": "q3", "question": "食堂的营业时间是几点？", "answers": ["早上7点"], "source": "general/canteen.txt",
     "evidence": "食堂营业时间为早上7点到晚上8点", "answerable": True, "lang": "zh"},
    {"id": "q4", "question": "公司有健身房吗？", "answers": [], "source": "", "evidence": "", "answerable": False,
     "lang": "zh"},
]  # fmt: skip

# q3 names its subject as the document does (营业时间): asked "食堂几点开门？", the adapter's right answer
# is refused by the grounding check (alignment 0.37 < 0.4: 开门, in no document, outweighs 食堂).
# Replies per model ("" = active/unnamed, "none" = base) and question id.
REPLIES = {
    "none": {
        "q1": "员工入职满一年后享有10天带薪年假。",
        "q2": "Call the IT helpdesk at extension 8021.",
        "q3": "不知道。",
        "q4": "公司有健身房，在三楼。",
    },
    "lora-v1": {
        "q1": "年假是5天。",
        "q2": "Use the GlobalConnect client.",
        "q3": "食堂营业时间为早上7点到晚上8点。",
        "q4": "资料中没有提到健身房。",
    },
}


class KeyedGenerator(Generator):
    name = "keyed"

    def __init__(self, cfg: GeneratorConfig, **kwargs):
        self.replies = REPLIES["lora-v1" if cfg.adapter == "lora-v1" else "none"]

    def stream(self, messages: list[Message], *, max_new_tokens: int | None = None) -> Iterator[str]:
        content = messages[-1]["content"]
        for item in QA:
            if item["question"] in content:
                yield self.replies[item["id"]]
                return
        yield ""


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GENERATORS, "keyed", "tests.eval.conftest:KeyedGenerator")


@pytest.fixture
def kb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyed) -> tuple[Path, Path, list[str]]:
    """(kb dir, qa file, common CLI args) with the corpus ingested by the hashing embedder."""
    from ingest.pipeline import ingest
    from kb.config import load_config
    from kb.embed.hashing import HashingEmbedder

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KB_DIR", raising=False)
    kb = tmp_path / "kb"
    # Quoting off (kb/fallback.py): it would replace lora-v1's wrong q1 answer (5天) by the source's
    # 10天 and hide the difference between the two models these tests compare.
    sets = [
        "embedder.name=hashing",
        "generator.name=keyed",
        "chunk.size=120",
        "chunk.overlap=20",
        "answer.quote_min_alignment=0",
    ]
    cfg = load_config(overrides=[f"kb_dir={kb}", *sets])
    ingest([write_corpus(tmp_path / "corpus")], cfg, HashingEmbedder(), progress=False)
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in QA), encoding="utf-8")
    return kb, qa, ["--kb", str(kb), *(x for s in sets for x in ("--set", s))]


def fake_adapter(kb: Path, name: str) -> None:
    path = kb / "models" / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "meta.json").write_text(json.dumps({"name": name, "method": "lora", "created": 1.0}))
