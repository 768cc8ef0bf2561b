"""Gradient estimators: same distribution per example, exact KL term, lower variance."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerLoss,
    VIConv1d,
    VIConv2d,
    VILinear,
    VISequential,
)
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
)
from torch_blue.vi.estimators import flat_linear, random_signs
from torch_blue.vi.utils import NoVariablesError, UnsupportedDistributionError

FAST = ["local_reparameterization", "flipout", "shared_flipout"]
ALL = ["reparameterization", *FAST]


def _layer(kind, estimator, **kwargs):
    if kind == "linear":
        return VILinear(4, 3, estimator=estimator, **kwargs), torch.randn(5, 4)
    if kind == "conv1d":
        return VIConv1d(2, 3, 3, padding=1, estimator=estimator, **kwargs), torch.randn(
            5, 2, 6
        )
    layer = VIConv2d(
        2, 3, 3, padding=1, padding_mode="reflect", estimator=estimator, **kwargs
    )
    return layer, torch.randn(5, 2, 4, 4)


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
@pytest.mark.parametrize("estimator", FAST)
def test_zero_variance_reproduces_the_mean_network(kind, estimator):
    layer, x = _layer(kind, estimator)
    reference, _ = _layer(kind, "reparameterization")
    reference.load_state_dict(layer.state_dict())
    with torch.no_grad():
        for module in (layer, reference):
            module._weight_log_std.fill_(-40.0)
            module._bias_log_std.fill_(-40.0)
    expected = reference(x, samples=2)
    out = layer(x, samples=2)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
@pytest.mark.parametrize("estimator", ALL)
def test_outputs_have_the_right_per_example_moments(kind, estimator):
    torch.manual_seed(0)
    layer, x = _layer(kind, estimator, variational_distribution=MeanFieldNormal(std=3.0))
    n = 20_000
    # shared_flipout's samples share one perturbation per call, so they are not
    # independent; run the lanes one by one (each chunk draws its own) for n
    # independent draws of the training path.
    chunk_size, n = (1, 4_000) if estimator == "shared_flipout" else (None, n)
    with torch.no_grad():
        out = layer(x, samples=n, chunk_size=chunk_size).as_plain()
        # Exact per-example moments of a Normal-weight affine map: mean op(x, mu, b_mu),
        # variance op(x^2, sigma^2, sigma_b^2).
        op = layer._conv_forward if kind == "conv2d" else torch.nn.functional.linear
        mean = op(x, layer._weight_mean, layer._bias_mean)
        var = op(x**2, layer._weight_log_std.exp() ** 2, layer._bias_log_std.exp() ** 2)
    # 5 standard errors: sd/sqrt(n) for the mean, sd^2*sqrt(2/n) for the variance.
    assert torch.all((out.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((out.var(0) - var).abs() < 5 * var * (2 / n) ** 0.5)


@pytest.mark.parametrize("estimator", FAST)
def test_examples_are_decorrelated_within_a_sample(estimator):
    # The reparameterisation estimator shares one weight draw across the batch; the
    # fast estimators decorrelate examples (flipout: up to the shared perturbation's
    # sign-symmetric part, which averages out to zero correlation).
    torch.manual_seed(0)
    layer = VILinear(1, 1, bias=False, estimator=estimator)
    with torch.no_grad():
        layer._weight_mean.zero_()
    out = layer(torch.ones(2, 1), samples=20_000).as_plain()[..., 0]
    correlation = torch.corrcoef(out.T)[0, 1]
    assert abs(correlation) < 5 / 20_000**0.5


@pytest.mark.parametrize("estimator", FAST)
def test_log_probs_carry_the_exact_kl(estimator):
    model = VISequential(VILinear(4, 8, estimator=estimator), nn.ReLU(),
                         VILinear(8, 2, estimator=estimator))  # fmt: skip
    out = model(torch.randn(5, 4), samples=3)
    kl = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1).prior_matching()
    assert torch.allclose(
        out.log_probs[:, 1] - out.log_probs[:, 0], kl.expand(3), atol=1e-3
    )
    # ... and E_q log q is the negative entropy of the posterior.
    entropy = sum(
        torch.distributions.Normal(m, s.exp()).entropy().sum()
        for layer in (model[0], model[2])
        for m, s in (layer.get_variational_parameters(v) for v in ("weight", "bias"))
    )
    assert torch.allclose(out.log_probs[:, 1], -entropy.expand(3), atol=1e-3)


def _elbo_and_gradients(estimator, repeats, batch=128, samples=1):
    torch.manual_seed(0)
    # Upstream's wide start (1 / sqrt(fan_in)): the weight noise the estimators differ in
    # matters, as in Kingma et al.'s comparison.
    wide = MeanFieldNormal()
    model = VISequential(
        VILinear(10, 16, variational_distribution=wide),
        nn.ReLU(),
        VILinear(16, 3, variational_distribution=wide),
    )
    model.estimator = estimator
    x = torch.randn(batch, 10)
    y = torch.randint(0, 3, (batch,))
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=1000)
    losses, grads = [], []
    for seed in range(repeats):
        torch.manual_seed(seed + 1)
        model.zero_grad()
        loss = loss_fn(model(x, samples=samples), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append(model[2]._weight_mean.grad.flatten().clone())
    return torch.stack(losses), torch.stack(grads)


def test_estimators_agree_on_the_expected_loss_and_gradient():
    repeats = 400
    reference_loss, reference_grad = _elbo_and_gradients("reparameterization", repeats)
    for estimator in FAST:
        loss, grad = _elbo_and_gradients(estimator, repeats)
        # 5 standard errors of the difference of two independent means.
        se = ((reference_loss.var() + loss.var()) / repeats).sqrt()
        assert abs(loss.mean() - reference_loss.mean()) < 5 * se, estimator
        se_grad = ((reference_grad.var(0) + grad.var(0)) / repeats).sqrt()
        assert torch.all((grad.mean(0) - reference_grad.mean(0)).abs() < 5 * se_grad + 1e-6)


def test_fast_estimators_lower_the_top_layer_gradient_variance():
    # Kingma et al. 2015 protocol: variance over draws of the minibatch gradient of
    # the top-layer means, batch 128, one sample.
    repeats = 200
    _, reference = _elbo_and_gradients("reparameterization", repeats)
    reference_var = reference.var(0).sum()
    for estimator in FAST:
        _, grad = _elbo_and_gradients(estimator, repeats)
        # A sum of many variances: its relative standard error is at most
        # sqrt(2 / (repeats - 1)) (10 %); demand a gap of more than 5 of those.
        assert grad.var(0).sum() < (1 - 5 * (2 / (repeats - 1)) ** 0.5) * reference_var


def test_shared_flipout_agrees_with_flipout_for_many_samples():
    # With S > 1 the samples share one perturbation: still the same expectations.
    repeats = 400
    reference_loss, reference_grad = _elbo_and_gradients("flipout", repeats, samples=4)
    loss, grad = _elbo_and_gradients("shared_flipout", repeats, samples=4)
    se = ((reference_loss.var() + loss.var()) / repeats).sqrt()
    assert abs(loss.mean() - reference_loss.mean()) < 5 * se
    se_grad = ((reference_grad.var(0) + grad.var(0)) / repeats).sqrt()
    assert torch.all((grad.mean(0) - reference_grad.mean(0)).abs() < 5 * se_grad + 1e-6)


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (VILinear(1, 3, bias=False, estimator="shared_flipout"), torch.ones(2, 1)),
        (VIConv1d(1, 3, 1, bias=False, estimator="shared_flipout"), torch.ones(2, 1, 4)),
    ],
    ids=["linear", "conv1d"],
)
def test_shared_flipout_shares_one_perturbation_while_training_only(layer, x):
    with torch.no_grad():
        layer._weight_mean.zero_()
    # Zero means: every output is +-(the perturbation), so all samples, examples
    # and positions see the same magnitudes per output unit.
    out = layer(x, samples=5).as_plain().abs().movedim(2, 0).flatten(1)
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert (out[:, 0] > 0).all()
    # Prediction: every sample draws its own perturbation.
    layer.return_log_probs = False
    out = layer(x, samples=5).as_plain().abs()
    assert not torch.equal(out[0], out[1])


def test_shared_flipout_samples_are_uncorrelated():
    torch.manual_seed(0)
    layer = VILinear(4, 3, estimator="shared_flipout",
                     variational_distribution=MeanFieldNormal(std=3.0))  # fmt: skip
    n = 20_000
    with torch.no_grad():
        out = layer(torch.randn(2, 4), samples=n).as_plain()  # one shared perturbation
    centred = out - out.mean(0)
    first, second = centred[0::2].flatten(1), centred[1::2].flatten(1)
    # Given the perturbation, the sign flips make the samples' noise independent with
    # mean zero: the correlation of neighbouring samples is zero up to 5 s.e.
    correlation = (first * second).mean(0) / (first.std(0) * second.std(0))
    assert correlation.abs().max() < 5 / (n // 2) ** 0.5


def test_prediction_mode_samples_preactivations_where_that_saves_random_numbers():
    torch.manual_seed(0)
    layer = VILinear(8, 1, bias=False, return_log_probs=False)
    with torch.no_grad():
        layer._weight_mean.zero_()
    # 20,000 samples x (8 weights - 2 rows) saved: the pre-activations are sampled
    out = layer(torch.ones(2, 8), samples=20_000).as_plain()[..., 0]
    # Independent draws per example (weights would make the two columns identical).
    assert abs(torch.corrcoef(out.T)[0, 1]) < 5 / 20_000**0.5
    # more rows than weights, or too few samples to pay for the extra operations:
    # the weights are drawn, shared by the rows
    for rows, samples in ((9, 20_000), (2, 5)):
        out = layer(torch.ones(rows, 8), samples=samples).as_plain()[..., 0]
        assert torch.equal(out, out[:, :1].expand_as(out))
    layer.return_log_probs = True
    out = layer(torch.ones(2, 8), samples=5).as_plain()[..., 0]
    assert torch.equal(out[:, 0], out[:, 1])


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (VILinear(1, 1, bias=False, return_log_probs=False), torch.ones(1, 3, 1)),
        (VIConv1d(1, 1, 1, bias=False, return_log_probs=False), torch.ones(1, 1, 3)),
    ],
    ids=["sequence", "convolution"],
)
def test_prediction_mode_shares_one_draw_across_positions(layer, x):
    # Positions of one example share a weight draw, as in training: per-position
    # noise would change the predictive distribution.
    out = layer(x, samples=4).as_plain().flatten(1)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert not torch.equal(out[0], out[1])


def test_estimator_property_propagates_and_validates():
    model = VISequential(VILinear(4, 8), nn.ReLU(), VIConv1d(1, 1, 1))
    model.estimator = "flipout"
    assert model[0].estimator == "flipout" and model[2].estimator == "flipout"
    assert model.estimator is None
    with pytest.raises(ValueError, match="estimator must be one of"):
        model.estimator = "lrt"
    assert model[0].estimator == "flipout"
    with pytest.raises(NoVariablesError, match="no layer inside supports"):
        VISequential(nn.ReLU()).estimator = "flipout"


@pytest.mark.parametrize("estimator", FAST)
def test_fast_estimators_need_normal_posteriors_and_closed_form_kl(estimator):
    with pytest.raises(UnsupportedDistributionError, match="needs MeanFieldNormal"):
        VILinear(2, 2, variational_distribution=MeanFieldStudentT(), estimator=estimator)
    with pytest.raises(UnsupportedDistributionError, match="closed-form KL"):
        VILinear(2, 2, prior=BasicQuietPrior(), estimator=estimator)
    layer = VILinear(2, 2, prior=BasicQuietPrior())
    with pytest.raises(UnsupportedDistributionError, match="closed-form KL"):
        layer.estimator = estimator
    assert layer.estimator == "reparameterization"


@pytest.mark.parametrize("estimator", FAST)
def test_fast_estimators_train(estimator):
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    model = VISequential(VILinear(2, 16), nn.ReLU(), VILinear(16, 2))
    model.estimator = estimator
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=200)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        optimizer.zero_grad()
        loss_fn(model(x, samples=2), y).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x, samples=16).softmax(-1).mean(0).argmax(-1) == y).float().mean()
    assert accuracy > 0.9


def test_estimator_property_reaches_recurrent_layers_and_respects_their_limits():
    from torch_blue.vi import VILSTM, VIModule

    class Tagger(VIModule):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = VILSTM(3, 4, batch_first=True)
            self.out = VILinear(4, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0])

    model = Tagger()
    model.estimator = "flipout"
    assert model.rnn.estimator == "flipout" and model.out.estimator == "flipout"
    with pytest.raises(ValueError, match="VILSTM: estimator must be one of"):
        model.estimator = "local_reparameterization"
    assert model.out.estimator == "flipout"  # nothing changed
    assert model(torch.randn(2, 5, 3), samples=2).shape == (2, 2, 5, 2)


@pytest.mark.parametrize(
    ("shape", "draws"),
    [((1,), 4000), ((3, 5), 4000), ((7, 9, 11), 4000), ((3, 100, 64), 200)],
    ids=["one", "few", "odd", "packed"],  # "packed": 64 signs per random number
)
def test_random_signs_are_fair_and_independent(shape, draws):
    torch.manual_seed(0)
    signs = torch.stack([random_signs(shape, torch.empty(0)) for _ in range(draws)])
    assert signs.shape == (draws, *shape) and signs.dtype == torch.float32
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    flat = signs.reshape(draws, -1)
    # Each sign is +-1 with probability 1/2, independently: every mean below has
    # standard error 1/sqrt(number of signs averaged). Bound: 5.5 standard errors
    # (about 4e-8 per mean, at most 2e-3 over the 19,200 positions of "packed").
    assert flat.mean(0).abs().max() < 5.5 / draws**0.5
    if flat.shape[1] >= 128:  # each bit of a random word, and neighbouring bits
        bits = flat[:, : flat.shape[1] // 64 * 64].reshape(draws, -1, 64)
        n = bits.shape[0] * bits.shape[1]
        assert bits.mean((0, 1)).abs().max() < 5.5 / n**0.5
        pairs = (bits[..., 1:] * bits[..., :-1]).mean((0, 1))
        assert pairs.abs().max() < 5.5 / n**0.5
    elif flat.shape[1] > 1:
        pairs = (flat[:, 1:] * flat[:, :-1]).mean(0)
        assert pairs.abs().max() < 5.5 / draws**0.5


def test_random_signs_differ_between_vmap_lanes():
    torch.manual_seed(1)
    lanes = torch.vmap(
        lambda _: random_signs((4, 2**13), torch.empty(0, dtype=torch.float64)),
        randomness="different",
    )(torch.zeros(3))
    assert lanes.shape == (3, 4, 2**13) and lanes.dtype == torch.float64
    assert not torch.equal(lanes[0], lanes[1]) and not torch.equal(lanes[1], lanes[2])


@pytest.mark.parametrize("shape", [(6,), (5, 6), (5, 3, 6), (2, 5, 3, 6)])
def test_flat_linear_is_f_linear(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    if x.dim() >= 3:
        x = x.transpose(0, 1)  # a view that does not flatten
    x.requires_grad_()
    weight = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    out = flat_linear(x, weight, bias)
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    found = torch.autograd.grad(out, (x, weight, bias), g)
    wanted = torch.autograd.grad(expected, (x, weight, bias), g)
    for a, b in zip(found, wanted):
        torch.testing.assert_close(a, b)


def test_flat_linear_multiplies_once_per_sample_under_vmap():
    # F.linear on a transposed sequence with a weight per sample would run one
    # product per sample and position (batch S * 3 below); flat_linear one per sample.
    from torch.profiler import profile

    samples = 4
    x = torch.randn(samples, 5, 3, 6).transpose(1, 2).requires_grad_()
    weight = torch.randn(samples, 7, 6, requires_grad=True)
    with profile(record_shapes=True) as prof:
        torch.vmap(lambda a, w: flat_linear(a, w, None))(x, weight).sum().backward()
    batches = {e.input_shapes[0][0] for e in prof.events() if e.name == "aten::bmm"}
    assert batches == {samples}


# ------------------------------------------------------------- large inputs (fp16)
def _preactivation_std_reference(layer, x):
    """The pre-activations' standard deviation, in float64."""
    weight_var = layer._weight_log_std.double().mul(2).exp()
    bias_var = layer._bias_log_std.double().mul(2).exp()
    if isinstance(layer, VILinear):
        return (F.linear(x.double().square(), weight_var, bias_var)).sqrt()
    return F.conv1d(x.double().square(), weight_var, bias_var).sqrt()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_local_reparameterization_stays_finite_for_large_inputs(dtype, kind):
    # x**2 overflows float16 from |x| = 256 and float32 from 1.9e19; the outputs must
    # stay finite, with the right spread, while the result itself fits the dtype.
    torch.manual_seed(0)
    big = 300.0 if dtype == torch.float16 else 2e19
    if kind == "linear":
        layer = VILinear(4, 3, estimator="local_reparameterization")
        x = torch.tensor([[big, -big, 1.0, 0.5], [0.25, 0.0, -0.5, 1.0]])
    else:
        layer = VIConv1d(2, 3, 3, estimator="local_reparameterization")
        x = torch.full((2, 2, 5), 0.5)
        x[0, 1, 2] = big
    layer = layer.to(dtype)
    with torch.no_grad():
        layer._weight_log_std.fill_(-6.0)  # the std of the output stays in range
    for record in (True, False):
        layer.return_log_probs = record
        out = layer(x.to(dtype), samples=2000)
        assert torch.isfinite(out).all()
        spread = out.as_plain().double().std(dim=0)
        want = _preactivation_std_reference(layer, x).to(spread)
        # the sample std of 2000 draws lies within 5 standard errors (sqrt(1/2n)
        # relative) of the truth, plus float16's rounding of the outputs
        rounding = 1e-2 if dtype == torch.float16 else 0.0
        tolerance = (5 / (2 * 2000) ** 0.5 + rounding) * want
        assert torch.all((spread - want).abs() <= tolerance)


def test_scaled_variance_is_bitwise_the_plain_formula_in_range():
    # The per-example scale is a power of two: where x**2 does not overflow, the
    # result is the unscaled formula's to the bit (pruned inputs stay irrelevant).
    from torch_blue.vi._fused_linear import VARIANCE_FLOOR, preactivation_std

    torch.manual_seed(1)
    x = torch.randn(8, 5) * torch.tensor([1e-3, 0.5, 3.0, 100.0, 1e4]).unsqueeze(1).T
    log_std, bias = torch.randn(3, 5) - 2, (torch.zeros(3), torch.randn(3) - 2)
    got = preactivation_std(F.linear, x, log_std, bias, 0)
    plain = torch.sqrt(
        F.linear(x.square(), torch.exp(2 * log_std))
        + torch.exp(2 * bias[1])
        + VARIANCE_FLOOR
    )
    assert torch.equal(got, plain)


def _fused_case(prior_mean, prior_std, dtype=torch.float64):
    torch.manual_seed(0)
    layer = VILinear(4, 3, prior=MeanFieldNormal(mean=prior_mean, std=prior_std))
    layer.to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("constants", [True, False])
@pytest.mark.parametrize(("prior_mean", "prior_std"), [(0.0, 1.0), (0.4, 0.3)])
def test_summed_expected_log_probs_is_the_sum_over_variables(
    constants, prior_mean, prior_std
):
    from torch_blue.vi.estimators import expected_log_probs, summed_expected_log_probs
    from torch_blue.vi.utils import norm_constants

    layer = _fused_case(prior_mean, prior_std)
    with norm_constants(constants):
        fused = summed_expected_log_probs(layer, ("weight", "bias"))
        want = expected_log_probs(layer, "weight") + expected_log_probs(layer, "bias")
    torch.testing.assert_close(fused, want, rtol=1e-12, atol=1e-10)
    grads = torch.autograd.grad(
        fused @ torch.tensor([0.7, -1.3]).double(), [*layer.parameters()]
    )
    wants = torch.autograd.grad(
        want @ torch.tensor([0.7, -1.3]).double(), [*layer.parameters()]
    )
    for got, expected in zip(grads, wants):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)


def test_summed_expected_log_probs_has_exact_first_and_second_derivatives():
    from torch_blue.vi.estimators import _NormalExpectedLogProbs

    layer = _fused_case(0.4, 0.3)
    tensors = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    priors = ((0.4, float(layer.prior["weight"].log_std)),) * 2
    # (parameters() order: weight mean, weight log-std, bias mean, bias log-std)
    function = lambda *t: _NormalExpectedLogProbs.apply(priors, True, *t)  # noqa: E731
    assert torch.autograd.gradcheck(function, tensors)
    assert torch.autograd.gradgradcheck(function, tensors)


def test_summed_expected_log_probs_leaves_other_priors_and_half_weights_alone():
    from torch_blue.vi.distributions import LaplacePrior
    from torch_blue.vi.estimators import summed_expected_log_probs

    other = VILinear(4, 3, prior=LaplacePrior())
    assert summed_expected_log_probs(other, ("weight", "bias")) is None
    half = VILinear(4, 3).to(torch.bfloat16)
    assert summed_expected_log_probs(half, ("weight", "bias")) is None
    assert summed_expected_log_probs(VILinear(4, 3), ("weight", "bias")) is not None


def test_summed_expected_log_probs_has_the_forward_mode_derivative():
    import torch.autograd.forward_ad as forward_ad

    from torch_blue.vi.estimators import _NormalExpectedLogProbs

    layer = _fused_case(0.4, 0.3)
    tensors = [p.detach() for p in layer.parameters()]
    tangents = [torch.randn_like(t) for t in tensors]
    log_s = float(layer.prior["weight"].log_std)

    def reference(mean_w, log_std_w, mean_b, log_std_b):  # the closed form, plainly
        total = []
        for mean, log_std in ((mean_w, log_std_w), (mean_b, log_std_b)):
            spread = ((mean - 0.4).square() + torch.exp(2 * log_std)).sum()
            total.append(torch.stack([-0.5 * spread / math.exp(2 * log_s), -log_std.sum()]))
        return total[0] + total[1]

    _, want = torch.func.jvp(reference, tuple(tensors), tuple(tangents))
    with forward_ad.dual_level():
        duals = [forward_ad.make_dual(t, d) for t, d in zip(tensors, tangents)]
        priors = ((0.4, log_s),) * 2
        out = _NormalExpectedLogProbs.apply(priors, True, *duals)
        got = forward_ad.unpack_dual(out).tangent
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)
