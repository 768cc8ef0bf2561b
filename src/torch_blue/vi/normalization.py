r"""Bayesian normalisation layers: ``VIBatchNorm1d/2d/3d`` and ``VILayerNorm``.

The affine ``weight`` (scale) and ``bias`` (shift) are random variables; the
normalisation itself is deterministic.

**Initialisation.** As in ``torch.nn``, the scales start around 1 and the shifts
around 0: the variational means are set to exactly 1 and 0 (not the Kaiming-uniform
initialisation of the other layers), and the spreads are small, 1/100 of the
variational distribution's default scale (with ``kaiming_initialization=False``: the
default scale itself).

**Priors.** A prior centred at 0 pulls a scale initialised at 1 towards 0, i.e.
towards switching the channel off. The default prior is therefore
``MeanFieldNormal(mean=1.0)`` for the ``weight`` and ``MeanFieldNormal()`` for the
``bias`` (both with standard deviation 1). A ``prior`` given explicitly is used as
given; a single prior applies to both variables, so pass a pair to centre the scale
prior elsewhere than the shift prior. ``rescale_prior`` is accepted (so that
:func:`~torch_blue.vi.convert_to_vimodule` can pass it to every layer) but has no
effect: element-wise scales and shifts have no fan-in to rescale by, and scaling the
scale prior's mean of 1 would defeat its purpose.

**Batch statistics under autosampling.** In training mode a batch norm normalises
each sample lane with the statistics of that lane's own activations over the batch
(they differ between lanes when earlier layers are stochastic). The running
statistics cannot be updated inside the lanes: each lane hands its statistics to
:meth:`SamplingState.defer <torch_blue.vi.sampling.SamplingState.defer>`, and after
the sampled forward the running mean and (unbiased) variance are updated once, with
``momentum``, from the mean of the lane statistics over the lanes.
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn import init
from typing_extensions import Unpack

from ._lane_norm import batch_norm_in_lanes
from .base import VIModule
from .distributions import MeanFieldNormal
from .utils.checks import check_input_dtype, check_int, check_probability
from .utils.common_types import VIkwargs, check_vi_kwargs
from .utils.errors import ShapeError

__all__ = ["VIBatchNorm1d", "VIBatchNorm2d", "VIBatchNorm3d", "VILayerNorm"]

# The spread of the affine parameters starts like that of a layer with this fan-in
# (Kaiming scaling by 1/sqrt(fan_in) = 1/100 of the distribution's default scale).
_AFFINE_INIT_FAN_IN = 10_000


def _norm_vikwargs(owner: str, vikwargs: dict[str, Any]) -> dict[str, Any]:
    """A norm's VIkwargs with its own defaults.

    The variational distribution defaults to ``MeanFieldNormal()``, the priors to a
    scale prior centred at 1 and a shift prior at 0; ``rescale_prior`` is accepted
    and has no effect (see the module docstring).
    """
    kwargs = check_vi_kwargs(owner, vikwargs)
    kwargs.setdefault("variational_distribution", MeanFieldNormal())
    if kwargs.get("prior") is None:
        kwargs["prior"] = (MeanFieldNormal(mean=1.0), MeanFieldNormal())
    kwargs["rescale_prior"] = False
    return kwargs


def _check_eps(name: str, eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{name}: eps must be a non-negative number, got {eps!r}")
    return float(eps)


class _VIAffineNorm(VIModule):
    """Random affine ``weight`` (initialised at 1) and ``bias`` (at 0) of a norm."""

    def _calculate_fan_in(self) -> int:
        # Element-wise scales and shifts have no fan-in (used nowhere else here).
        return 1

    def _factory_kwargs(self) -> dict[str, Any]:
        tensors = [
            *self.parameters(),
            *(b for b in self.buffers() if b.is_floating_point()),
        ]
        if not tensors:
            return {"device": None, "dtype": None}
        return {"device": tensors[0].device, "dtype": tensors[0].dtype}

    def reset_variational_parameters(self) -> None:
        """Set the scale means to 1, the shift means to 0 and small spreads."""
        for variable, dist in self.variational_distribution.items():
            if dist is None:
                continue
            if self._kaiming_init:
                dist.reset_variational_parameters(self, variable, _AFFINE_INIT_FAN_IN)
            else:
                dist.reset_variational_parameters(self, variable, 1, False)
            location = getattr(
                self, self.variational_parameter_name(variable, dist.primary_parameter)
            )
            init.constant_(location, 1.0 if variable == "weight" else 0.0)
            if self._prior_init:
                self.prior[variable].reset_parameters_to_prior(self, variable)

    def _distribution_repr(self) -> str:
        dist = self.variational_distribution["weight"]
        if dist is None:
            return ""
        priors = self.prior["weight"]
        if self.variational_distribution["bias"] is not None:
            priors = f"({priors}, {self.prior['bias']})"
        return f", variational_distribution={dist}, prior={priors}"


class _VIBatchNormNd(_VIAffineNorm):
    """Shared implementation of the N-d Bayesian batch norms."""

    _dims: tuple[int, ...]  # accepted numbers of input dimensions
    _layout: str  # the input layout named in error messages

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        **vikwargs: Unpack[VIkwargs],
    ) -> None:
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features)
        self.eps = _check_eps(name, eps)
        if momentum is not None:
            momentum = check_probability(
                name, "momentum", momentum, " or None (cumulative average)"
            )
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        vikwargs = _norm_vikwargs(name, vikwargs)
        super().__init__(
            variable_shapes={
                "weight": (num_features,) if affine else None,
                "bias": (num_features,) if affine and bias else None,
            },
            **vikwargs,
        )
        self._register_running_stats(vikwargs.get("device"), vikwargs.get("dtype"))

    def _register_running_stats(
        self, device: Optional[torch.device], dtype: Optional[torch.dtype]
    ) -> None:
        """The buffers ``running_mean``, ``running_var``, ``num_batches_tracked``."""
        if not self.track_running_stats:
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(buffer, None)
            return
        factory_kwargs = {"device": device, "dtype": dtype}
        size = self.num_features
        self.register_buffer("running_mean", torch.zeros(size, **factory_kwargs))
        self.register_buffer("running_var", torch.ones(size, **factory_kwargs))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )

    def reset_running_stats(self) -> None:
        """Reset the running mean to 0, the running variance to 1 and the count."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _check_input(self, input_: Tensor) -> None:
        check_input_dtype(self, input_)
        if input_.dim() not in self._dims or input_.shape[1] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__}(num_features={self.num_features}): expected "
                f"input of shape {self._layout.format(c=self.num_features)}, got "
                f"{tuple(input_.shape)}"
            )

    def forward(self, input_: Tensor) -> Tensor:
        """Normalise with one sample of the affine parameters."""
        self._check_input(input_)
        weight, bias = self.weight, self.bias
        if not self.training and self.track_running_stats:
            return F.batch_norm(
                input_, self.running_mean, self.running_var, weight, bias, False,
                0.0, self.eps,
            )  # fmt: skip
        if input_.numel() == input_.shape[1]:
            raise ShapeError(
                f"{type(self).__name__}: expected more than 1 value per channel when "
                f"training, got input of shape {tuple(input_.shape)}"
            )
        # Each sample lane normalises with its own batch statistics; the running
        # statistics are updated once, after the sampled call.
        return batch_norm_in_lanes(self, input_, weight, bias)

    _twin_arguments = (
        "num_features",
        "eps",
        "momentum",
        "affine",
        "track_running_stats",
        "bias",
    )

    def _has_bias(self) -> bool:
        return not self.affine or self.variational_distribution["bias"] is not None

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
            + ("" if self._has_bias() else ", bias=False")
            + self._distribution_repr()
        )


_BN_DOC = """Bayesian batch normalisation, the twin of :class:`torch.nn.BatchNorm{n}d`.

    Arguments, buffers (``running_mean``, ``running_var``, ``num_batches_tracked``)
    and shapes are those of :class:`torch.nn.BatchNorm{n}d`; the remaining keyword
    arguments are the VIkwargs of :class:`~torch_blue.vi.VIModule`. With ``affine``
    the per-channel ``weight`` and (unless the keyword-only ``bias=False``) ``bias``
    are random variables, initialised around 1
    and 0; the default ``prior`` (``None``) centres the scale prior at 1 (see
    :mod:`torch_blue.vi.normalization`).

    In training mode every sample lane is normalised with the mean and variance of its
    own activations over the batch; the running statistics are updated once per call,
    with ``momentum`` (``None``: cumulative average), from the mean over the lanes of
    the lane statistics. In evaluation mode the running statistics are used; with
    ``track_running_stats=False`` always the batch statistics.

    Shape
    -----
    - Input: ``{layout}``.
    - Output: ``(S, {layout_plain})`` as the outermost module with ``samples=S``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.normalization import VIBatchNorm{n}d
    >>> norm = VIBatchNorm{n}d(4)
    >>> out = norm(torch.randn({example}), samples=3)
    >>> out.shape
    torch.Size([3, {example}])
    >>> int(norm.num_batches_tracked)
    1
    """


class VIBatchNorm1d(_VIBatchNormNd):  # noqa: D101 (docstring from _BN_DOC)
    __doc__ = _BN_DOC.format(
        n=1, layout="(N, C) or (N, C, L)", layout_plain="N, C) or (S, N, C, L",
        example="8, 4, 5",
    )  # fmt: skip
    _dims = (2, 3)
    _layout = "(N, {c}) or (N, {c}, L)"
    _torch_twin = nn.BatchNorm1d


class VIBatchNorm2d(_VIBatchNormNd):  # noqa: D101 (docstring from _BN_DOC)
    __doc__ = _BN_DOC.format(
        n=2, layout="(N, C, H, W)", layout_plain="N, C, H, W", example="8, 4, 5, 5"
    )
    _dims = (4,)
    _layout = "(N, {c}, H, W)"
    _torch_twin = nn.BatchNorm2d


class VIBatchNorm3d(_VIBatchNormNd):  # noqa: D101 (docstring from _BN_DOC)
    __doc__ = _BN_DOC.format(
        n=3, layout="(N, C, D, H, W)", layout_plain="N, C, D, H, W",
        example="8, 4, 3, 5, 5",
    )  # fmt: skip
    _dims = (5,)
    _layout = "(N, {c}, D, H, W)"
    _torch_twin = nn.BatchNorm3d


class VILayerNorm(_VIAffineNorm):
    r"""Bayesian layer normalisation, the twin of :class:`torch.nn.LayerNorm`.

    Arguments and shapes are those of :class:`torch.nn.LayerNorm`; the remaining
    keyword arguments are the VIkwargs of :class:`~torch_blue.vi.VIModule`. With
    ``elementwise_affine`` the ``weight`` of shape ``normalized_shape`` (and the
    ``bias`` unless ``bias=False``) are random variables, initialised around 1 and 0;
    the default ``prior`` (``None``) centres the scale prior at 1 (see
    :mod:`torch_blue.vi.normalization`).

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The trailing input dimensions to normalise over.
    eps : float, default: 1e-5
        Added to the variance for numerical stability.
    elementwise_affine : bool, default: True
        Whether the layer has a random scale (and shift).
    bias : bool, default: True
        Whether the affine part has a random shift.

    Shape
    -----
    - Input: ``(*, *normalized_shape)``.
    - Output: ``(S, *, *normalized_shape)`` as the outermost module with
      ``samples=S``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.normalization import VILayerNorm
    >>> norm = VILayerNorm(6)
    >>> norm(torch.randn(2, 5, 6), samples=3).shape
    torch.Size([3, 2, 5, 6])
    """

    _torch_twin = nn.LayerNorm

    def __init__(
        self,
        normalized_shape: Union[int, Sequence[int]],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        **vikwargs: Unpack[VIkwargs],
    ) -> None:
        name = type(self).__name__
        if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
            shape: tuple = (normalized_shape,)
        elif isinstance(normalized_shape, (Sequence, torch.Size)) and not isinstance(
            normalized_shape, str
        ):
            shape = tuple(normalized_shape)
        else:
            shape = ()
        if not shape or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape
        ):
            raise ValueError(
                f"{name}: normalized_shape must be a positive int or a non-empty "
                f"sequence of them, got {normalized_shape!r}"
            )
        self.normalized_shape = shape
        self.eps = _check_eps(name, eps)
        self.elementwise_affine = bool(elementwise_affine)
        super().__init__(
            variable_shapes={
                "weight": shape if elementwise_affine else None,
                "bias": shape if elementwise_affine and bias else None,
            },
            **_norm_vikwargs(name, vikwargs),
        )

    def forward(self, input_: Tensor) -> Tensor:
        """Normalise with one sample of the affine parameters."""
        check_input_dtype(self, input_)
        n = len(self.normalized_shape)
        if input_.dim() < n or tuple(input_.shape[input_.dim() - n :]) != (
            self.normalized_shape
        ):
            raise ShapeError(
                f"{type(self).__name__}(normalized_shape={self.normalized_shape}): "
                f"expected input of shape (*, {', '.join(map(str, self.normalized_shape))})"
                f", got {tuple(input_.shape)}"
            )
        return F.layer_norm(input_, self.normalized_shape, self.weight, self.bias, self.eps)

    _twin_arguments = ("normalized_shape", "eps", "elementwise_affine", "bias")

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        text = (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}"
        )
        if self.elementwise_affine and self.variational_distribution["bias"] is None:
            text += ", bias=False"
        return text + self._distribution_repr()
