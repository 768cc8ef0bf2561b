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

import numbers
import warnings
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.rnn import PackedSequence

from .base import VIModule
from .distributions import Prior, VariationalDistribution
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .estimators import (
    FLIPOUT_ESTIMATORS,
    EstimatorLayer,
    check_estimator,
    expected_log_probs,
    flat_linear,
    random_signs,
    scaled_noise,
)
from .sampling import current_state, mean_weights_enabled, sampled_call
from .utils.checks import check_input_dtype, check_int
from .utils.errors import ShapeError
from .utils.vi_return import VIReturn

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

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class _Affine:
    """One sampled affine map ``x -> x W^T + b`` of a layer and direction.

    With flipout it holds the means, one perturbation and per-sequence signs instead
    of a drawn weight: ``x mu^T + ((x * r) dW^T) * s``.
    """

    __slots__ = ("bias", "delta_bias", "delta_weight", "in_signs", "out_signs", "weight")

    def __init__(
        self,
        weight: Tensor,
        bias: Optional[Tensor],
        delta_weight: Optional[Tensor] = None,
        delta_bias: Optional[Tensor] = None,
        in_signs: Optional[Tensor] = None,
        out_signs: Optional[Tensor] = None,
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.delta_weight = delta_weight
        self.delta_bias = delta_bias
        self.in_signs = in_signs
        self.out_signs = out_signs

    def __call__(self, x: Tensor, rows: Union[int, Tensor, None] = None) -> Tensor:
        """Apply the map; ``rows`` selects the sequences' signs (flipout only).

        ``None``: all sequences (``x`` is ``(B, F)`` or ``(T, B, F)``); an int ``n``:
        the first ``n`` sequences; a tensor: the sequence of each row of ``x``.
        """
        out = flat_linear(x, self.weight, self.bias)
        if self.delta_weight is None:
            return out
        in_signs, out_signs = self.in_signs, self.out_signs
        if isinstance(rows, int):
            in_signs, out_signs = in_signs[:rows], out_signs[:rows]
        elif rows is not None:
            in_signs, out_signs = in_signs[rows], out_signs[rows]
        perturbation = flat_linear(x * in_signs, self.delta_weight, self.delta_bias)
        return out + perturbation * out_signs


def _valid_positions(sorted_lengths: Tensor, steps: int) -> Tensor:
    """``(steps, B)`` mask of the time steps each sorted sequence has."""
    return torch.arange(steps).unsqueeze(1) < sorted_lengths.unsqueeze(0)


def _split_samples(tensor: Tensor) -> tuple[Tensor, int, Optional[Tensor]]:
    """Plain data, number of leading sample dimensions (0 or 1) and log-probs."""
    if isinstance(tensor, VIReturn):
        return tensor.as_plain(), 1, tensor.log_probs
    return tensor, 0, None


def pack_padded_sequence(
    input: Tensor,
    lengths: Union[Tensor, list[int]],
    batch_first: bool = False,
    enforce_sorted: bool = True,
) -> PackedSequence:
    """:func:`torch.nn.utils.rnn.pack_padded_sequence` for Bayesian models.

    Same arguments and result, with two additions:

    - It works inside a sampled forward. Torch's version has no ``torch.vmap``
      batching rule: packing a tensor that depends on the weight sample (e.g. the
      output of a Bayesian embedding) runs it once per sample and gives per-sample
      ``batch_sizes``, which the recurrent layers cannot use. This version packs by
      plain indexing, so ``batch_sizes`` (a function of ``lengths`` only) stays one
      CPU tensor.
    - A :class:`~torch_blue.vi.VIReturn` input ``(S, T, B, *)`` (``(S, B, T, *)``
      with ``batch_first``) keeps its leading sample dimension: the packed ``data``
      is a ``VIReturn`` ``(S, sum(lengths), *)`` with the same log-probabilities,
      which a recurrent layer called on it maps over.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.rnn import pack_padded_sequence
    >>> packed = pack_padded_sequence(torch.randn(4, 3, 2), [2, 4, 1],
    ...                               enforce_sorted=False)
    >>> packed.data.shape, packed.batch_sizes
    (torch.Size([7, 2]), tensor([3, 2, 1, 1]))
    """
    x, lead, log_probs = _split_samples(input)
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
    batch_dim = lead + (0 if batch_first else 1)
    time_dim = lead + (1 if batch_first else 0)
    if lengths.dim() != 1 or x.dim() < lead + 2 or lengths.numel() != x.shape[batch_dim]:
        raise ShapeError(
            f"pack_padded_sequence: expected one length per sequence, got lengths of "
            f"shape {tuple(lengths.shape)} for input {tuple(input.shape)} "
            f"(batch_first={batch_first}{', leading sample dimension' if lead else ''})"
        )
    if int(lengths.min()) < 1:
        raise ValueError(
            "pack_padded_sequence: every sequence needs a length > 0, got "
            f"{lengths.tolist()}"
        )
    sorted_indices = None
    if enforce_sorted:
        if bool((lengths[1:] > lengths[:-1]).any()):
            raise ValueError(
                "pack_padded_sequence: lengths must be sorted in decreasing order with "
                f"enforce_sorted=True, got {lengths.tolist()}; pass enforce_sorted=False"
            )
        sorted_lengths = lengths
    else:
        sorted_lengths, sorted_indices = torch.sort(lengths, descending=True)
        x = x.index_select(batch_dim, sorted_indices.to(x.device))
    steps = int(sorted_lengths[0])
    if steps > x.shape[time_dim]:
        raise ShapeError(
            f"pack_padded_sequence: a length ({steps}) exceeds the padded length "
            f"{x.shape[time_dim]} of input {tuple(input.shape)}"
        )
    if batch_first:
        x = x.transpose(lead, lead + 1)
    valid = _valid_positions(sorted_lengths, steps)
    # Time-major rows; the sorted sequences active at step t are the first ones.
    rows = valid.flatten().nonzero().squeeze(1).to(x.device)
    data = x.narrow(lead, 0, steps).flatten(lead, lead + 1).index_select(lead, rows)
    if lead:
        data = VIReturn(data, log_probs)
    unsorted_indices = None
    if sorted_indices is not None:
        unsorted_indices = torch.argsort(sorted_indices).to(x.device)
        sorted_indices = sorted_indices.to(x.device)
    return PackedSequence(data, valid.sum(1), sorted_indices, unsorted_indices)


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: Optional[int] = None,
) -> tuple[Tensor, Tensor]:
    """:func:`torch.nn.utils.rnn.pad_packed_sequence` for Bayesian models.

    Same arguments and results; it works inside a sampled forward (see
    :func:`pack_padded_sequence`), and packed ``data`` with a leading sample
    dimension (a :class:`~torch_blue.vi.VIReturn` ``(S, sum(lengths), *)``, as a
    recurrent layer called as the outermost module on a packed sequence returns)
    pads to a ``VIReturn`` ``(S, T, B, *)`` (``(S, B, T, *)`` with
    ``batch_first``) with the same log-probabilities.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.rnn import pack_padded_sequence, pad_packed_sequence
    >>> x = torch.randn(4, 3, 2)
    >>> padded, lengths = pad_packed_sequence(
    ...     pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False))
    >>> padded.shape, lengths
    (torch.Size([4, 3, 2]), tensor([2, 4, 1]))
    """
    data, batch_sizes, _, unsorted_indices = sequence
    data, lead, log_probs = _split_samples(data)
    steps = batch_sizes.numel()
    batch = int(batch_sizes[0])
    if total_length is not None:
        if total_length < steps:
            raise ValueError(
                f"pad_packed_sequence: total_length ({total_length}) must be at least "
                f"the longest sequence's length ({steps})"
            )
    else:
        total_length = steps
    sorted_lengths = (batch_sizes.unsqueeze(1) > torch.arange(batch)).sum(0)
    valid = _valid_positions(sorted_lengths, steps).flatten()
    # For every padded slot, the packed row holding it (padding reads row 0).
    source = ((valid.cumsum(0) - 1).clamp(min=0) * valid).to(data.device)
    mask = valid.to(data.device).view(-1, *(1,) * (data.dim() - 1 - lead))
    samples = data.shape[:lead]
    trailing = data.shape[lead + 1 :]
    padded = torch.where(mask, data.index_select(lead, source), padding_value)
    padded = padded.view(*samples, steps, batch, *trailing)
    if total_length > steps:
        filler = padded.new_full((*samples, total_length - steps, batch, *trailing),
                                 padding_value)  # fmt: skip
        padded = torch.cat([padded, filler], dim=lead)
    lengths = sorted_lengths
    if unsorted_indices is not None:
        padded = padded.index_select(lead + 1, unsorted_indices)
        lengths = sorted_lengths[unsorted_indices.cpu()]
    if batch_first:
        padded = padded.transpose(lead, lead + 1)
    if lead:
        padded = VIReturn(padded, log_probs)
    return padded, lengths


class _VIRNNBase(VIModule, EstimatorLayer):
    """Shared machinery of the recurrent layers (not public)."""

    __constants__: ClassVar[list[str]] = [
        "mode",
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
    ]
    mode: str
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
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        variational_distribution: Union[
            VariationalDistribution, tuple[VariationalDistribution, ...]
        ] = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: Union[Prior, tuple[Prior, ...]] = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        name = type(self).__name__
        input_size = check_int(name, "input_size", input_size)
        hidden_size = check_int(name, "hidden_size", hidden_size)
        num_layers = check_int(name, "num_layers", num_layers)
        proj_size = check_int(
            name, "proj_size", proj_size, 0, " (0 disables the projection)"
        )
        if proj_size >= hidden_size:
            raise ValueError(
                f"{name}: proj_size ({proj_size}) must be smaller than hidden_size "
                f"({hidden_size})"
            )
        for arg, value in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {arg} must be a bool, got {value!r}")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Real)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                f"{name}: dropout must be a number in [0, 1] (the probability of "
                f"zeroing an element between layers), got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout is applied between recurrent layers only, so a "
                f"non-zero dropout expects num_layers > 1, got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        super().__init__(
            variable_shapes=self._variable_shapes(),
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
        )
        self._estimator = self._check_estimator(estimator)

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
        gates = _GATES[self.mode] * self.hidden_size
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
    @classmethod
    def _from_torch(cls, module: nn.RNNBase, **vikwargs: Any) -> "_VIRNNBase":
        kwargs: dict[str, Any] = {}
        if issubclass(cls, VIRNN):
            kwargs["nonlinearity"] = module.nonlinearity
        if issubclass(cls, VILSTM):
            kwargs["proj_size"] = module.proj_size
        return cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            device=module.weight_ih_l0.device,
            dtype=module.weight_ih_l0.dtype,
            **kwargs,
            **vikwargs,
        )

    def _torch_kwargs(self) -> dict[str, Any]:
        return {}

    def _to_torch(self) -> nn.RNNBase:
        with warnings.catch_warnings():  # the dropout warning was given already
            warnings.simplefilter("ignore", UserWarning)
            return self._torch_twin(
                self.input_size,
                self.hidden_size,
                num_layers=self.num_layers,
                bias=self.bias,
                batch_first=self.batch_first,
                dropout=self.dropout,
                bidirectional=self.bidirectional,
                **self._torch_kwargs(),
                **self._factory_kwargs(),
            )

    # ------------------------------------------------------------------ sampling
    def _sampled(
        self,
        args: tuple,
        kwargs: dict,
        samples: Optional[int],
        sampled_input: bool,
        chunk_size: Optional[int] = None,
    ) -> Any:
        """Outermost call: hand packed inputs and LSTM states to the lanes in parts.

        The autosampling maps over positional tensors only, and ``torch.vmap`` cannot
        take a ``PackedSequence`` argument at all (its pytree is rebuilt with
        placeholders, which the constructor rejects). So a packed input enters the
        lanes by its ``data`` (mapped over if it is a ``VIReturn``) while
        ``batch_sizes`` and the permutations are shared by all lanes and never gain
        a sample dimension: the returned ``PackedSequence`` holds ``data`` of shape
        ``(S, sum(lengths), *)``. An LSTM state ``(h_0, c_0)`` enters as two
        positional tensors, so ``VIReturn`` states of an earlier call are mapped over
        like a GRU's ``h_0``.
        """
        args = list(args)
        layout = None
        if args and isinstance(args[0], PackedSequence):
            layout = tuple(args[0])[1:]
            args[0] = args[0].data
        split_state = (
            len(args) > 1
            and isinstance(args[1], (tuple, list))
            and len(args[1]) == 2
            and all(isinstance(t, Tensor) for t in args[1])
        )
        if split_state:
            args[1:2] = list(args[1])
        if layout is None and not split_state:
            return super()._sampled(tuple(args), kwargs, samples, sampled_input, chunk_size)

        def lane(input: Tensor, *lane_args: Any, **lane_kwargs: Any) -> Any:
            if split_state:
                lane_args = ((lane_args[0], lane_args[1]), *lane_args[2:])
            if layout is not None:
                input = PackedSequence(input, *layout)
            output, state = nn.Module.__call__(self, input, *lane_args, **lane_kwargs)
            return (output if layout is None else output.data), state

        output, state = sampled_call(
            self,
            lane,
            tuple(args),
            kwargs,
            samples,
            sampled_input,
            self._return_log_probs,
            chunk_size,
        )
        if layout is not None:
            output = PackedSequence(output, *layout)
        return output, state

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
    ) -> _Affine:
        """Draw the map ``weight``/``bias`` once for this forward (all time steps)."""
        if not flipout:
            return _Affine(
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
        return _Affine(
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
        """Run the recurrence with one weight draw for all time steps."""
        name = type(self).__name__
        packed = isinstance(input, PackedSequence)
        sorted_indices = unsorted_indices = None
        batch_sizes: Optional[list[int]] = None
        if packed:
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
                    f"{name}: the PackedSequence's batch_sizes differ per weight sample "
                    "(torch.nn.utils.rnn.pack_padded_sequence was applied to a tensor "
                    "that depends on the sample); pack with "
                    "torch_blue.vi.rnn.pack_padded_sequence instead"
                ) from error
            batch = batch_sizes[0]
            unbatched = False
            check_input_dtype(self, data)
            x = data
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"{name}: input must be a Tensor or a PackedSequence, got "
                    f"{type(input).__name__}"
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
            batch = x.shape[1]

        h0, c0 = self._initial_states(hx, batch, unbatched, x)
        if sorted_indices is not None:
            # The user's states follow the original batch order; the packed data the
            # sorted one.
            h0 = None if h0 is None else h0.index_select(1, sorted_indices)
            c0 = None if c0 is None else c0.index_select(1, sorted_indices)

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
                output, h_last, c_last = self._run_direction(
                    x,
                    layer,
                    direction,
                    None if h0 is None else h0[index],
                    None if c0 is None else c0[index],
                    batch,
                    batch_sizes,
                    flipout,
                    rows,
                )
                outputs.append(output)
                h_n.append(h_last)
                if c_last is not None:
                    c_n.append(c_last)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)

        h_stack = torch.stack(h_n)
        c_stack = torch.stack(c_n) if c_n else None
        if unsorted_indices is not None:
            h_stack = h_stack.index_select(1, unsorted_indices)
            if c_stack is not None:
                c_stack = c_stack.index_select(1, unsorted_indices)
        if packed:
            output: Union[Tensor, PackedSequence] = PackedSequence(
                x, batch_sizes_tensor, sorted_indices, unsorted_indices
            )
        elif unbatched:
            output = x.squeeze(1)
            h_stack = h_stack.squeeze(1)
            c_stack = None if c_stack is None else c_stack.squeeze(1)
        else:
            output = x.transpose(0, 1) if self.batch_first else x
        if self.mode == "LSTM":
            return output, (h_stack, c_stack)
        return output, h_stack

    def _initial_states(
        self, hx: Any, batch: int, unbatched: bool, like: Tensor
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
        h0: Optional[Tensor],
        c0: Optional[Tensor],
        batch: int,
        batch_sizes: Optional[list[int]],
        flipout: bool,
        rows: Optional[Tensor],
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """One layer, one direction: ``(output, h_last, c_last)``.

        ``x`` is ``(T, B, F)`` (padded) or ``(N, F)`` (packed, with ``batch_sizes``).
        """
        suffix = f"_l{layer}{self._suffix(direction)}"
        ih = self._affine(
            f"weight_ih{suffix}", f"bias_ih{suffix}" if self.bias else None, batch,
            flipout, x,
        )  # fmt: skip
        hh = self._affine(
            f"weight_hh{suffix}", f"bias_hh{suffix}" if self.bias else None, batch,
            flipout, x,
        )  # fmt: skip
        hr = None
        if self.proj_size > 0:
            hr = self._affine(f"weight_hr{suffix}", None, batch, flipout, x)
        # Input projections of all time steps at once; the loop only recurs.
        projected = ih(x, rows)
        if h0 is None:
            h0 = x.new_zeros(batch, self._output_size)
        if self.mode == "LSTM" and c0 is None:
            c0 = x.new_zeros(batch, self.hidden_size)
        reverse = direction == 1
        if batch_sizes is None:
            steps = projected.unbind(0)
            order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
            h, c = h0, c0
            outs = []
            for t in order:
                h, c = self._cell(steps[t], h, c, hh, hr, None)
                outs.append(h)
            if reverse:
                outs.reverse()
            return torch.stack(outs), h, c
        return self._run_packed(projected, h0, c0, hh, hr, batch_sizes, reverse)

    def _run_packed(
        self,
        projected: Tensor,
        h0: Tensor,
        c0: Optional[Tensor],
        hh: _Affine,
        hr: Optional[_Affine],
        batch_sizes: list[int],
        reverse: bool,
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Recurrence over packed rows: the active sequences shrink (or grow) in time.

        Sequences are sorted by decreasing length, so at step ``t`` the first
        ``batch_sizes[t]`` of them are active; torch's kernels do the same.
        """
        offsets = [0]
        for n in batch_sizes:
            offsets.append(offsets[-1] + n)
        full = batch_sizes[0]
        outs = []
        if not reverse:
            h, c = h0, c0
            active = full
            finished_h, finished_c = [], []
            for t, n in enumerate(batch_sizes):
                if n < active:  # sequences active..n ended at the previous step
                    finished_h.append(h[n:])
                    h = h[:n]
                    if c is not None:
                        finished_c.append(c[n:])
                        c = c[:n]
                    active = n
                step = projected[offsets[t] : offsets[t + 1]]
                h, c = self._cell(step, h, c, hh, hr, None if n == full else n)
                outs.append(h)
            h_last = torch.cat([h, *reversed(finished_h)]) if finished_h else h
            c_last = c
            if c is not None and finished_c:
                c_last = torch.cat([c, *reversed(finished_c)])
            return torch.cat(outs), h_last, c_last
        active = batch_sizes[-1]
        h = h0[:active]
        c = None if c0 is None else c0[:active]
        for t in range(len(batch_sizes) - 1, -1, -1):
            n = batch_sizes[t]
            if n > active:  # sequences active..n start here, from their h_0
                h = torch.cat([h, h0[active:n]])
                if c is not None:
                    c = torch.cat([c, c0[active:n]])
                active = n
            step = projected[offsets[t] : offsets[t + 1]]
            h, c = self._cell(step, h, c, hh, hr, None if n == full else n)
            outs.append(h)
        outs.reverse()
        return torch.cat(outs), h, c

    def _cell(
        self,
        gates_x: Tensor,
        h: Tensor,
        c: Optional[Tensor],
        hh: _Affine,
        hr: Optional[_Affine],
        rows: Optional[int],
    ) -> tuple[Tensor, Optional[Tensor]]:
        """One time step; the operations follow torch's CPU kernels in order."""
        gates_h = hh(h, rows)
        if self.mode == "LSTM":
            gates = gates_h + gates_x
            i, f, g, o = gates.chunk(4, -1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            if hr is not None:
                h = hr(h, rows)
            return h, c
        if self.mode == "GRU":
            x_r, x_z, x_n = gates_x.chunk(3, -1)
            h_r, h_z, h_n = gates_h.chunk(3, -1)
            reset = (h_r + x_r).sigmoid()
            update = (h_z + x_z).sigmoid()
            new = (x_n + h_n * reset).tanh()
            return (h - new) * update + new, None
        pre = gates_h + gates_x
        return (pre.tanh() if self.mode == "RNN_TANH" else pre.relu()), None

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


class VIRNN(_VIRNNBase):
    r"""Bayesian Elman RNN, the twin of :class:`torch.nn.RNN`.

    :math:`h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})` (or
    ReLU), with the random variables ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (suffix ``_reverse`` for the backward
    direction). Each sample draws the weights once and uses them at every time step
    (see :mod:`torch_blue.vi.rnn`).

    Parameters
    ----------
    input_size : int
        Number of features of each input step.
    hidden_size : int
        Number of features of the hidden state.
    num_layers : int, default: 1
        Number of stacked recurrent layers.
    nonlinearity : str, default: "tanh"
        ``"tanh"`` or ``"relu"``.
    bias : bool, default: True
        Whether the layers have (random) biases.
    batch_first : bool, default: False
        Input and output as ``(N, L, *)`` instead of ``(L, N, *)`` (not the states).
    dropout : float, default: 0.0
        Dropout on the outputs of every layer but the last, in training mode.
    bidirectional : bool, default: False
        Whether the layers also run backwards in time.
    variational_distribution, prior : distribution or sequence of them
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

    Shape
    -----
    - Input: ``(L, N, input_size)``, ``(N, L, input_size)`` with ``batch_first``,
      ``(L, input_size)`` unbatched, or a :class:`~torch.nn.utils.rnn.PackedSequence`;
      ``hx``: ``(D * num_layers, N, hidden_size)`` (``(D * num_layers,
      hidden_size)`` unbatched), default zeros; ``D = 2`` if bidirectional else 1.
    - Output: ``(output, h_n)`` with ``output`` ``(L, N, D * hidden_size)`` (or as
      the input's layout, or packed) and ``h_n`` shaped like ``hx``; each (for a packed
      output, its ``data``) with a leading sample dimension ``S`` when called as the
      outermost module.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.rnn import VIRNN
    >>> rnn = VIRNN(10, 20, num_layers=2)
    >>> output, h_n = rnn(torch.randn(5, 3, 10), samples=4)
    >>> output.shape, h_n.shape
    (torch.Size([4, 5, 3, 20]), torch.Size([4, 2, 3, 20]))
    """

    _torch_twin = nn.RNN

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
        *,
        variational_distribution: Union[
            VariationalDistribution, tuple[VariationalDistribution, ...]
        ] = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: Union[Prior, tuple[Prior, ...]] = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(
                f"VIRNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity
        super().__init__(
            modes[nonlinearity],
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
            estimator=estimator,
        )

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"nonlinearity": self.nonlinearity}

    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        hx: Optional[Tensor] = None,
    ) -> tuple[Union[Tensor, PackedSequence], Tensor]:
        """Run the RNN for one weight sample: ``(output, h_n)``."""
        return super().forward(input, hx)


class VILSTM(_VIRNNBase):
    r"""Bayesian LSTM, the twin of :class:`torch.nn.LSTM` (with ``proj_size``).

    Gates in torch's order (input, forget, cell, output) with the random variables
    ``weight_ih_l{k}`` ``(4 * hidden_size, in)``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` and, with ``proj_size > 0``, ``weight_hr_l{k}``
    ``(proj_size, hidden_size)`` (suffix ``_reverse`` for the backward direction).
    Each sample draws the weights once and uses them at every time step (see
    :mod:`torch_blue.vi.rnn`).

    Parameters
    ----------
    input_size : int
        Number of features of each input step.
    hidden_size : int
        Number of features of the cell state.
    num_layers : int, default: 1
        Number of stacked LSTM layers.
    bias : bool, default: True
        Whether the layers have (random) biases.
    batch_first : bool, default: False
        Input and output as ``(N, L, *)`` instead of ``(L, N, *)`` (not the states).
    dropout : float, default: 0.0
        Dropout on the outputs of every layer but the last, in training mode.
    bidirectional : bool, default: False
        Whether the layers also run backwards in time.
    proj_size : int, default: 0
        If positive, project the hidden state to this size (LSTM with projections).
    variational_distribution, prior : distribution or sequence of them
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

    Shape
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

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.rnn import VILSTM
    >>> lstm = VILSTM(10, 20, batch_first=True, bidirectional=True)
    >>> output, (h_n, c_n) = lstm(torch.randn(3, 5, 10), samples=4)
    >>> output.shape, h_n.shape, c_n.shape
    (torch.Size([4, 3, 5, 40]), torch.Size([4, 2, 3, 20]), torch.Size([4, 2, 3, 20]))
    """

    _torch_twin = nn.LSTM

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
        variational_distribution: Union[
            VariationalDistribution, tuple[VariationalDistribution, ...]
        ] = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: Union[Prior, tuple[Prior, ...]] = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
            estimator=estimator,
        )

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"proj_size": self.proj_size}

    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        hx: Optional[tuple[Tensor, Tensor]] = None,
    ) -> tuple[Union[Tensor, PackedSequence], tuple[Tensor, Tensor]]:
        """Run the LSTM for one weight sample: ``(output, (h_n, c_n))``."""
        return super().forward(input, hx)


class VIGRU(_VIRNNBase):
    r"""Bayesian GRU, the twin of :class:`torch.nn.GRU`.

    Gates in torch's order (reset, update, new) with
    :math:`n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))`
    and the random variables ``weight_ih_l{k}`` ``(3 * hidden_size, in)``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (suffix ``_reverse`` for
    the backward direction). Each sample draws the weights once and uses them at
    every time step (see :mod:`torch_blue.vi.rnn`).

    Parameters
    ----------
    input_size : int
        Number of features of each input step.
    hidden_size : int
        Number of features of the hidden state.
    num_layers : int, default: 1
        Number of stacked GRU layers.
    bias : bool, default: True
        Whether the layers have (random) biases.
    batch_first : bool, default: False
        Input and output as ``(N, L, *)`` instead of ``(L, N, *)`` (not the states).
    dropout : float, default: 0.0
        Dropout on the outputs of every layer but the last, in training mode.
    bidirectional : bool, default: False
        Whether the layers also run backwards in time.
    variational_distribution, prior : distribution or sequence of them
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

    Shape
    -----
    - Input: ``(L, N, input_size)``, ``(N, L, input_size)`` with ``batch_first``,
      ``(L, input_size)`` unbatched, or a :class:`~torch.nn.utils.rnn.PackedSequence`;
      ``hx``: ``(D * num_layers, N, hidden_size)`` (``(D * num_layers,
      hidden_size)`` unbatched), default zeros; ``D = 2`` if bidirectional else 1.
    - Output: ``(output, h_n)`` with ``output`` ``(L, N, D * hidden_size)`` (or as
      the input's layout, or packed) and ``h_n`` shaped like ``hx``; each (for a packed
      output, its ``data``) with a leading sample dimension ``S`` when called as the
      outermost module.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.rnn import VIGRU
    >>> gru = VIGRU(10, 20)
    >>> output, h_n = gru(torch.randn(5, 10), samples=4)  # one unbatched sequence
    >>> output.shape, h_n.shape, h_n.log_probs.shape
    (torch.Size([4, 5, 20]), torch.Size([4, 1, 20]), torch.Size([4, 2]))
    """

    _torch_twin = nn.GRU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        variational_distribution: Union[
            VariationalDistribution, tuple[VariationalDistribution, ...]
        ] = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: Union[Prior, tuple[Prior, ...]] = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        estimator: str = "reparameterization",
    ) -> None:
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            device=device,
            dtype=dtype,
            estimator=estimator,
        )

    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        hx: Optional[Tensor] = None,
    ) -> tuple[Union[Tensor, PackedSequence], Tensor]:
        """Run the GRU for one weight sample: ``(output, h_n)``."""
        return super().forward(input, hx)
