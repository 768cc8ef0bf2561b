import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

from torch_blue.uncertainty import (
    UncertaintyInputError,
    classification_variance_decomposition,
    confidence_score,
    credible_interval,
    entropy_decomposition,
    expected_entropy,
    mixture_quantile,
    mutual_information,
    predictive_entropy,
    predictive_mean,
    predictive_probs,
    predictive_std,
    regression_variance_decomposition,
    variation_ratio,
)
from torch_blue.vi import VILinear, VIReturn
from torch_blue.vi.utils import ShapeError, TorchBlueError

LOG2 = math.log(2)

CLASSIFICATION = [
    predictive_probs,
    predictive_entropy,
    expected_entropy,
    mutual_information,
    variation_ratio,
    confidence_score,
]


def _probs(*shape):
    return torch.randn(*shape, dtype=torch.float64).softmax(-1)


def _mixture(means, stds):
    """torch.distributions reference for the mixture over the leading dimension."""
    means, stds = torch.broadcast_tensors(means, stds)
    weights = torch.ones(*means.shape[1:], means.shape[0], dtype=means.dtype)
    components = Normal(means.movedim(0, -1), stds.movedim(0, -1))
    return MixtureSameFamily(Categorical(weights), components)


# ---------------------------------------------------------------- classification
def test_predictive_probs_is_the_mean_softmax():
    logits = torch.randn(7, 5, 4)
    expected = logits.softmax(-1).mean(0)
    assert torch.allclose(predictive_probs(logits, "logits"), expected)
    assert torch.allclose(predictive_probs(logits.softmax(-1)), expected)


@pytest.mark.parametrize("summary", CLASSIFICATION)
def test_logits_and_probs_give_the_same_summary(summary):
    logits = torch.randn(6, 10, 3, dtype=torch.float64)
    by_logits = summary(logits, "logits")
    by_probs = summary(logits.softmax(-1), "probs")
    assert torch.allclose(by_logits, by_probs)


def test_entropies_match_torch_distributions():
    p = _probs(9, 4, 5)
    assert torch.allclose(predictive_entropy(p), Categorical(probs=p.mean(0)).entropy())
    assert torch.allclose(expected_entropy(p), Categorical(probs=p).entropy().mean(0))


def test_one_hot_samples_on_different_classes():
    samples = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    total, aleatoric, epistemic = entropy_decomposition(samples)
    assert total.item() == pytest.approx(LOG2)
    assert aleatoric.item() == 0
    assert epistemic.item() == pytest.approx(LOG2)


def test_uniform_samples_are_all_aleatoric():
    samples = torch.full((5, 4), 0.25, dtype=torch.float64)
    total, aleatoric, epistemic = entropy_decomposition(samples)
    assert total.item() == pytest.approx(math.log(4))
    assert aleatoric.item() == pytest.approx(math.log(4))
    # total and aleatoric reduce in different orders: equal up to rounding
    torch.testing.assert_close(epistemic, torch.zeros((), dtype=torch.float64))


def test_mutual_information_is_zero_for_equal_samples():
    p = _probs(1, 6, 4).expand(8, 6, 4)
    # the entropy of the mean and the mean entropy reduce in different orders
    torch.testing.assert_close(mutual_information(p), torch.zeros(6, dtype=torch.float64))


def test_total_is_aleatoric_plus_epistemic():
    total, aleatoric, epistemic = entropy_decomposition(torch.randn(10, 20, 6), "logits")
    assert torch.allclose(total, aleatoric + epistemic, atol=1e-6)
    assert (epistemic >= 0).all()


def test_mutual_information_is_at_most_log_classes():
    mi = mutual_information(torch.randn(50, 100, 3) * 10, "logits")
    assert (mi <= math.log(3) + 1e-6).all()


def test_entropy_gradient_is_finite_at_zero_probabilities():
    samples = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    entropy_decomposition(samples).total.backward()
    assert torch.isfinite(samples.grad).all()


@pytest.mark.parametrize(
    ("votes", "expected"),
    [([0, 0, 0, 0], 0.0), ([0, 0, 0, 1], 0.25), ([0, 0, 1, 1], 0.5), ([0, 1, 2, 2], 0.5)],
)
def test_variation_ratio(votes, expected):
    samples = torch.nn.functional.one_hot(torch.tensor(votes), 3).double() * 0.7 + 0.1
    assert variation_ratio(samples).item() == pytest.approx(expected)


def test_variance_decomposition_hand_computed():
    samples = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    aleatoric, epistemic, total = classification_variance_decomposition(samples)
    # aleatoric: (0.9 * 0.1 + 0.5 * 0.5) / 2; epistemic: 0.2²; total: 0.7 * 0.3
    assert torch.allclose(aleatoric, torch.tensor([0.17, 0.17], dtype=torch.float64))
    assert torch.allclose(epistemic, torch.tensor([0.04, 0.04], dtype=torch.float64))
    assert torch.allclose(total, torch.tensor([0.21, 0.21], dtype=torch.float64))


def test_full_variance_decomposition_matches_a_loop_over_samples():
    p = _probs(6, 4, 3)
    aleatoric, epistemic, _ = classification_variance_decomposition(p, full=True)
    mean = p.mean(0)
    for n in range(4):
        ref_aleatoric = sum(torch.diag(q[n]) - torch.outer(q[n], q[n]) for q in p) / 6
        ref_epistemic = sum(torch.outer(q[n] - mean[n], q[n] - mean[n]) for q in p) / 6
        assert torch.allclose(aleatoric[n], ref_aleatoric)
        assert torch.allclose(epistemic[n], ref_epistemic)


@pytest.mark.parametrize("full", [False, True])
def test_class_variances_obey_the_law_of_total_variance(full):
    aleatoric, epistemic, total = classification_variance_decomposition(
        _probs(12, 5, 4), full=full
    )
    assert torch.allclose(total, aleatoric + epistemic)


def test_full_decomposition_diagonal_is_the_per_class_one():
    p = _probs(6, 5, 4)
    full = classification_variance_decomposition(p, full=True)
    diagonal = classification_variance_decomposition(p)
    for matrix, vector in zip(full, diagonal):
        assert torch.allclose(matrix.diagonal(dim1=-2, dim2=-1), vector)
        assert torch.allclose(matrix, matrix.transpose(-1, -2))


def test_confidence_score_uses_the_total_variance_of_the_predicted_class():
    p = _probs(8, 20, 4)
    mean = p.mean(0)
    top = mean.max(-1).values
    expected = 1 - 2 * torch.sqrt(top * (1 - top))
    assert torch.allclose(confidence_score(p), expected)


def test_epistemic_confidence_score_uses_the_spread_of_the_predicted_class():
    p = _probs(8, 20, 4)
    predicted = p.mean(0).argmax(-1)
    spread = (
        p.gather(-1, predicted.expand(8, 20).unsqueeze(-1)).squeeze(-1).std(0, correction=0)
    )
    assert torch.allclose(confidence_score(p, variance="epistemic"), 1 - 2 * spread)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [([[1.0, 0.0], [1.0, 0.0]], 1.0), ([[0.5, 0.5]], 0.0), ([[1.0, 0.0], [0.0, 1.0]], 0.0)],
)
def test_confidence_score_extremes(samples, expected):
    assert confidence_score(torch.tensor(samples)).item() == pytest.approx(expected)


@pytest.mark.parametrize("variance", ["total", "aleatoric", "epistemic"])
def test_confidence_score_lies_in_the_unit_interval(variance):
    scores = confidence_score(torch.randn(10, 100, 5) * 3, "logits", variance=variance)
    assert (scores >= 0).all() and (scores <= 1).all()


# -------------------------------------------------------------------- regression
def test_predictive_mean_and_std():
    means = torch.randn(16, 7, dtype=torch.float64)
    assert torch.allclose(predictive_mean(means), means.mean(0))
    assert torch.allclose(predictive_std(means), means.std(0, correction=0))


@pytest.mark.parametrize(
    "stds",
    [
        None,
        0.3,
        torch.tensor(0.3),
        torch.rand(7, dtype=torch.float64) + 0.1,  # per point
        torch.rand(16, 7, dtype=torch.float64) + 0.1,  # per sample and point
    ],
    ids=["none", "float", "scalar-tensor", "per-point", "heteroscedastic"],
)
def test_variance_split_is_the_mixture_variance(stds):
    means = torch.randn(16, 7, dtype=torch.float64)
    aleatoric, epistemic, total = regression_variance_decomposition(means, stds)
    assert torch.allclose(total, aleatoric + epistemic)
    assert torch.allclose(epistemic, means.var(0, correction=0))
    if stds is None:
        assert torch.equal(aleatoric, torch.zeros(7, dtype=torch.float64))
        return
    noise = torch.as_tensor(stds, dtype=torch.float64).expand_as(means)
    assert torch.allclose(aleatoric, noise.square().mean(0))
    assert torch.allclose(total, _mixture(means, noise).variance)
    assert torch.allclose(predictive_std(means, stds), total.sqrt())


def test_mixture_quantile_solves_the_mixture_cdf():
    means = torch.randn(5, 30, dtype=torch.float64) * 2
    stds = torch.rand(5, 30, dtype=torch.float64) + 0.05
    mixture = _mixture(means, stds)
    for q in (0.025, 0.3, 0.5, 0.975):
        x = mixture_quantile(means, stds, q)
        assert torch.allclose(mixture.cdf(x), torch.full_like(x, q), atol=1e-12)


def test_mixture_quantile_matches_a_numerical_reference():
    """Reference: integrate the mixture density on a fine grid, invert by interpolation."""
    means = torch.tensor([[-1.0], [0.5], [3.0]], dtype=torch.float64)
    stds = torch.tensor([[0.5], [1.0], [0.3]], dtype=torch.float64)
    grid = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    density = Normal(means, stds).log_prob(grid).exp().mean(0)
    steps = (density[1:] + density[:-1]) / 2 * (grid[1] - grid[0])
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
    for q in (0.05, 0.5, 0.9):
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64)))
        reference = grid[i - 1] + (q - cdf[i - 1]) / (cdf[i] - cdf[i - 1]) * (
            grid[i] - grid[i - 1]
        )
        # trapezoid error is O(h²) ~ 1e-8; interpolation adds less than that
        assert mixture_quantile(means, stds, q).item() == pytest.approx(
            reference.item(), abs=1e-6
        )


def test_single_gaussian_quantile_is_exact():
    q = mixture_quantile(torch.full((1, 3), 2.0), torch.tensor([0.5, 1.0, 2.0]), 0.9)
    assert torch.allclose(q, 2.0 + torch.tensor([0.5, 1.0, 2.0]) * 1.2815515655446004)


@pytest.mark.parametrize(
    ("q", "expected"), [(0.1, 1.0), (0.5, 2.0), (0.6, 3.0), (1 - 1e-9, 4.0)]
)
def test_quantile_without_noise_is_the_empirical_quantile(q, expected):
    means = torch.tensor([3.0, 1.0, 4.0, 2.0])
    assert mixture_quantile(means, q=q).item() == expected


def test_zero_stds_are_point_masses():
    means = torch.randn(7, 5)
    for q in (0.2, 0.5, 0.9):
        assert torch.equal(mixture_quantile(means, 0.0, q), mixture_quantile(means, q=q))


def test_a_point_mass_next_to_a_gaussian():
    # half the mass at 0, half in N(10, 1): the 0.3-quantile is the point mass
    means = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    stds = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    # solved to 1e-12 times the spread (about 11)
    assert mixture_quantile(means, stds, 0.3).item() == pytest.approx(0.0, abs=1e-10)
    assert mixture_quantile(means, stds, 0.75).item() == pytest.approx(10.0, abs=1e-10)


def test_credible_interval_holds_the_level():
    means = torch.randn(8, 20, dtype=torch.float64)
    stds = torch.rand(8, 20, dtype=torch.float64) + 0.1
    lower, upper = credible_interval(means, stds, level=0.8)
    mixture = _mixture(means, stds)
    assert torch.allclose(
        mixture.cdf(upper) - mixture.cdf(lower), torch.full((20,), 0.8).double()
    )
    assert torch.allclose(mixture.cdf(lower), torch.full((20,), 0.1).double())


def test_gaussian_credible_interval_is_moment_matched():
    means = torch.randn(8, 20, dtype=torch.float64)
    lower, upper = credible_interval(means, 0.5, level=0.95, method="gaussian")
    centre, half = means.mean(0), 1.959963984540054 * predictive_std(means, 0.5)
    assert torch.allclose(lower, centre - half) and torch.allclose(upper, centre + half)


def test_both_methods_agree_for_a_gaussian():
    means = torch.zeros(4, 3)
    exact = credible_interval(means, 2.0, level=0.5)
    approx = credible_interval(means, 2.0, level=0.5, method="gaussian")
    assert torch.allclose(exact.lower, approx.lower) and torch.allclose(
        exact.upper, approx.upper
    )


# -------------------------------------------------------------- VIReturn inputs
@pytest.fixture
def vi_output():
    return VILinear(4, 3)(torch.randn(8, 4), samples=5)


@pytest.mark.parametrize(
    "summary",
    [
        *CLASSIFICATION,
        lambda s, t: entropy_decomposition(s, t).epistemic,
        lambda s, t: classification_variance_decomposition(s, t, full=True).total,
    ],
)
def test_classification_summaries_accept_a_vireturn(vi_output, summary):
    assert isinstance(vi_output, VIReturn)
    result = summary(vi_output, "logits")
    assert type(result) is torch.Tensor
    assert torch.allclose(result, summary(vi_output.as_plain(), "logits"))


@pytest.mark.parametrize(
    "summary",
    [
        predictive_mean,
        predictive_std,
        lambda m: regression_variance_decomposition(m, 0.1).total,
        lambda m: credible_interval(m, 0.1).lower,
        lambda m: mixture_quantile(m, m.abs() + 0.1, 0.3),
    ],
)
def test_regression_summaries_accept_a_vireturn(vi_output, summary):
    result = summary(vi_output)
    assert type(result) is torch.Tensor
    assert result.shape == (8, 3)


# ------------------------------------------------------------------ bad inputs
def test_errors_are_library_errors():
    assert issubclass(UncertaintyInputError, TorchBlueError)
    assert issubclass(UncertaintyInputError, ValueError)


@pytest.mark.parametrize("summary", CLASSIFICATION)
def test_missing_sample_dimension(summary):
    with pytest.raises(
        ShapeError,
        match=rf"{summary.__name__}: samples must have shape \(S, \.\.\., C\).*\(3,\)",
    ):
        summary(torch.tensor([0.2, 0.3, 0.5]))


def test_empty_samples():
    with pytest.raises(
        ShapeError, match=r"predictive_probs: samples need at least one sample.*\(0, 3\)"
    ):
        predictive_probs(torch.zeros(0, 3))


@pytest.mark.parametrize("summary", CLASSIFICATION)
def test_probabilities_must_sum_to_one(summary):
    with pytest.raises(
        UncertaintyInputError,
        match=rf"{summary.__name__}: .*sum to one.*deviates from 1 by 0\.1",
    ):
        summary(torch.tensor([[0.5, 0.4], [0.5, 0.5]]))


@pytest.mark.parametrize("bad", [[[1.5, -0.5]], [[float("nan"), 1.0]]])
def test_probabilities_must_lie_in_the_unit_interval(bad):
    with pytest.raises(
        UncertaintyInputError,
        match=r"predictive_entropy: .*must lie in \[0, 1\].*input_type='logits'",
    ):
        predictive_entropy(torch.tensor(bad))


def test_logits_passed_as_probabilities_are_rejected():
    with pytest.raises(UncertaintyInputError, match="pass input_type='logits'"):
        mutual_information(torch.randn(4, 3, 5))


def test_unknown_input_type():
    with pytest.raises(
        UncertaintyInputError,
        match="variation_ratio: input_type must be 'logits' or 'probs', got 'softmax'",
    ):
        variation_ratio(torch.randn(4, 3), "softmax")


def test_unknown_confidence_variance():
    with pytest.raises(UncertaintyInputError, match="confidence_score: variance must be"):
        confidence_score(torch.randn(4, 3), "logits", variance="both")


def test_regression_means_need_a_sample_dimension():
    with pytest.raises(
        ShapeError,
        match=r"predictive_mean: means must have shape \(S, \.\.\.\).*got shape \(\)",
    ):
        predictive_mean(torch.tensor(1.0))


def test_stds_must_broadcast_to_the_means():
    with pytest.raises(
        ShapeError,
        match=(
            r"predictive_std: stds of shape \(3,\) cannot be broadcast to means of "
            r"shape \(4, 5\)"
        ),
    ):
        predictive_std(torch.zeros(4, 5), torch.ones(3))
    with pytest.raises(
        ShapeError, match="cannot be broadcast"
    ):  # stds may not grow the means
        predictive_std(torch.zeros(4, 5), torch.ones(2, 4, 5))


def test_stds_must_not_be_negative():
    with pytest.raises(
        UncertaintyInputError,
        match=(
            "regression_variance_decomposition: stds must be non-negative, found minimum -1"
        ),
    ):
        regression_variance_decomposition(torch.zeros(4, 5), -1.0)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, "0.9", True])
def test_level_must_lie_in_the_open_unit_interval(level):
    with pytest.raises(
        UncertaintyInputError,
        match=r"credible_interval: level must .*strictly between 0 and 1",
    ):
        credible_interval(torch.zeros(4, 5), 1.0, level=level)


def test_quantile_probability_must_lie_in_the_open_unit_interval():
    with pytest.raises(
        UncertaintyInputError,
        match=r"mixture_quantile: q must lie strictly between 0 and 1, got 1\.0",
    ):
        mixture_quantile(torch.zeros(4, 5), 1.0, q=1.0)


def test_unknown_interval_method():
    with pytest.raises(
        UncertaintyInputError,
        match="credible_interval: method must be 'mixture' or 'gaussian', got 'normal'",
    ):
        credible_interval(torch.zeros(4, 5), 1.0, method="normal")


def test_mixture_quantile_with_non_finite_means():
    # Means [-inf, 1] with unit stds gave 1.0; infinite means are point masses only
    # without stds, and a NaN sample makes that prediction's quantile NaN.
    means = torch.tensor([[-math.inf, 0.0], [1.0, 2.0]])
    with pytest.raises(TorchBlueError, match="means must be finite where stds"):
        mixture_quantile(means, 1.0, q=0.5)
    assert mixture_quantile(means, None, q=0.5).tolist() == [-math.inf, 0.0]
    nan = torch.tensor([[math.nan, 0.0], [1.0, 2.0]])
    for stds in (None, 1.0):
        got = mixture_quantile(nan, stds, q=0.5)
        assert math.isnan(got[0]) and math.isfinite(got[1])
