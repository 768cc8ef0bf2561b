"""Lane-looping convolutions give what vmap's grouped convolution gives."""

from functools import partial

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from torch_blue import vi
from torch_blue.vi import _stacked
from torch_blue.vi._lane_conv import LaneConvolution, lane_convolution

S, B = 3, 2


def conv(x, w, b, stride=1, padding=1, groups=1):
    return F.conv2d(x, w, b, stride, padding, 1, groups)


def tensors(groups: int, batched: tuple[bool, bool, bool]):
    torch.manual_seed(0)
    shapes = [(B, 4, 6, 6), (6, 4 // groups, 3, 3), (6,)]
    return [
        torch.randn(*((S,) if lane else ()), *shape, dtype=torch.float64).requires_grad_()
        for shape, lane in zip(shapes, batched)
    ]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize(
    "batched",
    [
        (True, True, True),
        (True, True, False),
        (False, True, True),
        (False, True, False),
        (True, False, False),
    ],
    ids=["all", "shared-bias", "shared-input", "shared-input-and-bias", "shared-weights"],
)
def test_vmap_matches_plain_vmap(groups, batched):
    inputs = tensors(groups, batched)
    in_dims = tuple(0 if lane else None for lane in batched)
    op = partial(conv, stride=2, groups=groups)
    got = torch.vmap(partial(lane_convolution, op), in_dims=in_dims)(*inputs)
    want = torch.vmap(op, in_dims=in_dims)(*inputs)
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(want)
    for g, w in zip(
        torch.autograd.grad((got * weight).sum(), inputs),
        torch.autograd.grad((want * weight).sum(), inputs),
    ):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("unbatched_input", [False, True], ids=["batch", "no-batch"])
def test_shared_input_without_bias_matches_plain_vmap(unbatched_input):
    # The stacked first-layer convolution (and its fallback for inputs without a
    # batch dimension), without a bias.
    x, w, _ = tensors(1, (False, True, True))
    if unbatched_input:
        x = x[0].detach().requires_grad_()
    got = torch.vmap(lambda w: lane_convolution(conv, x, w, None))(w)
    want = torch.vmap(lambda w: conv(x, w, None))(w)
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(want)
    for g, r in zip(
        torch.autograd.grad((got * weight).sum(), (x, w)),
        torch.autograd.grad((want * weight).sum(), (x, w)),
    ):
        torch.testing.assert_close(g, r)


def test_outside_vmap_it_is_the_convolution_with_its_gradients():
    inputs = tensors(1, (False, False, False))
    got = LaneConvolution.apply(*inputs, conv, ())
    want = conv(*inputs)
    torch.testing.assert_close(got, want)
    grads = [torch.autograd.grad(out.square().sum(), inputs) for out in (got, want)]
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w)
    # Second derivatives through the recomputing backward.
    second = []
    for function in (lambda *t: LaneConvolution.apply(*t, conv, ()), conv):
        first = torch.autograd.grad(
            function(*inputs).tanh().sum(), inputs, create_graph=True
        )
        second.append(torch.autograd.grad(sum(g.square().sum() for g in first), inputs))
    for g, w in zip(*second):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize(
    ("estimator", "expected_calls"),
    [
        # shared input (stacked: its output keeps the lanes in dimension 1), then all
        # per lane
        ("reparameterization", [(None, 0, 0), (1, 0, 0)]),
        # the perturbations (inputs with signs per lane); the means are one call each
        ("flipout", [(0, 0, 0), (0, 0, 0)]),
        # one perturbation for all lanes: vmap's own rule, no per-lane weights
        ("shared_flipout", []),
    ],
)
def test_sampled_conv_layers_use_it_and_keep_their_values(
    always_fused, estimator, expected_calls, monkeypatch
):
    # Same seed, same draws: a two-layer model gives the same outputs and gradients
    # with the lane loop as with vmap's grouped convolution. (In lanes: the stacked
    # path, which a VISequential of convolutions takes, is tested in test_stacked.py.)
    monkeypatch.setattr(_stacked, "ENABLED", False)
    torch.manual_seed(1)
    model = vi.VISequential(
        vi.VIConv2d(2, 4, 3, padding=1), torch.nn.ReLU(), vi.VIConv2d(4, 3, 3, groups=1)
    )
    model.estimator = estimator
    model = model.double()  # float64: the two summation orders agree to 1e-7
    x = torch.randn(B, 2, 7, 7, dtype=torch.float64)
    results = []
    calls = []
    for looping in (True, False):
        rule = LaneConvolution.vmap
        if looping:  # count the rule's calls: both layers go through it
            LaneConvolution.vmap = staticmethod(
                lambda *args, rule=rule: calls.append(args[1][:3]) or rule(*args)
            )
        else:  # force vmap's own rule for the comparison
            LaneConvolution.vmap = staticmethod(
                lambda info, in_dims, x_, w, b, op, args: (
                    torch.vmap(lambda a, c, d: op(a, c, d, *args), in_dims=in_dims[:3])(
                        x_, w, b
                    ),
                    0,
                )
            )
        try:
            torch.manual_seed(2)
            out = model(x, samples=S)
            grads = torch.autograd.grad(
                out.square().sum() + out.log_probs.sum(), list(model.parameters())
            )
        finally:
            LaneConvolution.vmap = rule
        results.append((out.as_plain(), grads))
    assert calls == expected_calls
    torch.testing.assert_close(results[0][0], results[1][0])
    for g, w in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g, w)
