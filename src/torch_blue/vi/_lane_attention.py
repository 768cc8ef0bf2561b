"""``scaled_dot_product_attention`` in the lanes of a sampled forward, in one call.

``torch.vmap`` has no batching rule for the fused attention kernels, so an attention
computed inside the lanes (a custom :class:`~torch_blue.vi.VIModule` calling
:func:`torch.nn.functional.scaled_dot_product_attention`, or
:class:`~torch_blue.vi.VIMultiheadAttention` without attention weights) would fall
back to a Python loop over the S samples: S kernel calls on slices, and in the
backward pass a zero-filled gradient of the whole stacked input for every slice.

While a sampled forward runs, :func:`lane_attention` routes the function through
:class:`LaneAttention`, whose ``vmap`` rule folds the sample dimension into the batch
dimension and calls the fused kernel once on the stacked tensors; autograd then
records one attention node. Values, gradients and dropout semantics are those of the
loop (``randomness="different"``: independent dropout masks per sample; other
randomness modes with dropout defer to torch's own handling).

A plain ``nn.MultiheadAttention`` left in a partly Bayesian model computes its
attention inside ``F.multi_head_attention_forward``, out of the routing's reach. In
training mode with dropout, a query shared by all samples would make ``vmap`` refuse
the in-place dropout; the rule ``"plain_attention_dropout"`` gives such layers a
per-sample copy of the query (:func:`plain_attention_in_lanes`), so each sample draws
its own mask.
"""

import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F  # noqa: N812
from torch.overrides import TorchFunctionMode

from .._compat import is_batched
from .sampling import current_state, lane_forwards, register_lane_rule

__all__ = [
    "LaneAttention",
    "attend_in_lanes",
    "lane_attention",
    "plain_attention_in_lanes",
]

_ATTENTION = F.scaled_dot_product_attention


class _Options(NamedTuple):
    """The non-tensor arguments of ``scaled_dot_product_attention``."""

    dropout_p: float
    is_causal: bool
    scale: Optional[float]
    enable_gqa: bool


def _attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor],
    options: _Options,
) -> Tensor:
    # enable_gqa exists from torch 2.5: pass it only when it is asked for.
    extra = {"enable_gqa": True} if options.enable_gqa else {}
    return _ATTENTION(
        query,
        key,
        value,
        attn_mask,
        options.dropout_p,
        options.is_causal,
        scale=options.scale,
        **extra,
    )


class LaneAttention(torch.autograd.Function):
    """``scaled_dot_product_attention`` with a ``vmap`` rule that stacks the lanes.

    ``apply(query, key, value, attn_mask, options, grad_enabled)``: ``options`` holds
    the non-tensor arguments, ``grad_enabled`` is the caller's grad mode. Under
    ``torch.vmap`` (the usual case) the rule calls the kernel on the stacked tensors
    and autograd differentiates that call directly. Where no input is batched at any
    ``vmap`` level, the forward runs the kernel with its own graph and the backward
    differentiates that graph, so a dropout mask is drawn once.
    """

    @staticmethod
    def forward(
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Optional[Tensor],
        options: _Options,
        grad_enabled: bool,
    ) -> Tensor:
        tracked = [
            t.detach().requires_grad_() if grad_enabled and t.requires_grad else t
            for t in (query, key, value)
        ]
        with torch.set_grad_enabled(grad_enabled):
            inner = _attend(*tracked, attn_mask, options)
        output = inner.detach()
        if inner.requires_grad:
            # Handed to setup_context, which receives this very tensor object.
            output._lane_graph = (inner, tracked)  # type: ignore[attr-defined]
        return output

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.graph = output.__dict__.pop("_lane_graph", None)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        grads: list[Optional[Tensor]] = [None] * 6
        if ctx.graph is not None:
            inner, tracked = ctx.graph
            wanted = [
                i
                for i, t in enumerate(tracked)
                if ctx.needs_input_grad[i] and t.requires_grad
            ]
            found = torch.autograd.grad(inner, [tracked[i] for i in wanted], grad)
            for i, g in zip(wanted, found):
                grads[i] = g
        return tuple(grads)

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Optional[Tensor],
        options: _Options,
        _grad_enabled: bool,
    ) -> tuple[Tensor, int]:
        args = (query, key, value, attn_mask)
        if options.dropout_p > 0 and info.randomness != "different":
            # One mask for all lanes ("same") or an error ("error"): torch's own
            # handling, with its loop.
            def attend(*tensors: Optional[Tensor]) -> Tensor:
                return _attend(*tensors, options)

            output = torch.vmap(attend, in_dims=in_dims[:4], randomness=info.randomness)(
                *args
            )
            return output, 0
        stacked = _stack_lanes(info.batch_size, args, in_dims[:4])
        output = _attend(*stacked[:4], options)
        return output.view(stacked[4] + output.shape[1:]), 0


def _stack_lanes(
    lanes: int, args: tuple[Optional[Tensor], ...], in_dims: tuple
) -> tuple[Any, ...]:
    """Query, key, value and mask with the lanes folded in; the output's lead shape.

    Each tensor gets the lane dimension first and is right-aligned with the query
    (unit dimensions inserted after the lanes), so that broadcasting over the other
    dimensions means what it meant per lane. With 4-d query, key and value (the
    fused kernels' layout ``(batch, heads, length, features)``) the lanes are merged
    into the batch dimension; otherwise they stay a leading batch dimension.
    """
    query, key, value, mask = args
    rank = max(t.dim() - (d is not None) for t, d in zip(args[:3], in_dims[:3]))

    def lanes_first(t: Tensor, dim: Optional[int]) -> Tensor:
        t = t.movedim(dim, 0) if dim is not None else t.expand(lanes, *t.shape)
        return t.reshape(lanes, *([1] * (rank + 1 - t.dim())), *t.shape[1:])

    query, key, value = (lanes_first(t, d) for t, d in zip(args[:3], in_dims[:3]))
    if mask is not None and in_dims[3] is not None:
        mask = lanes_first(mask, in_dims[3])
    if rank != 4:
        return query, key, value, mask, (lanes,)
    batch = max(query.shape[1], key.shape[1], value.shape[1])

    def merge(t: Tensor) -> Tensor:
        return t.expand(lanes, batch, *t.shape[2:]).reshape(lanes * batch, *t.shape[2:])

    query, key, value = merge(query), merge(key), merge(value)
    if mask is not None:
        if in_dims[3] is not None:
            mask = merge(mask)
        elif mask.dim() == 4 and mask.shape[0] != 1:
            # A per-example mask shared by the lanes: repeat it for each lane.
            mask = merge(mask.expand(lanes, *mask.shape))
    return query, key, value, mask, (lanes, batch)


#: Calls of :func:`scaled_dot_product_attention` whose arguments ``attend_in_lanes`` knows.
_ARGUMENTS = (
    "query",
    "key",
    "value",
    "attn_mask",
    "dropout_p",
    "is_causal",
    "scale",
    "enable_gqa",
)


class _LaneAttentionMode(TorchFunctionMode):
    """Routes ``scaled_dot_product_attention`` through :class:`LaneAttention`."""

    def __init__(self) -> None:
        super().__init__()
        self.routed = False

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None
    ) -> Any:
        kwargs = kwargs or {}
        if (
            func is not _ATTENTION
            or len(args) > len(_ARGUMENTS)
            or not set(kwargs) <= set(_ARGUMENTS[len(args) :])
        ):  # other functions, and calls attend_in_lanes does not know: torch's own
            return func(*args, **kwargs)
        self.routed = True
        return attend_in_lanes(*args, **kwargs)


def attend_in_lanes(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> Tensor:
    """Scaled dot-product attention with one kernel call for all lanes.

    Same arguments as :func:`~torch.nn.functional.scaled_dot_product_attention`,
    computed through :class:`LaneAttention`.

    The routing calls it for user code; library layers call it directly, so that
    they do not depend on the routing being on.
    """
    options = _Options(float(dropout_p), bool(is_causal), scale, bool(enable_gqa))
    return LaneAttention.apply(
        query, key, value, attn_mask, options, torch.is_grad_enabled()
    )


#: Whether a module's sampled forward called the attention (probed on its first).
_CALLS_ATTENTION: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def lane_attention(owner: torch.nn.Module) -> Iterator[None]:
    """Context of ``owner``'s sampled forward: attention runs once for all lanes.

    The lane rule ``"attention"`` of the engine. The routing intercepts every torch
    call of the forward, a cost an RNN's many small steps would feel; so it stays on
    only for modules whose first sampled forward called the attention.
    """
    known = _CALLS_ATTENTION.get(owner)
    if known is False:
        yield
        return
    mode = _LaneAttentionMode()
    with mode:
        yield
    if known is None:
        _CALLS_ATTENTION[owner] = mode.routed


register_lane_rule("attention", lane_attention)


def _per_sample_attention(
    self: torch.nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Forward of plain ``nn.MultiheadAttention`` layers while a model's lanes run."""
    state = current_state()
    forward = type(self).forward
    if (
        state is None
        or state.lane is None
        or not (self.training and self.dropout > 0)
        or is_batched(query)
    ):
        return forward(self, query, key, value, *args, **kwargs)
    lane_query = query + state.lane.sum().to(query.dtype)
    # keep self-attention's identity of query, key and value (torch's packed path)
    key = lane_query if key is query else key
    value = lane_query if value is query else value
    return forward(self, lane_query, key, value, *args, **kwargs)


def _is_plain_attention(module: torch.nn.Module) -> bool:
    # (torch's class and its subclasses; torch_blue's attention is not among them)
    return isinstance(module, torch.nn.MultiheadAttention)


def plain_attention_in_lanes(model: torch.nn.Module) -> AbstractContextManager:
    """Context of ``model``'s lanes: plain attention layers drop out per sample.

    The lane rule ``"plain_attention_dropout"`` of the engine (see
    :func:`~torch_blue.vi.sampling.lane_forwards`).
    """
    return lane_forwards(model, _is_plain_attention, _per_sample_attention)


register_lane_rule("plain_attention_dropout", plain_attention_in_lanes)
