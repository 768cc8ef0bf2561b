"""``VILinear``: the Bayesian twin of ``torch.nn.Linear``."""

from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from ._stacked import register_stacked_layer
from .base import VIModule
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .estimators import EstimatorLayer, check_estimator, flat_linear
from .functional.linear import stacked_linear
from .sampling import Stacked
from .utils.checks import check_input_dtype, check_int
from .utils.common_types import PriorSpec, VariationalSpec, vi_kwargs
from .utils.errors import ShapeError

__all__ = ["VILinear"]


@register_stacked_layer
class VILinear(VIModule, EstimatorLayer):
    r"""Bayesian linear layer :math:`y = x W^\top + b` with random ``weight`` and ``bias``.

    Arguments and shapes are those of :class:`torch.nn.Linear`; the remaining keyword
    arguments are the VIkwargs of :class:`~torch_blue.vi.VIModule`.

    Parameters
    ----------
    in_features : int
        Size of each input sample.
    out_features : int
        Size of each output sample.
    bias : bool, default: True
        Whether the layer has a (random) bias.
    estimator : str, default: "reparameterization"
        Gradient estimator: ``"reparameterization"``, ``"local_reparameterization"``,
        ``"flipout"`` or ``"shared_flipout"`` (see :mod:`torch_blue.vi.estimators`).

    Shape
    -----
    - Input: ``(*, in_features)``.
    - Output: ``(S, *, out_features)`` when called as the outermost module with
      ``samples=S``; ``(*, out_features)`` per sample inside a model.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(20, 30)
    >>> out = layer(torch.randn(128, 20), samples=4)
    >>> out.shape
    torch.Size([4, 128, 30])
    """

    __constants__: ClassVar[list[str]] = ["in_features", "out_features"]
    in_features: int
    out_features: int

    def __init__(
        self,
        in_features: int,
        out_features: int,
        variational_distribution: VariationalSpec = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: PriorSpec = DEFAULT_PRIOR,
        bias: bool = True,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        in_features = check_int("VILinear", "in_features", in_features)
        out_features = check_int("VILinear", "out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        super().__init__(
            variable_shapes={
                "weight": (out_features, in_features),
                "bias": (out_features,) if bias else None,
            },
            **vi_kwargs(locals()),
        )
        self._estimator = check_estimator(self, estimator)

    _torch_twin = nn.Linear
    _twin_arguments = ("in_features", "out_features", "bias")

    def forward(self, input_: Tensor) -> Tensor:
        """Apply the layer with one weight sample."""
        self._check_input(input_)
        fast = self._fast_preactivations(flat_linear, input_)
        if fast is not None:
            return fast
        return flat_linear(input_, self.weight, self.bias)

    def _stacked_forward(self, input_: Tensor, stacked: Stacked) -> Tensor:
        """:meth:`forward` for all S samples at once (the stacked path).

        The same values as S calls of :meth:`forward` in the ``vmap`` lanes, drawn
        in the same order: weights ``(S, out, in)`` and one batched product.
        """
        self._check_input(input_, stacked)
        fast = self._fast_preactivations(flat_linear, input_, stacked_linear, stacked)
        if fast is not None:
            return fast
        weight = self._draw_stacked("weight", stacked.samples)
        bias = self._draw_stacked("bias", stacked.samples)
        return stacked_linear(input_, weight, bias, stacked.input_stacked)

    def _check_input(self, input_: Tensor, stacked: Optional[Stacked] = None) -> None:
        """Raise for an input of the wrong dtype or shape (for one sample)."""
        check_input_dtype(self, input_)
        shape = input_.shape if stacked is None else stacked.per_sample(input_.shape)
        if not shape or shape[-1] != self.in_features:
            raise ShapeError(
                f"VILinear(in_features={self.in_features}): expected an input whose last "
                f"dimension is {self.in_features}, got shape {tuple(shape)}"
            )

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        bias = self.variational_distribution["bias"] is not None
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={bias}, variational_distribution="
            f"{self.variational_distribution['weight']}, prior={self.prior['weight']}"
            + (
                ""
                if self._estimator == "reparameterization"
                else f", estimator={self._estimator!r}"
            )
        )
