"""The Sphinx documentation builds without warnings."""

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


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

    api = (out / "api.html").read_text(encoding="utf-8")
    for target in (
        "torch_blue.vi.VIModule",
        "torch_blue.vi.VILinear",
        "torch_blue.vi.VIConv2d",
        "torch_blue.vi.VIReturn",
        "torch_blue.vi.KullbackLeiblerLoss",
        "torch_blue.vi.distributions.MeanFieldNormal",
        "torch_blue.vi.distributions.register_kl",
        "torch_blue.vi.utils.TorchBlueError",
    ):
        assert f'id="{target}"' in api, target
    # numpy-style "Shape" and "Examples" sections render as headings, not raw text
    assert '<p class="rubric">Shape</p>' in api
    assert '<p class="rubric">Examples</p>' in api
    assert "-----" not in api
    assert (out / "index.html").exists()
