"""Plain text: detect the encoding, refuse binary data."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from charset_normalizer import from_bytes

from ingest.clean import mark_headings, normalize_text
from kb.config import IngestConfig
from kb.errors import FileSkipped, LoadError
from kb.schema import Document

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Bytes that text files do not contain (tab, LF, FF, CR and ESC aside).
_CONTROL_BYTES = frozenset(
    set(range(0x00, 0x09)) | {0x0B} | set(range(0x0E, 0x1B)) | set(range(0x1C, 0x20)) | {0x7F}
)
_SAMPLE = 64 * 1024
# Characters ordinary Chinese or English text is made of. GB18030 maps almost any byte pair to some
# character, so a clean GB18030 decode only counts when the result is mostly made of these.
_COMMON = re.compile(r"[\t\n\r\x20-\x7e\u00a0-\u00ff\u2000-\u206f\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 text without a BOM: ASCII-range characters leave NUL in every other byte."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def _looks_like_text(text: str) -> bool:
    if not text:
        return True
    return len(_COMMON.findall(text)) >= 0.95 * len(text)


# Control characters in decoded text (tab, LF, FF, CR aside): a few are noise, many mean binary data.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_bytes(data: bytes, path: str, declared: str | None = None) -> tuple[str, str]:
    """Decode file bytes to text; return (text, encoding). Raise LoadError for binary or undecodable data.

    Order: BOM, then the declared charset (HTML <meta>), strict UTF-8, GB18030 when the result looks like
    text, then charset-normalizer's guess.
    """
    text, encoding = _decode(data, path, declared)
    # Checked after decoding too: UTF-16 (with or without BOM) lets binary data through the byte test.
    if len(_CONTROL_CHARS.findall(text[:_SAMPLE])) > 0.01 * min(len(text), _SAMPLE):
        raise LoadError(path, "binary data, not text")
    return text, encoding


def _decode(data: bytes, path: str, declared: str | None) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as e:
                raise LoadError(
                    path, f"undecodable text: bad {encoding} after its byte order mark ({e.reason})"
                ) from e
    sample = data[:_SAMPLE]
    utf16 = _utf16_without_bom(sample)
    if utf16:
        try:
            return data.decode(utf16), utf16
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: the binary check below decides
    if 0 in sample or sum(b in _CONTROL_BYTES for b in sample) > 0.05 * len(sample):
        raise LoadError(path, "binary data, not text")
    if declared:
        # GB2312 and GBK pages often use characters beyond their declared set; GB18030 is a superset of both.
        name = (
            "gb18030"
            if declared.lower().replace("_", "-") in ("gb2312", "gbk", "x-gbk", "gb-2312")
            else declared
        )
        try:
            return data.decode(name), name
        except (UnicodeDecodeError, LookupError):
            pass  # the declaration is wrong or unknown: detect instead
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # A UTF-8 file with a few damaged bytes (a truncated last character, one bad copy-paste) is still
    # UTF-8; GB18030 would turn all of it into plausible-looking nonsense. The count goes into meta.
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd") - data.count("\ufffd".encode())
    good = sum(1 for c in lenient if c > "\x7f" and c != "\ufffd")
    if bad <= max(8, len(lenient) // 1000) and good >= 20 * bad:
        return lenient, f"utf-8 ({bad} bad bytes replaced)"
    try:
        text = data.decode("gb18030")
        if _looks_like_text(text):
            return text, "gb18030"
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise LoadError(
            path, "undecodable text: not UTF-8, UTF-16, GB18030 or any encoding charset-normalizer knows"
        )
    # charset-normalizer has already rejected guesses that decode to chaos; its answer stands.
    return str(best), best.encoding


def read_bytes(path: Path) -> bytes:
    """A file's bytes; unreadable and empty files are an error."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoadError(str(path), f"cannot read: {e.strerror or e}") from e
    if not data.strip():
        raise FileSkipped(str(path), "empty file")
    return data


def read_text(path: Path, declared: str | None = None) -> tuple[str, str]:
    """Read and decode a text file; return (text, encoding)."""
    return decode_bytes(read_bytes(path), str(path), declared)


def load_text(path: Path, source: str, *, limits: IngestConfig | None = None) -> list[Document]:
    text, encoding = read_text(path)
    # Standalone '第一章 …' / '一、…' lines become '#' headings so that chunks get heading paths.
    text = mark_headings(normalize_text(text))
    if not text:
        raise FileSkipped(str(path), "empty file (only whitespace after decoding)")
    return [Document(text=text, source=source, meta={"format": "txt", "encoding": encoding})]
