"""The GPU fast path of `kb finetune`: what makes a step cheap without changing what is learned.

- varlen.py: packed rows where examples never attend to each other, through FlashAttention's varlen kernel
  (torch.nn.attention.varlen); P-Tuning v2's prefix is given to every example of a packed row.
- loss.py: the lm_head and cross-entropy fused in token chunks, so full-vocabulary fp32 logits
  (tokens × vocab × 4 bytes: 16k × 65,024 × 4 = 4.3 GB for ChatGLM3) are never materialised.
- apply.py: switches a (peft-wrapped) model onto the fast path and back; compiles the decoder layers.

Each part has a CPU fallback with the same semantics, so the test suite checks the logic
(tests/finetune/test_speed.py: per-step losses equal to the plain recipe's).
"""

from finetune.speed.apply import FastPath, fast_path_active
from finetune.speed.loss import linear_cross_entropy
from finetune.speed.varlen import VarlenCollator, varlen_attention

__all__ = ["FastPath", "VarlenCollator", "fast_path_active", "linear_cross_entropy", "varlen_attention"]
