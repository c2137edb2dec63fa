"""HFGenerator on a tiny random Llama built in the test: the plumbing, not the quality."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from kb.config import GeneratorConfig
from kb.errors import ModelError
from kb.generate.base import get_generator
from kb.generate.hf import HFGenerator

WORDS = ["[UNK]", "<s>", "</s>", "system", "user", "assistant", "yes", "Yes", "no", "No", "是", "否"]
WORDS += "the a an of to and in is it that on for with as was at by 年假 公司 员工 天 问题 资料".split()

# Minimal ChatML-like template: what matters is that the generation prompt is appended.
TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant {% endif %}"
)

MESSAGES = [
    {"role": "system", "content": "the a of"},
    {"role": "user", "content": "公司 员工 年假 is it yes"},
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator(GeneratorConfig(model=str(tiny_model_dir), device="cpu", threads=1))


def test_registry_builds_hf_generator(tiny_model_dir: Path) -> None:
    g = get_generator(GeneratorConfig(name="hf", model=str(tiny_model_dir), device="cpu"))
    assert isinstance(g, HFGenerator)
    assert g.model is not None and g.tokenizer is not None


def test_load_logs_time(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    HFGenerator(GeneratorConfig(model=str(tiny_model_dir), device="cpu"))
    assert "model loaded in" in capsys.readouterr().err


def test_stream_matches_plain_generate(gen: HFGenerator) -> None:
    pieces = list(gen.stream(MESSAGES, max_new_tokens=12))
    assert pieces and all(isinstance(p, str) and p for p in pieces)
    # Reference: generate() without a streamer, decoded in one go.
    ids = gen.encode(MESSAGES)
    out = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **gen._generation_kwargs(12))
    expected = gen.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "".join(pieces) == expected
    assert gen.generate(MESSAGES, max_new_tokens=12) == expected


def test_greedy_is_deterministic(gen: HFGenerator) -> None:
    first = gen.generate(MESSAGES, max_new_tokens=10)
    assert all(gen.generate(MESSAGES, max_new_tokens=10) == first for _ in range(3))


def test_max_new_tokens_bounds_the_reply(gen: HFGenerator) -> None:
    # Word-level tokenizer: one token is one word.
    assert len(gen.generate(MESSAGES, max_new_tokens=3).split()) <= 3


def test_sampling_uses_temperature(tiny_model_dir: Path) -> None:
    g = HFGenerator(GeneratorConfig(model=str(tiny_model_dir), device="cpu", temperature=0.8))
    kwargs = g._generation_kwargs(5)["generation_config"]
    assert kwargs.do_sample and kwargs.temperature == 0.8
    assert isinstance(g.generate(MESSAGES, max_new_tokens=5), str)


def test_yes_probability_in_unit_interval(gen: HFGenerator) -> None:
    p = gen.yes_probability(MESSAGES)
    assert p is not None and 0.0 <= p <= 1.0
    assert sorted(gen._yes_ids) == sorted(WORDS.index(w) for w in ("yes", "Yes", "是"))


def test_yes_probability_follows_the_logits(gen: HFGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.zeros(len(WORDS))
    logits[WORDS.index("Yes")] = 5.0
    monkeypatch.setattr(gen, "next_token_logits", lambda messages: logits)
    assert gen.yes_probability(MESSAGES) > 0.9
    logits[WORDS.index("否")] = 8.0
    assert gen.yes_probability(MESSAGES) < 0.1


def test_error_in_generation_thread_reaches_caller(gen: HFGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(gen.model, "generate", boom)
    with pytest.raises(ModelError, match="simulated"):
        list(gen.stream(MESSAGES, max_new_tokens=5))
    assert not [t for t in threading.enumerate() if t.name == "kb-generate"]


def test_closing_the_stream_early_stops_the_thread(gen: HFGenerator) -> None:
    stream = gen.stream(MESSAGES, max_new_tokens=200)
    next(stream, None)
    stream.close()  # what a caller breaking out of a for loop does
    assert not [t for t in threading.enumerate() if t.name == "kb-generate"]


def test_adapter_is_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    g = HFGenerator(
        GeneratorConfig(model=str(tiny_model_dir), device="cpu"), adapter_dir=str(tmp_path / "adapter")
    )
    assert isinstance(g.model, PeftModel)
    assert isinstance(g.generate(MESSAGES, max_new_tokens=4), str)


def test_bad_adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="adapter_config.json"):
        HFGenerator(GeneratorConfig(model=str(tiny_model_dir), device="cpu"), adapter_dir=str(tmp_path))


def test_unloadable_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=str(tmp_path)):
        HFGenerator(GeneratorConfig(model=str(tmp_path), device="cpu"))


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # The env var is read once at import; patch the constant so the test never waits on the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="Hugging Face hub"):
        HFGenerator(GeneratorConfig(model="kb-test-org/no-such-model", device="cpu"))
