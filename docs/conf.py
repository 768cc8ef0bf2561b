"""Sphinx configuration for the torch_blue documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. The build
needs no network: cross-references to the Python and PyTorch documentation
(intersphinx) are only enabled when the environment variable
``TORCH_BLUE_DOCS_ONLINE`` is set to a non-empty value.
"""

import inspect
import os
import sys
from pathlib import Path

# Document the source tree even when the package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sphinx.util.inspect import stringify_signature

import torch_blue

# -- Project information ---------------------------------------------------------------
project = "torch_blue"
author = "torch_blue contributors"
copyright = "torch_blue contributors"
release = torch_blue.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration -------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    # MathJax shipped with the pages (copied to _static/mathjax) instead of loaded
    # from a CDN, so formulas render offline too.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
nitpicky = False

# -- autodoc / napoleon ----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Only add type hints to parameters the docstring documents (no empty entries for the
# shared VIkwargs of every layer).
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# "Shape" sections (as in torch.nn) hold a bullet list; render them as a plain
# titled section.
napoleon_custom_sections = ["Shape"]


def _distribution_signature(app, what, name, obj, options, signature, return_annotation):
    """Show the ``__init__`` signature of distributions, not ``Distribution.__new__``.

    ``Distribution.__new__(cls, *args, **kwargs)`` (a role check) would otherwise be
    what autodoc shows for every distribution class.
    """
    from torch_blue.vi.distributions import Distribution

    if what != "class" or not (isinstance(obj, type) and issubclass(obj, Distribution)):
        return None
    if obj.__init__ is object.__init__:
        return "()", return_annotation
    sig = inspect.signature(obj.__init__)
    parameters = list(sig.parameters.values())[1:]  # drop self
    sig = sig.replace(parameters=parameters)
    show_annotation = app.config.autodoc_typehints not in ("description", "none")
    return stringify_signature(sig, show_annotation=show_annotation), return_annotation


def setup(app):
    """Register the signature fix-up."""
    app.connect("autodoc-process-signature", _distribution_signature)


# -- intersphinx (online builds only) --------------------------------------------------
if os.environ.get("TORCH_BLUE_DOCS_ONLINE"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
    }
else:
    intersphinx_mapping = {}

# -- HTML output -----------------------------------------------------------------------
html_theme = "furo"
# Figures made by the scripts (docs/uncertainty.rst shows them).
html_static_path = ["_static"]
html_title = f"torch_blue {release}"
