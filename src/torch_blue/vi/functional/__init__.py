"""The math under the layers: pure functions on tensors.

As ``torch.nn.functional`` holds the math of ``torch.nn``'s modules, this package
holds the computations of torch_blue's layers that take tensors, not modules:
:mod:`~torch_blue.vi.functional.attention` has the multi-head attention core of
:class:`~torch_blue.vi.VIMultiheadAttention` and its mask helpers (its kernel
bound ``MATMUL_MAX_POSITIONS`` lives there: set it on that module).
"""

from .attention import (
    additive_mask,
    is_causal_mask,
    safe_softmax,
    sampled_attention,
    sequence_length,
    transpose_qkv,
)

__all__ = [
    "additive_mask",
    "is_causal_mask",
    "safe_softmax",
    "sampled_attention",
    "sequence_length",
    "transpose_qkv",
]
