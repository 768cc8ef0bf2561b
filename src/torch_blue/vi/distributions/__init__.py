"""Distributions in their roles: priors, variational and predictive distributions."""

from .base import Distribution, PredictiveDistribution, Prior, VariationalDistribution
from .bernoulli import Bernoulli
from .categorical import Categorical
from .heteroscedastic_normal import HeteroscedasticNormal
from .horseshoe import HorseshoePrior
from .kl import (
    has_closed_form_kl,
    kl_divergence,
    monte_carlo_kl_divergence,
    register_kl,
)
from .laplace import Laplace
from .learned_noise_normal import LearnedNoiseNormal
from .log_uniform import LogUniformPrior
from .moped import EmpiricalNormalPrior, moped
from .non_bayesian import NonBayesian, UniformPrior
from .normal import MeanFieldNormal, Normal
from .normal_gamma import KnownMeanNormalGammaPrior, NormalGammaPrior
from .quiet import BasicQuietPrior
from .radial import RadialNormal
from .scale_mixture import ScaleMixtureNormal
from .student_t import MeanFieldStudentT, StudentT
from .student_t_likelihood import StudentTLikelihood
from .student_t_prior import StudentTPrior

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
    "StudentT",
    "StudentTLikelihood",
    "StudentTPrior",
    "UniformPrior",
    "VariationalDistribution",
    "has_closed_form_kl",
    "kl_divergence",
    "moped",
    "monte_carlo_kl_divergence",
    "register_kl",
]
