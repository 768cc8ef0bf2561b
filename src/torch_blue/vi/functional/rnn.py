"""Recurrent computations on tensors: packing, padding and the cell steps.

The pure tensor side of the recurrent layers (:class:`~torch_blue.vi.VIRNN`,
:class:`~torch_blue.vi.VILSTM`, :class:`~torch_blue.vi.VIGRU`):
:func:`pack_padded_sequence` and
:func:`pad_packed_sequence` (torch's, working inside a sampled forward), one sampled
affine map (:class:`Affine`) and the recurrences of the RNN, LSTM and GRU cells over
padded and packed steps, written in plain tensor operations that follow torch's CPU
kernels step by step.
"""

from typing import Optional, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..utils.errors import ShapeError
from ..utils.vi_return import VIReturn
from .linear import flat_linear

__all__ = [
    "GATES",
    "Affine",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "recur",
    "rnn_cell",
]

#: Gates per cell mode (the rows of ``weight_ih`` are ``GATES[mode] * hidden_size``).
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class Affine:
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
    >>> from torch_blue.vi.functional.rnn import pack_padded_sequence
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
    >>> from torch_blue.vi.functional.rnn import pack_padded_sequence, pad_packed_sequence
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


def rnn_cell(
    mode: str,
    gates_x: Tensor,
    h: Tensor,
    c: Optional[Tensor],
    hh: Affine,
    hr: Optional[Affine],
    rows: Optional[int],
) -> tuple[Tensor, Optional[Tensor]]:
    """One time step of a cell: ``(h, c)`` (``c`` only for the LSTM).

    ``gates_x`` is the input projection of the step, ``hh`` the hidden-to-hidden map,
    ``hr`` the LSTM projection; ``rows`` selects the sequences' flipout signs (see
    :meth:`Affine.__call__`). The operations follow torch's CPU kernels in order.
    """
    gates_h = hh(h, rows)
    if mode == "LSTM":
        gates = gates_h + gates_x
        i, f, g, o = gates.chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        if hr is not None:
            h = hr(h, rows)
        return h, c
    if mode == "GRU":
        x_r, x_z, x_n = gates_x.chunk(3, -1)
        h_r, h_z, h_n = gates_h.chunk(3, -1)
        reset = (h_r + x_r).sigmoid()
        update = (h_z + x_z).sigmoid()
        new = (x_n + h_n * reset).tanh()
        return (h - new) * update + new, None
    pre = gates_h + gates_x
    return (pre.tanh() if mode == "RNN_TANH" else pre.relu()), None


def recur(
    mode: str,
    projected: Tensor,
    state: tuple[Tensor, Optional[Tensor]],
    maps: tuple[Affine, Optional[Affine]],
    batch_sizes: Optional[list[int]],
    reverse: bool,
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Run a cell over all steps of one layer and direction: ``(output, h, c)``.

    ``projected`` holds the input projections of all steps, ``(T, B, G)`` padded or
    ``(N, G)`` packed (then with ``batch_sizes``); ``state`` is ``(h_0, c_0)``,
    ``maps`` the hidden-to-hidden map and the LSTM projection.
    """
    if batch_sizes is not None:
        return _recur_packed(mode, projected, state, maps, batch_sizes, reverse)
    steps = projected.unbind(0)
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    h, c = state
    outs = []
    for t in order:
        h, c = rnn_cell(mode, steps[t], h, c, *maps, None)
        outs.append(h)
    if reverse:
        outs.reverse()
    return torch.stack(outs), h, c


def _recur_packed(
    mode: str,
    projected: Tensor,
    state: tuple[Tensor, Optional[Tensor]],
    maps: tuple[Affine, Optional[Affine]],
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
        h, c = state
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
            h, c = rnn_cell(mode, step, h, c, *maps, None if n == full else n)
            outs.append(h)
        h_last = torch.cat([h, *reversed(finished_h)]) if finished_h else h
        c_last = c
        if c is not None and finished_c:
            c_last = torch.cat([c, *reversed(finished_c)])
        return torch.cat(outs), h_last, c_last
    h0, c0 = state
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
        h, c = rnn_cell(mode, step, h, c, *maps, None if n == full else n)
        outs.append(h)
    outs.reverse()
    return torch.cat(outs), h, c
