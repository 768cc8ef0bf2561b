"""The fused Normal draw gives the values and gradients of the plain formulas."""

import pytest
import torch

from torch_blue.vi import VILinear
from torch_blue.vi.distributions import MeanFieldNormal
from torch_blue.vi.distributions._fused_normal import (
    NormalDraw,
    ScaledNoise,
    SharedNoise,
    normal_draw_reference,
)
from torch_blue.vi.distributions.base import VariationalDistribution
from torch_blue.vi.utils.use_norm_constants import norm_constants

SHAPE = (5, 7)


def parameters(batch: tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.randn(*batch, *SHAPE, dtype=torch.float64, requires_grad=True)
    log_std = (0.3 * torch.randn(*batch, *SHAPE, dtype=torch.float64) - 1).requires_grad_()
    return mean, log_std


def fused_draw(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    noise: torch.Tensor,
    stacked: bool,
    settings: tuple,
) -> tuple:
    """:class:`NormalDraw` with the reference's signature."""
    return NormalDraw.apply(mean, log_std, noise, stacked, *settings)


def weighted(outputs: tuple, weights: tuple) -> torch.Tensor:
    """A random linear functional of the outputs (``None`` weight: output unused)."""
    return sum((o * w).sum() for o, w in zip(outputs, weights) if w is not None)


def compare(fused: tuple, reference: tuple, inputs: tuple, weights: tuple) -> None:
    for got, want in zip(fused, reference):
        torch.testing.assert_close(got, want)
    got = torch.autograd.grad(weighted(fused, weights), inputs, allow_unused=True)
    want = torch.autograd.grad(weighted(reference, weights), inputs, allow_unused=True)
    for g, w, x in zip(got, want, inputs):
        zero = torch.zeros_like(x)
        torch.testing.assert_close(zero if g is None else g, zero if w is None else w)


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("prior_mean", [0.0, 0.4])
@pytest.mark.parametrize("used", ["all", "sample", "log_q", "log_p", "log_probs"])
def test_values_and_gradients_match_the_plain_formulas(
    stacked: bool, prior_mean: float, used: str
) -> None:
    torch.manual_seed(0)
    mean, log_std = parameters()
    noise = torch.randn((3, *SHAPE) if stacked else SHAPE, dtype=torch.float64)
    settings = (prior_mean, 0.7, False)
    fused = NormalDraw.apply(mean, log_std, noise, stacked, *settings)
    reference = normal_draw_reference(mean, log_std, noise, stacked, settings)
    weights = [torch.randn_like(t) for t in reference]
    keep = {
        "all": (0, 1, 2),
        "sample": (0,),
        "log_q": (2,),
        "log_p": (1,),
        "log_probs": (1, 2),
    }[used]
    weights = tuple(w if i in keep else None for i, w in enumerate(weights))
    compare(fused, reference, (mean, log_std), weights)


def test_normalisation_constants() -> None:
    torch.manual_seed(1)
    mean, log_std = parameters()
    noise = torch.randn(4, *SHAPE, dtype=torch.float64)
    plain = NormalDraw.apply(mean, log_std, noise, True, 0.0, 2.0, False)
    constant = NormalDraw.apply(mean, log_std, noise, True, 0.0, 2.0, True)
    shift = 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64)) * mean.numel()
    torch.testing.assert_close(constant[1], plain[1] - shift)
    torch.testing.assert_close(constant[2], plain[2] - shift)


def test_transposed_gradients_are_summed_correctly() -> None:
    # The draws used as x @ W.T receive a transposed gradient, which the backward sums
    # over the lanes through a permuted view.
    torch.manual_seed(2)
    mean, log_std = parameters()
    noise = torch.randn(3, *SHAPE, dtype=torch.float64)
    x = torch.randn(3, 4, SHAPE[1], dtype=torch.float64)
    settings = (0.0, 1.0, False)
    losses = []
    for function in (fused_draw, normal_draw_reference):
        sample, log_p, log_q = function(mean, log_std, noise, True, settings)
        out = torch.bmm(x, sample.transpose(1, 2))
        losses.append(out.square().sum() + log_p.sum() - 0.5 * log_q.sum())
    got = torch.autograd.grad(losses[0], (mean, log_std))
    want = torch.autograd.grad(losses[1], (mean, log_std))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_vmap_over_the_noise_runs_one_stacked_draw() -> None:
    torch.manual_seed(3)
    mean, log_std = parameters()
    noise = torch.randn(6, *SHAPE, dtype=torch.float64)
    settings = (0.0, 0.5, False)
    fused = torch.vmap(lambda n: NormalDraw.apply(mean, log_std, n, False, *settings))(
        noise
    )
    reference = normal_draw_reference(mean, log_std, noise, True, settings)
    weights = tuple(torch.randn_like(t) for t in reference)
    compare(fused, reference, (mean, log_std), weights)


def test_vmap_over_parameters_and_nested_vmaps_fall_back_correctly() -> None:
    torch.manual_seed(4)
    mean, log_std = parameters(batch=(2,))
    noise = torch.randn(2, 3, *SHAPE, dtype=torch.float64)
    settings = (0.1, 0.5, False)

    def inner(m: torch.Tensor, s: torch.Tensor, n: torch.Tensor) -> tuple:
        return torch.vmap(lambda e: NormalDraw.apply(m, s, e, False, *settings))(n)

    fused = torch.vmap(inner)(mean, log_std, noise)
    reference = torch.vmap(lambda m, s, n: normal_draw_reference(m, s, n, True, settings))(
        mean, log_std, noise
    )
    weights = tuple(torch.randn_like(t) for t in reference)
    compare(fused, reference, (mean, log_std), weights)


def test_second_derivatives_match() -> None:
    torch.manual_seed(5)
    mean, log_std = parameters()
    noise = torch.randn(3, *SHAPE, dtype=torch.float64)
    settings = (0.0, 0.8, False)
    results = []
    for function in (fused_draw, normal_draw_reference):
        sample, log_p, log_q = function(mean, log_std, noise, True, settings)
        loss = sample.tanh().sum() + log_p.sum() - log_q.sum()
        grads = torch.autograd.grad(loss, (mean, log_std), create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        results.append(torch.autograd.grad(penalty, (mean, log_std)))
    for g, w in zip(*results):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("constants", [False, True])
def test_mean_field_normal_uses_it_with_the_generic_results(constants: bool) -> None:
    dist = MeanFieldNormal()
    prior = MeanFieldNormal(mean=0.2, std=0.5)
    mean, log_std = parameters()
    with norm_constants(constants):
        torch.manual_seed(6)
        fused = dist.sample_and_log_probs((mean, log_std), prior)
        torch.manual_seed(6)
        generic = VariationalDistribution.sample_and_log_probs(dist, (mean, log_std), prior)
    weights = tuple(torch.randn_like(t) for t in generic)
    compare(fused, generic, (mean, log_std), weights)


def test_sampled_layer_records_the_generic_log_probs(always_fused) -> None:
    # A tensor-valued prior mean is not fused: the layer takes the generic path, and
    # with the same seed both layers record the same values and gradients.
    torch.manual_seed(7)
    fused_layer = VILinear(6, 4, prior=MeanFieldNormal(std=0.5))
    generic_layer = VILinear(6, 4, prior=MeanFieldNormal(std=0.5))
    generic_layer.load_state_dict(fused_layer.state_dict())
    for prior in generic_layer.prior.values():
        prior.mean = torch.zeros(1)
    x = torch.randn(8, 6)
    outputs = []
    for layer in (fused_layer, generic_layer):
        torch.manual_seed(8)
        out = layer(x, samples=5)
        loss = out.square().sum() + out.log_probs.sum()
        grads = torch.autograd.grad(loss, list(layer.parameters()))
        outputs.append((out, out.log_probs, grads))
    torch.testing.assert_close(outputs[0][0].as_plain(), outputs[1][0].as_plain())
    torch.testing.assert_close(outputs[0][1], outputs[1][1])
    for g, w in zip(outputs[0][2], outputs[1][2]):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("batched_scale", [False, True])
def test_scaled_noise_matches_the_product_under_vmap(batched_scale: bool) -> None:
    torch.manual_seed(9)
    log_std = torch.randn(*((4,) if batched_scale else ()), *SHAPE, dtype=torch.float64)
    log_std.requires_grad_()
    noise = torch.randn(4, *SHAPE, dtype=torch.float64)
    x = torch.randn(4, 3, SHAPE[1], dtype=torch.float64)
    in_dims = (0 if batched_scale else None, 0)
    results = []
    for function in (ScaledNoise.apply, lambda s, n: torch.exp(s) * n):
        delta = torch.vmap(function, in_dims=in_dims)(log_std, noise)
        out = torch.bmm(x, delta.transpose(1, 2))  # a transposed gradient
        results.append((delta, torch.autograd.grad(out.square().sum(), log_std)[0]))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_shared_noise_is_one_draw_for_all_lanes_of_unbatched_parameters():
    log_std = torch.zeros(3, 4)
    lanes = torch.vmap(lambda _: SharedNoise.apply(log_std), randomness="different")(
        torch.zeros(5)
    )
    assert lanes.shape == (5, 3, 4)
    assert torch.equal(lanes, lanes[:1].expand_as(lanes)) and lanes.std() > 0.5


def test_shared_noise_follows_the_randomness_of_batched_parameters():
    batched = torch.zeros(5, 3, 4)
    different = torch.vmap(SharedNoise.apply, randomness="different")(batched)
    assert different.shape == (5, 3, 4) and not torch.equal(different[0], different[1])
    same = torch.vmap(SharedNoise.apply, randomness="same")(batched)
    assert torch.equal(same, same[:1].expand_as(same))
    with pytest.raises(RuntimeError, match="randomness='error'"):
        torch.vmap(SharedNoise.apply)(batched)
