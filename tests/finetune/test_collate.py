from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from transformers import GlmConfig, GlmForCausalLM, LlamaConfig, LlamaForCausalLM

from finetune.collate import PackedCollator, PadCollator, pack_examples, prepare_model_for_packing
from finetune.templates import IGNORE_INDEX, encode
from kb.errors import ConfigError

PAD = 0
VOCAB = 128


def example(n: int, source: int = 3, seed: int = 0) -> dict[str, list[int]]:
    """n random tokens; the first `source` are the prompt (label -100), the rest the reply."""
    rng = random.Random(seed * 1000 + n)
    ids = [rng.randrange(1, VOCAB) for _ in range(n)]
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * min(source, n) + ids[source:]}


def test_pad_collator_shapes_and_values():
    batch = PadCollator(PAD)([example(5), example(3)])
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, 5)
    assert batch["input_ids"][1, 3:].tolist() == [PAD, PAD]
    assert batch["labels"][1, 3:].tolist() == [IGNORE_INDEX] * 2
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert PadCollator(PAD, pad_to_multiple_of=8)([example(5), example(3)])["input_ids"].shape == (2, 8)


def test_pad_collator_mask_ignores_pad_equal_to_eos(tok, conv2):
    ex = encode(conv2, tok, "chatglm3", 100, 100)
    batch = PadCollator(tok.eos_token_id)([ex])
    assert batch["attention_mask"].all() and batch["labels"][0, -1] == tok.eos_token_id


def test_pack_examples():
    examples = [example(n, seed=i) for i, n in enumerate([7, 5, 4, 3, 3, 2, 8])]
    packs = pack_examples(examples, max_len=10)
    assert len(packs) == 4  # 32 tokens in rows of 10 cannot take fewer
    assert sorted(n for p in packs for n in p["seq_lens"]) == sorted(len(e["input_ids"]) for e in examples)
    originals = {tuple(e["input_ids"]): e for e in examples}
    for p in packs:
        assert len(p["input_ids"]) == len(p["labels"]) == len(p["position_ids"]) == sum(p["seq_lens"]) <= 10
        start = 0
        for n in p["seq_lens"]:
            assert p["position_ids"][start : start + n] == list(range(n))
            ex = originals[tuple(p["input_ids"][start : start + n])]
            assert p["labels"][start] == IGNORE_INDEX
            assert p["labels"][start + 1 : start + n] == ex["labels"][1:]
            start += n


def test_pack_boundary_label_is_never_predicted_from_the_previous_example():
    fully_labelled = {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}
    (pack,) = pack_examples([fully_labelled, fully_labelled], max_len=6)
    assert pack["labels"] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 6, 7]


def test_pack_rejects_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="9 tokens"):
        pack_examples([example(9)], max_len=8)


def test_packed_collator():
    packs = pack_examples([example(6), example(3), example(4, seed=1)], max_len=7)
    batch = PackedCollator(PAD)(packs)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask, on purpose
    assert batch["input_ids"].shape == (2, 7)
    short = min(range(2), key=lambda r: sum(packs[r]["seq_lens"]))
    n = sum(packs[short]["seq_lens"])
    assert batch["position_ids"][short, n:].tolist() == list(range(7 - n))
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    flat = PackedCollator(PAD, pad_to_multiple_of=8, flatten=True)(packs)
    assert flat["input_ids"].shape == (1, 16)
    assert flat["input_ids"][0, :13].tolist() == [t for p in packs for t in p["input_ids"]]


def tiny(arch: str, attn: str):
    torch.manual_seed(0)
    common = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=PAD,
        eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = GlmForCausalLM(GlmConfig(head_dim=16, **common))
    model.config._attn_implementation = attn
    return model.eval()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position loss of predicting labels[t + 1] from position t (0 where the label is ignored)."""
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )
    return torch.nn.functional.pad(loss, (0, 1))


def packed_vs_padded(model, examples, max_len):
    padded = PadCollator(PAD)(examples)
    (pack,) = pack_examples(examples, max_len)
    packed = PackedCollator(PAD, pad_to_multiple_of=8)([pack])
    with torch.no_grad():
        out_padded = model(**padded)
        out_packed = model(**packed)
    per_padded = token_losses(out_padded.logits, padded["labels"])
    per_packed = token_losses(out_packed.logits, packed["labels"])[0]
    by_ids = {tuple(e["input_ids"]): row for row, e in enumerate(examples)}
    start, pairs = 0, []
    for n in pack["seq_lens"]:
        row = by_ids[tuple(pack["input_ids"][start : start + n])]
        pairs.append((per_packed[start : start + n], per_padded[row, :n]))
        start += n
    return pairs, out_packed.loss, out_padded.loss


@pytest.mark.parametrize("arch", ["llama", "glm"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_padded_loss(arch, attn):
    model = tiny(arch, attn)
    assert prepare_model_for_packing(model) is False
    assert model.config.use_cache is False
    examples = [example(11, source=4), example(6, source=2, seed=1)]
    pairs, loss_packed, loss_padded = packed_vs_padded(model, examples, max_len=24)
    for packed, padded in pairs:
        assert (packed != 0).any()
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-5, rtol=0)


def test_without_prepare_the_cache_lets_examples_attend_to_each_other():
    # transformers 5.24 skips packed-sequence detection when a cache exists, and config.use_cache=True
    # creates one. If this starts passing, masking_utils changed: revisit collate.py's docstring.
    model = tiny("llama", "sdpa")
    assert model.config.use_cache is True
    pairs, _, _ = packed_vs_padded(model, [example(6), example(5, seed=1)], max_len=16)
    first, second = pairs
    torch.testing.assert_close(*first, atol=1e-5, rtol=0)  # the first example sees nothing foreign
    assert not torch.allclose(*second, atol=1e-3)


def test_prepare_model_for_packing_refusals():
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2", use_cache=True))
    assert prepare_model_for_packing(flash) is True and flash.config.use_cache is False
    with pytest.raises(ConfigError, match="paged"):
        prepare_model_for_packing(SimpleNamespace(config=SimpleNamespace(_attn_implementation="paged|sdpa")))
    prompt = SimpleNamespace(
        peft_config={"default": SimpleNamespace(is_prompt_learning=True)},
        active_adapter="default",
        config=SimpleNamespace(_attn_implementation="sdpa"),
    )
    with pytest.raises(ConfigError, match="P-Tuning"):
        prepare_model_for_packing(prompt)
