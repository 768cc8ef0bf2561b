r"""Bayesian transformers: twins of ``torch.nn``'s transformer layers and stacks.

:class:`VITransformerEncoderLayer`, :class:`VITransformerDecoderLayer`,
:class:`VITransformerEncoder`, :class:`VITransformerDecoder` and
:class:`VITransformer` (and :class:`~torch_blue.vi.attention.VIMultiheadAttention`,
re-exported here) mirror their ``torch.nn`` namesakes: same arguments (with the defaults
each class lists), same submodule and weight names (``in_proj_weight``,
``out_proj``, ``linear1``, ``norm1``, ...), so :func:`~torch_blue.vi.convert_to_vimodule`
and :func:`~torch_blue.vi.to_deterministic` map weights by name and the mean network
computes exactly what the ``torch.nn`` module computes.

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
    See :mod:`torch_blue.vi.attention`: the layers never ask for the attention
    weights, so with sampled weights they run the attention core of
    :mod:`torch_blue.vi.functional.attention`; the mean network runs torch's function.
Layer norms
    stay deterministic ``nn.LayerNorm`` modules.
Dropout
    The layers accept ``dropout`` as a trailing keyword argument, default ``0.0``
    (weight sampling already regularises; ``torch.nn``'s default is ``0.1``);
    conversion carries a torch module's rate across in both directions.
"""

import copy
from collections.abc import Callable
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn

from ._transformer_checks import (
    activation_function,
    check_estimator,
    check_module,
    check_sequences,
    check_single_distribution,
)
from .attention import VIMultiheadAttention
from .base import VIModule
from .convert import convert_to_vimodule, to_deterministic
from .distributions import Prior, VariationalDistribution
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .functional.attention import (
    MATMUL_MAX_POSITIONS,  # noqa: F401  (its old path; the core reads functional's)
    is_causal_mask,
    sequence_length,
)
from .functional.linear import flat_linear
from .linear import VILinear
from .utils.checks import check_int, check_positive_float, check_probability
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


# ---------------------------------------------------------------------- helpers
def _linear(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a linear sub-layer with one weight draw shared by all positions.

    ``VILinear`` would sample pre-activations independently per position when
    log-probs are off; attention mixes positions, so that is not the same
    distribution here. A non-default estimator is the user's explicit choice.
    """
    if isinstance(layer, VILinear) and layer.estimator == "reparameterization":
        return flat_linear(x, layer.weight, layer.bias)
    return layer(x)


def _reinitialize(module: nn.Module) -> None:
    """Re-draw the initial variational parameters of every VI layer inside."""
    for sub in module.modules():
        if isinstance(sub, VIModule) and sub.random_variables is not None:
            sub.reset_variational_parameters()


def _convert_copy(module: nn.Module, vikwargs: dict[str, Any]) -> nn.Module:
    """A converted copy of a ``torch.nn`` module (``module`` itself is kept)."""
    return convert_to_vimodule(copy.deepcopy(module), **vikwargs)


def _activation_repr(activation: Any) -> str:
    if isinstance(activation, nn.Module):
        return ""  # printed as a child module
    name = getattr(activation, "__name__", type(activation).__name__)
    return f", activation={name}"


# ---------------------------------------------------------------------- layers
# The options of a transformer layer after d_model and nhead (estimator aside): the
# decoder layer and VITransformer pass these arguments of theirs on by name.
_LAYER_OPTIONS = (
    "dim_feedforward",
    "activation",
    "layer_norm_eps",
    "batch_first",
    "norm_first",
    "bias",
    "variational_distribution",
    "prior",
    "rescale_prior",
    "kaiming_initialization",
    "prior_initialization",
    "return_log_probs",
    "device",
    "dtype",
    "dropout",
)


class _VITransformerLayer(VIModule):
    """What the encoder and decoder layers share.

    The constructor takes the encoder layer's arguments. A layer has one residual
    block per attention sub-layer (``self_attn``, and ``multihead_attn`` with
    ``_cross_attention``) and then the feed-forward block; block ``i`` has the layer
    norm ``norm{i}`` and the output dropout ``dropout{i}``.
    """

    _cross_attention: ClassVar[bool] = False

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
        d_model = check_int(owner, "d_model", d_model)
        nhead = check_int(owner, "nhead", nhead)
        dim_feedforward = check_int(owner, "dim_feedforward", dim_feedforward)
        layer_norm_eps = check_positive_float(owner, "layer_norm_eps", layer_norm_eps)
        dropout = check_probability(owner, "dropout", dropout)
        activation = activation_function(owner, activation)
        check_estimator(owner, estimator)
        check_single_distribution(
            owner, "variational_distribution", variational_distribution
        )
        check_single_distribution(owner, "prior", prior)
        super().__init__(return_log_probs=return_log_probs)
        vikwargs = {
            "variational_distribution": variational_distribution,
            "prior": prior,
            "rescale_prior": rescale_prior,
            "kaiming_initialization": kaiming_initialization,
            "prior_initialization": prior_initialization,
            "return_log_probs": return_log_probs,
            "device": device,
            "dtype": dtype,
        }
        attention = {"bias": bias, "batch_first": batch_first, "dropout": dropout}
        self._add_attention_and_feedforward(
            d_model, nhead, dim_feedforward, attention, vikwargs
        )
        self.norm_first = bool(norm_first)
        self._add_block_norms_and_dropouts(d_model, layer_norm_eps, bias, dropout, vikwargs)
        self.activation = activation
        if estimator != "reparameterization":
            self.estimator = estimator

    def _add_attention_and_feedforward(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        attention: dict[str, Any],
        vikwargs: dict[str, Any],
    ) -> None:
        """Add ``self_attn`` (``multihead_attn``), ``linear1``, ``dropout``, ``linear2``."""
        self.self_attn = VIMultiheadAttention(d_model, nhead, **attention, **vikwargs)
        if self._cross_attention:
            self.multihead_attn = VIMultiheadAttention(
                d_model, nhead, **attention, **vikwargs
            )
        bias = attention["bias"]
        self.linear1 = VILinear(d_model, dim_feedforward, bias=bias, **vikwargs)
        self.dropout = nn.Dropout(attention["dropout"])
        self.linear2 = VILinear(dim_feedforward, d_model, bias=bias, **vikwargs)

    def _add_block_norms_and_dropouts(
        self, d_model: int, eps: float, bias: bool, dropout: float, vikwargs: dict[str, Any]
    ) -> None:
        """Add ``norm1``, ``norm2`` (``norm3``), then ``dropout1``.. in torch's order."""
        factory = {"device": vikwargs["device"], "dtype": vikwargs["dtype"]}
        self.norm1 = nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)
        if self._cross_attention:
            self.norm3 = nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        if self._cross_attention:
            self.dropout3 = nn.Dropout(dropout)

    @property
    def d_model(self) -> int:
        """Model dimension."""
        return self.self_attn.embed_dim

    @classmethod
    def _from_torch(cls, module: nn.Module, **vikwargs: Any) -> "_VITransformerLayer":
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
            **VIModule._factory_kwargs(module),
            **vikwargs,
        )

    def _to_torch(self) -> nn.Module:
        return self._torch_twin(
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

    def _residual(
        self, x: Tensor, norm: nn.Module, block: Callable[..., Tensor], *args: Any
    ) -> Tensor:
        """``x`` plus ``block(x, *args)``, ``norm`` before the block or after the sum."""
        if self.norm_first:
            return x + block(norm(x), *args)
        return norm(x + block(x, *args))

    def _attention_block(
        self,
        x: Tensor,
        memory: Optional[Tensor],
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        is_causal: bool,
    ) -> Tensor:
        """Self-attention (``memory=None``) or attention to ``memory``, then dropout."""
        if memory is None:
            attention, dropout, memory = self.self_attn, self.dropout1, x
        else:
            attention, dropout = self.multihead_attn, self.dropout2
        x = attention(
            x,
            memory,
            memory,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            is_causal=is_causal,
            need_weights=False,
        )[0]
        return dropout(x)

    def _ff_block(self, x: Tensor, dropout: nn.Module) -> Tensor:
        x = _linear(self.linear2, self.dropout(self.activation(_linear(self.linear1, x))))
        return dropout(x)

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        return (
            f"d_model={self.d_model}, nhead={self.self_attn.num_heads}, "
            f"dim_feedforward={self.linear1.out_features}, "
            f"batch_first={self.self_attn.batch_first}, norm_first={self.norm_first}"
            + _activation_repr(self.activation)
        )


class VITransformerEncoderLayer(_VITransformerLayer):
    r"""Bayesian encoder layer, the twin of :class:`torch.nn.TransformerEncoderLayer`.

    Self-attention (:class:`VIMultiheadAttention` ``self_attn``) and a feed-forward
    block (``linear1`` -> activation -> ``dropout`` -> ``linear2``, both
    :class:`~torch_blue.vi.VILinear`), each with a residual connection and a
    deterministic ``nn.LayerNorm`` (``norm1``, ``norm2``) after it, or before it with
    ``norm_first``; ``dropout1``/``dropout2`` act on the block outputs. Children are
    named as in torch.

    The arguments are torch's, with the defaults ``dim_feedforward=512``,
    ``batch_first=True`` and ``activation=nn.ReLU()`` (:ref:`upstream's signature
    <upstream-signatures>`), plus the VIkwargs of :class:`~torch_blue.vi.VIModule`;
    ``dropout`` is a trailing keyword, default 0 (torch: 0.1).

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
        check_sequences(self, self.d_model, src=src)
        masks = (src_mask, src_key_padding_mask, is_causal)
        x = self._residual(src, self.norm1, self._attention_block, None, *masks)
        return self._residual(x, self.norm2, self._ff_block, self.dropout2)


class VITransformerDecoderLayer(_VITransformerLayer):
    r"""Bayesian decoder layer, the twin of :class:`torch.nn.TransformerDecoderLayer`.

    Self-attention (``self_attn``), attention over the encoder output
    (``multihead_attn``), both :class:`VIMultiheadAttention`, and the feed-forward
    block (``linear1``, ``linear2``), each with a residual connection and a
    deterministic layer norm (``norm1``..``norm3``); ``dropout1``..``dropout3`` act on
    the block outputs. Arguments as :class:`VITransformerEncoderLayer`, but
    ``norm_first`` comes before ``batch_first`` (:ref:`upstream's order
    <upstream-signatures>`): pass them by keyword.

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
    _cross_attention = True

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
        # Upstream's order puts norm_first before batch_first here.
        arguments = locals()
        options = {name: arguments[name] for name in _LAYER_OPTIONS}
        super().__init__(d_model, nhead, **options, estimator=estimator)

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
        check_sequences(self, self.d_model, tgt=tgt, memory=memory)
        self_masks = (tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        memory_masks = (memory_mask, memory_key_padding_mask, memory_is_causal)
        x = self._residual(tgt, self.norm1, self._attention_block, None, *self_masks)
        x = self._residual(x, self.norm2, self._attention_block, memory, *memory_masks)
        return self._residual(x, self.norm3, self._ff_block, self.dropout3)


# ---------------------------------------------------------------------- stacks
class _VITransformerStack(VIModule):
    """What the encoder and decoder stacks share: ``num_layers`` copies of a layer."""

    _twin_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_log_probs: bool = True,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"{owner}: the layer to stack must be an nn.Module, got "
                f"{type(layer).__name__}"
            )
        check_int(owner, "num_layers", num_layers)
        check_module(owner, "norm", norm)
        super().__init__(return_log_probs=return_log_probs)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.return_log_probs = bool(return_log_probs)

    @classmethod
    def _from_torch(cls, module: nn.Module, **vikwargs: Any) -> "_VITransformerStack":
        return cls(
            _convert_copy(module.layers[0], vikwargs),
            len(module.layers),
            norm=copy.deepcopy(module.norm),
            return_log_probs=vikwargs.get("return_log_probs", True),
        )

    def _to_torch(self) -> nn.Module:
        return self._torch_twin(
            to_deterministic(self.layers[0]),
            self.num_layers,
            norm=None if self.norm is None else to_deterministic(self.norm),
            **self._twin_options,
        )

    def _causal(self, x: Tensor, mask: Optional[Tensor], is_causal: Optional[bool]) -> bool:
        """``is_causal``, or with ``None`` whether ``mask`` is the causal mask of ``x``."""
        if is_causal is not None:
            return bool(is_causal)
        batch_first = getattr(
            getattr(self.layers[0], "self_attn", None), "batch_first", False
        )
        return isinstance(x, Tensor) and is_causal_mask(
            mask, sequence_length(x, batch_first)
        )

    def _normed(self, output: Tensor) -> Tensor:
        return output if self.norm is None else self.norm(output)

    def extra_repr(self) -> str:
        """Summarise the stack for ``print(model)``."""
        return f"num_layers={self.num_layers}"


class VITransformerEncoder(_VITransformerStack):
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
    # No nested-tensor fast path: it would return zeros at padded positions, where
    # this encoder (and torch's regular path) computes values.
    _twin_options: ClassVar[dict[str, Any]] = {"enable_nested_tensor": False}

    def __init__(
        self,
        encoder_layer: VITransformerEncoderLayer,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_log_probs: bool = True,
    ) -> None:
        super().__init__(encoder_layer, num_layers, norm, return_log_probs)

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
        is_causal = self._causal(src, mask, is_causal)
        output = src
        for layer in self.layers:
            output = layer(
                output,
                src_mask=mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=is_causal,
            )
        return self._normed(output)


class VITransformerDecoder(_VITransformerStack):
    r"""A stack of decoder layers, the twin of :class:`torch.nn.TransformerDecoder`.

    ``layers`` holds ``num_layers`` deep copies of ``decoder_layer`` (equal start,
    separate parameters, as :class:`VITransformerEncoder`); ``norm`` is applied to
    the output.

    Parameters
    ----------
    decoder_layer : VITransformerDecoderLayer
        The layer to copy.
    num_layers, norm, return_log_probs
        As for :class:`VITransformerEncoder`.

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
        super().__init__(decoder_layer, num_layers, norm, return_log_probs)

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
        tgt_is_causal = self._causal(tgt, tgt_mask, tgt_is_causal)
        output = tgt
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=tgt_is_causal,
                memory_is_causal=memory_is_causal,
            )
        return self._normed(output)


def _new_stack(
    stack: type[_VITransformerStack], layer: _VITransformerLayer, num_layers: int
) -> _VITransformerStack:
    """A stack of copies of a new ``layer`` ending in a layer norm like the layer's.

    The copies are re-initialised so they start different, as in ``nn.Transformer``.
    """
    norm = copy.deepcopy(layer.norm1)
    new = stack(layer, num_layers, norm, layer.return_log_probs)
    _reinitialize(new)
    return new


class VITransformer(VIModule):
    r"""Bayesian encoder-decoder transformer, the twin of :class:`torch.nn.Transformer`.

    ``encoder`` is a :class:`VITransformerEncoder` and ``decoder`` a
    :class:`VITransformerDecoder`, each ending in a deterministic ``nn.LayerNorm``
    (or the given ``custom_encoder``/``custom_decoder``). The layers it builds are
    re-initialised independently, as ``nn.Transformer`` does. Defaults:
    ``d_model=32``, ``nhead=1``, one layer each, ``dim_feedforward=256``,
    ``batch_first=False`` (:ref:`upstream's signature <upstream-signatures>`);
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
        d_model = check_int(owner, "d_model", d_model)
        nhead = check_int(owner, "nhead", nhead)
        num_encoder_layers = check_int(owner, "num_encoder_layers", num_encoder_layers)
        num_decoder_layers = check_int(owner, "num_decoder_layers", num_decoder_layers)
        dim_feedforward = check_int(owner, "dim_feedforward", dim_feedforward)
        check_estimator(owner, estimator)
        check_module(owner, "custom_encoder", custom_encoder)
        check_module(owner, "custom_decoder", custom_decoder)
        super().__init__(return_log_probs=return_log_probs)
        arguments = locals()
        layer_kwargs = {name: arguments[name] for name in _LAYER_OPTIONS}
        if custom_encoder is None:
            layer = VITransformerEncoderLayer(d_model, nhead, **layer_kwargs)
            custom_encoder = _new_stack(VITransformerEncoder, layer, num_encoder_layers)
        if custom_decoder is None:
            layer = VITransformerDecoderLayer(d_model, nhead, **layer_kwargs)
            custom_decoder = _new_stack(VITransformerDecoder, layer, num_decoder_layers)
        self.encoder = custom_encoder
        self.decoder = custom_decoder
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
            custom_encoder=to_deterministic(self.encoder),
            custom_decoder=to_deterministic(self.decoder),
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
        self._check_inputs(src, tgt)
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

    def _check_inputs(self, src: Tensor, tgt: Tensor) -> None:
        check_sequences(self, self.d_model, src=src, tgt=tgt)
        owner = type(self).__name__
        batch = 0 if self.batch_first else 1
        if src.dim() == 3 and src.shape[batch] != tgt.shape[batch]:
            raise ShapeError(
                f"{owner}: src and tgt must have the same batch size (dimension "
                f"{batch}, batch_first={self.batch_first}), got shapes "
                f"{tuple(src.shape)} and {tuple(tgt.shape)}"
            )

    def extra_repr(self) -> str:
        """Summarise the model for ``print(model)``."""
        return f"d_model={self.d_model}, nhead={self.nhead}, batch_first={self.batch_first}"
