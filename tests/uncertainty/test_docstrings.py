"""The shared argument descriptions are filled into every public docstring."""

import inspect
import re

import pytest

import torch_blue.uncertainty as uncertainty
from torch_blue.uncertainty._docstrings import _shared_doc

FUNCTIONS = [
    getattr(uncertainty, name)
    for name in uncertainty.__all__
    if inspect.isfunction(getattr(uncertainty, name))
]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda fn: fn.__name__)
def test_docstring_documents_every_parameter_and_keeps_no_placeholder(fn):
    doc = inspect.getdoc(fn)
    assert not re.search(r"(?m)^\s*\{[\w, ]+\}\s*$", doc), fn.__name__
    documented = set()
    for line in re.findall(r"(?m)^(\S[^:\n]*) : ", doc):
        documented.update(name.strip() for name in line.split(","))
    assert documented == set(inspect.signature(fn).parameters), fn.__name__


def test_shared_doc_fills_a_list_of_names_with_the_line_indent():
    def f():
        """Summary.

        Parameters
        ----------
        {means, ax}
        {unknown}
        """

    doc = _shared_doc(f).__doc__
    assert "        means : Tensor\n            Samples of the predicted mean" in doc
    assert "        ax : matplotlib.axes.Axes, optional\n" in doc
    assert "{unknown}" in doc  # only known names are replaced
