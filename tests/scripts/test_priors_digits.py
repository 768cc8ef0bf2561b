"""Tests of scripts/priors_digits.py (a tiny run of every row)."""

import pytest
import torch

from .conftest import loaded_script

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def priors_digits():
    with loaded_script("priors_digits") as module:
        yield module


def test_tiny_run_of_every_row(priors_digits, tmp_path, capsys):
    threads = torch.get_num_threads()
    output = tmp_path / "priors.md"
    status = priors_digits.main(
        [
            "--epochs", "1", "--batch-size", "512", "--samples", "1",
            "--eval-samples", "2", "--warmup-epochs", "1", "--no-progress",
            "--out", str(output),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert torch.get_num_threads() == threads  # restored
    assert "Machine:" in out and "Command: python scripts/priors_digits.py" in out
    assert "| model | KL | test accuracy | NLL | ECE | sparsity | seconds |" in out
    for config in priors_digits.CONFIGS:
        assert f"| {config.label} |" in out
    assert "| Normal(0, 1) | closed form |" in out
    assert "| scale mixture | Monte Carlo |" in out
    assert "| log-uniform | closed form |" in out and "(log alpha > 3)" in out
    assert "| deterministic | - |" in out
    assert output.read_text() == out


def test_several_seeds_report_a_spread(priors_digits, capsys):
    status = priors_digits.main(
        [
            "--epochs", "1", "--batch-size", "512", "--samples", "1",
            "--eval-samples", "2", "--seeds", "0", "1", "--configs", "laplace",
            "--no-progress",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("| Laplace |"))
    assert row.count("±") == 5  # accuracy, NLL, ECE, sparsity, seconds


@pytest.mark.parametrize(
    "argv",
    [["--configs", "no-such-prior"], ["--epochs", "0"], ["--warmup-epochs", "-1"]],
)
def test_bad_arguments_exit(priors_digits, argv):
    with pytest.raises(SystemExit):
        priors_digits.main(argv)


def test_sparsity_counts_low_signal_to_noise_weights(priors_digits):
    from torch_blue.vi import VILinear

    layer = VILinear(2, 2)
    with torch.no_grad():
        layer._weight_mean.copy_(torch.tensor([[1.0, 0.1], [1.0, 0.1]]))
        layer._weight_log_std.fill_(0.0)  # std 1: |mean|/std < 1 for the 0.1 entries
        layer._bias_mean.fill_(2.0)
        layer._bias_log_std.fill_(0.0)
    assert priors_digits.sparsity(layer, log_alpha=False) == pytest.approx(2 / 6)
    # log alpha = log(1 / mean^2) > 3 only where |mean| < exp(-1.5) = 0.22
    assert priors_digits.sparsity(layer, log_alpha=True) == pytest.approx(2 / 6)
