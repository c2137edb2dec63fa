"""LoRA and P-Tuning v2 on tiny random Llama, GLM (ChatGLM3's converted layout: GQA with 2 KV heads) and Qwen2.

Each case trains once (module-scoped fixture) on a fixed batch, then checks saving/loading, generation and
merging. The P-Tuning v2 generation tests are the proof of the transformers 5.x fix: greedy `generate()` must
equal a cache-free step-by-step decode through plain peft's forward, which does use the prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import (
    GlmConfig,
    GlmForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from finetune.methods import (
    METHODS,
    LoraSettings,
    MergeNotSupported,
    Method,
    MethodError,
    PrefixSettings,
    PrefixTuningModelForCausalLM,
    generate_with_prefix,
    get_method,
    method_for_adapter,
)
from finetune.methods.lora import default_target_modules
from kb.errors import ConfigError, ModelError

pytestmark = [
    # Upstream noise: peft's own forward still passes `past_key_values=`, and get_peft_model touches a
    # deprecated transformers property.
    pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

VOCAB, PROMPT_LEN, NEW_TOKENS, VIRTUAL_TOKENS = 128, 4, 8, 8


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # The matrices are tiny (64 wide): intra-op threads only add start-up cost and, on a busy machine,
    # contention that made each step ~10x slower. One thread also keeps float reductions in a fixed order.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_base(arch: str) -> PreTrainedModel:
    """Same weights on every call: hidden 64, 2 layers, 4 query heads, 2 KV heads (head_dim 16)."""
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # No special tokens: generation must never stop early on a random eos.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":  # the bundled default's architecture: q/k/v projections carry biases
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = GlmForCausalLM(GlmConfig(head_dim=16, **common))
    return model.eval()


def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, VOCAB, (2, 12))


def greedy(model: torch.nn.Module, prompt: torch.Tensor, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            **kwargs,
        )


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@dataclass
class Trained:
    method: Method
    arch: str
    model: PeftModel
    losses: list[float]
    adapter_dir: Path


CASES = {
    "lora-llama": ("lora", "llama", LoraSettings(r=4, dropout=0.0)),
    "lora-glm": ("lora", "glm", LoraSettings(r=4, dropout=0.0)),
    "ptuning-llama": ("ptuning-v2", "llama", PrefixSettings(num_virtual_tokens=VIRTUAL_TOKENS)),
    "ptuning-glm": ("ptuning-v2", "glm", PrefixSettings(num_virtual_tokens=VIRTUAL_TOKENS)),
    "ptuning-qwen2": ("ptuning-v2", "qwen2", PrefixSettings(num_virtual_tokens=VIRTUAL_TOKENS)),
    "ptuning-proj-llama": (
        "ptuning-v2",
        "llama",
        PrefixSettings(num_virtual_tokens=VIRTUAL_TOKENS, prefix_projection=True, encoder_hidden_size=32),
    ),
    "ptuning-proj-glm": (
        "ptuning-v2",
        "glm",
        PrefixSettings(num_virtual_tokens=VIRTUAL_TOKENS, prefix_projection=True),
    ),
}
PTUNING_CASES = [k for k in CASES if k.startswith("ptuning")]


@pytest.fixture(scope="module")
def trained_cases() -> dict[str, Trained]:
    return {}


def get_trained(key: str, cache: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train case `key` once per module: 15 AdamW steps (lr 1e-2) language-modelling a fixed batch."""
    if key not in cache:
        name, arch, settings = CASES[key]
        method = get_method(name)
        model = method.wrap(build_base(arch), settings)
        model.train()
        ids = batch()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(2)
        losses = []
        for _ in range(15):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        model.eval()
        adapter_dir = method.save(model, tmp_path_factory.mktemp(key) / "adapter")
        cache[key] = Trained(method, arch, model, losses, adapter_dir)
    return cache[key]


@pytest.fixture(params=list(CASES))
def case(
    request: pytest.FixtureRequest, trained_cases: dict, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    return get_trained(request.param, trained_cases, tmp_path_factory)


@pytest.fixture(params=PTUNING_CASES)
def ptuning_case(
    request: pytest.FixtureRequest, trained_cases: dict, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    return get_trained(request.param, trained_cases, tmp_path_factory)


# ---------------------------------------------------------------- registry and settings


def test_registry() -> None:
    assert set(METHODS) == {"lora", "ptuning-v2"}
    assert get_method("lora").can_merge and not get_method("ptuning-v2").can_merge
    with pytest.raises(ConfigError, match="qlora"):
        get_method("qlora")


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (LoraSettings, {"r": 0}, "lora.r"),
        (LoraSettings, {"r": True}, "lora.r"),
        (LoraSettings, {"alpha": -1}, "lora.alpha"),
        (LoraSettings, {"dropout": 1.0}, "lora.dropout"),
        (LoraSettings, {"target_modules": "all"}, "lora.target_modules"),
        (LoraSettings, {"target_modules": []}, "lora.target_modules"),
        (PrefixSettings, {"num_virtual_tokens": -3}, "ptuning-v2.num_virtual_tokens"),
        (PrefixSettings, {"prefix_projection": "yes"}, "ptuning-v2.prefix_projection"),
        (PrefixSettings, {"encoder_hidden_size": 32}, "ptuning-v2.encoder_hidden_size"),
    ],
)
def test_settings_name_field_and_value(cls: type, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert field in str(err.value) and repr(next(iter(kwargs.values()))) in str(err.value)


def test_settings_from_mapping_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"lora\.rank"):
        get_method("lora").wrap(build_base("llama"), {"rank": 8})


def test_lora_default_targets() -> None:
    assert default_target_modules("llama") == ["q_proj", "v_proj"]
    assert default_target_modules("qwen2") == ["q_proj", "v_proj"]
    assert default_target_modules("glm") == ["q_proj", "v_proj"]
    assert default_target_modules("chatglm") == ["query_key_value"]
    with pytest.raises(ConfigError, match="lora.target_modules"):
        default_target_modules("no-such-model")
    model = get_method("lora").wrap(build_base("glm"))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


def test_ptuning_refuses_gradient_checkpointing() -> None:
    base = build_base("llama")
    base.activation_checkpointing_enable()
    with pytest.raises(MethodError, match="gradient checkpointing"):
        get_method("ptuning-v2").wrap(base)


def test_lora_bad_target_names_field() -> None:
    with pytest.raises(ConfigError, match="lora.target_modules"):
        get_method("lora").wrap(build_base("llama"), LoraSettings(target_modules=["query_key_value"]))


# ---------------------------------------------------------------- every method x architecture


def test_training_reduces_loss_and_freezes_base(case: Trained) -> None:
    assert case.losses[-1] < case.losses[0], case.losses
    trainable = [n for n, p in case.model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n) or ("prompt_encoder" in n) for n in trainable), trainable


def test_save_then_load_gives_same_logits(case: Trained) -> None:
    assert {p.name for p in case.adapter_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    ids = batch()
    expected = logits(case.model, ids)
    ours = case.method.load(build_base(case.arch), case.adapter_dir)
    plain = PeftModel.from_pretrained(build_base(case.arch), str(case.adapter_dir)).eval()
    torch.testing.assert_close(logits(ours, ids), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(plain, ids), expected, atol=1e-5, rtol=1e-5)
    assert type(method_for_adapter(case.adapter_dir)) is type(case.method)


def test_adapter_changes_greedy_generation(case: Trained) -> None:
    prompt = batch()[:, :PROMPT_LEN]
    tuned = greedy(case.method.load(build_base(case.arch), case.adapter_dir), prompt)
    base = greedy(build_base(case.arch), prompt)
    assert tuned.shape == base.shape == (2, PROMPT_LEN + NEW_TOKENS)
    assert not torch.equal(tuned, base)


def test_load_rejects_other_methods_adapter(case: Trained) -> None:
    other = get_method("lora" if case.method.name == "ptuning-v2" else "ptuning-v2")
    with pytest.raises(ModelError, match=case.method.peft_type):
        other.load(build_base(case.arch), case.adapter_dir)


def test_load_rejects_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="adapter_config.json"):
        get_method("lora").load(build_base("llama"), tmp_path)


# ---------------------------------------------------------------- merging


@pytest.mark.parametrize("key", ["lora-llama", "lora-glm"])
def test_lora_merge_keeps_logits(
    key: str, trained_cases: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    t = get_trained(key, trained_cases, tmp_path_factory)
    ids = batch()
    # A fresh copy: merging rewrites the weights in place.
    model = t.method.load(build_base(t.arch), t.adapter_dir)
    unmerged = logits(model, ids)
    merged = t.method.merge(model)
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(logits(merged, ids), unmerged, atol=1e-4, rtol=1e-4)


def test_ptuning_merge_raises(ptuning_case: Trained) -> None:
    with pytest.raises(MergeNotSupported, match="cannot be merged"):
        ptuning_case.method.merge(ptuning_case.model)


# ---------------------------------------------------------------- P-Tuning v2 generation (the fix)


def manual_decode(
    model: torch.nn.Module, prompt: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy decode without any cache: re-run the full sequence through `model.forward` at every step.

    With left padding, positions are passed explicitly (0-based over real tokens, as generate numbers them).
    """
    seq = prompt
    mask = torch.ones_like(prompt) if mask is None else mask
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=seq, attention_mask=mask, position_ids=positions)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return seq


def test_prefix_generate_equals_manual_decode(ptuning_case: Trained) -> None:
    t = ptuning_case
    prompt = batch()[:, :PROMPT_LEN]
    # Reference: upstream peft's own forward, which applies the prefix correctly (only its generate is broken).
    plain = PeftModel.from_pretrained(build_base(t.arch), str(t.adapter_dir)).eval()
    expected = manual_decode(plain, prompt)
    assert not torch.equal(expected, greedy(build_base(t.arch), prompt))  # the prefix matters
    loaded = t.method.load(build_base(t.arch), t.adapter_dir)
    assert isinstance(loaded, PrefixTuningModelForCausalLM)
    assert torch.equal(greedy(loaded, prompt), expected)
    assert torch.equal(greedy(loaded, prompt, use_cache=False), expected)
    assert torch.equal(greedy(t.model, prompt), expected)  # the model straight from wrap() too


def test_prefix_generate_left_padding_matches_single_rows(ptuning_case: Trained) -> None:
    t = ptuning_case
    model = t.method.load(build_base(t.arch), t.adapter_dir)
    rows = [batch()[0, :5], batch()[1, :3]]
    # Left-pad row 1 by two (pad id 0, masked out).
    prompt = torch.stack([rows[0], torch.cat([torch.zeros(2, dtype=torch.long), rows[1]])])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False
        )
    assert torch.equal(out, manual_decode(model, prompt, mask))
    for i, row in enumerate(rows):
        single = greedy(model, row[None])
        assert torch.equal(out[i, -NEW_TOKENS:], single[0, -NEW_TOKENS:])


def test_prefix_generate_with_beams(ptuning_case: Trained) -> None:
    prompt = batch()[:, :PROMPT_LEN]
    out = greedy(ptuning_case.model, prompt, num_beams=2, num_return_sequences=2)
    assert out.shape == (4, PROMPT_LEN + NEW_TOKENS)


def test_prefix_forward_continues_its_own_cache(ptuning_case: Trained) -> None:
    # Incremental decoding by hand: a cache returned by forward already starts with the prefix, so feeding
    # it back with one new token must give the same logits as re-running the whole sequence.
    model = ptuning_case.model
    ids = batch()
    with torch.no_grad():
        first = model(input_ids=ids[:, :-1], attention_mask=torch.ones_like(ids[:, :-1]), use_cache=True)
        step = model(input_ids=ids[:, -1:], attention_mask=torch.ones_like(ids), cache=first.cache)
    torch.testing.assert_close(step.logits[:, -1], logits(model, ids)[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "glm"])
def test_prefix_matches_gqa_cache_shape(arch: str) -> None:
    # 4 query heads share 2 KV heads: the prefix must be (batch, 2 KV heads, virtual tokens, head_dim 16) per
    # layer, the shape of the model's own cached keys/values.
    model = get_method("ptuning-v2").wrap(build_base(arch), {"num_virtual_tokens": 5})
    cache = model.prefix_cache(3)
    assert len(cache.layers) == 2
    for layer in cache.layers:
        assert layer.keys.shape == layer.values.shape == (3, 2, 5, 16)
    with torch.no_grad():
        own = build_base(arch)(input_ids=batch(), use_cache=True).cache
    assert own.layers[0].keys.shape[1:2] == cache.layers[0].keys.shape[1:2]


def test_upstream_peft_generate_ignores_prefix(
    trained_cases: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Documents the upstream bug this package works around (transformers 5.24 + peft 0.21.2): plain peft's
    `generate()` of a prefix-tuned model returns the base model's output. If this fails, upstream changed:
    re-check whether `PrefixTuningModelForCausalLM` is still needed."""
    t = get_trained("ptuning-llama", trained_cases, tmp_path_factory)
    prompt = batch()[:, :PROMPT_LEN]
    plain = PeftModel.from_pretrained(build_base("llama"), str(t.adapter_dir)).eval()
    assert type(plain) is not PrefixTuningModelForCausalLM
    with pytest.warns(FutureWarning, match="ignoring deprecated `past_key_values="):
        upstream = greedy(plain, prompt)
    assert torch.equal(upstream, greedy(build_base("llama"), prompt))
    # Our helper fixes such a model in place.
    expected = manual_decode(plain, prompt)  # still upstream peft's forward here
    mask = torch.ones_like(prompt)
    fixed = generate_with_prefix(plain, prompt, mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert isinstance(plain, PrefixTuningModelForCausalLM)
    assert torch.equal(fixed, expected)
