"""The how-to pages' Python examples run as written, page by page."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Pages whose ``code-block:: python`` blocks form one runnable script each (the
# concept pages show fragments instead).
RUNNABLE = ["convert.rst", "deploy.rst", "priors.rst"]


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
