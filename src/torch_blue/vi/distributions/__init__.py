"""Distributions in their roles: priors, variational and predictive distributions."""

from .base import Distribution, PredictiveDistribution, Prior, VariationalDistribution
from .bernoulli import Bernoulli
from .categorical import Categorical
from .empirical import EmpiricalNormalPrior
from .heteroscedastic_normal import HeteroscedasticNormal
from .horseshoe import HorseshoePrior
from .kl import (
    has_closed_form_kl,
    kl_divergence,
    monte_carlo_kl_divergence,
    monte_carlo_kl_draws,
    register_kl,
)
from .laplace import Laplace, LaplacePrior
from .learned_noise_normal import LearnedNoiseNormal
from .log_uniform import LogUniformPrior
from .non_bayesian import NonBayesian
from .normal import MeanFieldNormal, Normal
from .normal_gamma import KnownMeanNormalGammaPrior, NormalGammaPrior
from .quiet import BasicQuietPrior
from .radial import RadialNormal
from .scale_mixture import ScaleMixtureNormal, ScaleMixtureNormalPrior
from .student_t import MeanFieldStudentT, StudentT
from .student_t_likelihood import StudentTLikelihood
from .student_t_prior import StudentTPrior
from .uniform import UniformPrior

__all__ = [
    "BasicQuietPrior",
    "Bernoulli",
    "Categorical",
    "Distribution",
    "EmpiricalNormalPrior",
    "HeteroscedasticNormal",
    "HorseshoePrior",
    "KnownMeanNormalGammaPrior",
    "Laplace",
    "LaplacePrior",
    "LearnedNoiseNormal",
    "LogUniformPrior",
    "MeanFieldNormal",
    "MeanFieldStudentT",
    "NonBayesian",
    "Normal",
    "NormalGammaPrior",
    "PredictiveDistribution",
    "Prior",
    "RadialNormal",
    "ScaleMixtureNormal",
    "ScaleMixtureNormalPrior",
    "StudentT",
    "StudentTLikelihood",
    "StudentTPrior",
    "UniformPrior",
    "VariationalDistribution",
    "has_closed_form_kl",
    "kl_divergence",
    "monte_carlo_kl_divergence",
    "monte_carlo_kl_draws",
    "register_kl",
]


def __getattr__(name: str) -> object:
    """Deprecated names that moved out of this package (PEP 562)."""
    if name == "moped":
        # MOPED walks a model, so it lives with the conversions; importing it here
        # at load time would tie this package to the modules again.
        import warnings

        from ..convert import moped

        warnings.warn(
            "torch_blue.vi.distributions.moped moved to torch_blue.vi.moped",
            DeprecationWarning,
            stacklevel=2,
        )
        return moped
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
