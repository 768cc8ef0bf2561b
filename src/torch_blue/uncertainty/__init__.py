"""Uncertainty of Monte-Carlo predictions: summaries, metrics, plots and baselines.

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
* :mod:`~torch_blue.uncertainty.baselines`: the non-Bayesian baselines
  :class:`~torch_blue.uncertainty.baselines.MCDropout` and
  :class:`~torch_blue.uncertainty.baselines.DeepEnsemble`, which return their
  passes or members as samples ``(S, ...)``.
"""

from . import baselines, metrics, plots, summaries
from .baselines import *  # noqa: F403
from .metrics import *  # noqa: F403
from .plots import *  # noqa: F403
from .summaries import *  # noqa: F403

__all__ = ["baselines", "metrics", "plots", "summaries"]
__all__ += summaries.__all__
__all__ += metrics.__all__
__all__ += plots.__all__
__all__ += baselines.__all__
