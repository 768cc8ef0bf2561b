r"""Multi-head attention on tensors, the core of ``VIMultiheadAttention``.

:func:`sampled_attention` computes what
``F.multi_head_attention_forward(..., need_weights=False)`` computes for one weight
sample, calling the attention kernel once for all samples (see
:func:`~torch_blue.vi._lane_attention.attend_in_lanes`). The other functions are its
steps and the mask helpers the layers share.
"""

import math
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from .. import _lane_attention
from .linear import flat_linear

__all__ = [
    "MATMUL_MAX_POSITIONS",
    "additive_mask",
    "is_causal_mask",
    "safe_softmax",
    "sampled_attention",
    "sequence_length",
    "transpose_qkv",
]

#: On CPU, sampled attention without attention weights over at most this many
#: query-key pairs uses batched matrix products and a softmax (holding the attention
#: weights of every sample for the backward pass) instead of one fused kernel call,
#: which never holds them. The bound is where the fused kernel overtook the matrix
#: products in the training step of a small encoder (see ``docs/benchmarks.rst``).
#: Other devices always take the fused kernel.
MATMUL_MAX_POSITIONS = 80 * 80


def is_causal_mask(mask: Optional[Tensor], size: int) -> bool:
    """Whether ``mask`` is the square causal mask of ``size`` (bool or additive).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import is_causal_mask
    >>> is_causal_mask(torch.ones(3, 3, dtype=torch.bool).triu(1), 3)
    True
    """
    if mask is None or tuple(mask.shape) != (size, size):
        return False
    causal = torch.full((size, size), float("-inf"), device=mask.device).triu(1)
    return bool((mask == causal.to(mask.dtype)).all())


def sequence_length(x: Tensor, batch_first: bool) -> int:
    """The sequence length of a batched or unbatched input of attention.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import sequence_length
    >>> sequence_length(torch.randn(2, 5, 4), batch_first=True)
    5
    """
    return x.shape[1] if x.dim() == 3 and batch_first else x.shape[0]


def transpose_qkv(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
    """Swap the first two dimensions of q, k, v, keeping which of them are the same.

    Self-attention projects one tensor once (in one matrix product, as torch does:
    exact parity of the mean network).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import transpose_qkv
    >>> x = torch.randn(2, 5, 4)
    >>> q, k, v = transpose_qkv(x, x, x)
    >>> q.shape, q is k is v
    (torch.Size([5, 2, 4]), True)
    """
    if key is not value:
        return tuple(x.transpose(1, 0) for x in (query, key, value))
    self_attention = query is key
    key = value = key.transpose(1, 0)
    return key if self_attention else query.transpose(1, 0), key, value


def additive_mask(mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """A bool mask (``True`` = masked) as an additive float mask, as torch merges them.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import additive_mask
    >>> additive_mask(torch.tensor([False, True]), torch.float32)
    tensor([0., -inf])
    """
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask, float("-inf")
    )


def safe_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dimension with zero weights for fully masked rows.

    A query whose keys are all masked (``-inf``: e.g. an empty document under a
    padding mask) attends to nothing, as in torch's fused attention kernels, instead of
    giving NaN that one optimizer step would spread to every parameter. NaN scores
    still give NaN.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import safe_softmax
    >>> safe_softmax(torch.tensor([[0.0, 0.0], [float("-inf"), float("-inf")]]))
    tensor([[0.5000, 0.5000],
            [0.0000, 0.0000]])
    """
    dead = scores.amax(dim=-1, keepdim=True) == float("-inf")
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
    return weights.masked_fill(dead, 0.0)


def _in_projection(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    in_proj: tuple[Tensor, ...],
    in_proj_bias: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Project q, k, v, in one product where torch does (self-attention, k is v)."""
    embed_dim = query.shape[-1]
    biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
    if len(in_proj) == 3:
        q, k, v = (
            flat_linear(x, w, b) for x, w, b in zip((query, key, value), in_proj, biases)
        )
        return q, k, v
    if query is key and key is value:
        q, k, v = flat_linear(query, in_proj[0], in_proj_bias).chunk(3, dim=-1)
        return q, k, v
    weights = in_proj[0].chunk(3)
    q = flat_linear(query, weights[0], biases[0])
    if key is value:
        both = None if in_proj_bias is None else in_proj_bias[embed_dim:]
        k, v = flat_linear(key, in_proj[0][embed_dim:], both).chunk(2, dim=-1)
    else:
        k = flat_linear(key, weights[1], biases[1])
        v = flat_linear(value, weights[2], biases[2])
    return q, k, v


def _append_key_columns(
    k: Tensor,
    v: Tensor,
    masks: tuple[Optional[Tensor], Optional[Tensor]],
    bias_k: Optional[Tensor],
    bias_v: Optional[Tensor],
    add_zero_attn: bool,
) -> tuple[Tensor, Tensor, tuple[Optional[Tensor], Optional[Tensor]], bool]:
    """Append the bias and zero key/value columns, unmasked, as torch does.

    ``masks`` are the additive attention and padding masks. Returns the new keys,
    values and masks, and whether any column was appended.
    """
    extra = [] if bias_k is None else [(bias_k, bias_v)]
    if add_zero_attn:
        extra.append((None, None))
    shape = (k.shape[0], 1, k.shape[-1])
    for column_k, column_v in extra:
        k = torch.cat(
            [k, k.new_zeros(shape) if column_k is None else column_k.expand(shape)], 1
        )
        v = torch.cat(
            [v, v.new_zeros(shape) if column_v is None else column_v.expand(shape)], 1
        )
        masks = tuple(None if m is None else F.pad(m, (0, 1)) for m in masks)
    return k, v, masks, bool(extra)


def _merged_mask(
    mask: Optional[Tensor],
    padding: Optional[Tensor],
    num_heads: int,
    target: int,
    source: int,
) -> Optional[Tensor]:
    """One additive mask broadcasting over ``(N, heads, L, S)`` from both masks."""
    if mask is not None and mask.dim() == 3:  # (N * heads, L, S)
        mask = mask.view(-1, num_heads, target, source)
    if padding is not None:  # (N, S)
        padding = padding.view(padding.shape[0], 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    dropout_p: float,
    causal: bool,
) -> Tensor:
    """Attention of ``(N, heads, length, head_dim)`` tensors with the kernel that fits.

    ``causal`` asks for the causal mask instead of ``mask`` (the fused kernel's flag).
    """
    target, source = q.shape[-2], k.shape[-2]
    if q.device.type == "cpu" and target * source <= MATMUL_MAX_POSITIONS:
        # Few positions on CPU: batched matrix products (they have vmap batching
        # rules) beat the fused kernel.
        scores = torch.matmul(q, k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
        if mask is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = safe_softmax(scores + mask)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        return torch.matmul(weights, v)
    return _lane_attention.attend_in_lanes(
        q, k, v, None if causal else mask, dropout_p, causal
    )


def sampled_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    num_heads: int,
    in_proj: tuple[Tensor, ...],
    in_proj_bias: Optional[Tensor],
    bias_k: Optional[Tensor],
    bias_v: Optional[Tensor],
    add_zero_attn: bool,
    dropout_p: float,
    out_weight: Optional[Tensor],
    out_bias: Optional[Tensor],
    attn_mask: Optional[Tensor],
    key_padding_mask: Optional[Tensor],
    is_causal: bool,
) -> Tensor:
    """Multi-head attention of one weight sample, without attention weights.

    Computes what ``F.multi_head_attention_forward(..., need_weights=False)`` computes
    (same mask merging, ``is_causal`` hint and zero or bias key columns), but calls
    the fused kernel through :func:`~torch_blue.vi._lane_attention.attend_in_lanes`,
    once for all samples (on CPU up to ``MATMUL_MAX_POSITIONS`` positions, batched
    matrix products instead); torch's own function would call it per sample under
    ``vmap``, and its matrix-product path holds the ``(N, heads, L, S)`` attention
    weights of every sample.

    Inputs are batch first, ``(N, L, E)`` or unbatched ``(L, E)``; ``in_proj`` is the
    packed ``(3E, E)`` weight or the three separate ones; ``out_weight=None`` skips
    the output projection. Returns the output in the query's layout. The
    projections use :func:`~torch_blue.vi.functional.linear.flat_linear` (an input
    transposed from sequence first would otherwise multiply a copy of the weight per
    position).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.functional import sampled_attention
    >>> x, w = torch.randn(2, 5, 8), torch.randn(24, 8)
    >>> out = sampled_attention(
    ...     x, x, x, 2, (w,), None, None, None, False, 0.0, None, None, None, None, False
    ... )
    >>> out.shape
    torch.Size([2, 5, 8])
    """
    batched = query.dim() == 3
    if not batched:
        query, key, value = (x.unsqueeze(0) for x in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    batch, target, embed_dim = query.shape
    q, k, v = _in_projection(query, key, value, in_proj, in_proj_bias)
    masks = (additive_mask(attn_mask, q.dtype), additive_mask(key_padding_mask, q.dtype))
    k, v, masks, extra = _append_key_columns(k, v, masks, bias_k, bias_v, add_zero_attn)
    mask = _merged_mask(*masks, num_heads, target, k.shape[1])

    head_dim = embed_dim // num_heads

    def heads(x: Tensor) -> Tensor:  # (N, length, E) -> (N, heads, length, head_dim)
        return x.view(batch, x.shape[1], num_heads, head_dim).transpose(1, 2)

    # The kernel's causal flag replaces a causal mask nothing was merged into.
    causal = is_causal and key_padding_mask is None and not extra
    output = _attend(heads(q), heads(k), heads(v), mask, dropout_p, causal)
    output = output.transpose(1, 2).reshape(batch, target, embed_dim)
    if out_weight is not None:
        output = flat_linear(output, out_weight, out_bias)
    return output if batched else output.squeeze(0)
