import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

from torch_blue.uncertainty import (  # noqa: E402
    UncertaintyInputError,
    calibration_bins,
    expected_calibration_error,
    ood_auroc,
    regression_band_plot,
    reliability_diagram,
    uncertainty_histogram,
)
from torch_blue.vi.utils import ShapeError  # noqa: E402

HOW_TO = Path(__file__).resolve().parents[2] / "docs" / "uncertainty.rst"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _saved(ax, tmp_path):
    path = tmp_path / "plot.png"
    ax.figure.savefig(path)
    return path.stat().st_size


@pytest.fixture
def classification():
    return torch.randn(8, 500, 3), torch.randint(0, 3, (500,))


@pytest.mark.parametrize("n_bins", [15, 10])
def test_reliability_diagram(classification, tmp_path, n_bins):
    logits, targets = classification
    ax = reliability_diagram(logits, targets, n_bins, input_type="logits")
    accuracy_bars, gap_bars = ax.containers
    assert len(accuracy_bars) == n_bins and len(gap_bars) == n_bins
    bins = calibration_bins(logits, targets, n_bins, "logits")
    heights = torch.tensor([bar.get_height() for bar in accuracy_bars], dtype=torch.float32)
    filled = bins.counts > 0
    assert torch.allclose(heights[filled], bins.accuracy[filled].float())
    assert (heights[~filled] == 0).all()
    (diagonal,) = ax.get_lines()
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    ece = expected_calibration_error(logits, targets, n_bins, "logits").item()
    assert ax.get_legend().get_title().get_text() == f"ECE = {ece:.3f} ({n_bins} bins)"
    assert _saved(ax, tmp_path) > 0


def test_reliability_diagram_draws_into_the_given_axes(classification):
    _, ax = plt.subplots()
    assert reliability_diagram(*classification, input_type="logits", ax=ax) is ax


def test_regression_band_plot(tmp_path):
    x = torch.linspace(-3, 3, 50).flip(0)  # unsorted inputs are sorted for drawing
    mean = x.sin()
    ax = regression_band_plot(
        x.unsqueeze(-1), mean, torch.full((50,), 0.3), torch.full((50,), 0.1),
        x_data=torch.rand(20) * 4 - 2, y_data=torch.randn(20),
    )  # fmt: skip
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # 2 sigma total, 1 sigma total, 2 sigma epistemic
    assert [c for c in ax.collections if isinstance(c, PathCollection)]  # data points
    (line,) = ax.get_lines()
    assert (line.get_xdata()[1:] >= line.get_xdata()[:-1]).all()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [
        r"$\pm 2\sigma$ total",
        r"$\pm 1\sigma$ total",
        r"$\pm 2\sigma$ epistemic",
        "predictive mean",
        "data",
    ]
    assert bands[2].get_hatch() and not bands[0].get_hatch()  # epistemic stands out
    assert _saved(ax, tmp_path) > 0


def test_regression_band_plot_without_epistemic_band_or_data():
    x = torch.linspace(0, 1, 10)
    ax = regression_band_plot(x, x, torch.ones(10))
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]


def test_uncertainty_histogram(tmp_path):
    score_in, score_out = torch.rand(100) * 0.6, 0.4 + torch.rand(60) * 0.6
    ax = uncertainty_histogram(score_in, score_out, bins=20, labels=("test", "noise"))
    histogram_in, histogram_out = ax.containers
    assert len(histogram_in) == 20 and len(histogram_out) == 20
    assert ax.get_title() == f"AUROC = {ood_auroc(score_in, score_out).item():.3f}"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["test", "noise"]
    assert _saved(ax, tmp_path) > 0


def test_uncertainty_histogram_of_equal_scores():
    ax = uncertainty_histogram(torch.zeros(5), torch.zeros(5))
    assert ax.get_title() == "AUROC = 0.500"


# ------------------------------------------------------------------ bad inputs
def test_plots_need_matplotlib(monkeypatch, classification):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(
        ImportError, match=r"reliability_diagram needs matplotlib.*pip install matplotlib"
    ):
        reliability_diagram(*classification, input_type="logits")
    with pytest.raises(ImportError, match="pip install matplotlib"):
        uncertainty_histogram(torch.rand(5), torch.rand(5))
    with pytest.raises(ImportError, match="pip install matplotlib"):
        regression_band_plot(torch.rand(5), torch.rand(5), torch.rand(5))


def test_reliability_diagram_validates_its_inputs():
    with pytest.raises(
        UncertaintyInputError,
        match="reliability_diagram: n_bins must be an integer >= 1, got 0",
    ):
        reliability_diagram(torch.rand(1, 4, 2).softmax(-1), torch.zeros(4).long(), 0)


def test_regression_band_plot_validates_its_inputs():
    with pytest.raises(
        ShapeError,
        match=(
            "regression_band_plot: x, mean and the standard deviations need the same "
            "number of elements"
        ),
    ):
        regression_band_plot(torch.rand(5), torch.rand(4), torch.rand(5))
    with pytest.raises(
        UncertaintyInputError,
        match="regression_band_plot: pass both x_data and y_data, or neither",
    ):
        regression_band_plot(
            torch.rand(5), torch.rand(5), torch.rand(5), x_data=torch.rand(3)
        )
    with pytest.raises(
        ShapeError,
        match=(
            "regression_band_plot: x_data and y_data need the same number of elements, "
            "got 3 and 2"
        ),
    ):
        regression_band_plot(
            torch.rand(5),
            torch.rand(5),
            torch.rand(5),
            x_data=torch.rand(3),
            y_data=torch.rand(2),
        )


@pytest.mark.parametrize("bins", [0, 2.5])
def test_uncertainty_histogram_validates_bins(bins):
    with pytest.raises(
        UncertaintyInputError,
        match=f"uncertainty_histogram: bins must be an integer >= 1, got {bins}",
    ):
        uncertainty_histogram(torch.rand(5), torch.rand(5), bins=bins)


# ---------------------------------------------------------- the how-to page
def test_how_to_page_code_blocks_run(tmp_path, monkeypatch):
    """docs/uncertainty.rst runs as written, as one script, and saves its plots."""
    text = HOW_TO.read_text(encoding="utf-8")
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the page trains two tiny networks: one thread is fastest
    try:
        namespace: dict = {}
        for block in blocks:
            exec(compile(textwrap.dedent(block), str(HOW_TO), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    for name in ("reliability.png", "ood_histogram.png", "regression_bands.png"):
        assert (tmp_path / name).stat().st_size > 0
