"""P-Tuning v2: learned key/value "deep prompts" in front of every layer's attention (peft prefix tuning).

Each layer gets `num_virtual_tokens` extra key/value positions that every real token attends to; only those
are trained. With `prefix_projection=True` they are produced by a two-layer MLP (the reparameterisation of
the P-Tuning v2 paper, hidden size `encoder_hidden_size`); peft saves the projected key/values either way,
so the adapter directory has the same layout and loads without the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from transformers import PreTrainedModel

from finetune.methods.base import MergeNotSupported, Method, MethodError, check_positive_int, settings_from
from kb.errors import ConfigError
from kb.generate.prefix import enable_prefix_generation, prefix_kv_geometry

SECTION = "ptuning-v2"


@dataclass
class PrefixSettings:
    """P-Tuning v2 hyper-parameters (`num_virtual_tokens` is ChatGLM's `pre_seq_len`)."""

    num_virtual_tokens: int = 128
    prefix_projection: bool = False
    # Hidden size of the reparameterisation MLP; None means the KV width (num_kv_heads * head_dim).
    encoder_hidden_size: int | None = None

    def __post_init__(self) -> None:
        check_positive_int(SECTION, "num_virtual_tokens", self.num_virtual_tokens)
        if not isinstance(self.prefix_projection, bool):
            raise ConfigError(
                f"{SECTION}.prefix_projection: expected true or false, got {self.prefix_projection!r}"
            )
        if self.encoder_hidden_size is not None:
            check_positive_int(SECTION, "encoder_hidden_size", self.encoder_hidden_size)
            if not self.prefix_projection:
                raise ConfigError(
                    f"{SECTION}.encoder_hidden_size: {self.encoder_hidden_size!r} is only used with "
                    "prefix_projection: true"
                )


class PTuningV2Method(Method):
    name: ClassVar[str] = "ptuning-v2"
    peft_type: ClassVar[str] = "PREFIX_TUNING"
    can_merge: ClassVar[bool] = False

    def wrap(self, model: PreTrainedModel, cfg: PrefixSettings | dict[str, Any] | None = None) -> PeftModel:
        s = settings_from(PrefixSettings, SECTION, cfg)
        layers, kv_heads, head_dim = prefix_kv_geometry(model.config)
        config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=s.num_virtual_tokens,
            prefix_projection=s.prefix_projection,
            encoder_hidden_size=s.encoder_hidden_size,
            # Given explicitly so the prefix matches the cache of GQA models: peft reads these from the config
            # for models that expose num_key_value_heads, but not for ChatGLM's remote-code config.
            num_layers=layers,
            num_attention_heads=kv_heads,
            token_dim=kv_heads * head_dim,
        )
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:
            # peft refuses prefix tuning on a model with gradient checkpointing on: re-running a layer in the
            # backward pass would append its keys/values to the prefix cache a second time.
            raise MethodError(f"{SECTION}: {exc} Turn gradient checkpointing off for P-Tuning v2.") from exc
        got = peft_model.peft_config["default"]
        wanted = (layers, kv_heads, kv_heads * head_dim)
        if (got.num_layers, got.num_attention_heads, got.token_dim) != wanted:
            raise MethodError(
                f"{SECTION}: peft sized the prefix as {got.num_layers} layers x {got.num_attention_heads} heads x "
                f"{got.token_dim} wide, the model's cache needs {layers} x {kv_heads} x {kv_heads * head_dim}"
            )
        return enable_prefix_generation(peft_model)

    def _after_load(self, model: PeftModel) -> PeftModel:
        return enable_prefix_generation(model)

    def merge(self, model: PeftModel) -> PreTrainedModel:
        raise MergeNotSupported(
            f"{SECTION}: a P-Tuning v2 adapter cannot be merged: its prefix is extra key/value states, not a change "
            "to the base weights; serve the base model with the adapter directory instead"
        )
