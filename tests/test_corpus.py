"""The sample corpus and its QA set agree: evidence is in the documents, answers in the evidence,
and our own loaders keep every gold answer intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.loaders import load
from kb.eval.metrics import norm

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def test_check_qa_script_passes():
    r = subprocess.run([sys.executable, str(CORPUS / "check_qa.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _items():
    return [
        json.loads(line)
        for line in (CORPUS / "qa.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def test_qa_set_shape():
    items = _items()
    assert len(items) >= 80 and sum(not i["answerable"] for i in items) >= 12
    assert {i["lang"] for i in items} == {"zh", "en"}


@pytest.mark.parametrize("source", sorted({i["source"] for i in _items() if i["answerable"]}))
def test_loaders_keep_gold_answers(source):
    docs = load(CORPUS / source, source)
    text = norm("\n".join(d.text for d in docs))
    for item in (i for i in _items() if i["source"] == source):
        assert any(norm(a) in text for a in item["answers"]), (item["id"], item["answers"])
