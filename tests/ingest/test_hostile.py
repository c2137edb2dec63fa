"""`kb ingest` on a corpus of hostile and broken files (tests/ingest/hostile.py).

Run as a child process under an address-space limit and a wall-clock guard, so a loader that blows
up memory or hangs fails the test instead of the machine. Each bad file must get a specific reason
(skipped on purpose, or failed because it is broken), every good file must ingest and be found.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kb.config import load_config
from kb.embed.hashing import HashingEmbedder
from kb.retrieve import Retriever
from kb.store import Store
from tests.ingest.hostile import build

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT_MB = 2048  # RLIMIT_AS of the ingest process: virtual memory, imports included
GUARD_SECONDS = 300  # a hang guard for the 2-core test machine, not a timing assertion

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = {limit} * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, {root!r})
    from kb.cli import main
    t0 = time.perf_counter()
    rc = main({argv!r})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"rc": rc, "seconds": time.perf_counter() - t0,
                       "maxrss_mb": usage.ru_maxrss / 1024}}), flush=True)
""")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    return build(base / "corpus", base / "outside"), base / "kb"


@pytest.fixture(scope="module")
def ingested(hostile):
    h, kb = hostile
    argv = ["ingest", str(h.root), "--kb", str(kb), "--set", "embedder.name=hashing"]
    script = CHILD.format(limit=MEMORY_LIMIT_MB, root=str(ROOT), argv=argv)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=GUARD_SECONDS, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    usage = json.loads(out[-1])
    print(f"hostile ingest: {usage['seconds']:.1f}s, peak RSS {usage['maxrss_mb']:.0f} MB")
    messages = {}
    for line in re.split(r"[\r\n]+", proc.stderr):
        m = re.match(r"^(skipped|failed) (.+?): (.+)$", line)
        if m:
            messages[m.group(2)] = (m.group(1), m.group(3))
    return h, kb, usage, out[-2], messages


def test_each_bad_file_gets_its_specific_reason(ingested):
    h, _, usage, _, messages = ingested
    assert usage["rc"] == 0
    for source, (outcome, pattern) in h.bad.items():
        assert source in messages, f"{source}: no message"
        got_outcome, reason = messages[source]
        assert got_outcome == outcome and re.search(pattern, reason), (source, messages[source])
    assert set(messages) == set(h.bad), set(messages) ^ set(h.bad)


def test_summary_line_counts_skipped_and_failed(ingested):
    h, _, _, summary, _ = ingested
    n_skipped = sum(1 for o, _ in h.bad.values() if o == "skipped")
    n_failed = len(h.bad) - n_skipped
    assert f"{len(h.good)} added" in summary
    assert f"{n_skipped} skipped, {n_failed} failed" in summary, summary


def test_every_good_file_is_searchable_and_nothing_from_outside(ingested):
    h, kb, _, _, _ = ingested
    store = Store.open(kb)
    assert {f.source for f in store.files()} == set(h.good)
    cfg = load_config(data={"kb_dir": str(kb), "embedder": {"name": "hashing"}})
    retriever = Retriever(store, HashingEmbedder(), cfg.retrieval)
    for source, phrase in h.good.items():
        hits = retriever.search(phrase, 3)
        assert hits and hits[0].chunk.source == source, (phrase, [x.chunk.source for x in hits])
    text = " ".join(c.text for c in store.iter_chunks())
    for secret in h.never:
        assert secret not in text
    assert "buried" not in text  # the over-deep page was not half-read either


def test_upload_names_with_traversal_are_refused(tmp_path):
    from ui.docs import save_upload

    cfg = load_config(data={"kb_dir": str(tmp_path / "kb")})
    folder = tmp_path / "uploads"
    for name in ("../evil.md", "..\\evil.md", "a/../../b.md", "..", ".hidden.md", "/etc/passwd.md"):
        with pytest.raises(ValueError):
            save_upload(folder, name, b"# x\n\ntext\n", cfg)
    assert not (tmp_path / "evil.md").exists() and not Path("/etc/passwd.md").exists()
    assert not folder.exists() or not any(folder.iterdir())
    saved = save_upload(folder, "ok.md", b"# ok\n\ntext\n", cfg)
    assert saved.parent == folder and saved.read_bytes().startswith(b"# ok")


def test_html_just_under_the_depth_limit_loads(tmp_path):
    from ingest.loaders import load
    from kb.config import IngestConfig
    from kb.errors import FileSkipped
    from tests.ingest.hostile import deep_html

    limits = IngestConfig()
    # <html><body> are two levels of the nesting: this page sits exactly at the limit.
    (doc,) = load(deep_html(tmp_path / "ok.html", limits.max_html_depth - 2), "ok.html", limits)
    assert doc.text == "buried"
    with pytest.raises(FileSkipped, match="nested more than"):
        load(deep_html(tmp_path / "deep.html", limits.max_html_depth - 1), "deep.html", limits)
