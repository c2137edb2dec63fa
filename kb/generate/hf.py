"""A transformers causal LM as a Generator, with an optional peft adapter."""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from kb.config import GeneratorConfig
from kb.errors import ConfigError, ModelError
from kb.generate.base import Generator, Message
from kb.generate.resolve import load_error, resolve_model

log = logging.getLogger(__name__)

# First tokens of these words mark a yes / no reply (English and Chinese prompts both occur).
YES_WORDS = ("yes", "Yes", "是")
NO_WORDS = ("no", "No", "否")

# End-of-turn / end-of-text tokens of common chat formats (ChatML, Llama 3, Gemma).
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"generator.device: expected auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("generator.device: cuda requested but torch sees no CUDA device")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU half-precision matmuls are slow or missing on most hosts
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"generator.dtype: expected auto, {', '.join(_DTYPES)}, got {name!r}") from None


class _Cancel(StoppingCriteria):
    """Stops generate() when the consumer of stream() goes away, instead of running to max_new_tokens."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class HFGenerator(Generator):
    name = "hf"

    def __init__(self, cfg: GeneratorConfig, adapter_dir: str | None = None):
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        dtype = pick_dtype(cfg.dtype, self.device)
        source = resolve_model(cfg.model)  # may convert a bundled model first: not part of the load time
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except Exception as e:  # OSError, ValueError, hub errors...: all mean "cannot use this model"
            raise load_error(source, e) from e
        self.model.to(self.device)
        if adapter_dir:
            self.model = _load_adapter(self.model, adapter_dir)
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise ModelError(f"{source}: the tokenizer has no chat template; kb needs a chat/instruct model")
        self.source = source
        self.adapter_dir = adapter_dir
        self._eos = self._eos_ids()
        self._yes_ids, self._no_ids = self._answer_ids()
        self.load_seconds = time.perf_counter() - t0
        print(
            f"kb: model loaded in {self.load_seconds:.1f} s ({source}"
            f"{', adapter ' + adapter_dir if adapter_dir else ''}; {self.device}, {dtype})",
            file=sys.stderr,
            flush=True,
        )

    # ---- prompt -------------------------------------------------------------------------------

    def encode(self, messages: list[Message]) -> torch.Tensor:
        """(1, n) token ids of the chat-templated conversation, ending with the assistant turn's start."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already wrote BOS/role markers; adding special tokens again would double BOS.
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return ids.to(self.device)

    def _eos_ids(self) -> list[int]:
        # Chat models end a turn with their own token (<|im_end|>), which is not always the config's
        # eos: stop at any of them.
        # GGUF-converted configs keep only one of them (Qwen's <|endoftext|> is lost), hence the names.
        gen_eos = self.model.generation_config.eos_token_id
        candidates = [*(gen_eos if isinstance(gen_eos, list) else [gen_eos]), self.tokenizer.eos_token_id]
        vocab = self.tokenizer.get_vocab()
        candidates += [vocab.get(t) for t in _END_OF_TURN]
        ids: list[int] = []
        for i in candidates:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
        return ids

    def _answer_ids(self) -> tuple[list[int], list[int]]:
        def first_ids(words: tuple[str, ...]) -> set[int]:
            out = set()
            for w in words:
                enc = self.tokenizer.encode(w, add_special_tokens=False)
                if enc and enc[0] != self.tokenizer.unk_token_id:
                    out.add(enc[0])
            return out

        yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
        # A token in both groups (a shared byte-fallback piece) says nothing either way.
        both = yes & no
        return sorted(yes - both), sorted(no - both)

    # ---- generation ---------------------------------------------------------------------------

    def _generation_kwargs(self, max_new_tokens: int | None) -> dict[str, Any]:
        gen = copy.deepcopy(self.model.generation_config)
        gen.max_new_tokens = max_new_tokens or self.cfg.max_new_tokens
        gen.max_length = None  # max_new_tokens decides, whatever the checkpoint's max_length says
        gen.eos_token_id = self._eos
        if gen.pad_token_id is None:
            gen.pad_token_id = self._eos[0] if self._eos else None
        if self.cfg.temperature > 0:
            gen.do_sample = True
            gen.temperature = self.cfg.temperature
        else:
            # Greedy; clear the checkpoint's sampling knobs so they neither apply nor warn.
            gen.do_sample = False
            gen.temperature = gen.top_p = gen.top_k = None
        return {"generation_config": gen}

    def stream(self, messages: list[Message], *, max_new_tokens: int | None = None) -> Iterator[str]:
        input_ids = self.encode(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = _Cancel()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([cancel]),
                        **self._generation_kwargs(max_new_tokens),
                    )
            except BaseException as e:  # handed to the caller below; must not die silently in the thread
                errors.append(e)
                streamer.end()  # wake the consumer, which would otherwise wait forever

        thread = threading.Thread(target=work, name="kb-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if errors:
                    break
                if piece:
                    yield piece
        finally:
            # Reached on normal end, on error, and when the caller stops iterating (GeneratorExit).
            cancel.event.set()
            thread.join()
        if errors:
            raise ModelError(f"generation failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]

    # ---- scoring ------------------------------------------------------------------------------

    def next_token_logits(self, messages: list[Message]) -> torch.Tensor:
        """Logits (vocab,) of the first reply token, in float32."""
        input_ids = self.encode(messages)
        with torch.inference_mode():
            # logits_to_keep=1: only the last position; the full (n, vocab) matrix would cost
            # n × 150k floats (~1 GB for a long prompt on Qwen).
            out = self.model(input_ids=input_ids, logits_to_keep=1)
        return out.logits[0, -1].float()

    def yes_probability(self, messages: list[Message]) -> float | None:
        if not self._yes_ids or not self._no_ids:
            log.warning("tokenizer has no distinct yes/no tokens; answerability check skipped")
            return None
        logits = self.next_token_logits(messages)
        # P(yes)/(P(yes)+P(no)) computed from log-sum-exps: the softmax normaliser cancels, and
        # nothing underflows when both groups are unlikely.
        yes = torch.logsumexp(logits[self._yes_ids], dim=0)
        no = torch.logsumexp(logits[self._no_ids], dim=0)
        return float(torch.sigmoid(yes - no))


def _load_adapter(model: Any, adapter_dir: str) -> Any:
    from pathlib import Path

    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir}: not a peft adapter directory (no adapter_config.json)")
    try:
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
    except Exception as e:  # a shape or key mismatch means the adapter was trained on another model
        raise ModelError(f"{adapter_dir}: could not load the adapter onto this model: {e}") from e
    if peft_model.active_peft_config.is_prompt_learning:
        from kb.generate.prefix import enable_prefix_generation

        # Plain peft's generate() drops a P-Tuning v2 prefix on transformers 5 (see kb/generate/prefix.py).
        enable_prefix_generation(peft_model)
    return peft_model
