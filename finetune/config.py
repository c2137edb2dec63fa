"""The fine-tuning configuration: one typed tree, YAML maps straight onto it.

Defaults live here. `lora` and `ptuning` sections are passed to the method's settings dataclass
(validated there, naming the field); `training` is passed through to transformers'
`TrainingArguments` (any of its keys; an unknown key is an error naming it). Nothing from those
two libraries is re-declared here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kb.config import apply_mapping, dump_yaml, parse_overrides, read_yaml
from kb.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataSettings:
    train: str = ""  # JSONL; "" = <kb_dir>/synth/train.jsonl written by `kb synth`
    validation: str = ""  # "" = <kb_dir>/synth/validation.jsonl when it exists
    template: str = "auto"  # chatglm3 | llama2 | hf | auto (from the model)
    max_source_len: int = 1024  # tokens of everything before the reply; cut from the left
    max_target_len: int = 256  # tokens of the reply; cut from the right
    packing: bool = False  # pack examples into max_source_len + max_target_len rows (LoRA only)
    strict: bool = False  # a malformed example is an error instead of a counted skip
    # Longer examples are skipped and counted, before tokenizing (a runaway line costs nothing); shorter
    # ones over max_source_len/max_target_len tokens are truncated as `finetune.templates.encode` says.
    max_example_chars: int = 100_000

    # Who the adapter is for. A tuned model can repeat what it was trained on to anyone who uses it,
    # so by default it learns from public documents only ("public"). "hr,it": examples every user of
    # the adapter may read (public, or tagged with all of these departments), for an adapter served
    # only to those users. "all": everything, restricted documents included (an adapter for admins).
    # Examples without a `departments` key (data not from `kb synth`) count as public.
    audience: str = "public"


@dataclass
class SpeedSettings:
    """The GPU fast path (finetune/speed/): packed rows with per-example varlen attention, the lm_head fused
    into a chunked cross-entropy, compiled decoder layers. Same losses as the plain recipe
    (tests/finetune/test_speed.py); measured in bench/finetune_throughput.py."""

    fast_path: str = "auto"  # auto: on when training on CUDA GPUs | always | never
    # Tokens per micro-batch (one packed row); 0 = per_device_train_batch_size × (max_source_len +
    # max_target_len), the most a padded batch of the same size could hold.
    token_budget: int = 0
    loss_chunk: int = 4096  # tokens per chunk of the fused lm_head + cross-entropy
    compile: bool = True  # torch.compile each decoder layer (CUDA only)

    def __post_init__(self) -> None:
        if self.fast_path not in ("auto", "always", "never"):
            raise ConfigError(f"speed.fast_path: expected auto, always or never, got {self.fast_path!r}")
        for name in ("token_budget", "loss_chunk"):
            value = getattr(self, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if name == "token_budget" else 1)
            ):
                raise ConfigError(f"speed.{name}: expected a positive integer, got {value!r}")


@dataclass
class FinetuneConfig:
    model: str = "bundled:qwen2.5-0.5b"  # bundled:<name>, local path, hub id, or modelscope:<id>
    method: str = "lora"  # lora | ptuning-v2
    kb_dir: str = "kb_data"  # the knowledge base whose model registry receives the adapter
    name: str = ""  # adapter name; "" = <method>-v<N>, the next free version
    lora: dict[str, Any] = field(default_factory=dict)  # → finetune.methods.LoraSettings
    ptuning: dict[str, Any] = field(default_factory=dict)  # → finetune.methods.PrefixSettings
    data: DataSettings = field(default_factory=DataSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    training: dict[str, Any] = field(
        default_factory=lambda: {
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "learning_rate": 2.0e-4,
            "num_train_epochs": 3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.03,
            "weight_decay": 0.0,
            "logging_steps": 5,
            "save_steps": 100,
            "save_total_limit": 2,
            "seed": 42,
            "report_to": "none",
        }
    )
    gpus: int = 1  # processes to launch; > 1 uses torchrun (+ DeepSpeed when `deepspeed` is set)
    deepspeed: str = (
        ""  # a DeepSpeed config: a .json/.yaml path, or zero2 | zero3 | zero3_offload (finetune/configs/)
    )
    dtype: str = "auto"  # auto: bf16 where supported, else fp16 on GPU (with loss scaling), fp32 on CPU
    gradient_checkpointing: bool = False
    load_in: str = ""  # "" | 8bit | 4bit (needs bitsandbytes and a GPU)
    activate: bool = True  # activate the adapter after training (subject to the gate)
    keep_unfinished_runs: int = 2  # crashed runs kept in models/.runs/ for --resume; older ones removed

    def validate(self) -> None:
        from finetune.methods import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r} (known: {', '.join(METHODS)})")
        self.deepspeed_config()
        if self.gpus < 1:
            raise ConfigError(f"gpus: expected >= 1, got {self.gpus}")
        if self.load_in not in ("", "8bit", "4bit"):
            raise ConfigError(f"load_in: expected '', '8bit' or '4bit', got {self.load_in!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype: expected auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.data.packing and self.method == "ptuning-v2":
            raise ConfigError(
                "data.packing: P-Tuning v2 feeds its prefix as a cache, which packing cannot use"
            )
        if self.gradient_checkpointing and self.method == "ptuning-v2":
            raise ConfigError("gradient_checkpointing: peft does not support it with P-Tuning v2")
        self.speed.__post_init__()
        self.method_settings()
        self.audience_filter()

    def audience_filter(self) -> Callable[[dict], bool] | None:
        """The predicate read_examples keeps training records by; None = keep all ("all")."""
        from kb.access import norm_departments

        value = self.data.audience.strip().lower()
        if value == "all":
            return None
        wanted = set() if value == "public" else set(norm_departments(value.split(","), "data.audience"))
        if not wanted and value != "public":
            raise ConfigError("data.audience: expected public, all or a list of departments, got ''")

        def keep(record: dict) -> bool:
            tags = record.get("departments") or []
            return not tags or (bool(wanted) and wanted <= set(tags))

        return keep

    def method_settings(self) -> Any:
        from finetune.methods import LoraSettings, PrefixSettings
        from finetune.methods.base import settings_from

        if self.method == "lora":
            return settings_from(LoraSettings, "lora", self.lora)
        return settings_from(PrefixSettings, "ptuning", self.ptuning)

    def deepspeed_config(self) -> dict[str, Any] | None:
        """The DeepSpeed config as a dict: from a .json/.yaml path, or finetune/configs/ds_<name>.yaml
        (YAML there so the shipped configs can carry comments)."""
        if not self.deepspeed:
            return None
        p = Path(self.deepspeed)
        if p.suffix not in (".json", ".yaml", ".yml"):
            p = CONFIG_DIR / f"ds_{self.deepspeed}.yaml"
        if not p.is_file():
            known = ", ".join(sorted(q.stem.removeprefix("ds_") for q in CONFIG_DIR.glob("ds_*.yaml")))
            raise ConfigError(
                f"deepspeed: no DeepSpeed config {self.deepspeed!r} (a .json/.yaml path, or one of: {known})"
            )
        try:
            return yaml.safe_load(p.read_text(encoding="utf-8"))  # JSON is valid YAML
        except yaml.YAMLError as e:
            raise ConfigError(f"deepspeed: {p} is not valid JSON/YAML: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | os.PathLike) -> None:
        dump_yaml(self, path)


# The shipped recipe of each method (finetune/configs/<name>.yaml): `kb finetune --method M` starts from it,
# so a method gets its own learning rate (P-Tuning v2's prefixes need ~100x LoRA's: 2e-2 against 2e-4;
# at 2e-4 the bundled 0.5B model's loss stayed at 5.8 after 60 steps and its answers were noise).
METHOD_RECIPES = {"lora": "lora", "ptuning-v2": "ptuning_v2"}


def load_finetune_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    data: dict[str, Any] | None = None,
) -> FinetuneConfig:
    """Defaults ← YAML (a path, or a name of finetune/configs/<name>.yaml) ← data ← --set overrides."""
    cfg = FinetuneConfig()
    if path:
        p = Path(path)
        if not p.is_file() and (CONFIG_DIR / f"{path}.yaml").is_file():
            p = CONFIG_DIR / f"{path}.yaml"
        _merge(cfg, read_yaml(p))
    if data:
        _merge(cfg, data)
    if overrides:
        _merge(cfg, parse_overrides(overrides))
    cfg.validate()
    return cfg


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _scalar(value: Any) -> Any:
    """A value for a pass-through section: exponent floats that YAML 1.1 leaves as strings (`5e-4`, from
    `--set` or a YAML file) become floats. Other strings stay strings (`inf`, `nan` and names are not
    numbers here), and are not parsed again: `--set training.save_strategy="'no'"` is the string no."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def _merge(cfg: FinetuneConfig, data: dict[str, Any]) -> None:
    """Like kb.config.apply_mapping, but the pass-through sections merge key by key."""
    data = dict(data)
    for section in ("training", "lora", "ptuning"):
        if section in data:
            value = data.pop(section)
            if not isinstance(value, dict):
                raise ConfigError(f"{section}: expected a mapping, got {value!r}")
            getattr(cfg, section).update({k: _scalar(v) for k, v in value.items()})
    apply_mapping(cfg, data)
