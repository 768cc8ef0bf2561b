"""Faults: exceptions and interrupts inside a sampled forward, concurrent callers.

A failing or interrupted call must leave nothing behind (no sampling state, no
replaced batch-norm forward, no recorded log-probabilities, no open mean-weight
mode), so the next call behaves exactly like a first one.
"""

import threading

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import sampling
from torch_blue.vi.sampling import current_state, mean_weights_enabled


class Failing(vi.VIModule):
    """Draws its weights, runs a plain batch norm, then raises ``error``."""

    def __init__(self, error: BaseException):
        super().__init__()
        self.layer = vi.VILinear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.error = error
        self.armed = True

    def forward(self, x):
        h = self.norm(self.layer(x))
        if self.armed:
            raise self.error
        return h


def _assert_clean(model: Failing) -> None:
    assert current_state() is None
    assert not mean_weights_enabled()
    assert "forward" not in model.norm.__dict__
    assert sampling._patched_forwards == {}
    for module in model.modules():
        assert not module.__dict__.get("_manual_log_probs")


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_or_interrupt_inside_a_call_leaves_no_state(error):
    torch.manual_seed(0)
    model = Failing(error)
    x = torch.randn(5, 3)
    statistics = model.norm.running_mean.clone()
    with pytest.raises(type(error)):
        model(x, samples=3)
    _assert_clean(model)
    # the failed call's running statistics were not applied (they are deferred)
    assert torch.equal(model.norm.running_mean, statistics)
    with pytest.raises(type(error)), vi.mean_weights():
        model(x)
    _assert_clean(model)
    model.armed = False
    torch.manual_seed(1)
    out = model(x, samples=3)
    fresh = Failing(error)
    fresh.load_state_dict(
        {
            **model.state_dict(),
            "norm.running_mean": statistics,
            "norm.num_batches_tracked": torch.tensor(0),
        }
    )
    fresh.armed = False
    torch.manual_seed(1)
    expected = fresh(x, samples=3)  # as if nothing had failed
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.log_probs, expected.log_probs)
    torch.testing.assert_close(model.norm.running_mean, fresh.norm.running_mean)


def test_concurrent_calls_keep_their_own_sample_counts_and_log_probs():
    # The sampling state is per thread: two threads with different sample counts
    # on one model never see each other's lanes or log-probabilities.
    torch.manual_seed(0)
    model = vi.VISequential(vi.VILinear(3, 8), nn.ReLU(), vi.VILinear(8, 2))
    problems = []

    def work(samples: int) -> None:
        for _ in range(100):
            try:
                out = model(torch.randn(4, 3), samples=samples)
                if out.shape != (samples, 4, 2) or out.log_probs.shape != (samples, 2):
                    problems.append((samples, tuple(out.shape)))
                out.sum().backward()
            except Exception as error:  # collected for the assertion below
                problems.append(repr(error))

    threads = [threading.Thread(target=work, args=(s,)) for s in (2, 3, 5, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert current_state() is None
