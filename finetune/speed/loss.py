"""Cross-entropy of `hidden @ weight.T` without ever holding all the logits.

The plain path computes logits for every token (tokens × vocab in bf16), upcasts them to fp32 and keeps
them for backward: at 16,384 tokens and ChatGLM3's 65,024 entries that is 2 GB + 4.3 GB + a 4.3 GB
gradient. Here the tokens go through in chunks; each chunk's logits live only while its loss and its
gradient with respect to the hidden states are computed (the gradient is taken in the forward pass, as
Liger-Kernel's fused linear cross-entropy does, so backward has nothing to recompute). Peak extra memory
is two chunk × vocab fp32 buffers (4,096 × 65,024 × 4 B = 1.07 GB each).

Only the hidden states get a gradient: the output layer is frozen under LoRA and P-Tuning v2. A trainable
output layer (full fine-tuning, or `modules_to_save`) must use the plain loss; FastPath checks that.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, denom, chunk):  # type: ignore[override]
        # hidden (N, h) · weight (V, h) · labels (N,) with IGNORE_INDEX for tokens that do not count.
        want_grad = hidden.requires_grad
        grad = torch.empty_like(hidden) if want_grad else None
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 logits for bf16 hidden states
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h, y = hidden[s : s + chunk], labels[s : s + chunk]
            valid = y != IGNORE_INDEX
            if not bool(valid.any()):
                if want_grad:
                    grad[s : s + chunk].zero_()
                continue
            target = y.clamp(min=0)
            logits = (h.to(weight.dtype) @ weight.T).to(acc)  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            picked = logits.gather(1, target[:, None])[:, 0]
            total += ((lse - picked) * valid).sum()
            if want_grad:
                # d loss / d logits = softmax - onehot, for counted tokens, over the denominator.
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(y), device=y.device), target] -= 1.0
                probs *= (valid.to(acc) / denom)[:, None]
                grad[s : s + chunk] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad if want_grad else hidden.new_empty(0))
        return total / denom

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items: int | torch.Tensor | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """Causal-LM loss: hidden (B, T, h) predicts labels shifted by one, like transformers' own loss.

    Sum over counted tokens divided by `num_items` (the HF Trainer's count over all accumulated
    micro-batches) or, when None, by this batch's count: the mean, as the model's own loss.
    """
    if weight.requires_grad:
        raise ValueError("linear_cross_entropy: the output layer must be frozen (LoRA / P-Tuning v2)")
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1).to(hidden.device)
    denom = num_items if num_items is not None else (y != IGNORE_INDEX).sum()
    denom = torch.as_tensor(denom, device=hidden.device).to(torch.promote_types(hidden.dtype, torch.float32))
    denom = denom.clamp(min=1)
    return _LinearCrossEntropy.apply(h, weight, y, denom, chunk)
