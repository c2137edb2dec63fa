"""Nothing a user supplies (documents, uploads, models, adapters, training data, a knowledge base
directory) is ever deserialised with pickle or run as remote code. A scan of the project's source:
any of these patterns fails the suite unless listed in ALLOWED with the reason."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kb", "ingest", "finetune", "ui", "bench", "corpus")

FORBIDDEN = {
    "pickle": re.compile(
        r"\bimport\s+(c?pickle|dill|joblib|shelve)\b|\bpickle\.loads?\(|\bmarshal\.loads?\("
    ),
    "trust_remote_code=True": re.compile(r"trust_remote_code\s*=\s*True"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "unsafe yaml": re.compile(r"\byaml\.(load|unsafe_load|full_load)\("),
    "torch.load without weights_only=True": re.compile(r"\btorch\.load\((?!.*weights_only\s*=\s*True)"),
}
# (path, pattern name) → why it is safe. The ChatGLM3 converter (kb/generate/chatglm3.py) is the one
# documented path that reads a model's remote-code layout, and it does so without running that code.
ALLOWED: dict[tuple[str, str], str] = {}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_pickle_remote_code_or_unsafe_loading_in_the_source() -> None:
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            for name, pattern in FORBIDDEN.items():
                if pattern.search(code) and (rel, name) not in ALLOWED:
                    found.append(f"{rel}:{n}: {name}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_catches_each_pattern() -> None:
    """The patterns themselves: each bad line matches, the safe forms do not."""
    bad = {
        "pickle": "import pickle",
        "trust_remote_code=True": "AutoModel.from_pretrained(p, trust_remote_code = True)",
        "allow_pickle=True": "np.load(f, allow_pickle=True)",
        "unsafe yaml": "yaml.load(text)",
        "torch.load without weights_only=True": "torch.load(path, map_location='cpu')",
    }
    good = ["yaml.safe_load(text)", "np.load(f, allow_pickle=False)", "torch.load(p, weights_only=True)"]
    for name, line in bad.items():
        assert FORBIDDEN[name].search(line), name
    for line in good:
        assert not any(p.search(line) for p in FORBIDDEN.values()), line
    assert len(_sources()) > 50
