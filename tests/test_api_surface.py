"""Every name of upstream torch_blue 1.1's public API is still here (issue 20).

``tests/data/upstream_1.1_api_surface.txt`` lists upstream 1.1's public names with
their signatures (one per line: tier, kind, dotted name, details). Users switch to
this library unchanged, so each name must resolve here; a class or function must
accept upstream's parameters under the same names and in the same order; an alias
must be the same object as the name it points to; and a typed dict must keep
upstream's keys.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest

SURFACE = Path(__file__).parent / "data" / "upstream_1.1_api_surface.txt"


def _rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in SURFACE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        _tier, kind, name, *rest = line.split(maxsplit=3)
        rows.append((kind, name, rest[0] if rest else ""))
    return rows


def _resolve(dotted: str, kind: str = "") -> object:
    """The object a dotted name reaches, walking attributes as a user's code does."""
    if kind == "module":
        return importlib.import_module(dotted)
    parts = dotted.split(".")
    try:
        found: object = importlib.import_module(parts[0])
        for index, attribute in enumerate(parts[1:], start=2):
            if not hasattr(found, attribute):
                importlib.import_module(".".join(parts[:index]))
            found = getattr(found, attribute)
        return found
    except (AttributeError, ModuleNotFoundError):
        # A name inside a submodule that its package shadows with a function of the
        # same name (``utils.use_norm_constants``): go through the module.
        for end in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:end])
            try:
                found = importlib.import_module(module)
            except ModuleNotFoundError:
                continue
            for attribute in parts[end:]:
                found = getattr(found, attribute)
            return found
        raise


# Deliberate differences, each with its reason.
RENAMED_PARAMETERS = {
    # Upstream's abstract method calls it ``sample``, every implementation ``samples``.
    "torch_blue.vi.distributions.PredictiveDistribution.predictive_parameters_from_samples",
}


def _top_level_parameters(details: str) -> list[str]:
    """Parameter names of upstream's signature text, at the outer bracket level."""
    inner, depth, text = [], 0, details[details.index("(") + 1 :]
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        if depth == 0 and char != "]":
            inner.append(char)
        elif depth > 0 and char in "([{":
            inner.append(" ")
    flat = "".join(inner)
    names = []
    for piece in flat.split(", "):
        match = re.match(r"\s*\*{0,2}(\w+)", piece)
        if match:
            names.append(match.group(1))
    return [n for n in names if n not in ("self", "cls")]


ROWS = _rows()


def test_the_surface_file_lists_upstream_names():
    assert len(ROWS) == 176  # the count in the file's header


@pytest.mark.parametrize(("kind", "name", "details"), ROWS, ids=[r[1] for r in ROWS])
def test_upstream_name_is_present(kind, name, details):
    found = _resolve(name, kind)
    if kind == "alias":
        assert found is _resolve(details.split("->")[1].strip())
    elif kind == "typeddict":
        keys = {k.strip() for k in details.split("keys:")[1].split(",")}
        assert keys <= set(found.__annotations__)
    elif kind == "class" and issubclass(found, (BaseException, type)):
        # Exceptions take a message; a metaclass takes the class to build.
        assert inspect.isclass(found)
    elif kind in ("class", "function", "method", "staticmethod") and "(" in details:
        upstream = _top_level_parameters(details)
        ours = [
            p.name
            for p in inspect.signature(found).parameters.values()
            if p.name not in ("self", "cls")
        ]
        if name in RENAMED_PARAMETERS:
            assert len(ours) == len(upstream)
            return
        missing = [p for p in upstream if p not in ours]
        assert not missing, f"{name} lost parameters {missing}"
        order = [p for p in ours if p in upstream]
        assert order == upstream, f"{name}: parameters reordered: {order} != {upstream}"
