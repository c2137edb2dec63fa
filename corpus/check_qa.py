"""Validate corpus/qa.jsonl against the documents of the sample corpus.

Run from the repository root:

    .venv/bin/python corpus/check_qa.py            # check, exit 1 on any problem
    .venv/bin/python corpus/check_qa.py --show-pdf # also print the first 200 chars of every PDF page

Text is extracted the plain way (pypdf page.extract_text(), python-docx paragraphs + table rows,
BeautifulSoup get_text() of the whole page, .txt decoded by its known encoding, .md read raw).
Matching removes ALL whitespace from both sides and maps curly quotes to straight ones, so the
spaces that PDF extraction puts between CJK characters, line breaks and table-cell separators
do not matter. DOCX table rows are joined cell by cell with spaces.

Checks: every line parses and has the required keys; ids are unique; every answerable item's
source exists, its evidence (<= 150 chars) occurs in the source text and every gold answer occurs
in its evidence; unanswerable items have answers [], source "" and evidence ""; every document
has at least 2 questions; minimum counts (90 lines, 15 unanswerable, 20 English).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
QA = HERE / "qa.jsonl"
DOC_SUFFIXES = {".pdf", ".docx", ".html", ".htm", ".md", ".txt"}
# Encodings of the legacy plain-text files; every other .txt is UTF-8.
TXT_ENCODINGS = {
    "general/meeting_minutes_2024-03-12.txt": "gbk",
    "general/office_guide.txt": "utf-16",
}
KEYS = {"id", "question", "answers", "source", "evidence", "answerable", "lang"}
QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "「": '"', "」": '"'})


def norm(s: str) -> str:
    return re.sub(r"\s+", "", s.translate(QUOTES))


def documents() -> list[str]:
    out = []
    for p in sorted(HERE.rglob("*")):
        rel = p.relative_to(HERE).as_posix()
        if p.is_file() and p.suffix.lower() in DOC_SUFFIXES and "/" in rel and not rel.startswith("src/"):
            out.append(rel)
    return out


def pdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(path).pages]


def extract(rel: str) -> str:
    path = HERE / rel
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return "\n".join(pdf_pages(path))
    if suffix == ".docx":
        import docx

        d = docx.Document(str(path))
        parts = [p.text for p in d.paragraphs]
        for table in d.tables:
            for row in table.rows:
                parts.append(" ".join(cell.text for cell in row.cells))
        return "\n".join(parts)
    if suffix in (".html", ".htm"):
        from bs4 import BeautifulSoup

        return BeautifulSoup(path.read_bytes(), "lxml").get_text("\n")
    if suffix == ".txt":
        return path.read_bytes().decode(TXT_ENCODINGS.get(rel, "utf-8"))
    return path.read_text(encoding="utf-8")


def main() -> int:
    show_pdf = "--show-pdf" in sys.argv
    docs = documents()
    texts = {rel: norm(extract(rel)) for rel in docs}
    problems: list[str] = []

    if show_pdf:
        for rel in docs:
            if rel.endswith(".pdf"):
                pages = pdf_pages(HERE / rel)
                print(f"===== {rel}: {len(pages)} pages")
                for i, t in enumerate(pages, 1):
                    print(f"--- page {i}: {t[:200]!r}")

    items = []
    for n, line in enumerate(QA.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: invalid JSON ({e})")
            continue
        missing = KEYS - item.keys()
        if missing:
            problems.append(f"line {n}: missing keys {sorted(missing)}")
            continue
        items.append(item)

    ids = Counter(it["id"] for it in items)
    problems += [f"duplicate id {i}" for i, c in ids.items() if c > 1]

    per_doc: Counter[str] = Counter()
    for it in items:
        qid = it["id"]
        if it["lang"] not in ("zh", "en"):
            problems.append(f"{qid}: lang must be zh or en")
        if not it["question"].strip():
            problems.append(f"{qid}: empty question")
        if it["answerable"] is True:
            src = it["source"]
            if src not in texts:
                matches = [d for d in docs if d.endswith(src)] if src else []
                if len(matches) != 1:
                    problems.append(f"{qid}: source {src!r} is not exactly one corpus document")
                    continue
                src = matches[0]
            per_doc[src] += 1
            ev = it["evidence"]
            if not ev or len(ev) > 150:
                problems.append(f"{qid}: evidence empty or longer than 150 chars ({len(ev)})")
            if norm(ev) not in texts[src]:
                problems.append(f"{qid}: evidence not found in {src}: {ev!r}")
            if not it["answers"]:
                problems.append(f"{qid}: answerable but no answers")
            for a in it["answers"]:
                if norm(a) not in norm(ev):
                    problems.append(f"{qid}: answer {a!r} not in evidence")
        elif it["answerable"] is False:
            if it["answers"] != [] or it["source"] != "" or it["evidence"] != "":
                problems.append(f"{qid}: unanswerable items need answers [], source '' and evidence ''")
        else:
            problems.append(f"{qid}: answerable must be true or false")

    for rel in docs:
        if per_doc[rel] < 2:
            problems.append(f"document {rel} has {per_doc[rel]} questions (< 2)")

    n_ans = sum(1 for it in items if it["answerable"] is True)
    n_unans = sum(1 for it in items if it["answerable"] is False)
    langs = Counter(it["lang"] for it in items)
    formats = Counter(Path(d).suffix for d in docs)
    print(f"documents: {len(docs)} {dict(formats)}")
    print(
        f"questions: {len(items)} (answerable {n_ans}, unanswerable {n_unans}; zh {langs['zh']}, en {langs['en']})"
    )
    if len(items) < 90:
        problems.append(f"only {len(items)} questions (< 90)")
    if n_unans < 15:
        problems.append(f"only {n_unans} unanswerable questions (< 15)")
    if langs["en"] < 20:
        problems.append(f"only {langs['en']} English questions (< 20)")

    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
