"""LoRA: low-rank updates W + (alpha/r)·B·A on selected linear layers; mergeable into the base weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraModel
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import PreTrainedModel

from finetune.methods.base import Method, MethodError, check_positive_int, settings_from
from kb.errors import ConfigError

SECTION = "lora"

# Default LoRA targets per `config.model_type`: the attention query and value projections, as in the LoRA paper.
# - "glm" is transformers' native GlmForCausalLM, which is what ChatGLM3-6B checkpoints are converted to: the
#   conversion splits ChatGLM's fused `query_key_value` into q_proj/k_proj/v_proj (bias on all three), so
#   ChatGLM3's usual target `query_key_value` becomes ["q_proj", "v_proj"] here.
# - "chatglm" is the original remote-code layout (THUDM/chatglm3-6b with trust_remote_code), where q, k and v are
#   still one fused linear layer named `query_key_value`.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "glm": ["q_proj", "v_proj"],
    "chatglm": ["query_key_value"],
}


@dataclass
class LoraSettings:
    """LoRA hyper-parameters. `target_modules`: module names, "all-linear", or None for the architecture default."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: list[str] | str | None = None

    def __post_init__(self) -> None:
        check_positive_int(SECTION, "r", self.r)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or self.alpha <= 0:
            raise ConfigError(f"{SECTION}.alpha: expected a positive number, got {self.alpha!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0 <= self.dropout < 1
        ):
            raise ConfigError(f"{SECTION}.dropout: expected a number in [0, 1), got {self.dropout!r}")
        t = self.target_modules
        if isinstance(t, str):
            if t != "all-linear":
                raise ConfigError(
                    f"{SECTION}.target_modules: expected a list of names or 'all-linear', got {t!r}"
                )
        elif t is not None:
            if not isinstance(t, list | tuple) or not t or not all(isinstance(m, str) and m for m in t):
                raise ConfigError(
                    f"{SECTION}.target_modules: expected a non-empty list of module names, got {t!r}"
                )
            self.target_modules = list(t)


def default_target_modules(model_type: str) -> list[str]:
    """The LoRA targets used when `target_modules` is None: ours first, then peft's table for other models."""
    if model_type in DEFAULT_TARGET_MODULES:
        return list(DEFAULT_TARGET_MODULES[model_type])
    if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    raise ConfigError(
        f"{SECTION}.target_modules: no default for model type {model_type!r}; "
        "set it to a list of module names or 'all-linear'"
    )


class LoraMethod(Method):
    name: ClassVar[str] = "lora"
    peft_type: ClassVar[str] = "LORA"
    can_merge: ClassVar[bool] = True

    def wrap(self, model: PreTrainedModel, cfg: LoraSettings | dict[str, Any] | None = None) -> PeftModel:
        s = settings_from(LoraSettings, SECTION, cfg)
        targets = s.target_modules
        if targets is None:
            targets = default_target_modules(getattr(model.config, "model_type", ""))
        config = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=s.r,
            lora_alpha=s.alpha,
            lora_dropout=s.dropout,
            target_modules=targets,
        )
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            # peft raises ValueError when no module matches `target_modules`.
            raise ConfigError(
                f"{SECTION}.target_modules: {targets!r} does not fit this model ({exc})"
            ) from exc

    def merge(self, model: PeftModel) -> PreTrainedModel:
        if not isinstance(model, PeftModel) or not isinstance(model.base_model, LoraModel):
            raise MethodError(f"lora: merge expects a LoRA peft model, got {type(model).__name__}")
        return model.merge_and_unload()
