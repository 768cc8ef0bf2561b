"""The error classes live in :mod:`torch_blue.errors`; old paths give the same ones."""

import subprocess
import sys

import pytest

import torch_blue.errors
import torch_blue.uncertainty
import torch_blue.uncertainty.summaries
import torch_blue.vi.utils
import torch_blue.vi.utils.errors

OLD_PATHS = {
    "TorchBlueError": (torch_blue.vi.utils, torch_blue.vi.utils.errors),
    "NoVariablesError": (torch_blue.vi.utils, torch_blue.vi.utils.errors),
    "UnsupportedDistributionError": (torch_blue.vi.utils, torch_blue.vi.utils.errors),
    "MissingLogProbsError": (torch_blue.vi.utils, torch_blue.vi.utils.errors),
    "ShapeError": (torch_blue.vi.utils, torch_blue.vi.utils.errors),
    "UncertaintyInputError": (torch_blue.uncertainty, torch_blue.uncertainty.summaries),
}


def test_every_error_class_is_listed():
    assert set(torch_blue.errors.__all__) == set(OLD_PATHS)


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_old_paths_give_the_same_class(name):
    cls = getattr(torch_blue.errors, name)
    assert cls.__module__ == "torch_blue.errors"
    for module in OLD_PATHS[name]:
        assert getattr(module, name) is cls, module.__name__
        assert name in module.__all__, module.__name__


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_every_error_is_a_torch_blue_error_and_a_value_error(name):
    cls = getattr(torch_blue.errors, name)
    assert issubclass(cls, torch_blue.errors.TorchBlueError)
    if name != "TorchBlueError":
        assert issubclass(cls, ValueError)
        with pytest.raises(torch_blue.vi.utils.TorchBlueError):
            raise cls("caught by the old root")


def _modules_loaded_by(statement: str) -> list[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return [m for m in result.stdout.split() if m.startswith("torch_blue")]


@pytest.mark.parametrize(
    "statement",
    ["import torch_blue", "import torch_blue.errors", "import torch_blue.uncertainty"],
)
def test_import_does_not_load_vi(statement):
    loaded = _modules_loaded_by(statement)
    assert loaded, "the subprocess did not import torch_blue"
    assert not [m for m in loaded if m.startswith("torch_blue.vi")], loaded


def test_errors_module_imports_nothing_else_of_the_library():
    loaded = _modules_loaded_by("import torch_blue.errors")
    assert loaded == ["torch_blue", "torch_blue.errors"]
