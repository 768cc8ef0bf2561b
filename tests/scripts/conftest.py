"""Load the scripts under test as modules (they are not part of the package)."""

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_main(module: ModuleType, args: list[str]) -> int:
    """Run ``module.main(args + ["--no-progress"])``, restoring torch's thread count."""
    threads = torch.get_num_threads()
    try:
        return module.main([*args, "--no-progress"])
    finally:
        torch.set_num_threads(threads)


@contextmanager
def loaded_script(name: str) -> Iterator[ModuleType]:
    """Import ``scripts/<name>.py`` for the duration of the context.

    ``name`` may name a subfolder, as in ``"benchmarks/evidence"``; the module is
    called by the file's stem.
    """
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
