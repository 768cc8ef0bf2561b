"""The library keeps the shape that ``docs/architecture.rst`` draws (issue 20).

Rooms are groups of modules; each room may import only the rooms listed for it
(and itself). The size limits, the absence of import cycles and of deferred
imports are measured by ``scripts/tools/code_health.py``, which this test runs.
"""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"

_spec = importlib.util.spec_from_file_location(
    "code_health", ROOT / "scripts" / "tools" / "code_health.py"
)
code_health = importlib.util.module_from_spec(_spec)
sys.modules["code_health"] = code_health
_spec.loader.exec_module(code_health)

# Room -> the module prefixes in it, lowest rooms first. A module belongs to the
# room with the longest matching prefix.
ROOMS = {
    "foundation": ("torch_blue._compat", "torch_blue.errors"),
    "uncertainty": ("torch_blue.uncertainty",),
    "datasets": ("torch_blue.datasets",),
    "utils": ("torch_blue.vi.utils",),
    "functional": ("torch_blue.vi.functional",),
    "engine": ("torch_blue.vi.sampling", "torch_blue.vi._stacked"),
    "kernels": (
        "torch_blue.vi._fused_linear",
        "torch_blue.vi._lane_conv",
        "torch_blue.vi._lane_attention",
    ),
    "distributions": ("torch_blue.vi.distributions",),
    "core": ("torch_blue.vi.base", "torch_blue.vi.estimators"),
    "conversion": (
        "torch_blue.vi.convert",
        "torch_blue.vi.deterministic",
        "torch_blue.vi.selection",
    ),
    "layers": (
        "torch_blue.vi.linear",
        "torch_blue.vi.conv",
        "torch_blue.vi.conv_transpose",
        "torch_blue.vi.embedding",
        "torch_blue.vi.normalization",
        "torch_blue.vi.rnn",
        "torch_blue.vi.attention",
        "torch_blue.vi.transformer",
        "torch_blue.vi.sequential",
        "torch_blue.vi._lane_norm",
        "torch_blue.vi._transformer_checks",
    ),
    "features": (
        "torch_blue.vi.adapters",
        "torch_blue.vi.pruning",
        "torch_blue.vi.kl_loss",
        "torch_blue.vi.analytical_kl_loss",
        "torch_blue.vi.schedules",
    ),
    # Packages that re-export, and upstream's old paths kept as thin re-exports.
    "front": ("torch_blue", "torch_blue.vi", "torch_blue.vi.utils.convert"),
}
# Each room may import these rooms (and itself); lowest rooms first.
_ORDER = (
    "foundation",
    "utils",
    "engine",
    "kernels",
    "functional",
    "distributions",
    "core",
    "conversion",
    "layers",
    "features",
)
BELOW = {room: _ORDER[: _ORDER.index(room)] for room in _ORDER}
BELOW.update(
    uncertainty=("foundation",),
    datasets=("foundation",),
    front=tuple(ROOMS),
)


def room_of(module: str) -> str:
    """The room of a dotted module name (longest matching prefix wins)."""
    best, length = None, -1
    for room, prefixes in ROOMS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(
                prefix
            ) > length:
                best, length = room, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no room; add it to ROOMS and the page")
    return best


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if "conftest" in path.name:
            continue
        name = code_health._module_name(path, SOURCE)
        modules[name] = (ast.parse(path.read_text()), path.name == "__init__.py", str(path))
    graph, _ = code_health.import_graph(modules)
    return code_health.parents_of_submodules(graph)


GRAPH = _graph()


def test_every_module_has_a_room():
    for module in GRAPH:
        room_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_modules_import_only_their_room_and_the_rooms_below(module):
    room = room_of(module)
    allowed = {room, *BELOW[room]}
    wrong = sorted(target for target in GRAPH[module] if room_of(target) not in allowed)
    assert not wrong, f"{module} ({room}) imports {wrong}"


def test_code_health_limits_hold(capsys):
    status = code_health.main(["--root", str(SOURCE), "--most", "0"])
    report = capsys.readouterr().out
    assert status == 0, report
