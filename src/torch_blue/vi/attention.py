r"""Bayesian multi-head attention, the twin of :class:`torch.nn.MultiheadAttention`.

:class:`VIMultiheadAttention` draws its projection weights once per sample. With
sampled weights and ``need_weights=False`` (the transformer layers never ask for the
weights) it runs :func:`~torch_blue.vi.functional.attention.sampled_attention`:
batched matrix products on a CPU up to ``MATMUL_MAX_POSITIONS`` query-key pairs,
otherwise one fused ``scaled_dot_product_attention`` call for all samples, which
never holds the attention weights of every sample. With ``need_weights=True`` it runs
torch's ``F.multi_head_attention_forward`` on its matrix-product path; the mean
network always runs torch's function, so it equals the torch module exactly.
"""

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .base import VIModule
from .distributions import Prior, VariationalDistribution
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .functional.attention import sampled_attention, sequence_length, transpose_qkv
from .linear import VILinear
from .sampling import mean_weights_enabled
from .utils.checks import check_input_dtype, check_int, check_probability
from .utils.errors import ShapeError

__all__ = ["VIMultiheadAttention"]

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


# ---------------------------------------------------------------------- checks
def _check_mask_dtype(owner: str, name: str, mask: Tensor) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{owner}: {name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{owner}: {name} must be a bool or floating-point mask, got {mask.dtype}"
        )


def _check_mask_shapes(
    owner: str,
    attn_mask: Optional[Tensor],
    key_padding_mask: Optional[Tensor],
    heads: int,
    batch: Optional[int],
    target: int,
    source: int,
) -> None:
    """Check the masks' dtypes and shapes; ``batch`` is ``None`` for unbatched inputs."""
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
        expected = (source,) if batch is None else (batch, source)
        if tuple(key_padding_mask.shape) != expected:
            raise ShapeError(
                f"{owner}: key_padding_mask must have shape {expected}, got "
                f"{tuple(key_padding_mask.shape)}"
            )


class _Drawn(NamedTuple):
    """The weights of one sample; ``None`` for absent ones."""

    in_proj: tuple[Tensor, ...]  # the packed (3E, E) weight or the three separate ones
    in_proj_bias: Optional[Tensor]
    bias_k: Optional[Tensor]
    bias_v: Optional[Tensor]
    out_weight: Optional[Tensor]  # None: out_proj samples its outputs later
    out_bias: Optional[Tensor]


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

    The arguments are those of the torch module, with ``batch_first=True`` by default,
    plus the VIkwargs of :class:`~torch_blue.vi.VIModule` (``rescale_prior=True`` by
    default). The attention dropout rate ``dropout`` (torch's third argument) is a
    trailing keyword here, default 0 (:ref:`upstream's signature
    <upstream-signatures>`).

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
        One distribution for all weights, or a sequence of nine, one per variable in
        the order ``in_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight,
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
        self._set_dimensions(embed_dim, num_heads, kdim, vdim)
        self.batch_first = bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        self.dropout = check_probability("VIMultiheadAttention", "dropout", dropout)
        own_variational, out_variational = self._split(
            "variational_distribution", variational_distribution
        )
        own_prior, out_prior = self._split("prior", prior)
        super().__init__(
            variable_shapes=self._variable_shapes(bias, add_bias_kv),
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
            self._rescale_priors(prior_initialization)
        self.out_proj = VILinear(
            self.embed_dim,
            self.embed_dim,
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

    def _set_dimensions(self, embed_dim: Any, num_heads: Any, kdim: Any, vdim: Any) -> None:
        """Check and store the feature sizes and the number of heads."""
        owner = "VIMultiheadAttention"
        embed_dim = check_int(owner, "embed_dim", embed_dim)
        num_heads = check_int(owner, "num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(
                f"{owner}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}"
            )
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else check_int(owner, "kdim", kdim)
        self.vdim = embed_dim if vdim is None else check_int(owner, "vdim", vdim)
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads

    def _variable_shapes(
        self, bias: bool, add_bias_kv: bool
    ) -> dict[str, Optional[tuple[int, ...]]]:
        """The shapes of the own random variables (``None``: absent), torch's names."""
        e, same = self.embed_dim, self._qkv_same_embed_dim
        return {
            "in_proj_weight": (3 * e, e) if same else None,
            "q_proj_weight": None if same else (e, e),
            "k_proj_weight": None if same else (e, self.kdim),
            "v_proj_weight": None if same else (e, self.vdim),
            "in_proj_bias": (3 * e,) if bias else None,
            "bias_k": (1, 1, e) if add_bias_kv else None,
            "bias_v": (1, 1, e) if add_bias_kv else None,
        }

    def _rescale_priors(self, prior_initialization: bool) -> None:
        """Rescale each prior to its projection's fan-in (and re-draw from it)."""
        for variable, variable_prior in self.prior.items():
            if variable_prior is not None:
                variable_prior.kaiming_rescale(self._variable_fan_in(variable))
        if prior_initialization:
            self.reset_variational_parameters()

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
            **VIModule._factory_kwargs(module),
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
        """Check the inputs and masks; return whether the inputs are batched."""
        owner = (
            f"VIMultiheadAttention(embed_dim={self.embed_dim}, num_heads={self.num_heads})"
        )
        batch = self._check_qkv(owner, query, key, value)
        seq = 1 if batch is not None and self.batch_first else 0
        heads = self.num_heads if batch is None else self.num_heads * batch
        _check_mask_shapes(
            owner,
            attn_mask,
            key_padding_mask,
            heads,
            batch,
            query.shape[seq],
            key.shape[seq],
        )
        return batch is not None

    def _check_qkv(
        self, owner: str, query: Tensor, key: Tensor, value: Tensor
    ) -> Optional[int]:
        """Check types, dtypes and shapes of q, k, v; return the batch size if batched."""
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
        shapes = f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ShapeError(
                f"{owner}: query, key and value must all be batched or all unbatched, "
                f"got shapes {shapes}"
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
        if not batched:
            return None
        b = 0 if self.batch_first else 1
        if len({query.shape[b], key.shape[b], value.shape[b]}) > 1:
            raise ShapeError(
                f"{owner}: query, key and value must have the same batch size "
                f"(dimension {b}, batch_first={self.batch_first}), got shapes {shapes}"
            )
        return query.shape[b]

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
        that ``attn_mask`` comes before ``key_padding_mask`` here, unlike torch; pass
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
            attn_mask = self._causal_mask(query, key)
        sampled = not mean_weights_enabled()
        late_out_proj = (
            sampled
            and isinstance(self.out_proj, VILinear)
            and self.out_proj.estimator != "reparameterization"
        )
        drawn = self._draw_weights(late_out_proj)
        # Sampled weights without attention weights: our own attention core, whose
        # fused kernel call runs once for all samples (see sampled_attention). The
        # mean network takes torch's own path, so it equals the torch twin exactly.
        own_core = sampled and not need_weights
        # The core works batch first, torch's function sequence first.
        flip = batched and self.batch_first != own_core
        if flip:
            query, key, value = transpose_qkv(query, key, value)
        if own_core:
            output = self._own_attention(
                query, key, value, drawn, attn_mask, key_padding_mask, is_causal
            )
            weights = None
        else:
            output, weights = self._torch_attention(
                query,
                key,
                value,
                drawn,
                attn_mask,
                key_padding_mask,
                need_weights or sampled,
                average_attn_weights,
                is_causal,
            )
        if flip:
            output = output.transpose(1, 0)
        if late_out_proj:
            output = self.out_proj(output)
        return output, weights if need_weights else None

    def _causal_mask(self, query: Tensor, key: Tensor) -> Tensor:
        """The bool causal mask (``True`` = masked), top-left aligned."""
        return torch.ones(
            sequence_length(query, self.batch_first),
            sequence_length(key, self.batch_first),
            dtype=torch.bool,
            device=query.device,
        ).triu(1)

    def _draw_weights(self, late_out_proj: bool) -> _Drawn:
        """Draw one sample's weights, in a fixed order (``out_proj``'s first).

        ``out_proj``'s weight and bias are ``None`` with ``late_out_proj`` (its
        estimator samples its outputs after the attention instead).
        """
        out_weight: Optional[Tensor] = None
        out_bias: Optional[Tensor] = None
        if not late_out_proj:
            out_weight, out_bias = self.out_proj.weight, self.out_proj.bias
        if self._qkv_same_embed_dim:
            in_proj: tuple[Tensor, ...] = (self.in_proj_weight,)
        else:
            in_proj = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return _Drawn(
            in_proj, self.in_proj_bias, self.bias_k, self.bias_v, out_weight, out_bias
        )

    def _own_attention(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        drawn: _Drawn,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        is_causal: bool,
    ) -> Tensor:
        """Attend with :func:`~torch_blue.vi.functional.attention.sampled_attention`."""
        return sampled_attention(
            query,
            key,
            value,
            self.num_heads,
            drawn.in_proj,
            drawn.in_proj_bias,
            drawn.bias_k,
            drawn.bias_v,
            self.add_zero_attn,
            self.dropout if self.training else 0.0,
            drawn.out_weight,
            drawn.out_bias,
            attn_mask,
            key_padding_mask,
            is_causal,
        )

    def _torch_attention(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        drawn: _Drawn,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        need_weights: bool,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Attend with torch's ``F.multi_head_attention_forward``, sequence first.

        Sampled weights ask for the attention weights: torch's matrix-product path
        has vmap batching rules. A late ``out_proj`` projects with the identity here
        (exact).
        """
        out_weight = drawn.out_weight
        if out_weight is None:
            out_weight = torch.eye(self.embed_dim, dtype=query.dtype, device=query.device)
        if self._qkv_same_embed_dim:
            projections: dict[str, Any] = {}
        else:
            projections = {
                "use_separate_proj_weight": True,
                "q_proj_weight": drawn.in_proj[0],
                "k_proj_weight": drawn.in_proj[1],
                "v_proj_weight": drawn.in_proj[2],
            }
        return F.multi_head_attention_forward(
            query,
            key,
            value,
            self.embed_dim,
            self.num_heads,
            drawn.in_proj[0] if self._qkv_same_embed_dim else None,
            drawn.in_proj_bias,
            drawn.bias_k,
            drawn.bias_v,
            self.add_zero_attn,
            self.dropout,
            out_weight,
            drawn.out_bias,
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            **projections,
        )

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
