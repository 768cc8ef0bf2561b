"""The Sphinx documentation builds without warnings."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# Sphinx's own deprecation warnings (e.g. napoleon on Sphinx 9) are not ours to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:sphinx")
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:sphinx")
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    args = ["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    assert build_main(args) == 0

    # Cross-references land on the section they name (a label above the wrong
    # heading once sent "see Migrating" to "Gradient estimators").
    index = (out / "index.html").read_text(encoding="utf-8")
    assert (
        'href="migration.html#migrating"><span class="std std-ref">Migrating from upstream'
        in index
    )
    assert "evidence.html" in index

    api = (out / "api.html").read_text(encoding="utf-8")
    for target in (
        "torch_blue.vi.VIModule",
        "torch_blue.vi.VILinear",
        "torch_blue.vi.VIConv2d",
        "torch_blue.vi.VIReturn",
        "torch_blue.vi.KullbackLeiblerLoss",
        "torch_blue.vi.distributions.MeanFieldNormal",
        "torch_blue.vi.distributions.register_kl",
        "torch_blue.errors.TorchBlueError",
        "torch_blue.vi.VILSTM",
        "torch_blue.vi.VITransformer",
        "torch_blue.vi.VIEmbedding",
        "torch_blue.vi.VIBatchNorm1d",
        "torch_blue.vi.convert_to_vimodule",
        "torch_blue.vi.to_deterministic",
        "torch_blue.vi.mean_weights",
        "torch_blue.vi.distributions.ScaleMixtureNormalPrior",
        "torch_blue.vi.distributions.HeteroscedasticNormal",
        "torch_blue.vi.schedules.LinearKLWarmup",
        "torch_blue.vi.pruning.prune",
    ):
        assert f'id="{target}"' in api, target
    how_to = (out / "uncertainty.html").read_text(encoding="utf-8")
    assert 'id="torch_blue.uncertainty.metrics.expected_calibration_error"' in how_to
    assert "_images/regression_gap.png" in how_to or "regression_gap.png" in how_to
    for page in ("convert", "deploy", "priors"):
        assert (out / f"{page}.html").exists(), page
    # numpy-style "Shape" and "Examples" sections render as headings, not raw text
    assert '<p class="rubric">Shape</p>' in api
    assert '<p class="rubric">Examples</p>' in api
    assert "-----" not in api
    assert (out / "index.html").exists()

    # Formulas render offline: MathJax ships with the pages instead of a CDN link.
    concepts = (out / "concepts.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-chtml.js"' in concepts
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "cdn.jsdelivr.net" not in concepts


def test_math_text_has_no_escaped_underscores():
    r"""MathJax shows ``\_`` inside ``\text{}`` literally (a stray backslash).

    Names with underscores belong in math-mode fonts (``\mathrm{min\_std}``).
    """
    text_with_escape = re.compile(r"\\(text|texttt)\{[^}]*\\_")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in [*DOCS.glob("*.rst"), *(ROOT / "src").rglob("*.py")]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if text_with_escape.search(line)
    ]
    assert not offenders, offenders
