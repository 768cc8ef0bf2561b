"""Tests of scripts/pytorch_tutorial.py (the Bayesian PyTorch Quickstart)."""

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import loaded_script


@pytest.fixture(scope="module")
def tutorial():
    with loaded_script("pytorch_tutorial") as module:
        yield module


def test_digits_tiny_run(tutorial, capsys):
    torch_threads = torch.get_num_threads()
    try:
        status = tutorial.main(
            [
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--batch-size",
                "256",
                "--samples",
                "2",
                "--eval-samples",
                "4",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(torch_threads)
    out = capsys.readouterr().out
    assert status == 0
    assert "[Bayesian VI] epoch 1/1" in out
    assert "[deterministic] epoch 1/1" in out
    assert "test accuracy" in out
    assert "| Bayesian VI |" in out
    assert "| deterministic |" in out


def test_fashion_mnist_unavailable_exits_2(tutorial, tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes "import torchvision" raise ImportError.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    status = tutorial.main(
        ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "dataset-fashion-mnist" in err
    assert "torchvision" in err


def test_auto_falls_back_to_digits(tutorial, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)
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
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert "dataset-fashion-mnist" in captured.err
    assert "Falling back" in captured.err
    assert "data: digits" in captured.out
    assert "| Bayesian VI |" in captured.out
    assert "| deterministic |" not in captured.out


def _write_idx(path: Path, array: np.ndarray, type_code: int) -> None:
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def test_read_idx_uint8_gzip(tutorial, tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte.gz"
    _write_idx(path, images, 0x08)
    result = tutorial.read_idx(path)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)


def test_read_idx_big_endian_int32_plain(tutorial, tmp_path):
    values = np.array([1, -2, 70000], dtype=np.int32)
    path = tmp_path / "values-idx1-int"
    _write_idx(path, values, 0x0C)
    np.testing.assert_array_equal(tutorial.read_idx(path), values)


def test_read_idx_rejects_bad_files(tutorial, tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        tutorial.read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00")
    with pytest.raises(ValueError, match="bytes of data"):
        tutorial.read_idx(truncated)


def test_fashion_mnist_from_idx_files(tutorial, tmp_path):
    rng = np.random.default_rng(0)
    for key, stem in tutorial.FASHION_MNIST_FILES.items():
        n = 5 if key.startswith("train") else 3
        if key.endswith("images"):
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(tmp_path / f"{stem}.gz", array, 0x08)
    data = tutorial.load_fashion_mnist(tmp_path)
    assert data.x_train.shape == (5, 1, 28, 28)
    assert data.x_test.shape == (3, 1, 28, 28)
    assert data.y_train.dtype == torch.long
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.in_features == 784


def test_metrics(tutorial):
    probs = torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 0, 1])
    assert tutorial.accuracy(probs, labels) == pytest.approx(0.75)
    expected_nll = -(2 * np.log(0.8) + np.log(0.6) + np.log(0.4)) / 4
    assert tutorial.negative_log_likelihood(probs, labels) == pytest.approx(expected_nll)
    # bin of 0.8: accuracy 1.0, confidence 0.8; bin of 0.6: accuracy 0.5, confidence 0.6
    assert tutorial.expected_calibration_error(probs, labels) == pytest.approx(0.15)
    one_hot = torch.eye(3)
    assert tutorial.expected_calibration_error(one_hot, torch.arange(3)) == 0.0
