"""A corpus of hostile and broken files, generated in a temporary folder, with what ingest must say
about each one. Shared by the hostile-ingest test and the loader fuzzer (which mutates the good files).

Every bad file maps to (outcome, reason pattern): "skipped" for files left out on purpose (a limit,
empty, no text layer, password, link) and "failed" for broken ones; every good file maps to a phrase
that a search must find in it.
"""

from __future__ import annotations

import os
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import docx
from fpdf import FPDF
from pypdf import PdfWriter

HUGE_MB = 200  # the "200 MB text file": sparse, so it costs no disk and no time to make


@dataclass
class Hostile:
    root: Path
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # source → (outcome, reason regex)
    good: dict[str, str] = field(default_factory=dict)  # source → a phrase search must find there
    never: list[str] = field(default_factory=list)  # text from outside the corpus that must not get in


def text_pdf(path: Path, lines: list[str]) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for line in lines:
        pdf.multi_cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def image_only_pdf(path: Path) -> Path:
    """Pages with drawings and no text layer, as a scanner without OCR produces."""
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 100, 60, style="F")
    pdf.output(str(path))
    return path


def good_docx(path: Path, heading: str, body: str) -> Path:
    d = docx.Document()
    d.add_heading(heading, level=1)
    d.add_paragraph(body)
    d.save(str(path))
    return path


def zip_bomb_docx(path: Path, unpacked_mb: int = 256) -> Path:
    """A .docx whose document.xml inflates to `unpacked_mb` MB of zeros from a few hundred KB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with zf.open("word/document.xml", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(unpacked_mb):
                f.write(block)
    return path


def deep_html(path: Path, depth: int = 1_000_000) -> Path:
    path.write_text(
        "<html><body>" + "<div>" * depth + "buried" + "</div>" * depth + "</body></html>", encoding="utf-8"
    )
    return path


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def build(root: Path, outside: Path, seed: int = 0) -> Hostile:
    """Write the corpus under `root` (links point into `outside`, which must lie outside it)."""
    rng = random.Random(seed)
    h = Hostile(root)
    for d in ("good", "pdf", "docx", "html", "txt", "empty", "enc", "links", "names"):
        (root / d).mkdir(parents=True, exist_ok=True)

    # Good files, one per format, each with a phrase found nowhere else.
    _write(root / "good/handbook.md", "# Handbook\n\nThe quarterly zebra audit happens every March.\n")
    h.good["good/handbook.md"] = "zebra audit"
    _write(root / "good/notes.txt", "仓库盘点在每月最后一个周五进行，由物流部负责。\n".encode("gb18030"))
    h.good["good/notes.txt"] = "仓库盘点"
    _write(
        root / "good/parking.html",
        "<html><body><main><h1>Parking</h1><p>Parking permits come from the facilities desk.</p>"
        "</main></body></html>",
    )
    h.good["good/parking.html"] = "Parking permits"
    text_pdf(root / "good/budget.pdf", ["Budget", "The flamingo budget was approved by the board in May."])
    h.good["good/budget.pdf"] = "flamingo budget"
    good_docx(root / "good/onboarding.docx", "Onboarding", "The kiwi checklist is sent on the first day.")
    h.good["good/onboarding.docx"] = "kiwi checklist"
    # Declared UTF-8, written in GBK: the declaration is wrong, the file is fine.
    _write(
        root / "enc/wrong_charset.html",
        '<html><head><meta charset="utf-8"></head><body><p>差旅报销须附发票原件。</p></body></html>'.encode(
            "gbk"
        ),
    )
    h.good["enc/wrong_charset.html"] = "差旅报销"

    # PDFs: truncated, password-protected, image-only.
    whole = text_pdf(root / "pdf/whole.tmp", ["Truncated", "This text is cut in half."]).read_bytes()
    (root / "pdf/whole.tmp").unlink()
    _write(root / "pdf/truncated.pdf", whole[: len(whole) // 2])
    h.bad["pdf/truncated.pdf"] = ("failed", r"corrupt or truncated PDF")
    writer = PdfWriter(clone_from=text_pdf(root / "pdf/plain.tmp", ["Locked", "Secret salaries."]))
    (root / "pdf/plain.tmp").unlink()
    writer.encrypt(user_password="secret", owner_password="owner")
    writer.write(root / "pdf/locked.pdf")
    h.bad["pdf/locked.pdf"] = ("skipped", r"encrypted PDF: a password is required")
    image_only_pdf(root / "pdf/scan.pdf")
    h.bad["pdf/scan.pdf"] = ("skipped", r"no text layer \(scanned\?\); OCR is not supported")

    # DOCX: a zip bomb, and random bytes with a .docx name.
    zip_bomb_docx(root / "docx/bomb.docx")
    h.bad["docx/bomb.docx"] = ("skipped", r"refused: .*zip bomb\?")
    _write(root / "docx/random.docx", rng.randbytes(50_000))
    h.bad["docx/random.docx"] = ("failed", r"not a valid DOCX: not a zip archive")

    # HTML with a million nested elements (about 11 MB).
    deep_html(root / "html/deep.html")
    h.bad["html/deep.html"] = ("skipped", r"nested more than \d+ levels deep \(ingest\.max_html_depth\)")

    # Binary data with a .txt name; a 200 MB text file (sparse).
    _write(root / "txt/binary.txt", rng.randbytes(100_000))
    h.bad["txt/binary.txt"] = ("failed", r"binary data, not text")
    with open(root / "txt/huge.txt", "wb") as f:
        f.truncate(HUGE_MB * 1024 * 1024)
    h.bad["txt/huge.txt"] = ("skipped", rf"{HUGE_MB}\.0 MB is over ingest\.max_file_mb=")

    # Empty files of every format.
    for suffix in (".txt", ".md", ".pdf", ".docx", ".html"):
        _write(root / f"empty/empty{suffix}", b"")
        h.bad[f"empty/empty{suffix}"] = ("skipped", r"empty file")
    _write(root / "empty/blank.md", "   \n\n\t\n")
    h.bad["empty/blank.md"] = ("skipped", r"empty file")

    # Invalid encodings: a UTF-16 byte order mark followed by an odd number of bytes.
    _write(root / "enc/bad_utf16.txt", b"\xff\xfe" + "半个字符".encode("utf-16-le") + b"\x41")
    h.bad["enc/bad_utf16.txt"] = ("failed", r"undecodable text: bad utf-16 after its byte order mark")

    # Links out of the corpus: to a file, to a system file, to a folder.
    outside.mkdir(parents=True, exist_ok=True)
    _write(outside / "secret.md", "# Secret\n\nThe outside password is tangerine-42.\n")
    h.never.append("tangerine-42")
    os.symlink(outside / "secret.md", root / "links/secret.md")
    h.bad["links/secret.md"] = ("skipped", r"symbolic link; not followed")
    os.symlink("/etc/passwd", root / "links/passwd.txt")
    h.bad["links/passwd.txt"] = ("skipped", r"symbolic link; not followed")
    os.symlink(outside, root / "links/outside_dir")  # a folder link: never descended into

    # Names that look like path traversal. On POSIX '/' cannot be in a name, so the scanner sees
    # either a hidden file ('..' prefix: never read) or a literal name with backslashes.
    _write(root / "names/..\\..\\evil.md", "# Evil\n\nhidden traversal name\n")
    h.never.append("hidden traversal name")
    _write(root / "names/a\\..\\..\\b.md", "# Literal\n\nThe walrus protocol is literal.\n")
    h.good["names/a\\..\\..\\b.md"] = "walrus protocol"
    return h
