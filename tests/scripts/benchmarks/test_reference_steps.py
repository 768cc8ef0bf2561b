"""Tests of scripts/benchmarks/reference_steps.py: hand-written steps do what they claim.

Moments are checked against closed forms within 5 standard errors estimated from the
draws (seeded, float64).
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..conftest import loaded_script

ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout")
DENSE = [("flatten",), ("linear", 3, 4), ("linear", 4, 2)]
CONV = [("conv", 2, 3, 3, 1), ("conv", 3, 2, 3, 0)]
LENET_LIKE = [
    ("conv", 1, 3, 3, 1),
    ("relu",),
    ("pool",),
    ("conv", 3, 4, 3, 0),
    ("relu",),
    ("flatten",),
    ("linear", 4, 5),
    ("relu",),
    ("linear", 5, 3),
]
SAMPLES = 20_000


@pytest.fixture(scope="module")
def reference():
    with loaded_script("benchmarks/reference_steps") as module:
        yield module


def _network(reference, spec, estimator, seed=0):
    torch.manual_seed(seed)
    net = reference.ReferenceNetwork(spec, estimator).double()
    with torch.no_grad():
        for log_std in (*net.weight_log_std, *net.bias_log_std):
            log_std.uniform_(-1.5, -0.5)
    return net


def _plain_twin(net, spec):
    """``nn`` layers with the network's means as weights."""
    layers, index = [], 0
    for kind, *args in spec:
        if kind in ("linear", "conv"):
            if kind == "linear":
                layer = nn.Linear(args[0], args[1])
            else:
                layer = nn.Conv2d(args[0], args[1], args[2], padding=args[3])
            with torch.no_grad():
                layer.weight.copy_(net.weight_mean[index])
                layer.bias.copy_(net.bias_mean[index])
            layers.append(layer)
            index += 1
        else:
            layers.append(
                {"relu": nn.ReLU(), "pool": nn.MaxPool2d(2)}.get(kind, nn.Flatten())
            )
    return nn.Sequential(*layers).double()


def _assert_moments(draws, mean, variance):
    """Per-element sample mean and variance of ``draws`` (samples first) match."""
    n = draws.shape[0]
    centred = draws - draws.mean(0)
    sample_var = centred.square().mean(0)
    mean_se = (sample_var / n).sqrt()
    var_se = (centred.square().var(0) / n).sqrt()
    assert ((draws.mean(0) - mean).abs() <= 5 * mean_se).all()
    assert ((sample_var - variance).abs() <= 5 * var_se).all()


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("spec", [DENSE, CONV, LENET_LIKE], ids=["dense", "conv", "lenet"])
def test_without_noise_it_is_the_mean_network(reference, estimator, spec):
    net = _network(reference, spec, estimator)
    with torch.no_grad():
        for log_std in (*net.weight_log_std, *net.bias_log_std):
            log_std.fill_(-200.0)
        x = torch.randn(5, 3) if spec is DENSE else torch.randn(5, spec[0][1], 6, 6)
        out, _ = net(x.double(), samples=3)
        expected = _plain_twin(net, spec)(x.double())
    if spec is CONV:  # (B, S*C, H, W) until a flatten
        out = out.view(5, 3, *expected.shape[1:]).transpose(0, 1)
    assert out.shape == (3, *expected.shape)
    torch.testing.assert_close(out, expected.expand_as(out), rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_dense_output_distribution(reference, estimator):
    """Per example, all three estimators give the weight-sampling distribution."""
    net = _network(reference, DENSE, estimator)
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        draws, _ = net(x, SAMPLES)
        mu1, mu2 = net.weight_mean
        b1, b2 = net.bias_mean
        var1, var2 = (torch.exp(2 * s) for s in net.weight_log_std)
        bvar1, bvar2 = (torch.exp(2 * s) for s in net.bias_log_std)
        m = F.linear(x, mu1, b1)
        v = F.linear(x * x, var1, bvar1)
        mean = F.linear(m, mu2, b2)
        # E[Var(y | h)] + Var(E[y | h]), the h_j independent for one example
        variance = F.linear(m * m + v, var2, bvar2) + F.linear(v, mu2 * mu2)
    _assert_moments(draws, mean, variance)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("spec", [CONV[:1], CONV], ids=["shared-input", "per-sample-input"])
def test_convolution_output_distribution(reference, estimator, spec):
    """The last convolution's outputs per position are
    N(conv(h, mu) + b, conv(h^2, s^2) + s_b^2).

    In the two-layer network the first convolution has no noise, so the second one
    (the samples in groups of channels) sees a known input ``h``.
    """
    net = _network(reference, spec, estimator)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        h = x
        if len(spec) == 2:
            net.weight_log_std[0].fill_(-200.0)
            net.bias_log_std[0].fill_(-200.0)
            h = F.conv2d(x, net.weight_mean[0], net.bias_mean[0], padding=1)
        out, _ = net(x, SAMPLES)
        padding = spec[-1][4]
        mean = F.conv2d(h, net.weight_mean[-1], net.bias_mean[-1], padding=padding)
        variance = F.conv2d(
            h.square(),
            torch.exp(2 * net.weight_log_std[-1]),
            torch.exp(2 * net.bias_log_std[-1]),
            padding=padding,
        )
    draws = out.view(2, SAMPLES, *mean.shape[1:]).transpose(0, 1)  # (S, B, C, H, W)
    _assert_moments(draws, mean, variance)


def test_samples_are_independent(reference):
    """Weight sampling draws a new weight set per sample: consecutive samples of one
    example are uncorrelated (5 standard errors)."""
    net = _network(reference, DENSE, "reparameterization")
    with torch.no_grad():
        draws, _ = net(torch.randn(1, 3, dtype=torch.float64), SAMPLES)
    z = (draws[:, 0, 0] - draws[:, 0, 0].mean()) / draws[:, 0, 0].std()
    correlation = (z[1:] * z[:-1]).mean()
    assert abs(correlation) <= 5 / (SAMPLES - 1) ** 0.5


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [("reparameterization", 1.0), ("local_reparameterization", 0.0), ("flipout", 0.0)],
)
@pytest.mark.parametrize("spec", [DENSE, CONV], ids=["dense", "conv"])
def test_examples_of_one_sample(reference, estimator, expected, spec):
    """Two copies of one example in a batch: one weight draw gives them the same
    output; local reparameterisation and Flipout's signs decorrelate them."""
    net = _network(reference, spec, estimator)
    shape = (3,) if spec is DENSE else (2, 5, 5)
    with torch.no_grad():
        x = torch.randn(1, *shape, dtype=torch.float64).expand(2, *shape)
        draws, _ = net(x, SAMPLES)
    if spec is CONV:  # (B, S*C, H, W) -> (S, B, C, H, W)
        draws = draws.view(2, SAMPLES, 2, 3, 3).transpose(0, 1)
    z = (draws - draws.mean(0)) / draws.std(0)
    correlation = (z[:, 0] * z[:, 1]).mean(0)
    if expected == 1.0:
        torch.testing.assert_close(
            correlation, torch.ones_like(correlation), rtol=0, atol=1e-3
        )
    else:
        se = (z[:, 0] * z[:, 1]).std(0) / SAMPLES**0.5
        assert (correlation.abs() <= 5 * se).all()


@pytest.mark.parametrize("estimator", ESTIMATORS[1:])
def test_closed_form_kl(reference, estimator):
    net = _network(reference, LENET_LIKE, estimator)
    _, kl = net(torch.randn(2, 1, 6, 6, dtype=torch.float64), samples=2)
    expected = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Normal(mean, torch.exp(log_std)),
            torch.distributions.Normal(0.0, 1.0),
        ).sum()
        for means, log_stds in (
            (net.weight_mean, net.weight_log_std),
            (net.bias_mean, net.bias_log_std),
        )
        for mean, log_std in zip(means, log_stds)
    )
    torch.testing.assert_close(kl, expected)


def test_sampled_kl_is_unbiased(reference):
    """The KL estimate from drawn weights averages to the closed form."""
    exact_net = _network(reference, DENSE, "local_reparameterization")
    sampled_net = _network(reference, DENSE, "reparameterization")
    x = torch.randn(1, 3, dtype=torch.float64)
    with torch.no_grad():
        _, exact = exact_net(x, 1)
        estimates = torch.stack([sampled_net(x, 3)[1] for _ in range(4000)])
    se = estimates.std() / len(estimates) ** 0.5
    assert abs(estimates.mean() - exact) <= 5 * se


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_loss_reaches_every_parameter(reference, estimator):
    net = _network(reference, LENET_LIKE, estimator)
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    loss = reference.reference_loss(net, x, torch.tensor([0, 1, 2, 0]), 3, 100)
    loss.backward()
    assert loss.shape == ()
    for parameter in net.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_bad_arguments_are_named(reference):
    with pytest.raises(ValueError, match=r"ReferenceNetwork: estimator .* 'bogus'"):
        reference.ReferenceNetwork(DENSE, "bogus")
    with pytest.raises(ValueError, match="ReferenceNetwork: unknown layer kind 'dense'"):
        reference.ReferenceNetwork([("dense", 3, 2)], "flipout")
