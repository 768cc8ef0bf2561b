"""The how-to pages' Python examples run as written, page by page."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Every page's ``code-block:: python`` blocks form one runnable script (uncertainty.rst
# runs in tests/uncertainty/test_plots.py, which also checks the plots it writes).
RUNNABLE = sorted(
    page.name
    for page in DOCS.glob("*.rst")
    if "code-block:: python" in page.read_text() and page.name != "uncertainty.rst"
)


def python_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: python`` bodies of an reST page, dedented."""
    blocks = []
    for match in re.finditer(
        r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", page.read_text(), re.M
    ):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[3:] for line in lines))
    return blocks


@pytest.mark.parametrize("name", RUNNABLE)
def test_page_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = DOCS / name
    blocks = python_blocks(page)
    assert blocks, f"{name} has no python examples"
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
