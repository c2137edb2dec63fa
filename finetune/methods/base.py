"""The interface every fine-tuning method implements, and what the methods share.

A method turns a plain transformers causal LM into a trainable peft model (`wrap`), writes an adapter
directory that plain peft can load (`save`: adapter_config.json + adapter_model.safetensors), loads such a
directory back for inference (`load`) and, where the method allows it, folds the adapter into the base
weights (`merge`).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from peft import PeftModel
from transformers import PreTrainedModel

from kb.errors import ConfigError, KBError, ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

S = TypeVar("S")


class MethodError(KBError):
    """A fine-tuning method was used on a model or adapter it cannot handle."""


class MergeNotSupported(MethodError):
    """The method's adapter cannot be folded into the base weights (P-Tuning v2's prefix is not a weight delta)."""


def check_positive_int(section: str, name: str, value: Any) -> None:
    # bool is an int subclass: `r=True` would silently mean r=1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{section}.{name}: expected a positive integer, got {value!r}")


def settings_from(cls: type[S], section: str, cfg: S | Mapping[str, Any] | None) -> S:
    """Coerce `cfg` (the settings dataclass, a mapping from a YAML section, or None for defaults) to `cls`."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in cfg:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown setting (known: {', '.join(sorted(known))})")
        return cls(**cfg)
    raise ConfigError(f"{section}: expected {cls.__name__} or a mapping, got {cfg!r}")


def adapter_peft_type(adapter_dir: str | Path) -> str:
    """The `peft_type` recorded in an adapter directory ("LORA", "PREFIX_TUNING", ...)."""
    path = Path(adapter_dir)
    config_path = path / ADAPTER_CONFIG
    if not config_path.is_file():
        raise ModelError(f"{path}: not an adapter directory (no {ADAPTER_CONFIG})")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise ModelError(f"{path}: adapter weights missing (no {ADAPTER_WEIGHTS})")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_path}: unreadable adapter config ({exc})") from exc
    peft_type = data.get("peft_type") if isinstance(data, dict) else None
    if not isinstance(peft_type, str):
        raise ModelError(f"{config_path}: no peft_type in adapter config")
    return peft_type


class Method(ABC):
    """One parameter-efficient fine-tuning method (LoRA, P-Tuning v2)."""

    name: ClassVar[str]
    # The peft_type written to adapter_config.json; `load` refuses adapters of another type.
    peft_type: ClassVar[str]
    can_merge: ClassVar[bool]

    @abstractmethod
    def wrap(self, model: PreTrainedModel, cfg: Any = None) -> PeftModel:
        """Return a trainable peft model around `model` (whose own weights are frozen).

        `cfg` is the method's settings dataclass, a mapping with its fields, or None for the defaults.
        """

    def save(self, model: PeftModel, out_dir: str | Path, *, main_process: bool = True) -> Path:
        """Write the adapter (not the base weights) to `out_dir`; returns the directory.

        In a multi-process run every rank calls this and only the one with `main_process` writes: under
        ZeRO-3, collecting the state dict runs collectives (P-Tuning v2's prefix is computed by a forward
        of its encoder, whose sharded weights are gathered from all ranks), so rank 0 alone would hang.
        """
        if not isinstance(model, PeftModel):
            raise MethodError(f"{self.name}: save expects a peft model, got {type(model).__name__}")
        out = Path(out_dir)
        if main_process:
            out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), safe_serialization=True, is_main_process=main_process)
        if main_process:
            adapter_peft_type(out)  # fails loudly if peft wrote something other than the two expected files
        return out

    def load(self, base_model: PreTrainedModel, adapter_dir: str | Path) -> PeftModel:
        """Load an adapter saved by `save` (or by plain peft) onto `base_model`, ready for inference."""
        found = adapter_peft_type(adapter_dir)
        if found != self.peft_type:
            raise ModelError(
                f"{adapter_dir}: adapter is {found}, method {self.name!r} expects {self.peft_type}"
            )
        model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
        model.eval()
        return self._after_load(model)

    def _after_load(self, model: PeftModel) -> PeftModel:
        """Hook for methods that need to adjust the loaded model (P-Tuning v2 fixes generation)."""
        return model

    @abstractmethod
    def merge(self, model: PeftModel) -> PreTrainedModel:
        """Return the base model with the adapter folded into its weights; raises MergeNotSupported if impossible."""
