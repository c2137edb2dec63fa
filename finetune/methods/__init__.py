"""Fine-tuning methods: LoRA and P-Tuning v2, behind one interface (`Method`).

Usage::

    method = get_method("ptuning-v2")
    model = method.wrap(base_model, {"num_virtual_tokens": 128})   # train it
    method.save(model, "out/adapter")
    model = method.load(fresh_base_model, "out/adapter")           # model.generate(...) uses the prefix
"""

from __future__ import annotations

from pathlib import Path

from finetune.methods.base import MergeNotSupported, Method, MethodError, adapter_peft_type
from finetune.methods.lora import LoraMethod, LoraSettings
from finetune.methods.ptuning import PrefixSettings, PTuningV2Method
from kb.errors import ConfigError, ModelError
from kb.generate.prefix import (
    PrefixTuningModelForCausalLM,
    enable_prefix_generation,
    generate_with_prefix,
)

METHODS: dict[str, type[Method]] = {
    LoraMethod.name: LoraMethod,
    PTuningV2Method.name: PTuningV2Method,
}


def get_method(name: str) -> Method:
    """The method registered under `name` ("lora" or "ptuning-v2")."""
    try:
        return METHODS[name]()
    except KeyError:
        raise ConfigError(f"finetune.method: unknown method {name!r} (known: {', '.join(METHODS)})") from None


def method_for_adapter(adapter_dir: str | Path) -> Method:
    """The method that wrote the adapter in `adapter_dir` (read from its adapter_config.json)."""
    peft_type = adapter_peft_type(adapter_dir)
    for cls in METHODS.values():
        if cls.peft_type == peft_type:
            return cls()
    raise ModelError(f"{adapter_dir}: adapter type {peft_type} is not one kb trains")


__all__ = [
    "METHODS",
    "LoraMethod",
    "LoraSettings",
    "MergeNotSupported",
    "Method",
    "MethodError",
    "PTuningV2Method",
    "PrefixSettings",
    "PrefixTuningModelForCausalLM",
    "enable_prefix_generation",
    "generate_with_prefix",
    "get_method",
    "method_for_adapter",
]
