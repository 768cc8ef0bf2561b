r"""Bayesian attention and transformers: twins of ``torch.nn``'s transformer family.

:class:`VIMultiheadAttention`, :class:`VITransformerEncoderLayer`,
:class:`VITransformerDecoderLayer`, :class:`VITransformerEncoder`,
:class:`VITransformerDecoder` and :class:`VITransformer` mirror their ``torch.nn``
namesakes: same arguments (with upstream torch_blue's defaults), same submodule and
weight names (``in_proj_weight``, ``out_proj``, ``linear1``, ``norm1``, ...), so
:func:`~torch_blue.vi.convert_to_vimodule` and :func:`~torch_blue.vi.to_deterministic`
map weights by name and the mean network computes exactly what the ``torch.nn``
module computes.

How the weights are drawn
    Every weight of a layer (the attention in-projection, ``out_proj`` and the
    feed-forward ``linear1``/``linear2``) is drawn once per sample and shared by all
    positions and sequences of the batch, as in the textbook Bayesian transformer.
    With a non-default ``estimator`` (``"local_reparameterization"``, ``"flipout"``
    or ``"shared_flipout"``, see :mod:`torch_blue.vi.estimators`) the linear sub-layers
    (``out_proj``, ``linear1``, ``linear2``) sample their outputs instead; the
    in-projection always draws its weights. Note that those estimators draw
    independent noise per *position*, which attention then mixes: the per-sequence
    predictive distribution is only approximately that of shared weights. For the
    same reason the transformer layers do not use ``VILinear``'s cheaper
    prediction path (pre-activation sampling when log-probs are off): with the
    default estimator they read ``linear1.weight`` etc. and apply ``F.linear``
    themselves, so hooks registered on those sub-layers do not run.
How attention is computed
    With sampled weights and ``need_weights=False`` (the transformer layers never ask
    for the weights) :class:`VIMultiheadAttention` runs its own core: batched matrix
    products on a CPU up to ``MATMUL_MAX_POSITIONS`` query-key pairs, otherwise one
    fused ``scaled_dot_product_attention`` call for all samples, which never holds
    the attention weights of every sample. With ``need_weights=True`` it runs
    torch's ``F.multi_head_attention_forward`` on its matrix-product path; the mean
    network always runs torch's function, so it equals the torch module exactly.
Layer norms
    stay deterministic ``nn.LayerNorm`` modules, like upstream torch_blue.
Dropout
    Upstream torch_blue has no dropout argument (weight sampling already
    regularises); the layers here accept ``dropout`` as a trailing keyword argument,
    default ``0.0``. ``torch.nn``'s default is ``0.1``; conversion carries a torch
    module's rate across in both directions.
"""

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from . import _lane_attention
from .base import VIModule
from .distributions import Prior, VariationalDistribution
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .estimators import ESTIMATORS, flat_linear
from .linear import VILinear
from .sampling import mean_weights_enabled
from .utils.checks import check_input_dtype, check_int
from .utils.errors import ShapeError

__all__ = [
    "VIMultiheadAttention",
    "VITransformer",
    "VITransformerDecoder",
    "VITransformerDecoderLayer",
    "VITransformerEncoder",
    "VITransformerEncoderLayer",
]

_Activation = Union[str, nn.Module, Callable[[Tensor], Tensor]]
_AnyVariational = Union[VariationalDistribution, Sequence[VariationalDistribution]]
_AnyPrior = Union[Prior, Sequence[Prior]]

# Upstream's declared random variables of the attention, in order: a sequence of
# distributions gives one per name (absent variables included).
_UPSTREAM_VARIABLES = (
    "in_proj_weight",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "out_proj_weight",
    "in_proj_bias",
    "out_proj_bias",
    "bias_k",
    "bias_v",
)
_OWN_VARIABLES = (
    "in_proj_weight",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "in_proj_bias",
    "bias_k",
    "bias_v",
)


# ---------------------------------------------------------------------- validation
def _positive_int(owner: str, name: str, value: Any) -> int:
    return check_int(owner, name, value)


def _probability(owner: str, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _positive_float(owner: str, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")
    return float(value)


def _estimator(owner: str, estimator: Any) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"{owner}: estimator must be one of {ESTIMATORS}, got {estimator!r}"
        )
    return estimator


def _activation(owner: str, activation: Any) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise ValueError(
            f"{owner}: activation must be 'relu', 'gelu', an nn.Module or a callable, "
            f"got {activation!r}"
        )
    if not callable(activation):
        raise TypeError(
            f"{owner}: activation must be 'relu', 'gelu', an nn.Module or a callable, "
            f"got {type(activation).__name__}"
        )
    return activation


def _single_distribution(owner: str, argument: str, value: Any) -> None:
    if isinstance(value, (tuple, list)):
        raise TypeError(
            f"{owner}: {argument} must be one distribution for all weights, got a "
            f"{type(value).__name__}; give per-variable distributions to the sub-layers"
        )


def _check_sequence(owner: str, name: str, x: Any, d_model: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3) or x.shape[-1] != d_model:
        raise ShapeError(
            f"{owner}(d_model={d_model}): expected {name} of shape (L, {d_model}) "
            f"unbatched or (N, L, {d_model}) / (L, N, {d_model}) batched, got shape "
            f"{tuple(x.shape)}"
        )


def _check_mask_dtype(owner: str, name: str, mask: Tensor) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{owner}: {name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{owner}: {name} must be a bool or floating-point mask, got {mask.dtype}"
        )


def _is_causal_mask(mask: Optional[Tensor], size: int) -> bool:
    """Whether ``mask`` is the square causal mask of ``size`` (bool or additive)."""
    if mask is None or tuple(mask.shape) != (size, size):
        return False
    causal = torch.full((size, size), float("-inf"), device=mask.device).triu(1)
    return bool((mask == causal.to(mask.dtype)).all())


def _sequence_length(x: Tensor, batch_first: bool) -> int:
    return x.shape[1] if x.dim() == 3 and batch_first else x.shape[0]


def _linear(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a linear sub-layer with one weight draw shared by all positions.

    ``VILinear`` would sample pre-activations independently per position when
    log-probs are off; attention mixes positions, so that is not the same
    distribution here. A non-default estimator is the user's explicit choice.
    """
    if isinstance(layer, VILinear) and layer.estimator == "reparameterization":
        return flat_linear(x, layer.weight, layer.bias)
    return layer(x)


#: On CPU, sampled attention without attention weights over at most this many
#: query-key pairs uses batched matrix products and a softmax (holding the attention
#: weights of every sample for the backward pass) instead of one fused kernel call.
#: Training step of a 2-layer encoder (d_model 64, 4 heads, batch 32, S = 10,
#: 2 threads), time relative to torch's weights path: matrix products 0.74-0.77 and
#: the fused kernel 0.78-0.91 from 32 to 80 positions, about equal at 96 (0.70 and
#: 0.73), the fused kernel ahead from 112 (0.61-0.64 against 0.76-0.82) with less
#: than half the saved activations. Other devices always take the fused kernel.
MATMUL_MAX_POSITIONS = 80 * 80


def _transposed(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
    """Swap the first two dimensions of q, k, v, keeping which of them are the same.

    Self-attention projects one tensor once (in one matrix product, as torch does:
    exact parity of the mean network).
    """
    if key is not value:
        return tuple(x.transpose(1, 0) for x in (query, key, value))
    self_attention = query is key
    key = value = key.transpose(1, 0)
    return key if self_attention else query.transpose(1, 0), key, value


def _additive_mask(mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """A bool mask (``True`` = masked) as an additive float mask, as torch merges them."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask, float("-inf")
    )


def _safe_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dimension with zero weights for fully masked rows.

    A query whose keys are all masked (``-inf``: e.g. an empty document under a
    padding mask) attends to nothing, as in torch's fused attention kernels, instead of
    giving NaN that one optimizer step would spread to every parameter. NaN scores
    still give NaN.
    """
    dead = scores.amax(dim=-1, keepdim=True) == float("-inf")
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
    return weights.masked_fill(dead, 0.0)


def _sampled_attention(
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
    projections use :func:`~torch_blue.vi.estimators.flat_linear` (an input transposed
    from sequence first would otherwise multiply a copy of the weight per position).
    """
    batched = query.dim() == 3
    if not batched:
        query, key, value = (x.unsqueeze(0) for x in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    batch, target, embed_dim = query.shape
    head_dim = embed_dim // num_heads

    biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
    if len(in_proj) == 3:
        q, k, v = (
            flat_linear(x, w, b) for x, w, b in zip((query, key, value), in_proj, biases)
        )
    elif query is key and key is value:
        q, k, v = flat_linear(query, in_proj[0], in_proj_bias).chunk(3, dim=-1)
    else:
        weights = in_proj[0].chunk(3)
        q = flat_linear(query, weights[0], biases[0])
        if key is value:
            both = None if in_proj_bias is None else in_proj_bias[embed_dim:]
            k, v = flat_linear(key, in_proj[0][embed_dim:], both).chunk(2, dim=-1)
        else:
            k = flat_linear(key, weights[1], biases[1])
            v = flat_linear(value, weights[2], biases[2])
    # Extra key/value columns (bias, zero attention) are unmasked columns.
    extra = [] if bias_k is None else [(bias_k, bias_v)]
    if add_zero_attn:
        extra.append((None, None))
    mask = _additive_mask(attn_mask, q.dtype)  # the causal one too (see forward)
    padding = _additive_mask(key_padding_mask, q.dtype)
    for column_k, column_v in extra:
        shape = (batch, 1, embed_dim)
        k = torch.cat(
            [k, k.new_zeros(shape) if column_k is None else column_k.expand(shape)], 1
        )
        v = torch.cat(
            [v, v.new_zeros(shape) if column_v is None else column_v.expand(shape)], 1
        )
        mask = None if mask is None else F.pad(mask, (0, 1))
        padding = None if padding is None else F.pad(padding, (0, 1))
    source = k.shape[1]
    if mask is not None:  # (L, S) or (N * heads, L, S)
        mask = mask.view(-1, num_heads, target, source) if mask.dim() == 3 else mask
    if padding is not None:  # (N, S)
        padding = padding.view(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding

    def heads(x: Tensor) -> Tensor:  # (N, length, E) -> (N, heads, length, head_dim)
        return x.view(batch, x.shape[1], num_heads, head_dim).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    if q.device.type == "cpu" and target * source <= MATMUL_MAX_POSITIONS:
        # Few positions on CPU: batched matrix products (they have vmap batching
        # rules) beat the fused kernel.
        scores = torch.matmul(q, k.transpose(-2, -1) / math.sqrt(head_dim))
        if mask is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = _safe_softmax(scores + mask)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        output = torch.matmul(weights, v)
    else:
        # The kernel's causal flag replaces a causal mask nothing was merged into.
        causal = is_causal and key_padding_mask is None and not extra
        output = _lane_attention.attend_in_lanes(
            q, k, v, None if causal else mask, dropout_p, causal
        )
    output = output.transpose(1, 2).reshape(batch, target, embed_dim)
    if out_weight is not None:
        output = flat_linear(output, out_weight, out_bias)
    return output if batched else output.squeeze(0)


def _vikwargs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def _reinitialize(module: nn.Module) -> None:
    """Re-draw the initial variational parameters of every VI layer inside."""
    for sub in module.modules():
        if isinstance(sub, VIModule) and sub.random_variables is not None:
            sub.reset_variational_parameters()


def _convert_copy(module: nn.Module, vikwargs: dict[str, Any]) -> nn.Module:
    """A converted copy of a ``torch.nn`` module (``module`` itself is kept)."""
    from .utils.convert import convert_to_vimodule

    return convert_to_vimodule(copy.deepcopy(module), **vikwargs)


def _deterministic(module: nn.Module) -> nn.Module:
    from .deterministic import to_deterministic

    return to_deterministic(module)


def _factory_of(module: nn.Module) -> dict[str, Any]:
    parameter = next(module.parameters(), None)
    if parameter is None:
        return {"device": None, "dtype": None}
    return {"device": parameter.device, "dtype": parameter.dtype}


def _activation_repr(activation: Any) -> str:
    if isinstance(activation, nn.Module):
        return ""  # printed as a child module
    name = getattr(activation, "__name__", type(activation).__name__)
    return f", activation={name}"


# ---------------------------------------------------------------------- attention
class VIMultiheadAttention(VIModule):
    r"""Bayesian multi-head attention, the twin of :class:`torch.nn.MultiheadAttention`.

    Computes :math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + M)V` per head with random
    projection weights: ``in_proj_weight`` ``(3E, E)`` (or ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight`` when ``kdim``/``vdim`` differ from
    ``embed_dim``), ``in_proj_bias`` ``(3E,)``, ``bias_k``/``bias_v`` ``(1, 1, E)``
    with ``add_bias_kv``, and the output projection ``out_proj``, a
    :class:`~torch_blue.vi.VILinear`. The names and shapes are those of the torch
    module's state dict. Each sample draws all of them once; the in-projection always
    draws weights, ``out_proj`` follows its ``estimator``.

    The arguments are those of the torch module with upstream torch_blue's order and
    defaults (``batch_first=True``; ``rescale_prior=True``) plus the VIkwargs of
    :class:`~torch_blue.vi.VIModule`. The attention dropout rate ``dropout`` (torch's
    third argument) is a trailing keyword here, default 0.

    Parameters
    ----------
    embed_dim : int
        Model dimension E.
    num_heads : int
        Number of heads; must divide ``embed_dim``.
    bias : bool, default: True
        Random ``in_proj_bias`` and ``out_proj.bias``.
    add_bias_kv : bool, default: False
        Append the random ``bias_k``/``bias_v`` to the keys and values.
    add_zero_attn : bool, default: False
        Append a zero key and value.
    kdim, vdim : int, optional
        Feature sizes of key and value (default ``embed_dim``).
    batch_first : bool, default: True
        Batched inputs are ``(N, L, E)`` instead of ``(L, N, E)``.
    variational_distribution, prior
        One distribution for all weights, or a sequence of nine in upstream's variable
        order ``in_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight,
        out_proj_weight, in_proj_bias, out_proj_bias, bias_k, bias_v`` (entries of
        absent variables are ignored).
    rescale_prior : bool, default: True
        Rescale each prior to the spread of its weight's initialisation (fan-in
        ``kdim``/``vdim`` for the key/value projections, ``embed_dim`` otherwise).
    dropout : float, default: 0.0
        Dropout on the attention weights in training mode.

    Shape
    -----
    - query: ``(N, L, E)`` (``batch_first``), ``(L, N, E)`` or unbatched ``(L, E)``;
      key ``(.., S, kdim)`` and value ``(.., S, vdim)`` likewise.
    - attn_mask: ``(L, S)`` or ``(N * num_heads, L, S)``, bool (``True`` = masked) or
      additive float. key_padding_mask: ``(N, S)`` or ``(S,)``, bool or float.
    - Output: ``(S_samples, *query_shape)`` as outermost module, and the attention
      weights ``(S_samples, N, L, S)`` (averaged over heads) or
      ``(S_samples, N, num_heads, L, S)``; ``None`` with ``need_weights=False``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import VIMultiheadAttention
    >>> attention = VIMultiheadAttention(16, 4)
    >>> x = torch.randn(2, 5, 16)
    >>> out, weights = attention(x, x, x, samples=3)
    >>> out.shape, weights.shape, out.log_probs.shape
    (torch.Size([3, 2, 5, 16]), torch.Size([3, 2, 5, 5]), torch.Size([3, 2]))
    """

    __constants__: ClassVar[list[str]] = ["batch_first"]
    _torch_twin = nn.MultiheadAttention

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        batch_first: bool = True,
        variational_distribution: _AnyVariational = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: _AnyPrior = DEFAULT_PRIOR,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        rescale_prior: bool = True,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        dropout: float = 0.0,
    ) -> None:
        owner = "VIMultiheadAttention"
        embed_dim = _positive_int(owner, "embed_dim", embed_dim)
        num_heads = _positive_int(owner, "num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(
                f"{owner}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}"
            )
        kdim = embed_dim if kdim is None else _positive_int(owner, "kdim", kdim)
        vdim = embed_dim if vdim is None else _positive_int(owner, "vdim", vdim)
        self.embed_dim = embed_dim
        self.kdim = kdim
        self.vdim = vdim
        self._qkv_same_embed_dim = kdim == embed_dim and vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.batch_first = bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        self.dropout = _probability(owner, "dropout", dropout)
        same = self._qkv_same_embed_dim
        shapes = {
            "in_proj_weight": (3 * embed_dim, embed_dim) if same else None,
            "q_proj_weight": None if same else (embed_dim, embed_dim),
            "k_proj_weight": None if same else (embed_dim, kdim),
            "v_proj_weight": None if same else (embed_dim, vdim),
            "in_proj_bias": (3 * embed_dim,) if bias else None,
            "bias_k": (1, 1, embed_dim) if add_bias_kv else None,
            "bias_v": (1, 1, embed_dim) if add_bias_kv else None,
        }
        own_variational, out_variational = self._split(
            "variational_distribution", variational_distribution
        )
        own_prior, out_prior = self._split("prior", prior)
        super().__init__(
            variable_shapes=shapes,
            variational_distribution=own_variational,
            prior=own_prior,
            rescale_prior=False,  # per variable below: k/v have their own fan-in
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
        )
        if rescale_prior:
            for variable, variable_prior in self.prior.items():
                if variable_prior is not None:
                    variable_prior.kaiming_rescale(self._variable_fan_in(variable))
            if prior_initialization:
                self.reset_variational_parameters()
        self.out_proj = VILinear(
            embed_dim,
            embed_dim,
            variational_distribution=out_variational,
            prior=out_prior,
            bias=bias,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
        )

    @staticmethod
    def _split(argument: str, value: Any) -> tuple[Any, Any]:
        """Own distributions and ``out_proj``'s from one or nine distributions."""
        if not isinstance(value, (tuple, list)):
            return value, value
        if len(value) != len(_UPSTREAM_VARIABLES):
            raise ValueError(
                f"VIMultiheadAttention: {argument} takes one distribution for all "
                f"weights or one per random variable in the order "
                f"{_UPSTREAM_VARIABLES} ({len(_UPSTREAM_VARIABLES)}, absent ones "
                f"included), got {len(value)}"
            )
        by_name = dict(zip(_UPSTREAM_VARIABLES, value))
        own = tuple(by_name[name] for name in _OWN_VARIABLES)
        return own, (by_name["out_proj_weight"], by_name["out_proj_bias"])

    def _variable_fan_in(self, variable: str) -> int:
        return {"k_proj_weight": self.kdim, "v_proj_weight": self.vdim}.get(
            variable, self.embed_dim
        )

    def reset_variational_parameters(self) -> None:
        """Re-initialise the variational parameters, ``out_proj``'s included.

        The means start like ``nn.Linear`` weights with the fan-in of each
        projection's input (close to torch's Xavier initialisation of attention).
        """
        for variable, dist in self.variational_distribution.items():
            if dist is None:
                continue
            dist.reset_variational_parameters(
                self, variable, self._variable_fan_in(variable), self._kaiming_init
            )
            if self._prior_init:
                self.prior[variable].reset_parameters_to_prior(self, variable)
        out_proj = self._modules.get("out_proj")
        if out_proj is not None:
            out_proj.reset_variational_parameters()

    # ------------------------------------------------------------------ twins
    @classmethod
    def _from_torch(
        cls, module: nn.MultiheadAttention, **vikwargs: Any
    ) -> "VIMultiheadAttention":
        return cls(
            module.embed_dim,
            module.num_heads,
            bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None,
            add_zero_attn=module.add_zero_attn,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            dropout=module.dropout,
            **_factory_of(module),
            **vikwargs,
        )

    def _to_torch(self) -> nn.MultiheadAttention:
        return nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.variational_distribution["in_proj_bias"] is not None,
            add_bias_kv=self.variational_distribution["bias_k"] is not None,
            add_zero_attn=self.add_zero_attn,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=self.batch_first,
            **self._factory_kwargs(),
        )

    # ------------------------------------------------------------------ forward
    def _check_inputs(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
    ) -> bool:
        owner = (
            f"VIMultiheadAttention(embed_dim={self.embed_dim}, num_heads={self.num_heads})"
        )
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"{owner}: {name} must be a Tensor, got {type(tensor).__name__}"
                )
            check_input_dtype(self, tensor)
        if query.dim() not in (2, 3):
            raise ShapeError(
                f"{owner}: query must be (L, E) unbatched or 3-D batched, got shape "
                f"{tuple(query.shape)}"
            )
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ShapeError(
                f"{owner}: query, key and value must all be batched or all unbatched, "
                f"got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                f"{tuple(value.shape)}"
            )
        for name, tensor, size in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if tensor.shape[-1] != size:
                raise ShapeError(
                    f"{owner}: expected the last dimension of {name} to be {size}, got "
                    f"shape {tuple(tensor.shape)}"
                )
        batched = query.dim() == 3
        seq = 1 if batched and self.batch_first else 0
        if key.shape[seq] != value.shape[seq]:
            raise ShapeError(
                f"{owner}: key and value must have the same sequence length, got "
                f"shapes {tuple(key.shape)} and {tuple(value.shape)}"
            )
        batch = None
        if batched:
            b = 0 if self.batch_first else 1
            if len({query.shape[b], key.shape[b], value.shape[b]}) > 1:
                raise ShapeError(
                    f"{owner}: query, key and value must have the same batch size "
                    f"(dimension {b}, batch_first={self.batch_first}), got shapes "
                    f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
                )
            batch = query.shape[b]
        target, source = query.shape[seq], key.shape[seq]
        heads = self.num_heads * batch if batched else self.num_heads
        if attn_mask is not None:
            _check_mask_dtype(owner, "attn_mask", attn_mask)
            allowed = ((target, source), (heads, target, source))
            if tuple(attn_mask.shape) not in allowed:
                raise ShapeError(
                    f"{owner}: attn_mask must have shape {allowed[0]} or {allowed[1]}, "
                    f"got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None:
            _check_mask_dtype(owner, "key_padding_mask", key_padding_mask)
            expected = (batch, source) if batched else (source,)
            if tuple(key_padding_mask.shape) != expected:
                raise ShapeError(
                    f"{owner}: key_padding_mask must have shape {expected}, got "
                    f"{tuple(key_padding_mask.shape)}"
                )
        return batched

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        need_weights: bool = True,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Attend from ``query`` to ``key``/``value`` with one weight sample.

        The masks and flags mean what they mean for ``nn.MultiheadAttention`` (note
        that ``attn_mask`` comes before ``key_padding_mask`` here, as upstream; pass
        them by keyword). ``is_causal`` is a hint that ``attn_mask`` is the causal
        mask; unlike torch, ``is_causal=True`` without a mask applies the causal mask
        (top-left aligned). ``need_weights=False`` returns ``None`` as weights.

        Returns
        -------
        tuple[Tensor, Tensor or None]
            The output and the attention weights (averaged over heads unless
            ``average_attn_weights=False``).
        """
        batched = self._check_inputs(query, key, value, attn_mask, key_padding_mask)
        if is_causal and attn_mask is None:
            target = _sequence_length(query, self.batch_first)
            source = _sequence_length(key, self.batch_first)
            attn_mask = torch.ones(
                target, source, dtype=torch.bool, device=query.device
            ).triu(1)
        sampled = not mean_weights_enabled()
        late_out_proj = (
            sampled
            and isinstance(self.out_proj, VILinear)
            and self.out_proj.estimator != "reparameterization"
        )
        out_weight: Optional[Tensor] = None
        out_bias: Optional[Tensor] = None
        if not late_out_proj:  # else the estimator samples out_proj's outputs later
            out_weight, out_bias = self.out_proj.weight, self.out_proj.bias
        if self._qkv_same_embed_dim:
            in_proj: tuple[Tensor, ...] = (self.in_proj_weight,)
        else:
            in_proj = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        in_proj_bias, bias_k, bias_v = self.in_proj_bias, self.bias_k, self.bias_v
        # The core works batch first, torch's function sequence first.
        flip = batched and self.batch_first != (sampled and not need_weights)
        if flip:
            query, key, value = _transposed(query, key, value)
        if sampled and not need_weights:
            # Sampled weights without attention weights: our own attention core,
            # whose fused kernel call runs once for all samples (see
            # _sampled_attention). The mean network takes torch's own path, so it
            # equals the torch twin exactly.
            output = _sampled_attention(
                query,
                key,
                value,
                self.num_heads,
                in_proj,
                in_proj_bias,
                bias_k,
                bias_v,
                self.add_zero_attn,
                self.dropout if self.training else 0.0,
                out_weight,
                out_bias,
                attn_mask,
                key_padding_mask,
                is_causal,
            )
            weights = None
        else:
            # With sampled weights and attention weights asked for, torch's matmul
            # path (it has vmap batching rules); a late out_proj projects with the
            # identity here (exact).
            if out_weight is None:
                out_weight = torch.eye(
                    self.embed_dim, dtype=query.dtype, device=query.device
                )
            if self._qkv_same_embed_dim:
                projections: dict[str, Any] = {}
            else:
                projections = {
                    "use_separate_proj_weight": True,
                    "q_proj_weight": in_proj[0],
                    "k_proj_weight": in_proj[1],
                    "v_proj_weight": in_proj[2],
                }
            output, weights = F.multi_head_attention_forward(
                query,
                key,
                value,
                self.embed_dim,
                self.num_heads,
                in_proj[0] if self._qkv_same_embed_dim else None,
                in_proj_bias,
                bias_k,
                bias_v,
                self.add_zero_attn,
                self.dropout,
                out_weight,
                out_bias,
                training=self.training,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights or sampled,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
                **projections,
            )
        if flip:
            output = output.transpose(1, 0)
        if late_out_proj:
            output = self.out_proj(output)
        return output, weights if need_weights else None

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        text = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if not self._qkv_same_embed_dim:
            text += f", kdim={self.kdim}, vdim={self.vdim}"
        text += f", bias={self.variational_distribution['in_proj_bias'] is not None}"
        if self.variational_distribution["bias_k"] is not None:
            text += ", add_bias_kv=True"
        if self.add_zero_attn:
            text += ", add_zero_attn=True"
        text += f", batch_first={self.batch_first}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        first = next(v for v, d in self.variational_distribution.items() if d is not None)
        return (
            f"{text}, variational_distribution={self.variational_distribution[first]}, "
            f"prior={self.prior[first]}"
        )


# ---------------------------------------------------------------------- layers
class VITransformerEncoderLayer(VIModule):
    r"""Bayesian encoder layer, the twin of :class:`torch.nn.TransformerEncoderLayer`.

    Self-attention (:class:`VIMultiheadAttention` ``self_attn``) and a feed-forward
    block (``linear1`` -> activation -> ``dropout`` -> ``linear2``, both
    :class:`~torch_blue.vi.VILinear`), each with a residual connection and a
    deterministic ``nn.LayerNorm`` (``norm1``, ``norm2``) after it, or before it with
    ``norm_first``; ``dropout1``/``dropout2`` act on the block outputs. Children are
    named as in torch.

    Arguments follow upstream torch_blue (``dim_feedforward=512``,
    ``batch_first=True``, ``activation=nn.ReLU()``, no dropout) plus the VIkwargs of
    :class:`~torch_blue.vi.VIModule`; torch's ``dropout`` is a trailing keyword,
    default 0 (torch: 0.1).

    Parameters
    ----------
    d_model : int
        Model dimension.
    nhead : int
        Number of attention heads.
    dim_feedforward : int, default: 512
        Hidden size of the feed-forward block.
    activation : nn.Module, callable or {"relu", "gelu"}, default: nn.ReLU()
        Activation of the feed-forward block.
    layer_norm_eps : float, default: 1e-5
        ``eps`` of the layer norms.
    batch_first : bool, default: True
        Batched inputs are ``(N, L, d_model)`` instead of ``(L, N, d_model)``.
    norm_first : bool, default: False
        Pre-norm instead of post-norm.
    bias : bool, default: True
        Biases in the linear layers, the attention and the layer norms.
    dropout : float, default: 0.0
        Dropout rate (feed-forward, block outputs and attention weights).
    estimator : str, default: "reparameterization"
        Gradient estimator of the linear sub-layers (``linear1``, ``linear2``,
        ``self_attn.out_proj``); see :mod:`torch_blue.vi.estimators`.

    Shape
    -----
    - src: ``(N, L, d_model)`` (``batch_first``), ``(L, N, d_model)`` or unbatched
      ``(L, d_model)``; src_mask ``(L, L)`` or ``(N * nhead, L, L)``;
      src_key_padding_mask ``(N, L)`` or ``(L,)``.
    - Output: ``(S, *src_shape)`` as outermost module; ``src_shape`` inside a model.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import VITransformerEncoderLayer
    >>> layer = VITransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32)
    >>> layer(torch.randn(2, 7, 16), samples=3).shape
    torch.Size([3, 2, 7, 16])
    """

    _torch_twin = nn.TransformerEncoderLayer

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 512,
        activation: _Activation = nn.ReLU(),
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        variational_distribution: VariationalDistribution = (
            DEFAULT_VARIATIONAL_DISTRIBUTION
        ),
        prior: Prior = DEFAULT_PRIOR,
        rescale_prior: bool = True,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        dropout: float = 0.0,
        estimator: str = "reparameterization",
    ) -> None:
        owner = type(self).__name__
        d_model = _positive_int(owner, "d_model", d_model)
        nhead = _positive_int(owner, "nhead", nhead)
        dim_feedforward = _positive_int(owner, "dim_feedforward", dim_feedforward)
        layer_norm_eps = _positive_float(owner, "layer_norm_eps", layer_norm_eps)
        dropout = _probability(owner, "dropout", dropout)
        activation = _activation(owner, activation)
        _estimator(owner, estimator)
        _single_distribution(owner, "variational_distribution", variational_distribution)
        _single_distribution(owner, "prior", prior)
        super().__init__(return_log_probs=return_log_probs)
        vikwargs = _vikwargs(
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
        )
        norm_kwargs = {
            "eps": layer_norm_eps,
            "bias": bias,
            "device": device,
            "dtype": dtype,
        }
        self.self_attn = VIMultiheadAttention(
            d_model, nhead, bias=bias, batch_first=batch_first, dropout=dropout, **vikwargs
        )
        self.linear1 = VILinear(d_model, dim_feedforward, bias=bias, **vikwargs)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = VILinear(dim_feedforward, d_model, bias=bias, **vikwargs)
        self.norm_first = bool(norm_first)
        self.norm1 = nn.LayerNorm(d_model, **norm_kwargs)
        self.norm2 = nn.LayerNorm(d_model, **norm_kwargs)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation
        if estimator != "reparameterization":
            self.estimator = estimator

    @property
    def d_model(self) -> int:
        """Model dimension."""
        return self.self_attn.embed_dim

    @classmethod
    def _from_torch(
        cls, module: nn.TransformerEncoderLayer, **vikwargs: Any
    ) -> "VITransformerEncoderLayer":
        return cls(
            module.self_attn.embed_dim,
            module.self_attn.num_heads,
            dim_feedforward=module.linear1.out_features,
            activation=copy.deepcopy(module.activation),
            layer_norm_eps=module.norm1.eps,
            batch_first=module.self_attn.batch_first,
            norm_first=module.norm_first,
            bias=module.linear1.bias is not None,
            dropout=module.dropout.p,
            **_factory_of(module),
            **vikwargs,
        )

    def _to_torch(self) -> nn.TransformerEncoderLayer:
        return nn.TransformerEncoderLayer(
            self.d_model,
            self.self_attn.num_heads,
            dim_feedforward=self.linear1.out_features,
            dropout=self.dropout.p,
            activation=copy.deepcopy(self.activation),
            layer_norm_eps=self.norm1.eps,
            batch_first=self.self_attn.batch_first,
            norm_first=self.norm_first,
            bias=self.linear1.variational_distribution["bias"] is not None,
            **self._factory_kwargs(),
        )

    def forward(
        self,
        src: Tensor,
        src_mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Pass ``src`` through the layer with one weight sample.

        ``is_causal`` is a hint that ``src_mask`` is the causal mask; without a mask
        it applies the causal mask.
        """
        _check_sequence(type(self).__name__, "src", src, self.d_model)
        check_input_dtype(self, src)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        is_causal: bool,
    ) -> Tensor:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            is_causal=is_causal,
            need_weights=False,
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = _linear(self.linear2, self.dropout(self.activation(_linear(self.linear1, x))))
        return self.dropout2(x)

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        return (
            f"d_model={self.d_model}, nhead={self.self_attn.num_heads}, "
            f"dim_feedforward={self.linear1.out_features}, "
            f"batch_first={self.self_attn.batch_first}, norm_first={self.norm_first}"
            + _activation_repr(self.activation)
        )


class VITransformerDecoderLayer(VIModule):
    r"""Bayesian decoder layer, the twin of :class:`torch.nn.TransformerDecoderLayer`.

    Self-attention (``self_attn``), attention over the encoder output
    (``multihead_attn``), both :class:`VIMultiheadAttention`, and the feed-forward
    block (``linear1``, ``linear2``), each with a residual connection and a
    deterministic layer norm (``norm1``..``norm3``); ``dropout1``..``dropout3`` act on
    the block outputs. Arguments as :class:`VITransformerEncoderLayer` (note
    upstream's order: ``norm_first`` before ``batch_first``).

    Parameters
    ----------
    d_model, nhead, dim_feedforward, activation, layer_norm_eps
        As for :class:`VITransformerEncoderLayer`.
    norm_first, batch_first, bias, dropout, estimator
        As for :class:`VITransformerEncoderLayer`.

    Shape
    -----
    - tgt: ``(N, T, d_model)`` (``batch_first``), ``(T, N, d_model)`` or unbatched
      ``(T, d_model)``; memory: ``(N, S, d_model)`` likewise.
    - tgt_mask ``(T, T)`` or ``(N * nhead, T, T)``; memory_mask ``(T, S)`` or
      ``(N * nhead, T, S)``; key padding masks ``(N, T)`` / ``(N, S)``.
    - Output: ``(S_samples, *tgt_shape)`` as outermost module.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import VITransformerDecoderLayer
    >>> layer = VITransformerDecoderLayer(d_model=16, nhead=4, dim_feedforward=32)
    >>> tgt, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    >>> layer(tgt, memory, samples=3).shape
    torch.Size([3, 2, 5, 16])
    """

    _torch_twin = nn.TransformerDecoderLayer

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 512,
        activation: _Activation = nn.ReLU(),
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        batch_first: bool = True,
        bias: bool = True,
        variational_distribution: VariationalDistribution = (
            DEFAULT_VARIATIONAL_DISTRIBUTION
        ),
        prior: Prior = DEFAULT_PRIOR,
        rescale_prior: bool = True,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        dropout: float = 0.0,
        estimator: str = "reparameterization",
    ) -> None:
        owner = type(self).__name__
        d_model = _positive_int(owner, "d_model", d_model)
        nhead = _positive_int(owner, "nhead", nhead)
        dim_feedforward = _positive_int(owner, "dim_feedforward", dim_feedforward)
        layer_norm_eps = _positive_float(owner, "layer_norm_eps", layer_norm_eps)
        dropout = _probability(owner, "dropout", dropout)
        activation = _activation(owner, activation)
        _estimator(owner, estimator)
        _single_distribution(owner, "variational_distribution", variational_distribution)
        _single_distribution(owner, "prior", prior)
        super().__init__(return_log_probs=return_log_probs)
        vikwargs = _vikwargs(
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
        )
        norm_kwargs = {
            "eps": layer_norm_eps,
            "bias": bias,
            "device": device,
            "dtype": dtype,
        }
        attention = {"bias": bias, "batch_first": batch_first, "dropout": dropout}
        self.self_attn = VIMultiheadAttention(d_model, nhead, **attention, **vikwargs)
        self.multihead_attn = VIMultiheadAttention(d_model, nhead, **attention, **vikwargs)
        self.linear1 = VILinear(d_model, dim_feedforward, bias=bias, **vikwargs)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = VILinear(dim_feedforward, d_model, bias=bias, **vikwargs)
        self.norm_first = bool(norm_first)
        self.norm1 = nn.LayerNorm(d_model, **norm_kwargs)
        self.norm2 = nn.LayerNorm(d_model, **norm_kwargs)
        self.norm3 = nn.LayerNorm(d_model, **norm_kwargs)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = activation
        if estimator != "reparameterization":
            self.estimator = estimator

    @property
    def d_model(self) -> int:
        """Model dimension."""
        return self.self_attn.embed_dim

    @classmethod
    def _from_torch(
        cls, module: nn.TransformerDecoderLayer, **vikwargs: Any
    ) -> "VITransformerDecoderLayer":
        return cls(
            module.self_attn.embed_dim,
            module.self_attn.num_heads,
            dim_feedforward=module.linear1.out_features,
            activation=copy.deepcopy(module.activation),
            layer_norm_eps=module.norm1.eps,
            norm_first=module.norm_first,
            batch_first=module.self_attn.batch_first,
            bias=module.linear1.bias is not None,
            dropout=module.dropout.p,
            **_factory_of(module),
            **vikwargs,
        )

    def _to_torch(self) -> nn.TransformerDecoderLayer:
        return nn.TransformerDecoderLayer(
            self.d_model,
            self.self_attn.num_heads,
            dim_feedforward=self.linear1.out_features,
            dropout=self.dropout.p,
            activation=copy.deepcopy(self.activation),
            layer_norm_eps=self.norm1.eps,
            batch_first=self.self_attn.batch_first,
            norm_first=self.norm_first,
            bias=self.linear1.variational_distribution["bias"] is not None,
            **self._factory_kwargs(),
        )

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Pass ``tgt`` (attending to ``memory``) through the layer, one weight sample."""
        owner = type(self).__name__
        _check_sequence(owner, "tgt", tgt, self.d_model)
        _check_sequence(owner, "memory", memory, self.d_model)
        check_input_dtype(self, tgt)
        check_input_dtype(self, memory)
        if tgt.dim() != memory.dim():
            raise ShapeError(
                f"{owner}: tgt and memory must both be batched or both unbatched, got "
                f"shapes {tuple(tgt.shape)} and {tuple(memory.shape)}"
            )
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(
                self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal
            )
            x = x + self._mha_block(
                self.norm2(x),
                memory,
                memory_mask,
                memory_key_padding_mask,
                memory_is_causal,
            )
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(
                x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            )
            x = self.norm2(
                x
                + self._mha_block(
                    x, memory, memory_mask, memory_key_padding_mask, memory_is_causal
                )
            )
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        is_causal: bool,
    ) -> Tensor:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            is_causal=is_causal,
            need_weights=False,
        )[0]
        return self.dropout1(x)

    def _mha_block(
        self,
        x: Tensor,
        memory: Tensor,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        is_causal: bool,
    ) -> Tensor:
        x = self.multihead_attn(
            x,
            memory,
            memory,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            is_causal=is_causal,
            need_weights=False,
        )[0]
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = _linear(self.linear2, self.dropout(self.activation(_linear(self.linear1, x))))
        return self.dropout3(x)

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        return (
            f"d_model={self.d_model}, nhead={self.self_attn.num_heads}, "
            f"dim_feedforward={self.linear1.out_features}, "
            f"batch_first={self.self_attn.batch_first}, norm_first={self.norm_first}"
            + _activation_repr(self.activation)
        )


# ---------------------------------------------------------------------- stacks
def _check_stack_arguments(owner: str, layer: Any, num_layers: Any, norm: Any) -> None:
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"{owner}: the layer to stack must be an nn.Module, got {type(layer).__name__}"
        )
    num_layers = _positive_int(owner, "num_layers", num_layers)
    if norm is not None and not isinstance(norm, nn.Module):
        raise TypeError(
            f"{owner}: norm must be an nn.Module or None, got {type(norm).__name__}"
        )


class VITransformerEncoder(VIModule):
    r"""A stack of encoder layers, the twin of :class:`torch.nn.TransformerEncoder`.

    ``layers`` holds ``num_layers`` deep copies of ``encoder_layer``: like torch, the
    copies start with equal variational parameters, but each owns its own (they are
    trained independently). :class:`VITransformer` re-initialises its layers so they
    start different, as ``nn.Transformer`` does. ``norm`` (e.g. a deterministic
    ``nn.LayerNorm``) is applied to the output. ``return_log_probs`` is set on
    every layer inside.

    Parameters
    ----------
    encoder_layer : VITransformerEncoderLayer
        The layer to copy.
    num_layers : int
        Number of layers.
    norm : nn.Module, optional
        Applied to the output of the last layer.
    return_log_probs : bool, default: True
        Record the weights' log-probabilities.

    Shape
    -----
    As :class:`VITransformerEncoderLayer`; ``mask`` is the layers' ``src_mask``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import (
    ...     VITransformerEncoder, VITransformerEncoderLayer)
    >>> layer = VITransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32)
    >>> encoder = VITransformerEncoder(layer, num_layers=2)
    >>> encoder(torch.randn(2, 7, 16), samples=3).shape
    torch.Size([3, 2, 7, 16])
    """

    _torch_twin = nn.TransformerEncoder

    def __init__(
        self,
        encoder_layer: VITransformerEncoderLayer,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_log_probs: bool = True,
    ) -> None:
        _check_stack_arguments(type(self).__name__, encoder_layer, num_layers, norm)
        super().__init__(return_log_probs=return_log_probs)
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.return_log_probs = bool(return_log_probs)

    @classmethod
    def _from_torch(
        cls, module: nn.TransformerEncoder, **vikwargs: Any
    ) -> "VITransformerEncoder":
        return cls(
            _convert_copy(module.layers[0], vikwargs),
            len(module.layers),
            norm=copy.deepcopy(module.norm),
            return_log_probs=vikwargs.get("return_log_probs", True),
        )

    def _to_torch(self) -> nn.TransformerEncoder:
        # No nested-tensor fast path: it would return zeros at padded positions,
        # where this encoder (and torch's regular path) computes values.
        return nn.TransformerEncoder(
            _deterministic(self.layers[0]),
            self.num_layers,
            norm=None if self.norm is None else _deterministic(self.norm),
            enable_nested_tensor=False,
        )

    def forward(
        self,
        src: Tensor,
        mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        is_causal: Optional[bool] = None,
    ) -> Tensor:
        """Pass ``src`` through the layers in turn, then ``norm``; one weight sample.

        ``is_causal=None`` detects whether ``mask`` is the causal mask, as torch does.
        """
        output = src
        if is_causal is None:
            batch_first = getattr(
                getattr(self.layers[0], "self_attn", None), "batch_first", False
            )
            is_causal = isinstance(src, Tensor) and _is_causal_mask(
                mask, _sequence_length(src, batch_first)
            )
        for layer in self.layers:
            output = layer(
                output,
                src_mask=mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=bool(is_causal),
            )
        if self.norm is not None:
            output = self.norm(output)
        return output

    def extra_repr(self) -> str:
        """Summarise the stack for ``print(model)``."""
        return f"num_layers={self.num_layers}"


class VITransformerDecoder(VIModule):
    r"""A stack of decoder layers, the twin of :class:`torch.nn.TransformerDecoder`.

    ``layers`` holds ``num_layers`` deep copies of ``decoder_layer`` (equal start,
    separate parameters, as :class:`VITransformerEncoder`); ``norm`` is applied to
    the output.

    Parameters
    ----------
    decoder_layer : VITransformerDecoderLayer
        The layer to copy.
    num_layers : int
        Number of layers.
    norm : nn.Module, optional
        Applied to the output of the last layer.
    return_log_probs : bool, default: True
        Record the weights' log-probabilities.

    Shape
    -----
    As :class:`VITransformerDecoderLayer`.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import (
    ...     VITransformerDecoder, VITransformerDecoderLayer)
    >>> layer = VITransformerDecoderLayer(d_model=16, nhead=4, dim_feedforward=32)
    >>> decoder = VITransformerDecoder(layer, num_layers=2)
    >>> decoder(torch.randn(2, 5, 16), torch.randn(2, 7, 16), samples=3).shape
    torch.Size([3, 2, 5, 16])
    """

    _torch_twin = nn.TransformerDecoder

    def __init__(
        self,
        decoder_layer: VITransformerDecoderLayer,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_log_probs: bool = True,
    ) -> None:
        _check_stack_arguments(type(self).__name__, decoder_layer, num_layers, norm)
        super().__init__(return_log_probs=return_log_probs)
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.return_log_probs = bool(return_log_probs)

    @classmethod
    def _from_torch(
        cls, module: nn.TransformerDecoder, **vikwargs: Any
    ) -> "VITransformerDecoder":
        return cls(
            _convert_copy(module.layers[0], vikwargs),
            len(module.layers),
            norm=copy.deepcopy(module.norm),
            return_log_probs=vikwargs.get("return_log_probs", True),
        )

    def _to_torch(self) -> nn.TransformerDecoder:
        return nn.TransformerDecoder(
            _deterministic(self.layers[0]),
            self.num_layers,
            norm=None if self.norm is None else _deterministic(self.norm),
        )

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        tgt_is_causal: Optional[bool] = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Pass ``tgt`` through the layers in turn, then ``norm``; one weight sample.

        ``tgt_is_causal=None`` detects whether ``tgt_mask`` is the causal mask.
        """
        output = tgt
        if tgt_is_causal is None:
            batch_first = getattr(
                getattr(self.layers[0], "self_attn", None), "batch_first", False
            )
            tgt_is_causal = isinstance(tgt, Tensor) and _is_causal_mask(
                tgt_mask, _sequence_length(tgt, batch_first)
            )
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        if self.norm is not None:
            output = self.norm(output)
        return output

    def extra_repr(self) -> str:
        """Summarise the stack for ``print(model)``."""
        return f"num_layers={self.num_layers}"


class VITransformer(VIModule):
    r"""Bayesian encoder-decoder transformer, the twin of :class:`torch.nn.Transformer`.

    ``encoder`` is a :class:`VITransformerEncoder` and ``decoder`` a
    :class:`VITransformerDecoder`, each ending in a deterministic ``nn.LayerNorm``
    (or the given ``custom_encoder``/``custom_decoder``). The layers it builds are
    re-initialised independently, as ``nn.Transformer`` does. Defaults are upstream
    torch_blue's (``d_model=32``, ``nhead=1``, one layer each, ``batch_first=False``);
    ``dropout`` (default 0, torch: 0.1) and ``estimator`` are trailing keywords.

    Parameters
    ----------
    d_model, nhead, dim_feedforward, activation, layer_norm_eps
        As for :class:`VITransformerEncoderLayer`.
    batch_first, norm_first, bias, dropout, estimator
        As for :class:`VITransformerEncoderLayer`.
    num_encoder_layers, num_decoder_layers : int, default: 1
        Depth of the encoder and decoder.
    custom_encoder, custom_decoder : nn.Module, optional
        Used instead of the built encoder / decoder.

    Shape
    -----
    - src: ``(S, N, d_model)`` (``batch_first=False``), ``(N, S, d_model)`` or
      unbatched ``(S, d_model)``; tgt: ``(T, N, d_model)`` likewise.
    - Output: ``(S_samples, *tgt_shape)`` as outermost module.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.transformer import VITransformer
    >>> model = VITransformer(d_model=16, nhead=2, dim_feedforward=32)
    >>> src, tgt = torch.randn(7, 2, 16), torch.randn(5, 2, 16)
    >>> model(src, tgt, samples=3).shape
    torch.Size([3, 5, 2, 16])
    """

    _torch_twin = nn.Transformer

    def __init__(
        self,
        d_model: int = 32,
        nhead: int = 1,
        num_encoder_layers: int = 1,
        num_decoder_layers: int = 1,
        dim_feedforward: int = 256,
        activation: _Activation = nn.ReLU(),
        custom_encoder: Optional[Any] = None,
        custom_decoder: Optional[Any] = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        variational_distribution: VariationalDistribution = (
            DEFAULT_VARIATIONAL_DISTRIBUTION
        ),
        prior: Prior = DEFAULT_PRIOR,
        rescale_prior: bool = True,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        dropout: float = 0.0,
        estimator: str = "reparameterization",
    ) -> None:
        owner = type(self).__name__
        d_model = _positive_int(owner, "d_model", d_model)
        nhead = _positive_int(owner, "nhead", nhead)
        num_encoder_layers = _positive_int(owner, "num_encoder_layers", num_encoder_layers)
        num_decoder_layers = _positive_int(owner, "num_decoder_layers", num_decoder_layers)
        dim_feedforward = _positive_int(owner, "dim_feedforward", dim_feedforward)
        _estimator(owner, estimator)
        for name, custom in (
            ("custom_encoder", custom_encoder),
            ("custom_decoder", custom_decoder),
        ):
            if custom is not None and not isinstance(custom, nn.Module):
                raise TypeError(
                    f"{owner}: {name} must be an nn.Module or None, got "
                    f"{type(custom).__name__}"
                )
        super().__init__(return_log_probs=return_log_probs)
        layer_kwargs = _vikwargs(
            dim_feedforward=dim_feedforward,
            activation=activation,
            layer_norm_eps=layer_norm_eps,
            batch_first=batch_first,
            norm_first=norm_first,
            bias=bias,
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
            dropout=dropout,
        )
        norm_kwargs = {
            "eps": layer_norm_eps,
            "bias": bias,
            "device": device,
            "dtype": dtype,
        }
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = VITransformerEncoder(
                VITransformerEncoderLayer(d_model, nhead, **layer_kwargs),
                num_encoder_layers,
                nn.LayerNorm(d_model, **norm_kwargs),
                return_log_probs,
            )
            _reinitialize(self.encoder)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = VITransformerDecoder(
                VITransformerDecoderLayer(d_model, nhead, **layer_kwargs),
                num_decoder_layers,
                nn.LayerNorm(d_model, **norm_kwargs),
                return_log_probs,
            )
            _reinitialize(self.decoder)
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = bool(batch_first)
        self.return_log_probs = bool(return_log_probs)
        if estimator != "reparameterization":
            self.estimator = estimator

    @classmethod
    def _from_torch(cls, module: nn.Transformer, **vikwargs: Any) -> "VITransformer":
        new = cls(
            module.d_model,
            module.nhead,
            custom_encoder=_convert_copy(module.encoder, vikwargs),
            custom_decoder=_convert_copy(module.decoder, vikwargs),
            batch_first=module.batch_first,
            return_log_probs=vikwargs.get("return_log_probs", True),
        )
        _reinitialize(new)  # layers start different, as in nn.Transformer
        return new

    def _to_torch(self) -> nn.Transformer:
        return nn.Transformer(
            self.d_model,
            self.nhead,
            custom_encoder=_deterministic(self.encoder),
            custom_decoder=_deterministic(self.decoder),
            batch_first=self.batch_first,
            **self._factory_kwargs(),
        )

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Optional[Tensor] = None,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        src_is_causal: Optional[bool] = None,
        tgt_is_causal: Optional[bool] = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Encode ``src`` and decode ``tgt`` attending to it; one weight sample.

        The masks are those of :class:`VITransformerEncoder` (``src_mask``) and
        :class:`VITransformerDecoder` (the others), as in ``nn.Transformer``.
        """
        owner = type(self).__name__
        _check_sequence(owner, "src", src, self.d_model)
        _check_sequence(owner, "tgt", tgt, self.d_model)
        check_input_dtype(self, src)
        check_input_dtype(self, tgt)
        if src.dim() != tgt.dim():
            raise ShapeError(
                f"{owner}: src and tgt must both be batched or both unbatched, got "
                f"shapes {tuple(src.shape)} and {tuple(tgt.shape)}"
            )
        batch = 0 if self.batch_first else 1
        if src.dim() == 3 and src.shape[batch] != tgt.shape[batch]:
            raise ShapeError(
                f"{owner}: src and tgt must have the same batch size (dimension "
                f"{batch}, batch_first={self.batch_first}), got shapes "
                f"{tuple(src.shape)} and {tuple(tgt.shape)}"
            )
        memory = self.encoder(
            src,
            mask=src_mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=src_is_causal,
        )
        return self.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
        )

    def extra_repr(self) -> str:
        """Summarise the model for ``print(model)``."""
        return f"d_model={self.d_model}, nhead={self.nhead}, batch_first={self.batch_first}"
