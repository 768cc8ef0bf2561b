import copy
import pickle

import pytest
import torch

from torch_blue.vi import VIReturn


@pytest.fixture
def output():
    return VIReturn(torch.randn(4, 3, 2, requires_grad=True) * 1.0, torch.randn(4, 2))


def test_is_a_tensor_with_log_probs(output):
    assert isinstance(output, torch.Tensor)
    assert output.log_probs.shape == (4, 2)


def test_shape_preserving_operations_keep_log_probs(output):
    for result in (output.relu(), torch.sigmoid(output), output + 1, output * output,
                   output.clone(), output.to(torch.float64)):  # fmt: skip
        assert isinstance(result, VIReturn)
        assert result.log_probs is output.log_probs


@pytest.mark.parametrize("detach", [torch.Tensor.detach, torch.detach])
def test_detach_detaches_the_log_probs_too(detach):
    # A detached output kept across steps (logging, early stopping) must not hold
    # the graph through its log-probs, and it can be deep-copied.
    weights = torch.randn(4, 2, requires_grad=True)
    output = VIReturn(torch.randn(4, 3, requires_grad=True) * 1.0, weights * 2.0)
    result = detach(output)
    assert isinstance(result, VIReturn)
    assert not result.requires_grad and result.log_probs.grad_fn is None
    assert not result.log_probs.requires_grad
    assert torch.equal(result.log_probs, output.log_probs)
    assert output.log_probs.grad_fn is not None  # the original keeps its graph
    assert torch.equal(copy.deepcopy(result).log_probs, output.log_probs)


@pytest.mark.parametrize(
    "operation",
    [
        lambda t: t.mean(0),
        lambda t: t[0],
        lambda t: t[:, :1],
        lambda t: t.flatten(1),
        lambda t: t.sum(),
        lambda t: t.reshape(4, 6),
    ],
)
def test_shape_changing_operations_return_plain_tensors(output, operation):
    result = operation(output)
    assert type(result) is torch.Tensor


def test_different_log_probs_are_not_mixed(output):
    other = VIReturn(torch.randn(4, 3, 2), torch.randn(4, 2))
    assert type(output + other) is torch.Tensor


def test_gradients_flow_through(output):
    base = torch.randn(4, 3, 2, requires_grad=True)
    wrapped = VIReturn(base * 2, torch.zeros(4, 2))
    wrapped.relu().sum().backward()
    assert base.grad is not None


def test_from_tensor_and_as_plain(output):
    plain = output.as_plain()
    assert type(plain) is torch.Tensor
    again = VIReturn.from_tensor(plain[:, :1], output.log_probs)
    assert again.log_probs is output.log_probs


def test_copy_and_pickle_keep_log_probs(output):
    detached = output.detach()
    for clone in (copy.deepcopy(detached), pickle.loads(pickle.dumps(detached))):
        assert isinstance(clone, VIReturn)
        assert torch.equal(clone.log_probs, output.log_probs)
        assert torch.equal(clone.as_plain(), detached.as_plain())


def test_new_empty_has_no_log_probs(output):
    empty = output.new_empty((2, 2))
    assert isinstance(empty, VIReturn) and empty.log_probs is None


def test_repr_mentions_log_probs(output):
    assert "log_probs=<shape (4, 2)>" in repr(output)


@pytest.mark.parametrize(
    ("log_probs", "match"),
    [
        (torch.zeros(4), r"shape \(S, 2\)"),
        (torch.zeros(3, 2), "leading sample dimension"),
        ([0.0, 0.0], "must be a Tensor"),
    ],
)
def test_bad_log_probs_raise(log_probs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VIReturn(torch.zeros(4, 3), log_probs)
