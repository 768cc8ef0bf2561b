"""Tests of scripts/benchmarks/flipout_sharing.py (quick runs)."""

import numpy as np
import pytest
import torch

from ..conftest import loaded_script


@pytest.fixture(scope="module")
def sharing():
    with loaded_script("benchmarks/flipout_sharing") as module:
        yield module


def test_quick_run_prints_one_table_per_network(sharing, capsys):
    assert sharing.main(["--quick", "--samples", "3"]) == 0
    out = capsys.readouterr().out
    for network in ("mlp", "regression"):
        assert f"### {network}, S = 3" in out
    for estimator in sharing.ESTIMATORS:
        assert out.count(f"| {estimator} | ") == 2


def test_noise_variances_are_per_batch_and_positive(sharing):
    variances = sharing.noise_variances("regression", 4, 16, 3, 3, seed=0)
    assert list(variances) == list(sharing.ESTIMATORS)
    for values in variances.values():
        assert values.shape == (3,) and np.all(values > 0)
    # One sample: the shared perturbation is the per-sample one, draw for draw.
    single = sharing.noise_variances("regression", 1, 16, 2, 3, seed=0)
    # (equal up to rounding: the shared noise and the per-lane noise take different
    # code paths, unbatched and batched products)
    torch.testing.assert_close(single["shared_flipout"], single["flipout"])


def test_regression_data_is_standardised(sharing):
    x, y = sharing.regression_data()
    assert x.shape == (442, 10) and y.shape == (442, 1)
    assert np.allclose(x.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(y.std().item(), 1, atol=1e-5)


@pytest.mark.parametrize(
    "argv", [["--networks", "cnn"], ["--draws", "1"], ["--samples", "0"]]
)
def test_bad_arguments_are_rejected(sharing, argv):
    with pytest.raises(SystemExit):
        sharing.main(argv)


def test_a_batch_larger_than_the_data_is_an_error(sharing):
    with pytest.raises(ValueError, match="regression: batch 1000 exceeds the 442"):
        sharing.noise_variances("regression", 2, 1000, 1, 2, seed=0)
