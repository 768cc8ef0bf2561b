"""Shared fixtures: every test starts seeded and leaves the global switches as found."""

import os

import pytest
import torch

from torch_blue.vi.utils import use_norm_constants

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per worker: with `pytest -n 2` on two cores, more threads
    # only make the workers spin against each other.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_restore_norm_constants():
    torch.manual_seed(0)
    yield
    use_norm_constants(True)


@pytest.fixture
def always_fused(monkeypatch):
    """Use torch_blue's fused autograd functions whatever the size of the layer."""
    from torch_blue.vi import sampling

    monkeypatch.setattr(sampling, "FUSED_MIN_ELEMENTS", 0)


def _graph_node_names(tensor):
    """Names of the autograd nodes behind ``tensor`` (each node once)."""
    names, seen, stack = [], set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.fixture
def graph_node_names():
    """The function giving the names of the autograd nodes behind a tensor."""
    return _graph_node_names
