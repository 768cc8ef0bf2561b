"""Tests of scripts/benchmarks/attention_lengths.py (a quick run and its parts)."""

import math

import pytest
import torch

from torch_blue.vi.attention import VIMultiheadAttention

from ..conftest import loaded_script


@pytest.fixture(scope="module")
def lengths():
    with loaded_script("benchmarks/attention_lengths") as module:
        yield module


def test_quick_run_prints_one_row_per_length(lengths, capsys):
    assert lengths.main(["--quick", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "| length | weights path / plain | core / plain |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| 8 |", "| 96 |"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # Timings are noise on a shared machine: check only that numbers are printed,
        # the two ratios to plain with their "x".
        assert cells[1].endswith("x") and cells[2].endswith("x")
        assert all(math.isfinite(float(cell.rstrip("x"))) for cell in cells[1:])


def test_weights_path_is_forced_and_restored(lengths, graph_node_names, monkeypatch):
    from torch_blue.vi.functional import attention

    monkeypatch.setattr(attention, "MATMUL_MAX_POSITIONS", 0)  # core: fused kernel
    forward = VIMultiheadAttention.forward
    attention = VIMultiheadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with lengths.weights_path():
        out, weights = attention(x, x, x, samples=2, need_weights=False)
        assert weights is None
        _, kept = attention(x, x, x, samples=2)
        assert kept.shape == (2, 2, 5, 5)
    assert VIMultiheadAttention.forward is forward
    # torch's weights path has a softmax node; the core's fused kernel has none.
    assert "SoftmaxBackward0" in graph_node_names(out)
    core, _ = attention(x, x, x, samples=2, need_weights=False)
    assert "SoftmaxBackward0" not in graph_node_names(core)


def test_fused_core_saves_less_than_the_weights_path(lengths):
    # 96 x 96 positions: above the matrix-product limit, the core calls the fused
    # kernel and keeps no attention weights for the backward pass.
    closures = lengths.training_steps(96, 2, 16, 4, seed=0)
    assert closures["core"]() < closures["weights path"]()
    assert closures["plain"]() == 0


def test_bad_lengths_are_rejected(lengths):
    for text in ("0,16", "a", ""):
        with pytest.raises(SystemExit):
            lengths.main(["--lengths", text])
