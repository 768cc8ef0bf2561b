"""The math under the layers: pure functions on tensors.

As ``torch.nn.functional`` holds the math of ``torch.nn``'s modules, this package
holds the computations of torch_blue's layers that take tensors, not modules:

* :mod:`~torch_blue.vi.functional.attention`: the multi-head attention core of
  :class:`~torch_blue.vi.VIMultiheadAttention` and its mask helpers (its kernel
  bound ``MATMUL_MAX_POSITIONS`` lives there: set it on that module);
* :mod:`~torch_blue.vi.functional.rnn`: the recurrent cells and their recurrence,
  and packing and padding of variable-length sequences;
* :mod:`~torch_blue.vi.functional.linear`: the dense products of the layers (one weight, or
  one weight set per sample);
* :mod:`~torch_blue.vi.functional.densities`: log-densities the distributions share
  (one Student-t) and the Normal's constants.
"""

from .attention import (
    additive_mask,
    is_causal_mask,
    safe_softmax,
    sampled_attention,
    sequence_length,
    transpose_qkv,
)
from .densities import HALF_LOG_2PI, LOG_2PI, student_t_log_density
from .linear import flat_linear, stacked_linear
from .rnn import GATES, Affine, pack_padded_sequence, pad_packed_sequence, recur, rnn_cell

__all__ = [
    "HALF_LOG_2PI",
    "LOG_2PI",
    "student_t_log_density",
    "GATES",
    "Affine",
    "flat_linear",
    "stacked_linear",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "recur",
    "rnn_cell",
    "additive_mask",
    "is_causal_mask",
    "safe_softmax",
    "sampled_attention",
    "sequence_length",
    "transpose_qkv",
]
