"""Recurrent computations on tensors: packing and padding like torch, cell steps."""

import pytest
import torch
from torch import nn
from torch.nn.utils import rnn as torch_rnn

from torch_blue.vi.functional.rnn import (
    Affine,
    pack_padded_sequence,
    pad_packed_sequence,
    recur,
    rnn_cell,
)
from torch_blue.vi.utils import ShapeError


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("total_length", [None, 9])
def test_packing_helpers_equal_torch(batch_first, enforce_sorted, total_length):
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    x = torch.randn((4, 7, 3, 2) if batch_first else (7, 4, 3, 2))
    ours = pack_padded_sequence(x, lengths, batch_first, enforce_sorted)
    theirs = torch_rnn.pack_padded_sequence(x, lengths, batch_first, enforce_sorted)
    for a, b in zip(ours, theirs):
        assert (a is None and b is None) or torch.equal(a, b)
    options = {"batch_first": batch_first, "padding_value": -1.0}
    padded, out_lengths = pad_packed_sequence(ours, total_length=total_length, **options)
    expected = torch_rnn.pad_packed_sequence(theirs, total_length=total_length, **options)
    assert torch.equal(padded, expected[0]) and torch.equal(out_lengths, expected[1])


def test_packing_helpers_reject_bad_lengths():
    with pytest.raises(ValueError, match="sorted in decreasing order"):
        pack_padded_sequence(torch.randn(5, 2, 3), [2, 5])
    with pytest.raises(ValueError, match="length > 0"):
        pack_padded_sequence(torch.randn(5, 2, 3), [5, 0])
    with pytest.raises(ShapeError, match="one length per sequence"):
        pack_padded_sequence(torch.randn(5, 2, 3), [5, 4, 3])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "GRU", "LSTM"])
def test_recur_over_packed_rows_equals_recur_over_each_sequence(mode, reverse):
    hidden = 3
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1) * hidden
    hh = Affine(torch.randn(gates, hidden), torch.randn(gates))
    lengths = [4, 2, 1]
    sequences = [torch.randn(n, gates) for n in lengths]
    h0 = torch.randn(len(lengths), hidden)
    c0 = torch.randn(len(lengths), hidden) if mode == "LSTM" else None
    packed = torch_rnn.pack_sequence(sequences)
    out, h, c = recur(
        mode, packed.data, (h0, c0), (hh, None), packed.batch_sizes.tolist(), reverse
    )
    padded, _ = torch_rnn.pad_packed_sequence(
        torch_rnn.PackedSequence(out, packed.batch_sizes)
    )
    for n, (steps, length) in enumerate(zip(sequences, lengths)):
        state = (h0[n : n + 1], None if c0 is None else c0[n : n + 1])
        alone, h_n, c_n = recur(mode, steps.unsqueeze(1), state, (hh, None), None, reverse)
        torch.testing.assert_close(padded[:length, n], alone[:, 0])
        torch.testing.assert_close(h[n], h_n[0])
        if c0 is not None:
            torch.testing.assert_close(c[n], c_n[0])


def test_rnn_cell_equals_torch_cells():
    torch.manual_seed(0)
    x, h, c = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3)
    for mode, cell in (
        ("RNN_TANH", nn.RNNCell(4, 3)),
        ("RNN_RELU", nn.RNNCell(4, 3, nonlinearity="relu")),
        ("GRU", nn.GRUCell(4, 3)),
        ("LSTM", nn.LSTMCell(4, 3)),
    ):
        ih = Affine(cell.weight_ih, cell.bias_ih)
        hh = Affine(cell.weight_hh, cell.bias_hh)
        got = rnn_cell(mode, ih(x), h, c if mode == "LSTM" else None, hh, None, None)
        want = cell(x, (h, c)) if mode == "LSTM" else (cell(x, h), None)
        torch.testing.assert_close(got[0], want[0])
        if mode == "LSTM":
            torch.testing.assert_close(got[1], want[1])
