"""The GPU fast path computes what the plain recipe computes (CPU fallbacks, fp32, fixed seed)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from finetune.collate import PadCollator, pack_examples
from finetune.methods import get_method
from finetune.speed import FastPath, VarlenCollator, linear_cross_entropy, varlen_attention
from finetune.templates import IGNORE_INDEX
from tests.finetune.test_methods import build_base

VOCAB, PAD = 96, 0


def _example(rng: random.Random, n: int) -> dict[str, list[int]]:
    ids = [rng.randrange(1, VOCAB) for _ in range(n)]
    prompt = n // 2
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]}


def test_linear_cross_entropy_matches_full_logits():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 13, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50, (2, 13), generator=g)
    labels[0, :4] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX
    ref_h = hidden.detach().clone().requires_grad_(True)
    logits = ref_h @ weight.T
    ref = F.cross_entropy(
        logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    ref.backward()
    # 24 counted positions in chunks of 5: the last chunk is ragged.
    loss = linear_cross_entropy(hidden, weight, labels, chunk=5)
    loss.backward()
    assert torch.allclose(loss, ref, atol=1e-12)
    assert torch.allclose(hidden.grad, ref_h.grad, atol=1e-12)
    # With the trainer's count over accumulated micro-batches the sum is divided by that count instead.
    n = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(linear_cross_entropy(hidden, weight, labels, num_items=2 * n), ref / 2, atol=1e-12)


def test_linear_cross_entropy_refuses_a_trainable_head():
    with pytest.raises(ValueError, match="frozen"):
        linear_cross_entropy(
            torch.zeros(1, 3, 4), torch.zeros(5, 4, requires_grad=True), torch.zeros(1, 3).long()
        )


@pytest.mark.parametrize("prefix", [0, 3])
def test_varlen_attention_is_per_example_causal_attention(prefix):
    g = torch.Generator().manual_seed(1)
    lens, hq, hk, d = [5, 1, 7, 3], 4, 2, 8
    qs = [torch.randn(n, hq, d, generator=g) for n in lens]
    pk, pv = torch.randn(prefix, hk, d, generator=g), torch.randn(prefix, hk, d, generator=g)
    ks = [torch.cat([pk, torch.randn(n, hk, d, generator=g)]) for n in lens]
    vs = [torch.cat([pv, torch.randn(n, hk, d, generator=g)]) for n in lens]
    cu_q = torch.tensor([0, *lens]).cumsum(0).int()
    cu_k = torch.tensor([0, *(n + prefix for n in lens)]).cumsum(0).int()
    out = varlen_attention(
        torch.cat(qs), torch.cat(ks), torch.cat(vs), cu_q, cu_k, max(lens), max(lens) + prefix
    )
    start = 0
    for q, k, v, n in zip(qs, ks, vs, lens, strict=True):
        # Unpacked reference: each token sees the whole prefix and its own example up to itself.
        scores = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(hq // hk, 1)) / d**0.5
        mask = torch.ones(n, n + prefix, dtype=torch.bool).tril(diagonal=prefix)
        ref = torch.einsum(
            "hqk,khd->qhd",
            scores.masked_fill(~mask, float("-inf")).softmax(-1),
            v.repeat_interleave(hq // hk, 1),
        )
        assert torch.allclose(out[start : start + n], ref, atol=1e-5)
        start += n


def test_varlen_collator_prefix_key_index():
    packs = [
        {
            "input_ids": [1, 2, 3, 4, 5],
            "labels": [-100, 2, 3, -100, 5],
            "position_ids": [0, 1, 2, 0, 1],
            "seq_lens": [3, 2],
        }
    ]
    batch = VarlenCollator(PAD, token_budget=8, prefix_len=2, max_length=256)(packs)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, PAD, PAD, PAD]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 8] and batch["real_tokens"] == 5
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    # keys: prefix 0,1 + row tokens at P + start: example 1 → 2,3,4; example 2 → 5,6; padding → 7,8,9
    assert batch["kb_key_index"].tolist() == [0, 1, 2, 3, 4, 0, 1, 5, 6, 0, 1, 7, 8, 9]
    assert batch["cu_seq_lens_k"].tolist() == [0, 5, 9, 14]
    assert batch["max_length_q"] == 256 and batch["max_length_k"] == 258


def test_varlen_collator_cuts_padding_into_segments_no_longer_than_max_length():
    packs = [{"input_ids": [1, 2], "labels": [-100, 2], "position_ids": [0, 1], "seq_lens": [2]}]
    batch = VarlenCollator(PAD, token_budget=600, max_length=256)(packs)
    assert batch["cu_seq_lens_q"].tolist() == [0, 2, 258, 514, 600]
    assert batch["position_ids"][0, 2:5].tolist() == [0, 1, 2] and batch["position_ids"][0, 514].item() == 0


def _llama():
    return build_base("llama")


def _glm():
    return build_base("glm")


def _qwen2():
    return build_base("qwen2")


def _losses(build, method: str, settings: dict, fast: bool, groups) -> list[float]:
    torch.manual_seed(0)
    model = get_method(method).wrap(build(), settings)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    path = FastPath(model) if fast else None
    prefix = settings.get("num_virtual_tokens", 0) if method == "ptuning-v2" else 0
    out = []
    for group in groups:
        if fast:
            budget = sum(len(e["input_ids"]) for e in group) + 3  # and a padding segment
            batch = VarlenCollator(PAD, budget, prefix)(pack_examples(group, budget))
            labels = batch.pop("labels")
            batch.pop("real_tokens")
            loss = path.loss(path.forward(model, batch), labels)
        else:
            loss = model(**PadCollator(PAD)(group)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    if path:
        path.restore()
    return out


@pytest.mark.parametrize("build", [_llama, _glm, _qwen2], ids=["llama", "glm", "qwen2"])
@pytest.mark.parametrize(
    "method,settings",
    [
        ("lora", {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}),
        ("ptuning-v2", {"num_virtual_tokens": 3}),
    ],
    ids=["lora", "ptuning"],
)
def test_fast_path_losses_equal_the_plain_recipe(build, method, settings):
    """Packed varlen rows + fused loss vs right-padded batches + the model's loss, step by step."""
    rng = random.Random(7)
    two = [[_example(rng, rng.randint(4, 20)) for _ in range(3)] for _ in range(2)]
    groups = two * 4  # the same two batches again and again, so the loss must fall
    plain = _losses(build, method, settings, False, groups)
    fast = _losses(build, method, settings, True, groups)
    assert plain[-2] + plain[-1] < plain[0] + plain[1]  # it learns
    # fp32 on the CPU: the same sums in another order; 1e-5 relative is far below step-to-step change.
    assert fast == pytest.approx(plain, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash varlen kernel needs a CUDA GPU")
@pytest.mark.parametrize("prefix", [0, 128])
def test_flash_varlen_kernel_matches_the_reference_on_gpu(prefix):
    g = torch.Generator(device="cuda").manual_seed(2)
    lens, hq, hk, d = [300, 17, 1000, 1, 731], 32, 2, 128
    cu_q = torch.tensor([0, *lens], device="cuda").cumsum(0).int()
    cu_k = torch.tensor([0, *(n + prefix for n in lens)], device="cuda").cumsum(0).int()
    q = torch.randn(sum(lens), hq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(int(cu_k[-1]), hk, d, generator=g, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = varlen_attention(q, k, v, cu_q, cu_k, max(lens), max(lens) + prefix)
    from finetune.speed.varlen import _segments_reference

    ref = _segments_reference(q.double(), k.double(), v.double(), cu_q, cu_k, None)
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 1e-2, err  # bf16 operands
