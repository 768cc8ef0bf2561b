"""Uncertainty of Monte-Carlo predictions: summaries, metrics and plots.

Works on any tensor of samples with a leading sample dimension ``(S, ...)``, e.g.
the :class:`~torch_blue.vi.VIReturn` of a Bayesian model, stacked MC-dropout passes
or the members of an ensemble, and returns plain tensors.

* :mod:`~torch_blue.uncertainty.summaries`: predictive probabilities, means and
  standard deviations, entropy and variance decompositions into aleatoric and
  epistemic parts, credible intervals.
* :mod:`~torch_blue.uncertainty.metrics`: accuracy, NLL, Brier score, calibration
  errors, RMSE, Gaussian-mixture log-likelihood, interval coverage, AUROC.
* :mod:`~torch_blue.uncertainty.plots`: reliability diagram, regression bands and
  uncertainty histograms (needs matplotlib).
"""

from . import metrics, plots, summaries
from .metrics import (
    CalibrationBins,
    accuracy,
    auroc,
    brier_score,
    calibration_bins,
    expected_calibration_error,
    gaussian_mixture_log_likelihood,
    interval_coverage,
    maximum_calibration_error,
    misclassification_auroc,
    negative_log_likelihood,
    ood_auroc,
    rmse,
)
from .plots import regression_band_plot, reliability_diagram, uncertainty_histogram
from .summaries import (
    CredibleInterval,
    EntropyDecomposition,
    UncertaintyInputError,
    VarianceDecomposition,
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

__all__ = [
    # summaries
    "UncertaintyInputError",
    "EntropyDecomposition",
    "VarianceDecomposition",
    "CredibleInterval",
    "predictive_probs",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "entropy_decomposition",
    "variation_ratio",
    "classification_variance_decomposition",
    "confidence_score",
    "predictive_mean",
    "predictive_std",
    "regression_variance_decomposition",
    "mixture_quantile",
    "credible_interval",
    # metrics
    "CalibrationBins",
    "accuracy",
    "negative_log_likelihood",
    "brier_score",
    "calibration_bins",
    "expected_calibration_error",
    "maximum_calibration_error",
    "rmse",
    "gaussian_mixture_log_likelihood",
    "interval_coverage",
    "auroc",
    "misclassification_auroc",
    "ood_auroc",
    # plots
    "reliability_diagram",
    "regression_band_plot",
    "uncertainty_histogram",
    # modules
    "metrics",
    "plots",
    "summaries",
]
