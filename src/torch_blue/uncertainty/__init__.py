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
from .metrics import *  # noqa: F403
from .plots import *  # noqa: F403
from .summaries import *  # noqa: F403

__all__ = ["metrics", "plots", "summaries"]
__all__ += summaries.__all__
__all__ += metrics.__all__
__all__ += plots.__all__
