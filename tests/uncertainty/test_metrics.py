import itertools
import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

from torch_blue.uncertainty import (
    UncertaintyInputError,
    accuracy,
    auroc,
    brier_score,
    calibration_bins,
    credible_interval,
    expected_calibration_error,
    gaussian_mixture_log_likelihood,
    interval_coverage,
    maximum_calibration_error,
    misclassification_auroc,
    negative_log_likelihood,
    ood_auroc,
    rmse,
)
from torch_blue.vi import VILinear
from torch_blue.vi.utils import ShapeError

# (S=1, N=4, C=2): two examples at confidence 0.8 (both right), two at 0.6 (one right)
TINY = torch.tensor([[[0.8, 0.2], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]]])
TINY_TARGETS = torch.tensor([0, 1, 0, 0])


def _binary(confidence, correct):
    """Probabilities (1, N, 2) with the given confidence and targets that are right
    exactly where ``correct`` is."""
    probs = torch.stack([confidence, 1 - confidence], -1).unsqueeze(0)
    return probs, (~correct).long()


# ---------------------------------------------------------------- classification
def test_accuracy_uses_the_predictive_probabilities():
    # sample-wise majority says class 0, the averaged probabilities say class 1
    samples = torch.tensor([[[0.6, 0.4]], [[0.6, 0.4]], [[0.0, 1.0]]])
    assert accuracy(samples, torch.tensor([1])).item() == 1.0
    assert accuracy(TINY, TINY_TARGETS).item() == 0.75


def test_nll_hand_computed():
    samples = torch.tensor([[[0.8, 0.2], [0.5, 0.5]], [[0.4, 0.6], [0.1, 0.9]]])
    expected = -(math.log(0.6) + math.log(0.7)) / 2  # mean probs 0.6 and 0.7
    assert negative_log_likelihood(samples, torch.tensor([0, 1])).item() == pytest.approx(
        expected
    )


def test_nll_of_logits_equals_nll_of_probabilities():
    logits = torch.randn(6, 20, 4, dtype=torch.float64)
    targets = torch.randint(0, 4, (20,))
    by_logits = negative_log_likelihood(logits, targets, "logits")
    assert torch.allclose(by_logits, negative_log_likelihood(logits.softmax(-1), targets))


def test_nll_of_one_sample_is_the_cross_entropy():
    logits, targets = torch.randn(1, 20, 4), torch.randint(0, 4, (20,))
    expected = torch.nn.functional.cross_entropy(logits[0], targets)
    assert torch.allclose(negative_log_likelihood(logits, targets, "logits"), expected)


def test_nll_from_logits_is_stable():
    # each sample is certain and they disagree: the mixture gives 1/2 to both classes
    logits = torch.tensor([[[0.0, -1000.0]], [[-1000.0, 0.0]]])
    assert negative_log_likelihood(logits, torch.tensor([1]), "logits").item() == (
        pytest.approx(math.log(2))
    )
    # a confidently wrong prediction: the probability underflows, its log does not
    wrong = torch.tensor([[[500.0, 0.0]]])
    assert negative_log_likelihood(wrong, torch.tensor([1]), "logits").item() == 500.0


def test_nll_is_differentiable():
    logits = torch.randn(4, 5, 3, requires_grad=True)
    negative_log_likelihood(logits, torch.randint(0, 3, (5,)), "logits").backward()
    assert torch.isfinite(logits.grad).all()


def test_brier_score_hand_computed():
    # (0.2² + 0.2²) twice, (0.4² + 0.4²) once, (0.6² + 0.6²) once, over 4 examples
    expected = (0.08 + 0.08 + 0.32 + 0.72) / 4
    assert brier_score(TINY, TINY_TARGETS).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("probs", "expected"), [([[[1.0, 0.0]]], 0.0), ([[[0.0, 1.0]]], 2.0)]
)
def test_brier_score_range(probs, expected):
    assert brier_score(torch.tensor(probs), torch.tensor([0])).item() == expected


def test_calibration_bins_hand_computed():
    bins = calibration_bins(TINY, TINY_TARGETS, n_bins=5)
    assert torch.allclose(bins.edges, torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    # bins are (lower, upper]: 0.6 lies in (0.4, 0.6], 0.8 in (0.6, 0.8]
    assert bins.counts.tolist() == [0, 0, 2, 2, 0]
    assert torch.allclose(bins.confidence[2:4], torch.tensor([0.6, 0.8]))
    assert torch.allclose(bins.accuracy[2:4], torch.tensor([0.5, 1.0]))
    assert (
        bins.confidence[[0, 1, 4]].isnan().all() and bins.accuracy[[0, 1, 4]].isnan().all()
    )


def test_full_confidence_falls_in_the_last_bin():
    bins = calibration_bins(torch.tensor([[[1.0, 0.0]]]), torch.tensor([0]), n_bins=3)
    assert bins.counts.tolist() == [0, 0, 1]


def test_ece_and_mce_hand_computed():
    # bin (0.4, 0.6]: |0.5 - 0.6| = 0.1, weight 1/2; bin (0.6, 0.8]: |1 - 0.8| = 0.2
    assert expected_calibration_error(TINY, TINY_TARGETS, n_bins=5).item() == (
        pytest.approx(0.15)
    )
    assert maximum_calibration_error(TINY, TINY_TARGETS, n_bins=5).item() == (
        pytest.approx(0.2)
    )


def test_one_bin_ece_is_the_gap_of_the_averages():
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.7|
    assert expected_calibration_error(TINY, TINY_TARGETS, n_bins=1).item() == (
        pytest.approx(0.05)
    )


def test_ece_of_logits_equals_ece_of_probabilities():
    logits, targets = torch.randn(5, 300, 4), torch.randint(0, 4, (300,))
    assert torch.allclose(
        expected_calibration_error(logits, targets, input_type="logits"),
        expected_calibration_error(logits.softmax(-1), targets),
    )


def _ece_tolerance(confidence, n_bins=15, z=4.0):
    """``z`` times the sum of the bins' weighted standard errors.

    For a calibrated predictor each bin's gap is approximately N(0, v_b) with
    v_b = sum_i c_i (1 - c_i) / n_b², so ECE = sum_b (n_b / N) sqrt(v_b) |Z_b| is at
    most max_b |Z_b| * sum_b (n_b / N) sqrt(v_b); with 15 bins the chance that some
    |Z_b| > 4 is below 15 * 6.3e-5 ≈ 1e-3.
    """
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    variance_sum = torch.zeros(n_bins, dtype=confidence.dtype).index_add(
        0, index, confidence * (1 - confidence)
    )
    counts = torch.bincount(index, minlength=n_bins).clamp_min(1).to(confidence.dtype)
    weighted_se = (counts / len(confidence)) * variance_sum.sqrt() / counts
    return z * weighted_se.sum().item()


def test_ece_of_a_calibrated_predictor_is_near_zero():
    n = 20_000
    confidence = 0.5 + 0.5 * torch.rand(n, dtype=torch.float64)
    correct = torch.bernoulli(confidence).bool()
    tolerance = _ece_tolerance(confidence)
    assert tolerance < 0.05  # the test can tell a 0.1 miscalibration apart
    assert expected_calibration_error(*_binary(confidence, correct)).item() < tolerance
    # the same test rejects a predictor that is overconfident by 0.1
    overconfident = torch.bernoulli(confidence - 0.1).bool()
    assert (
        expected_calibration_error(*_binary(confidence, overconfident)).item() > tolerance
    )


def test_mce_is_at_least_ece():
    logits, targets = torch.randn(5, 300, 4), torch.randint(0, 4, (300,))
    ece = expected_calibration_error(logits, targets, input_type="logits")
    assert maximum_calibration_error(logits, targets, input_type="logits") >= ece


# -------------------------------------------------------------------- regression
def test_rmse_hand_computed_and_scaled():
    means = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # predictive mean [2, 2]
    targets = torch.tensor([2.0, 4.0])
    assert rmse(means, targets).item() == pytest.approx(math.sqrt(2))
    assert rmse(means, targets, y_scale=3.0).item() == pytest.approx(3 * math.sqrt(2))
    per_output = rmse(means, targets, y_scale=torch.tensor([5.0, 1.0]))
    assert per_output.item() == pytest.approx(math.sqrt((0 + 4) / 2))


def _mixture_log_prob(means, stds, targets):
    means, stds = torch.broadcast_tensors(means, stds)
    weights = torch.ones(*means.shape[1:], means.shape[0], dtype=means.dtype)
    components = Normal(means.movedim(0, -1), stds.movedim(0, -1))
    return MixtureSameFamily(Categorical(weights), components).log_prob(targets)


@pytest.mark.parametrize(
    "stds",
    [
        0.7,
        torch.rand(12, dtype=torch.float64) + 0.2,
        torch.rand(9, 12, dtype=torch.float64) + 0.2,
    ],
    ids=["homoscedastic", "per-point", "heteroscedastic"],
)
def test_mixture_log_likelihood_matches_torch_distributions(stds):
    means = torch.randn(9, 12, dtype=torch.float64)
    targets = torch.randn(12, dtype=torch.float64)
    expected = _mixture_log_prob(means, torch.as_tensor(stds).double(), targets).mean()
    assert torch.allclose(gaussian_mixture_log_likelihood(means, stds, targets), expected)


def test_mixture_log_likelihood_on_the_original_scale():
    means, targets = torch.randn(9, 12, 2), torch.randn(12, 2)
    standardised = gaussian_mixture_log_likelihood(means, 0.5, targets)
    scaled = gaussian_mixture_log_likelihood(means, 0.5, targets, y_scale=4.0)
    assert scaled.item() == pytest.approx(standardised.item() - math.log(4.0))
    # equals the log density of the unstandardised mixture at unstandardised targets
    shift, scale = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.5])
    original = _mixture_log_prob(
        means * scale + shift, 0.5 * scale, targets * scale + shift
    )
    per_output = gaussian_mixture_log_likelihood(means, 0.5, targets, y_scale=scale)
    assert per_output.item() == pytest.approx(original.mean().item(), rel=1e-5)


def test_mixture_log_likelihood_is_stable_far_away():
    ll = gaussian_mixture_log_likelihood(torch.zeros(3, 1), 1.0, torch.tensor([100.0]))
    assert ll.item() == pytest.approx(-0.5 * 100.0**2 - 0.5 * math.log(2 * math.pi))


def test_interval_coverage_hand_computed():
    lower, upper = torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 1.0])
    targets = torch.tensor([0.0, 0.5, 1.0, 1.5])  # ends count as inside
    assert interval_coverage(lower, upper, targets).item() == 0.75


@pytest.mark.parametrize("method", ["mixture", "gaussian"])
def test_coverage_of_gaussian_samples_is_nominal(method):
    n, level = 20_000, 0.9
    means = torch.randn(1, n) * 3
    lower, upper = credible_interval(means, 0.5, level, method=method)
    targets = means[0] + 0.5 * torch.randn(n)
    # binomial standard error; |z| > 4 has probability 6e-5
    tolerance = 4 * math.sqrt(level * (1 - level) / n)
    assert interval_coverage(lower, upper, targets).item() == pytest.approx(
        level, abs=tolerance
    )


def test_coverage_of_mixture_samples_is_nominal():
    n, s, level = 20_000, 4, 0.8
    means = torch.randn(s, n)
    stds = 0.2 + torch.rand(s, n)
    component = torch.randint(0, s, (n,))  # targets drawn from the mixture itself
    pick = component.unsqueeze(0)
    targets = (means.gather(0, pick) + stds.gather(0, pick) * torch.randn(1, n))[0]
    lower, upper = credible_interval(means, stds, level)
    tolerance = 4 * math.sqrt(level * (1 - level) / n)
    assert interval_coverage(lower, upper, targets).item() == pytest.approx(
        level, abs=tolerance
    )


# ----------------------------------------------------------------------- ranking
def _auroc_by_pairs(scores, labels):
    pos = [s for s, y in zip(scores.tolist(), labels.tolist()) if y]
    neg = [s for s, y in zip(scores.tolist(), labels.tolist()) if not y]
    wins = sum(
        1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)
    )
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pairwise_count_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (60,), generator=generator)
    scores = torch.randint(0, 5, (60,), generator=generator).double() + labels * 0.5
    assert auroc(scores, labels).item() == pytest.approx(_auroc_by_pairs(scores, labels))


def test_auroc_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    labels = torch.randint(0, 2, (500,))
    scores = torch.randn(500).round(decimals=1) + labels
    expected = sklearn_metrics.roc_auc_score(labels.numpy(), scores.numpy())
    assert auroc(scores, labels).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [([0.1, 0.2, 0.8, 0.9], 1.0), ([0.9, 0.8, 0.2, 0.1], 0.0), ([0.5, 0.5, 0.5, 0.5], 0.5)],
    ids=["separated", "reversed", "identical"],
)
def test_auroc_known_cases(scores, expected):
    labels = torch.tensor([False, False, True, True])
    assert auroc(torch.tensor(scores), labels).item() == expected


def test_misclassification_auroc_treats_errors_as_positives():
    score = torch.tensor([0.1, 0.2, 0.9, 0.7])
    correct = torch.tensor([True, True, False, False])
    assert misclassification_auroc(score, correct).item() == 1.0
    assert misclassification_auroc(-score, correct).item() == 0.0
    assert misclassification_auroc(score, correct.long()).item() == 1.0


def test_ood_auroc_treats_out_of_distribution_as_positives():
    score_in, score_out = torch.rand(30), torch.rand(20) + 0.5
    labels = torch.cat([torch.zeros(30), torch.ones(20)])
    expected = auroc(torch.cat([score_in, score_out]), labels)
    assert ood_auroc(score_in, score_out) == expected
    assert ood_auroc(score_out, score_in) == pytest.approx(1 - expected.item())


# -------------------------------------------------------------- VIReturn inputs
def test_metrics_accept_a_vireturn():
    output = VILinear(4, 3)(torch.randn(8, 4), samples=5)
    targets = torch.randint(0, 3, (8,))
    for metric in (accuracy, negative_log_likelihood, brier_score):
        result = metric(output, targets, "logits")
        assert type(result) is torch.Tensor and result.shape == ()
    assert type(rmse(output, torch.randn(8, 3))) is torch.Tensor


# ------------------------------------------------------------------ bad inputs
def test_targets_must_match_the_samples():
    with pytest.raises(
        ShapeError,
        match=(
            r"accuracy: targets of shape \(7,\) do not match samples of shape "
            r"\(5, 8, 3\); expected targets of shape \(8,\)"
        ),
    ):
        accuracy(torch.randn(5, 8, 3), torch.zeros(7, dtype=torch.long), "logits")


def test_a_missing_sample_dimension_is_named():
    with pytest.raises(
        ShapeError,
        match=r"without the leading sample dimension S \(use samples\.unsqueeze\(0\)\)",
    ):
        brier_score(torch.randn(8, 3).softmax(-1), torch.zeros(8, dtype=torch.long))
    with pytest.raises(
        ShapeError, match=r"rmse: targets of shape \(8,\) .* \(use means\.unsqueeze\(0\)\)"
    ):
        rmse(torch.randn(8), torch.randn(8))


def test_targets_must_be_integers():
    with pytest.raises(
        UncertaintyInputError,
        match=(
            r"negative_log_likelihood: targets must hold integer class indices, "
            r"got dtype torch\.float32"
        ),
    ):
        negative_log_likelihood(torch.randn(2, 4, 3), torch.zeros(4), "logits")


@pytest.mark.parametrize("bad", [-1, 3])
def test_targets_must_be_in_class_range(bad):
    targets = torch.tensor([0, 1, bad])
    with pytest.raises(
        UncertaintyInputError,
        match=(
            r"expected_calibration_error: targets must be class indices in \[0, 2\], "
            rf"found values in \[{min(bad, 0)}, {max(bad, 1)}\]"
        ),
    ):
        expected_calibration_error(torch.randn(2, 3, 3), targets, input_type="logits")


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
@pytest.mark.parametrize(
    "metric", [calibration_bins, expected_calibration_error, maximum_calibration_error]
)
def test_n_bins_must_be_a_positive_integer(metric, n_bins):
    with pytest.raises(
        UncertaintyInputError,
        match=rf"{metric.__name__}: n_bins must be an integer >= 1, got {n_bins!r}",
    ):
        metric(TINY, TINY_TARGETS, n_bins=n_bins)


def test_probabilities_are_validated():
    with pytest.raises(
        UncertaintyInputError,
        match="brier_score: samples with input_type='probs' must sum to one",
    ):
        brier_score(torch.tensor([[[0.5, 0.6]]]), torch.tensor([0]))


def test_mixture_log_likelihood_needs_positive_stds():
    with pytest.raises(
        UncertaintyInputError, match="gaussian_mixture_log_likelihood: stds is required"
    ):
        gaussian_mixture_log_likelihood(torch.zeros(3, 2), None, torch.zeros(2))
    with pytest.raises(
        UncertaintyInputError,
        match="gaussian_mixture_log_likelihood: stds must be positive, found minimum 0",
    ):
        gaussian_mixture_log_likelihood(
            torch.zeros(3, 2), torch.tensor([1.0, 0.0]), torch.zeros(2)
        )


def test_y_scale_is_validated():
    with pytest.raises(
        UncertaintyInputError, match="rmse: y_scale must be positive, found minimum -1"
    ):
        rmse(torch.zeros(3, 2), torch.zeros(2), y_scale=-1.0)
    with pytest.raises(
        ShapeError,
        match=(
            r"gaussian_mixture_log_likelihood: y_scale of shape \(3,\) cannot be "
            r"broadcast to targets of shape \(2,\)"
        ),
    ):
        gaussian_mixture_log_likelihood(
            torch.zeros(3, 2), 1.0, torch.zeros(2), y_scale=torch.ones(3)
        )


def test_interval_coverage_is_validated():
    with pytest.raises(
        ShapeError,
        match=(
            r"interval_coverage: lower, upper and targets must have the same shape, "
            r"got \(3,\), \(3,\) and \(4,\)"
        ),
    ):
        interval_coverage(torch.zeros(3), torch.ones(3), torch.zeros(4))
    with pytest.raises(
        UncertaintyInputError, match="interval_coverage: lower must not exceed upper"
    ):
        interval_coverage(torch.ones(3), torch.zeros(3), torch.zeros(3))


def test_auroc_is_validated():
    with pytest.raises(
        UncertaintyInputError,
        match=(
            "auroc: needs at least one positive and one negative example, "
            "got 3 positive and 0 negative"
        ),
    ):
        auroc(torch.rand(3), torch.ones(3))
    with pytest.raises(
        UncertaintyInputError, match="auroc: labels must be booleans or 0/1 values"
    ):
        auroc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(
        ShapeError,
        match=(
            r"auroc: scores of shape \(3,\) and labels of shape \(4,\) must have "
            r"the same shape"
        ),
    ):
        auroc(torch.rand(3), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(UncertaintyInputError, match="auroc: scores contain NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))


def test_auroc_helpers_are_validated():
    with pytest.raises(
        UncertaintyInputError,
        match="misclassification_auroc: correct must be booleans or 0/1 values",
    ):
        misclassification_auroc(torch.rand(3), torch.tensor([0.5, 1.0, 0.0]))
    with pytest.raises(
        UncertaintyInputError, match="misclassification_auroc: needs at least one positive"
    ):
        misclassification_auroc(torch.rand(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(
        UncertaintyInputError,
        match="ood_auroc: score_in and score_out must not be empty, got 3 and 0 elements",
    ):
        ood_auroc(torch.rand(3), torch.zeros(0))


def test_interval_coverage_with_nan_is_nan():
    # NaN bounds counted as misses (coverage 0.0); a NaN makes the result NaN.
    inside = torch.tensor([0.0, 1.0])
    assert interval_coverage(-inside - 1, inside + 1, inside).item() == 1.0
    nan = torch.tensor([math.nan, 1.0])
    assert torch.isnan(interval_coverage(nan - 1, nan + 1, inside))
    assert torch.isnan(interval_coverage(-inside - 1, inside + 1, nan))
