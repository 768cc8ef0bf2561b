"""Distributions in their roles: priors, variational and predictive distributions."""

from .base import Distribution, PredictiveDistribution, Prior, VariationalDistribution
from .bernoulli import Bernoulli
from .categorical import Categorical
from .heteroscedastic_normal import HeteroscedasticNormal
from .kl import has_closed_form_kl, kl_divergence, register_kl
from .learned_noise_normal import LearnedNoiseNormal
from .non_bayesian import NonBayesian, UniformPrior
from .normal import MeanFieldNormal, Normal
from .quiet import BasicQuietPrior
from .student_t import MeanFieldStudentT, StudentT
from .student_t_likelihood import StudentTLikelihood

__all__ = [
    "BasicQuietPrior",
    "Bernoulli",
    "Categorical",
    "Distribution",
    "HeteroscedasticNormal",
    "LearnedNoiseNormal",
    "MeanFieldNormal",
    "MeanFieldStudentT",
    "NonBayesian",
    "Normal",
    "PredictiveDistribution",
    "Prior",
    "StudentT",
    "StudentTLikelihood",
    "UniformPrior",
    "VariationalDistribution",
    "has_closed_form_kl",
    "kl_divergence",
    "register_kl",
]
