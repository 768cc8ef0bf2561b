r"""Bayesian recurrent layers: :class:`VIRNN`, :class:`VILSTM` and :class:`VIGRU`.

They mirror :class:`torch.nn.RNN`, :class:`torch.nn.LSTM` and :class:`torch.nn.GRU`:
the same constructor arguments, the same inputs (padded tensors, unbatched sequences,
``batch_first``, :class:`~torch.nn.utils.rnn.PackedSequence`, initial states) and the
same outputs, and random variables named like torch's parameters (``weight_ih_l0``,
``bias_hh_l1_reverse``, ``weight_hr_l0`` ...) with the same shapes and gate order
(LSTM: i, f, g, o; GRU: r, z, n with :math:`b_{hn}` inside the reset product), so
weights map one to one in :func:`~torch_blue.vi.convert_to_vimodule` and
:func:`~torch_blue.vi.to_deterministic`.

**One weight draw per sample, shared by all time steps.** Every sample lane draws each
weight matrix once per forward and uses it at every time step of every sequence in the
batch: the network that processes a sequence is one fixed (random) network, as in the
Bayesian RNNs of Gal & Ghahramani (2016) and Fortunato et al. (2017). Drawing new
weights at every time step would be a different model (noise injection, not a posterior
over one network) and would break the weight sharing that makes a recurrence a
recurrence.

The recurrence is written in plain tensor operations (the input projections of all
time steps in one matrix product per layer and direction, then a Python loop over the
hidden recurrence only), because torch's fused kernels (``aten::lstm``, cuDNN) have no
``torch.vmap`` batching rule and cannot run with one weight draw per sample lane. The
operations follow torch's own CPU kernels step by step, so with the variational means
the outputs of ``nn.RNN`` and ``nn.GRU`` are reproduced bit for bit (``nn.LSTM`` too
when oneDNN is off; with it, up to float rounding).

**Packed sequences.** A :class:`~torch.nn.utils.rnn.PackedSequence` input gives a
``PackedSequence`` output with the same ``batch_sizes`` and permutations, as in torch;
the recurrence runs only over the steps each sequence has. Inside a Bayesian model, pack
with :func:`pack_padded_sequence` and unpack with :func:`pad_packed_sequence` from this
module (drop-in replacements of torch's, which cannot run once per weight sample under
``torch.vmap``; torch's work on tensors that do not depend on the sample). A layer
called as the outermost module on a packed sequence returns a ``PackedSequence`` whose
``data`` has the leading sample dimension, ``(S, sum(lengths), *)``;
:func:`pad_packed_sequence` turns it into ``(S, T, B, *)``.

**Gradient estimators.**

``"reparameterization"`` (default)
    Draw the weights (one set per sample lane) and record their log-densities.
``"flipout"`` (Wen et al. 2018)
    Draw one weight perturbation per sample and decorrelate it across the sequences of
    the batch with random signs per sequence *that stay fixed over time*: sequence
    :math:`n` sees the weight :math:`\mu + \Delta W \odot s_n r_n^\top`, constant
    along the sequence and distributed exactly as a weight draw. Applied to every
    weight (input-to-hidden, hidden-to-hidden and the LSTM projection); the layer
    records the closed-form KL term like the other flipout layers.
``"shared_flipout"``
    The same with one perturbation per forward call shared by all samples, the signs
    still drawn per sample and sequence (see :mod:`torch_blue.vi.estimators`).

Local reparameterisation does not apply: it samples every pre-activation
independently, which would give every time step its own weights; the layers reject
it. In prediction mode (``return_log_probs=False``) the reparameterisation estimator
keeps drawing weights for the same reason.
"""

import warnings
from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.rnn import PackedSequence
from typing_extensions import Unpack

from .base import VIModule
from .estimators import (
    FLIPOUT_ESTIMATORS,
    EstimatorLayer,
    check_estimator,
    expected_log_probs,
    random_signs,
    scaled_noise,
)
from .functional.rnn import (
    GATES,
    Affine,
    pack_padded_sequence,
    pad_packed_sequence,
    recur,
)
from .sampling import current_state, mean_weights_enabled
from .utils.checks import check_bool, check_input_dtype, check_int, check_probability
from .utils.common_types import VIkwargs, check_vi_kwargs
from .utils.errors import ShapeError

__all__ = [
    "RNN_ESTIMATORS",
    "VIGRU",
    "VILSTM",
    "VIRNN",
    "pack_padded_sequence",
    "pad_packed_sequence",
]

#: Gradient estimators the recurrent layers support (see the module docstring).
RNN_ESTIMATORS = ("reparameterization", "flipout", "shared_flipout")


class _Layout(NamedTuple):
    """An input prepared for the recurrence: ``x`` time-major or packed rows."""

    x: Tensor  # (T, B, F) padded or (N, F) packed
    batch: int
    unbatched: bool
    batch_sizes: Optional[list[int]]  # packed only
    sorted_indices: Optional[Tensor]
    unsorted_indices: Optional[Tensor]


class _VIRNNBase(VIModule, EstimatorLayer):
    """Shared machinery of the recurrent layers (not public)."""

    #: The cell: "RNN_TANH", "RNN_RELU", "LSTM" or "GRU".
    mode: str
    #: Constructor arguments all recurrent layers share with their torch twin (the
    #: subclasses add their own).
    _twin_arguments: ClassVar[tuple[str, ...]] = (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
    )
    __constants__: ClassVar[list[str]] = ["mode", *_twin_arguments, "proj_size"]
    _torch_twin: ClassVar[type[nn.RNNBase]]
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        estimator: str = "reparameterization",
        **vikwargs: Unpack[VIkwargs],
    ) -> None:
        name = type(self).__name__
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.num_layers = check_int(name, "num_layers", num_layers)
        self.proj_size = self._check_proj_size(proj_size)
        for arg, value in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
        ):
            check_bool(name, arg, value)
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.dropout = self._check_dropout(dropout)
        super().__init__(
            variable_shapes=self._variable_shapes(), **check_vi_kwargs(name, vikwargs)
        )
        self._estimator = self._check_estimator(estimator)

    def _check_proj_size(self, proj_size: int) -> int:
        name = type(self).__name__
        proj_size = check_int(
            name, "proj_size", proj_size, 0, " (0 disables the projection)"
        )
        if proj_size and self.mode != "LSTM":
            raise ValueError(
                f"{name}: proj_size is only supported by VILSTM, got {proj_size}"
            )
        if proj_size >= self.hidden_size:
            raise ValueError(
                f"{name}: proj_size ({proj_size}) must be smaller than hidden_size "
                f"({self.hidden_size})"
            )
        return proj_size

    def _check_dropout(self, dropout: float) -> float:
        name = type(self).__name__
        note = " (the probability of zeroing an element between layers)"
        dropout = check_probability(name, "dropout", dropout, note)
        if dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"{name}: dropout is applied between recurrent layers only, so a "
                f"non-zero dropout expects num_layers > 1, got dropout={dropout} and "
                f"num_layers={self.num_layers}",
                # the caller of the public constructor (VIRNN has its own __init__)
                stacklevel=3 if type(self).__init__ is _VIRNNBase.__init__ else 4,
            )
        return dropout

    # ------------------------------------------------------------------ structure
    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _output_size(self) -> int:
        """Size of the hidden state ``h`` (``proj_size`` if projecting)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @staticmethod
    def _suffix(direction: int) -> str:
        return "_reverse" if direction == 1 else ""

    def _variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """The random variables, named, shaped and ordered like torch's parameters."""
        gates = GATES[self.mode] * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            layer_input = (
                self.input_size if layer == 0 else self._output_size * self._directions
            )
            for direction in range(self._directions):
                suffix = f"_l{layer}{self._suffix(direction)}"
                shapes[f"weight_ih{suffix}"] = (gates, layer_input)
                shapes[f"weight_hh{suffix}"] = (gates, self._output_size)
                if self.bias:
                    shapes[f"bias_ih{suffix}"] = (gates,)
                    shapes[f"bias_hh{suffix}"] = (gates,)
                if self.proj_size > 0:
                    shapes[f"weight_hr{suffix}"] = (self.proj_size, self.hidden_size)
        return shapes

    def _calculate_fan_in(self) -> int:
        # torch initialises every recurrent weight with the bound 1/sqrt(hidden_size);
        # using hidden_size as the fan-in gives the same means (and scales the
        # variational stds and rescaled priors alike).
        return self.hidden_size

    # ------------------------------------------------------------------ estimator
    def _check_estimator(self, estimator: str) -> str:
        if estimator not in RNN_ESTIMATORS:
            raise ValueError(
                f"{type(self).__name__}: estimator must be one of {RNN_ESTIMATORS}, got "
                f"{estimator!r} (local reparameterisation would draw new weights at "
                "every time step)"
            )
        return check_estimator(self, estimator)

    @property
    def estimator(self) -> str:
        """Gradient estimator (see :data:`RNN_ESTIMATORS`)."""
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: str) -> None:
        self._estimator = self._check_estimator(estimator)

    def flatten_parameters(self) -> None:
        """Do nothing: kept so code written for ``torch.nn`` RNNs runs unchanged.

        The layers use no fused (cuDNN) kernel, hence no flat weight buffer.
        """

    # ------------------------------------------------------------------ twins
    def _has_bias(self) -> bool:
        return self.bias

    def _to_torch(self) -> nn.RNNBase:
        with warnings.catch_warnings():  # the dropout warning was given already
            warnings.simplefilter("ignore", UserWarning)
            return super()._to_torch()

    # ------------------------------------------------------------------ forward
    def _shape_error(self, message: str) -> ShapeError:
        return ShapeError(
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size="
            f"{self.hidden_size}): {message}"
        )

    def _check_state(
        self, state: Any, label: str, size: int, batch: int, unbatched: bool
    ) -> Tensor:
        layers = self.num_layers * self._directions
        if not isinstance(state, Tensor):
            raise TypeError(
                f"{type(self).__name__}: {label} must be a Tensor, got "
                f"{type(state).__name__}"
            )
        if unbatched:
            expected: tuple[int, ...] = (layers, size)
            if state.dim() != 2 or tuple(state.shape) != expected:
                raise self._shape_error(
                    f"for an unbatched 2-D input, {label} must have shape {expected}, "
                    f"got {tuple(state.shape)}"
                )
            return state.unsqueeze(1)
        expected = (layers, batch, size)
        if tuple(state.shape) != expected:
            raise self._shape_error(
                f"expected {label} of shape (num_layers * num_directions, batch, "
                f"{'proj_size' if label == 'h_0' and self.proj_size else 'hidden_size'}"
                f") = {expected}, got {tuple(state.shape)}"
            )
        return state

    def _affine(
        self, weight: str, bias: Optional[str], batch: int, flipout: bool, like: Tensor
    ) -> Affine:
        """Draw the map ``weight``/``bias`` once for this forward (all time steps)."""
        if not flipout:
            return Affine(
                getattr(self, weight), None if bias is None else getattr(self, bias)
            )
        state = current_state()
        record = state.record if state is not None else self._return_log_probs
        shared = record and self._estimator == "shared_flipout"
        w_mean, w_log_std = self.get_variational_parameters(weight)
        delta_w = scaled_noise(w_log_std, shared)
        b_mean = delta_b = None
        if bias is not None:
            b_mean, b_log_std = self.get_variational_parameters(bias)
            delta_b = scaled_noise(b_log_std, shared)
        if record:
            for variable in (weight, bias):
                if variable is not None:
                    self._record_log_probs(variable, expected_log_probs(self, variable))
        out_size, in_size = w_mean.shape
        return Affine(
            w_mean,
            b_mean,
            delta_w,
            delta_b,
            random_signs((batch, in_size), like),
            random_signs((batch, out_size), like),
        )

    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        hx: Any = None,
    ) -> tuple[Union[Tensor, PackedSequence], Any]:
        """Run the recurrence for one weight sample, one draw for all time steps.

        Returns ``(output, h_n)``; for the LSTM ``(output, (h_n, c_n))``.
        """
        layout = (
            self._packed_layout(input)
            if isinstance(input, PackedSequence)
            else self._padded_layout(input)
        )
        h0, c0 = self._initial_states(hx, layout.batch, layout.unbatched)
        if layout.sorted_indices is not None:
            # The user's states follow the original batch order; the packed data the
            # sorted one.
            h0 = None if h0 is None else h0.index_select(1, layout.sorted_indices)
            c0 = None if c0 is None else c0.index_select(1, layout.sorted_indices)
        x, h_n, c_n = self._run_layers(layout, h0, c0)
        return self._assemble(input, layout, x, h_n, c_n)

    def _packed_layout(self, input: PackedSequence) -> "_Layout":
        """The packed input's data and layout; its ``batch_sizes`` as ints."""
        data, batch_sizes_tensor, sorted_indices, unsorted_indices = input
        if data.dim() != 2 or data.shape[-1] != self.input_size:
            raise self._shape_error(
                f"expected packed data of shape (sum of lengths, {self.input_size}), "
                f"got {tuple(data.shape)}"
            )
        # batch_sizes is a plain CPU tensor that never depends on the sample.
        try:
            batch_sizes = [int(b) for b in batch_sizes_tensor.tolist()]
        except RuntimeError as error:  # per-sample batch_sizes from torch's packing
            raise ShapeError(
                f"{type(self).__name__}: the PackedSequence's batch_sizes differ per "
                "weight sample (torch.nn.utils.rnn.pack_padded_sequence was applied to "
                "a tensor that depends on the sample); pack with "
                "torch_blue.vi.rnn.pack_padded_sequence instead"
            ) from error
        check_input_dtype(self, data)
        return _Layout(
            data, batch_sizes[0], False, batch_sizes, sorted_indices, unsorted_indices
        )

    def _padded_layout(self, input: Tensor) -> "_Layout":
        """The padded input as ``(T, B, F)`` and its layout."""
        if not isinstance(input, Tensor):
            raise TypeError(
                f"{type(self).__name__}: input must be a Tensor or a PackedSequence, "
                f"got {type(input).__name__}"
            )
        check_input_dtype(self, input)
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise self._shape_error(
                "expected input of shape (L, input_size), (L, N, input_size) or, "
                f"with batch_first, (N, L, input_size) with input_size = "
                f"{self.input_size}, got {tuple(input.shape)}"
            )
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        if x.shape[0] == 0:
            raise self._shape_error(
                f"the sequence is empty (length 0), got input {tuple(input.shape)}"
            )
        return _Layout(x, x.shape[1], unbatched, None, None, None)

    def _run_layers(
        self, layout: "_Layout", h0: Optional[Tensor], c0: Optional[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """All layers and directions: the last output, the final states."""
        x, batch, batch_sizes = layout.x, layout.batch, layout.batch_sizes
        flipout = self._estimator in FLIPOUT_ESTIMATORS and not mean_weights_enabled()
        rows = None
        if flipout and batch_sizes is not None:
            rows = torch.cat([torch.arange(n) for n in batch_sizes]).to(x.device)
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._directions):
                index = layer * self._directions + direction
                state = (
                    x.new_zeros(batch, self._output_size) if h0 is None else h0[index],
                    self._initial_cell(c0, index, batch, x),
                )
                output, h_last, c_last = self._run_direction(
                    x, layer, direction, state, layout, flipout, rows
                )
                outputs.append(output)
                h_n.append(h_last)
                if c_last is not None:
                    c_n.append(c_last)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, h_n, c_n

    def _initial_cell(
        self, c0: Optional[Tensor], index: int, batch: int, like: Tensor
    ) -> Optional[Tensor]:
        if self.mode != "LSTM":
            return None
        return like.new_zeros(batch, self.hidden_size) if c0 is None else c0[index]

    def _assemble(
        self,
        input: Union[Tensor, PackedSequence],
        layout: "_Layout",
        x: Tensor,
        h_n: list[Tensor],
        c_n: list[Tensor],
    ) -> tuple[Union[Tensor, PackedSequence], Any]:
        """The output in the input's layout and the final states in the batch order."""
        h_stack = torch.stack(h_n)
        c_stack = torch.stack(c_n) if c_n else None
        if layout.unsorted_indices is not None:
            h_stack = h_stack.index_select(1, layout.unsorted_indices)
            if c_stack is not None:
                c_stack = c_stack.index_select(1, layout.unsorted_indices)
        if isinstance(input, PackedSequence):
            output: Union[Tensor, PackedSequence] = PackedSequence(
                x, input.batch_sizes, layout.sorted_indices, layout.unsorted_indices
            )
        elif layout.unbatched:
            output = x.squeeze(1)
            h_stack = h_stack.squeeze(1)
            c_stack = None if c_stack is None else c_stack.squeeze(1)
        else:
            output = x.transpose(0, 1) if self.batch_first else x
        if self.mode == "LSTM":
            return output, (h_stack, c_stack)
        return output, h_stack

    def _initial_states(
        self, hx: Any, batch: int, unbatched: bool
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Validate ``hx``; ``None`` entries mean zeros."""
        if hx is None:
            return None, None
        if self.mode == "LSTM":
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(
                    f"{type(self).__name__}: hx must be a tuple (h_0, c_0) of tensors, "
                    f"got {type(hx).__name__}"
                )
            h0 = self._check_state(hx[0], "h_0", self._output_size, batch, unbatched)
            c0 = self._check_state(hx[1], "c_0", self.hidden_size, batch, unbatched)
            return h0, c0
        return self._check_state(hx, "h_0", self._output_size, batch, unbatched), None

    def _run_direction(
        self,
        x: Tensor,
        layer: int,
        direction: int,
        state: tuple[Tensor, Optional[Tensor]],
        layout: "_Layout",
        flipout: bool,
        rows: Optional[Tensor],
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """One layer, one direction: ``(output, h_last, c_last)``.

        ``x`` is ``(T, B, F)`` (padded) or ``(N, F)`` (packed, with ``batch_sizes``);
        ``state`` is ``(h_0, c_0)``.
        """
        suffix = f"_l{layer}{self._suffix(direction)}"
        batch = layout.batch
        ih, hh = (
            self._affine(
                f"weight_{kind}{suffix}",
                f"bias_{kind}{suffix}" if self.bias else None,
                batch,
                flipout,
                x,
            )
            for kind in ("ih", "hh")
        )
        hr = None
        if self.proj_size > 0:
            hr = self._affine(f"weight_hr{suffix}", None, batch, flipout, x)
        # Input projections of all time steps at once; the loop only recurs.
        projected = ih(x, rows)
        return recur(
            self.mode, projected, state, (hh, hr), layout.batch_sizes, direction == 1
        )

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``, like torch's RNNs."""
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if self.batch_first is not False:
            text += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            text += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            text += f", bidirectional={self.bidirectional}"
        text += (
            f", variational_distribution={self.variational_distribution['weight_ih_l0']}"
            f", prior={self.prior['weight_ih_l0']}"
        )
        if self._estimator != "reparameterization":
            text += f", estimator={self._estimator!r}"
        return text


def _rnn_doc(summary: str, parameters: str, shape: str, example: str) -> str:
    """A recurrent layer's docstring: the parameters all of them share filled in.

    ``parameters`` holds the first ones (up to ``num_layers`` and the layer's own);
    ``example`` the doctest lines.
    """
    return (
        f"{summary}\n\n    Parameters\n    ----------\n{parameters}{_VI_PARAMETERS}\n"
        f"{shape}\n    Examples\n    --------\n{example}"
    )


_SIZES = """    input_size : int
        Number of features of each input step.
    hidden_size : int
        Number of features of the {state} state.
    num_layers : int, default: 1
        Number of stacked {layers} layers.
"""

_SHARED_PARAMETERS = """    bias : bool, default: True
        Whether the layers have (random) biases.
    batch_first : bool, default: False
        Input and output as ``(N, L, *)`` instead of ``(L, N, *)`` (not the states).
    dropout : float, default: 0.0
        Dropout on the outputs of every layer but the last, in training mode.
    bidirectional : bool, default: False
        Whether the layers also run backwards in time.
"""

_VI_PARAMETERS = r"""    variational_distribution, prior : distribution or sequence of them
        VIkwargs of :class:`~torch_blue.vi.VIModule` (keyword-only here, like all
        below); a sequence gives one per random variable, in the order of torch's
        ``named_parameters()``.
    rescale_prior, kaiming_initialization, prior_initialization : bool
        VIkwargs. The means start like torch's weights (uniform with bound
        :math:`1/\sqrt{\mathrm{hidden\_size}}`), which is also the fan-in used to scale
        the initial standard deviations and rescaled priors.
    return_log_probs : bool, default: True
        Record the weights' log-probabilities (needed by the KL losses).
    device, dtype
        Factory arguments, as in ``torch.nn``.
    estimator : str, default: "reparameterization"
        ``"reparameterization"``, ``"flipout"`` or ``"shared_flipout"`` (see
        :mod:`torch_blue.vi.rnn`).
"""

_ONE_STATE_SHAPE = """    Shape
    -----
    - Input: ``(L, N, input_size)``, ``(N, L, input_size)`` with ``batch_first``,
      ``(L, input_size)`` unbatched, or a :class:`~torch.nn.utils.rnn.PackedSequence`;
      ``hx``: ``(D * num_layers, N, hidden_size)`` (``(D * num_layers,
      hidden_size)`` unbatched), default zeros; ``D = 2`` if bidirectional else 1.
    - Output: ``(output, h_n)`` with ``output`` ``(L, N, D * hidden_size)`` (or as
      the input's layout, or packed) and ``h_n`` shaped like ``hx``; each (for a packed
      output, its ``data``) with a leading sample dimension ``S`` when called as the
      outermost module.
"""


_VIRNN_DOC = _rnn_doc(
    r"""Bayesian Elman RNN, the twin of :class:`torch.nn.RNN`.

    :math:`h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})` (or
    ReLU), with the random variables ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (suffix ``_reverse`` for the backward
    direction). Each sample draws the weights once and uses them at every time step
    (see :mod:`torch_blue.vi.rnn`).""",
    _SIZES.format(state="hidden", layers="recurrent")
    + """    nonlinearity : str, default: "tanh"
        ``"tanh"`` or ``"relu"``.
"""
    + _SHARED_PARAMETERS,
    _ONE_STATE_SHAPE,
    """    >>> import torch
    >>> from torch_blue.vi.rnn import VIRNN
    >>> rnn = VIRNN(10, 20, num_layers=2)
    >>> output, h_n = rnn(torch.randn(5, 3, 10), samples=4)
    >>> output.shape, h_n.shape
    (torch.Size([4, 5, 3, 20]), torch.Size([4, 2, 3, 20]))
    """,
)

_VILSTM_DOC = _rnn_doc(
    r"""Bayesian LSTM, the twin of :class:`torch.nn.LSTM` (with ``proj_size``).

    Gates in torch's order (input, forget, cell, output) with the random variables
    ``weight_ih_l{k}`` ``(4 * hidden_size, in)``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` and, with ``proj_size > 0``, ``weight_hr_l{k}``
    ``(proj_size, hidden_size)`` (suffix ``_reverse`` for the backward direction).
    Each sample draws the weights once and uses them at every time step (see
    :mod:`torch_blue.vi.rnn`).""",
    _SIZES.format(state="cell", layers="LSTM")
    + _SHARED_PARAMETERS
    + """    proj_size : int, default: 0
        If positive, project the hidden state to this size (LSTM with projections).
""",
    """    Shape
    -----
    - Input: ``(L, N, input_size)``, ``(N, L, input_size)`` with ``batch_first``,
      ``(L, input_size)`` unbatched, or a :class:`~torch.nn.utils.rnn.PackedSequence`;
      ``hx = (h_0, c_0)`` with ``h_0`` ``(D * num_layers, N, H_out)`` and ``c_0``
      ``(D * num_layers, N, hidden_size)`` (without ``N`` unbatched), default zeros;
      ``H_out = proj_size or hidden_size``, ``D = 2`` if bidirectional else 1.
    - Output: ``(output, (h_n, c_n))`` with ``output`` ``(L, N, D * H_out)`` (or as
      the input's layout, or packed) and ``h_n``, ``c_n`` shaped like ``h_0``,
      ``c_0``; each (for a packed output, its ``data``) with a leading sample
      dimension ``S`` when called as the outermost module.
""",
    """    >>> import torch
    >>> from torch_blue.vi.rnn import VILSTM
    >>> lstm = VILSTM(10, 20, batch_first=True, bidirectional=True)
    >>> output, (h_n, c_n) = lstm(torch.randn(3, 5, 10), samples=4)
    >>> output.shape, h_n.shape, c_n.shape
    (torch.Size([4, 3, 5, 40]), torch.Size([4, 2, 3, 20]), torch.Size([4, 2, 3, 20]))
    """,
)

_VIGRU_DOC = _rnn_doc(
    r"""Bayesian GRU, the twin of :class:`torch.nn.GRU`.

    Gates in torch's order (reset, update, new) with
    :math:`n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))`
    and the random variables ``weight_ih_l{k}`` ``(3 * hidden_size, in)``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (suffix ``_reverse`` for
    the backward direction). Each sample draws the weights once and uses them at
    every time step (see :mod:`torch_blue.vi.rnn`).""",
    _SIZES.format(state="hidden", layers="GRU") + _SHARED_PARAMETERS,
    _ONE_STATE_SHAPE,
    """    >>> import torch
    >>> from torch_blue.vi.rnn import VIGRU
    >>> gru = VIGRU(10, 20)
    >>> output, h_n = gru(torch.randn(5, 10), samples=4)  # one unbatched sequence
    >>> output.shape, h_n.shape, h_n.log_probs.shape
    (torch.Size([4, 5, 20]), torch.Size([4, 1, 20]), torch.Size([4, 2]))
    """,
)


class VIRNN(_VIRNNBase):  # noqa: D101 (docstring from _rnn_doc)
    __doc__ = _VIRNN_DOC

    _torch_twin = nn.RNN
    _twin_arguments = (*_VIRNNBase._twin_arguments, "nonlinearity")
    mode = "RNN_TANH"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **vikwargs: Any,
    ) -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(
                f"VIRNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity
        self.mode = modes[nonlinearity]
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, **vikwargs,
        )  # fmt: skip


class VILSTM(_VIRNNBase):  # noqa: D101 (docstring from _rnn_doc)
    __doc__ = _VILSTM_DOC

    _torch_twin = nn.LSTM
    mode = "LSTM"
    _twin_arguments = (*_VIRNNBase._twin_arguments, "proj_size")


class VIGRU(_VIRNNBase):  # noqa: D101 (docstring from _rnn_doc)
    __doc__ = _VIGRU_DOC

    _torch_twin = nn.GRU
    mode = "GRU"
