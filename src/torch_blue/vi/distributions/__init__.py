"""Distributions in their roles: priors, variational and predictive distributions."""

from .base import Distribution, PredictiveDistribution, Prior, VariationalDistribution
from .categorical import Categorical
from .kl import has_closed_form_kl, kl_divergence, register_kl
from .non_bayesian import NonBayesian, UniformPrior
from .normal import MeanFieldNormal, Normal
from .quiet import BasicQuietPrior
from .student_t import MeanFieldStudentT, StudentT

__all__ = [
    "BasicQuietPrior",
    "Categorical",
    "Distribution",
    "MeanFieldNormal",
    "MeanFieldStudentT",
    "NonBayesian",
    "Normal",
    "PredictiveDistribution",
    "Prior",
    "StudentT",
    "UniformPrior",
    "VariationalDistribution",
    "has_closed_form_kl",
    "kl_divergence",
    "register_kl",
]
