"""Shared fixtures: a tiny bilingual corpus on disk and a config that needs no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.config import Config, load_config

DOCS = {
    "hr/leave.md": "# 休假制度\n\n## 年假\n\n员工入职满一年后享有10天带薪年假。年假最多可以累积到下一年的3月31日。\n\n"
    "## 病假\n\n病假需要提供医院证明，每年带薪病假为5天。\n",
    "it/vpn.md": "# VPN Guide\n\n## Connecting\n\nUse the GlobalConnect client and the server vpn.example-corp.cn. "
    "Passwords expire every 90 days.\n\n## Support\n\nCall the IT helpdesk at extension 8021.\n",
    "general/canteen.txt": "食堂营业时间为早上7点到晚上8点。午餐时间是11:30到13:30。\n",
}


def write_corpus(root: Path, docs: dict[str, str] | None = None) -> Path:
    for rel, text in (docs or DOCS).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(
        data={
            "kb_dir": str(tmp_path / "kb"),
            "embedder": {"name": "hashing"},
            "chunk": {"size": 120, "overlap": 20},
        }
    )
