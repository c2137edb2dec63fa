"""Fuzz the loaders with hypothesis: random bytes and mutated valid files of every format must load or
raise LoadError (FileSkipped included), never another exception, never hang.

Bounded for the suite: derandomized, FUZZ_EXAMPLES examples per case (KB_FUZZ_EXAMPLES raises it for
a longer run), and a SIGALRM guard per example instead of a deadline, which a shared CPU would make
flaky. `pytest -s` prints how many examples each case ran.
"""

from __future__ import annotations

import io
import os
import signal
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.loaders import load
from kb.config import IngestConfig
from kb.errors import LoadError
from kb.schema import Document
from tests.ingest.hostile import good_docx

FUZZ_EXAMPLES = int(os.environ.get("KB_FUZZ_EXAMPLES", "60"))
GUARD_SECONDS = 20  # one example taking this long is a hang
LIMITS = IngestConfig()

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hang(Exception):
    pass


@contextmanager
def guard(seconds: int) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise Hang(f"a loader ran over {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


COUNTS: dict[str, int] = {}


def check(folder: Path, name: str, data: bytes, case: str) -> None:
    """Load `data` as file `name`; anything but Documents or a LoadError fails the test."""
    COUNTS[case] = COUNTS.get(case, 0) + 1
    path = folder / name
    path.write_bytes(data)
    try:
        with guard(GUARD_SECONDS):
            docs = load(path, name, LIMITS)
    except LoadError as e:
        assert e.path == str(path) and e.reason
        return
    assert isinstance(docs, list) and all(isinstance(d, Document) and d.source == name for d in docs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")
    print("\nfuzz examples:", COUNTS, "total", sum(COUNTS.values()))  # for the record (pytest -s)


def _seed_pdf(folder: Path) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_compression(False)  # content streams in the clear, so mutations reach the text operators
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Leave policy\nEmployees receive fifteen days of leave.")
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Expenses are filed within 60 days.")
    return bytes(pdf.output())


SEEDS = {
    "html": (
        "<html><head><meta charset='utf-8'><title>T</title></head><body><nav>menu</nav><main>"
        "<h1>报销</h1><p>员工应在60天内提交。</p><ul><li>a</li><li>b</li></ul>"
        "<table><tr><td>x</td><td>y</td></tr></table></main></body></html>"
    ).encode(),
    "md": "---\ntitle: 休假\n---\n休假制度\n====\n\n## 年假\n\n员工享有年假。\n\n```\n# code\n```\n".encode(),
    "txt": "第一章 总则\n食堂营业时间为早上7点到晚上8点。\nLunch is 11:30 to 13:30.\n".encode("gb18030"),
}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """A few byte-level edits of `seed`: overwrite, delete, insert, duplicate, truncate."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup", "truncate"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "dup":
            j = min(len(data), i + draw(st.integers(1, 256)))
            data[i:i] = data[i:j] * draw(st.integers(1, 20))
        else:
            del data[i:]
    return bytes(data)


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".html", ".md", ".txt"])
def test_random_bytes(folder, suffix):
    @FUZZ
    @given(data=st.binary(max_size=8192))
    def run(data: bytes) -> None:
        check(folder, f"random{suffix}", data, f"random{suffix}")

    run()


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_mutated_text_formats(folder, kind):
    @FUZZ
    @given(data=mutated(SEEDS[kind]))
    def run(data: bytes) -> None:
        check(folder, f"mutated.{kind}", data, f"mutated.{kind}")

    run()


def test_mutated_pdf(folder):
    seed = _seed_pdf(folder)
    assert load(_write(folder / "seed.pdf", seed), "seed.pdf")  # the seed itself loads

    @FUZZ
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        check(folder, "mutated.pdf", data, "mutated.pdf")

    run()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _docx_parts(folder: Path) -> dict[str, bytes]:
    path = good_docx(folder / "seed.docx", "Onboarding", "The kiwi checklist is sent on the first day.")
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_mutated_docx_archive(folder):
    seed = _rezip(_docx_parts(folder))

    @FUZZ
    @given(data=mutated(seed))
    def run(data: bytes) -> None:
        check(folder, "zipmut.docx", data, "mutated.docx (zip bytes)")

    run()


def test_mutated_docx_xml(folder):
    """Mutations inside the XML parts (document, styles, content types), zipped up again properly,
    so they reach python-docx instead of stopping at the zip layer."""
    parts = _docx_parts(folder)
    names = sorted(n for n in parts if n.endswith(".xml") or n.endswith(".rels"))

    @FUZZ
    @given(name=st.sampled_from(names), data=st.data())
    def run(name: str, data: st.DataObject) -> None:
        changed = dict(parts)
        changed[name] = data.draw(mutated(parts[name]))
        check(folder, "xmlmut.docx", _rezip(changed), "mutated.docx (xml parts)")

    run()
