"""``VIConv1d``, ``VIConv2d``, ``VIConv3d``: Bayesian twins of ``torch.nn.Conv*d``."""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.modules.utils import _reverse_repeat_tuple

from ._lane_conv import lane_convolution, stacked_convolution
from ._stacked import register_stacked_layer
from .base import VIModule
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .estimators import EstimatorLayer, check_estimator
from .sampling import Stacked, current_state, fused_pays_off, mean_weights_enabled
from .utils.checks import check_input_dtype, check_int, int_tuple
from .utils.common_types import IntOrTuple, PriorSpec, VariationalSpec, vi_kwargs
from .utils.errors import ShapeError

__all__ = ["VIConv1d", "VIConv2d", "VIConv3d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_channels(
    owner: str, in_channels: int, out_channels: int, groups: int
) -> tuple[int, int, int]:
    """Channel counts and groups of a (transposed) convolution, or a ``ValueError``."""
    in_channels = check_int(owner, "in_channels", in_channels)
    out_channels = check_int(owner, "out_channels", out_channels)
    groups = check_int(owner, "groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{owner}: in_channels ({in_channels}) and out_channels ({out_channels}) "
            f"must both be divisible by groups ({groups})"
        )
    return in_channels, out_channels, groups


def set_geometry(
    layer: nn.Module,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
) -> None:
    """Check a (transposed) convolution's sizes and store them on ``layer``.

    Sizes are one int per spatial dimension (``layer._dims``), as ``torch.nn``
    stores them.
    """
    name, dims = type(layer).__name__, layer._dims
    layer.in_channels, layer.out_channels, layer.groups = _check_channels(
        name, in_channels, out_channels, groups
    )
    layer.kernel_size = int_tuple(name, "kernel_size", kernel_size, dims, 1)
    layer.stride = int_tuple(name, "stride", stride, dims, 1)
    layer.dilation = int_tuple(name, "dilation", dilation, dims, 1)


def _check_padding(owner: str, padding: Any, stride: tuple[int, ...], dims: int) -> Any:
    """``'same'``, ``'valid'`` or one int per spatial dimension, or a ``ValueError``."""
    if not isinstance(padding, str):
        return int_tuple(owner, "padding", padding, dims, 0)
    if padding not in ("same", "valid"):
        raise ValueError(
            f"{owner}: padding must be 'same', 'valid' or ints, got {padding!r}"
        )
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(f"{owner}: padding='same' needs stride 1, got {stride}")
    return padding


def _reversed_padding(
    padding: Any, dilation: tuple[int, ...], kernel_size: tuple[int, ...]
) -> Sequence[int]:
    """``F.pad``'s amounts (last dimension first) for ``padding_mode`` other than zeros."""
    if not isinstance(padding, str):
        return _reverse_repeat_tuple(padding, 2)
    pad = [0, 0] * len(kernel_size)
    if padding == "same":
        for i, (d, k) in enumerate(zip(reversed(dilation), reversed(kernel_size))):
            total = d * (k - 1)
            pad[2 * i] = total // 2
            pad[2 * i + 1] = total - total // 2
    return pad


class _VIConvNd(VIModule, EstimatorLayer):
    """Shared argument handling and forward of the N-d Bayesian convolutions."""

    _dims: int
    _conv: Callable[..., Tensor]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: Union[str, IntOrTuple] = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        variational_distribution: VariationalSpec = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: PriorSpec = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        name = type(self).__name__
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name}: padding_mode must be one of {_PADDING_MODES}, got "
                f"{padding_mode!r}"
            )
        set_geometry(self, in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.padding = _check_padding(name, padding, self.stride, self._dims)
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = _reversed_padding(
            self.padding, self.dilation, self.kernel_size
        )
        super().__init__(
            variable_shapes={
                "weight": (
                    self.out_channels,
                    self.in_channels // self.groups,
                    *self.kernel_size,
                ),
                "bias": (self.out_channels,) if bias else None,
            },
            **vi_kwargs(locals()),
        )
        self._spatial_dims = self._dims
        self._estimator = check_estimator(self, estimator)

    def _check_input(self, input_: Tensor) -> None:
        check_input_dtype(self, input_)
        n = self._dims
        if input_.dim() not in (n + 1, n + 2) or input_.shape[-n - 1] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__}(in_channels={self.in_channels}): expected input "
                f"of shape (N, {self.in_channels}, *spatial) or ({self.in_channels}, "
                f"*spatial) with {n} spatial dims, got {tuple(input_.shape)}"
            )

    def _conv_forward(
        self, input_: Tensor, weight: Tensor, bias: Optional[Tensor]
    ) -> Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(
                input_, self._reversed_padding_repeated_twice, mode=self.padding_mode
            )
            return self._conv(
                padded, weight, bias, self.stride, 0, self.dilation, self.groups
            )
        return self._conv(
            input_, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )

    _twin_arguments = (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "padding_mode",
    )

    def forward(self, input_: Tensor) -> Tensor:
        """Apply the convolution with one weight sample."""
        self._check_input(input_)
        outputs = input_.numel() // self.in_channels * self.out_channels  # about
        lane_op = None
        if (
            current_state() is not None
            and not mean_weights_enabled()
            and fused_pays_off(outputs)
        ):
            # Weights drawn per sample lane: see torch_blue.vi._lane_conv.
            lane_op = partial(lane_convolution, self._conv_forward)
        fast = self._fast_preactivations(self._conv_forward, input_, lane_op)
        if fast is not None:
            return fast
        return (lane_op or self._conv_forward)(input_, self.weight, self.bias)

    def _stacked_ready(self) -> bool:
        """Whether the stacked path can run this layer: weight sampling only."""
        return self._estimator == "reparameterization"

    def _stacked_forward(self, input_: Tensor, stacked: Stacked) -> Tensor:
        """:meth:`forward` for all S samples at once (the stacked path).

        Weight sampling (:meth:`_stacked_ready`): the same draws, in the same order,
        and the same convolutions as the lanes of the sampled forward.
        """
        one_sample = input_[0] if stacked.input_stacked else input_
        self._check_input(one_sample)
        weight = self._draw_stacked("weight", stacked.samples)
        bias = self._draw_stacked("bias", stacked.samples)
        loop = fused_pays_off(one_sample.numel() // self.in_channels * self.out_channels)
        return stacked_convolution(
            self._conv_forward, input_, weight, bias, stacked.input_stacked, loop
        )

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * self._dims:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.variational_distribution["bias"] is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text + self._weight_distribution_repr()


_DOC = """Bayesian {n}-d convolution, the twin of :class:`torch.nn.Conv{n}d`.

    Arguments and shapes are those of :class:`torch.nn.Conv{n}d`; the remaining
    keyword arguments are the VIkwargs of :class:`~torch_blue.vi.VIModule`. The
    ``weight`` of shape ``(out_channels, in_channels // groups, *kernel_size)`` and
    the ``bias`` are random variables.

    Shape
    -----
    - Input: ``(N, C_in, {spatial})`` or ``(C_in, {spatial})``.
    - Output: ``(S, N, C_out, {spatial_out})`` as the outermost module with
      ``samples=S``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VIConv{n}d
    >>> conv = VIConv{n}d(2, 4, kernel_size=3, padding=1)
    >>> conv(torch.randn(8, 2, {example}), samples=3).shape
    torch.Size([3, 8, 4, {example_out}])
    """


def conv_doc(template: str, n: int, **examples: str) -> str:
    """Fill a docstring template of the 1-, 2- and 3-d layer classes."""
    names = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}[n]
    return template.format(
        n=n,
        spatial=", ".join(names),
        spatial_out=", ".join(f"{name}_out" for name in names),
        **examples,
    )


@register_stacked_layer
class VIConv1d(_VIConvNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(_DOC, 1, example="5", example_out="5")
    _dims, _conv, _torch_twin = 1, staticmethod(F.conv1d), nn.Conv1d


@register_stacked_layer
class VIConv2d(_VIConvNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(_DOC, 2, example="5, 5", example_out="5, 5")
    _dims, _conv, _torch_twin = 2, staticmethod(F.conv2d), nn.Conv2d


@register_stacked_layer
class VIConv3d(_VIConvNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(_DOC, 3, example="5, 5, 5", example_out="5, 5, 5")
    _dims, _conv, _torch_twin = 3, staticmethod(F.conv3d), nn.Conv3d
