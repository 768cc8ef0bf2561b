r"""``VIConvTranspose1d/2d/3d``: Bayesian twins of ``torch.nn.ConvTranspose*d``.

A transposed convolution is linear in its weights, like a convolution, so all three
gradient estimators of :mod:`torch_blue.vi.estimators` apply: local
reparameterisation samples the outputs from
:math:`\mathcal N(\mathrm{convT}(x, \mu) + \mu_b,\ \mathrm{convT}(x^2, \sigma^2) +
\sigma_b^2)` (each weight element enters an output element at most once), and flipout
flips signs per example and input channel before, and per example and output channel
after the transposed convolution of the weight perturbation (the weight is shared
over all positions, as for a convolution).
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from typing_extensions import Unpack

from .base import VIModule
from .conv import _VIConvNd, conv_doc, set_geometry
from .estimators import EstimatorLayer, check_estimator
from .utils.checks import int_tuple
from .utils.common_types import IntOrTuple, VIkwargs, check_vi_kwargs
from .utils.errors import ShapeError

__all__ = ["VIConvTranspose1d", "VIConvTranspose2d", "VIConvTranspose3d"]


def _check_output_padding(
    owner: str, output_padding: Any, stride: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...]:
    """One int per dimension, each below the stride or the dilation."""
    output_padding = int_tuple(owner, "output_padding", output_padding, len(stride), 0)
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(
                f"{owner}: output_padding must be smaller than stride or dilation in "
                f"every dimension, got output_padding={output_padding}, "
                f"stride={stride}, dilation={dilation}"
            )
    return output_padding


class _VIConvTransposeNd(VIModule, EstimatorLayer):
    """Shared argument handling and forward of the N-d Bayesian transposed convs."""

    _dims: int
    _conv: Callable[..., Tensor]

    # The input check of the convolutions fits unchanged: (N, C_in, *spatial).
    _check_input = _VIConvNd._check_input

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        *,
        estimator: str = "reparameterization",
        **vikwargs: Unpack[VIkwargs],
    ) -> None:
        name = type(self).__name__
        n = self._dims
        if padding_mode != "zeros":
            raise ValueError(
                f"{name}: only padding_mode='zeros' is supported (as for "
                f"torch.nn.ConvTranspose{n}d), got {padding_mode!r}"
            )
        if isinstance(padding, str):
            raise ValueError(
                f"{name}: padding must be a non-negative int or tuple of ints (string "
                f"paddings are not defined for transposed convolutions), got {padding!r}"
            )
        set_geometry(self, in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.padding = int_tuple(name, "padding", padding, n, 0)
        self.output_padding = _check_output_padding(
            name, output_padding, self.stride, self.dilation
        )
        self.padding_mode = padding_mode
        super().__init__(
            variable_shapes={
                # torch's layout for transposed convolutions: input channels first.
                "weight": (
                    self.in_channels,
                    self.out_channels // self.groups,
                    *self.kernel_size,
                ),
                "bias": (self.out_channels,) if bias else None,
            },
            **check_vi_kwargs(name, vikwargs),
        )
        self._spatial_dims = n
        self._estimator = check_estimator(self, estimator)

    def _output_padding(
        self, input_: Tensor, output_size: Optional[Sequence[int]]
    ) -> tuple[int, ...]:
        """The output padding that gives ``output_size`` (rules of ``torch.nn``)."""
        if output_size is None:
            return self.output_padding
        name = type(self).__name__
        n = self._dims
        leading = 2 if input_.dim() == n + 2 else 1
        sizes = list(output_size)
        if len(sizes) == leading + n:
            sizes = sizes[leading:]
        if len(sizes) != n or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes
        ):
            raise ShapeError(
                f"{name}: for a {input_.dim()}-d input, output_size must hold {n} or "
                f"{leading + n} ints, got {output_size!r}"
            )
        spatial = input_.shape[leading:]
        smallest = [
            (size - 1) * s - 2 * p + d * (k - 1) + 1
            for size, s, p, d, k in zip(
                spatial, self.stride, self.padding, self.dilation, self.kernel_size
            )
        ]
        largest = [low + s - 1 for low, s in zip(smallest, self.stride)]
        if any(
            not low <= size <= high for size, low, high in zip(sizes, smallest, largest)
        ):
            raise ShapeError(
                f"{name}: requested output_size {tuple(sizes)}, but for an input of "
                f"spatial size {tuple(spatial)} valid sizes range from {tuple(smallest)} "
                f"to {tuple(largest)}"
            )
        return tuple(size - low for size, low in zip(sizes, smallest))

    _twin_arguments = (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "output_padding",
        "groups",
        "bias",
        "dilation",
        "padding_mode",
    )

    def forward(
        self, input_: Tensor, output_size: Optional[Sequence[int]] = None
    ) -> Tensor:
        """Apply the transposed convolution with one weight sample.

        ``output_size`` picks one of the output sizes a strided transposed
        convolution can produce, as in ``torch.nn``.
        """
        self._check_input(input_)
        output_padding = self._output_padding(input_, output_size)

        def op(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
            return self._conv(
                x, weight, bias, self.stride, self.padding, output_padding,
                self.groups, self.dilation,
            )  # fmt: skip

        fast = self._fast_preactivations(op, input_)
        if fast is not None:
            return fast
        return op(input_, self.weight, self.bias)

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        n = self._dims
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * n:
            text += f", padding={self.padding}"
        if self.output_padding != (0,) * n:
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1,) * n:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.variational_distribution["bias"] is None:
            text += ", bias=False"
        return text + self._weight_distribution_repr()


_DOC = """Bayesian {n}-d transposed convolution, the twin of
    :class:`torch.nn.ConvTranspose{n}d`.

    Arguments, defaults and shapes are those of :class:`torch.nn.ConvTranspose{n}d`
    (only ``padding_mode="zeros"`` exists, as there); the remaining keyword arguments
    are the VIkwargs of :class:`~torch_blue.vi.VIModule` and the gradient
    ``estimator`` (``"reparameterization"``, ``"local_reparameterization"``,
    ``"flipout"`` or ``"shared_flipout"``, see :mod:`torch_blue.vi.estimators`). The
    ``weight``, of torch's shape ``(in_channels, out_channels // groups,
    *kernel_size)``, and the ``bias`` are random variables.
    ``forward(input, output_size=None)`` accepts the ``output_size`` of ``torch.nn``
    to choose among the output sizes a strided transposed convolution can produce.

    Shape
    -----
    - Input: ``(N, C_in, {spatial})`` or ``(C_in, {spatial})``.
    - Output: ``(S, N, C_out, {spatial_out})`` as the outermost module with
      ``samples=S``, where each output size is ``(in - 1) * stride - 2 * padding +
      dilation * (kernel_size - 1) + output_padding + 1``.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.conv_transpose import VIConvTranspose{n}d
    >>> up = VIConvTranspose{n}d(4, 2, kernel_size=3, stride=2)
    >>> up(torch.randn(8, 4, {example}), samples=3).shape
    torch.Size([3, 8, 2, {example_out}])
    >>> up(torch.randn(8, 4, {example}), output_size=[{example_alt}], samples=3).shape
    torch.Size([3, 8, 2, {example_alt}])
    """


class VIConvTranspose1d(_VIConvTransposeNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(_DOC, 1, example="5", example_out="11", example_alt="12")
    _dims, _conv, _torch_twin = 1, staticmethod(F.conv_transpose1d), nn.ConvTranspose1d


class VIConvTranspose2d(_VIConvTransposeNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(_DOC, 2, example="5, 5", example_out="11, 11", example_alt="12, 11")
    _dims, _conv, _torch_twin = 2, staticmethod(F.conv_transpose2d), nn.ConvTranspose2d


class VIConvTranspose3d(_VIConvTransposeNd):  # noqa: D101 (docstring from _DOC)
    __doc__ = conv_doc(
        _DOC, 3, example="5, 5, 5", example_out="11, 11, 11", example_alt="12, 11, 12"
    )
    _dims, _conv, _torch_twin = 3, staticmethod(F.conv_transpose3d), nn.ConvTranspose3d
