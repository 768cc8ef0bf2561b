import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi.distributions import (
    MeanFieldNormal,
    StudentT,
    StudentTPrior,
    has_closed_form_kl,
)
from torch_blue.vi.utils import norm_constants


def test_is_not_the_variational_alias():
    assert StudentTPrior is not StudentT


@pytest.mark.parametrize(
    ("df", "loc", "scale"), [(1.0, 0.0, 1.0), (3.0, 0.5, 0.2), (30.0, -1.0, 2.0)]
)
def test_log_prob_matches_torch(df, loc, scale):
    sample = 3 * torch.randn(6, 4)
    expected = td.StudentT(df, loc, scale).log_prob(sample)
    actual = StudentTPrior(df, loc, scale).prior_log_prob(sample)
    torch.testing.assert_close(actual, expected)


def test_norm_constants_drop_the_terms_of_df():
    df = 4.0
    prior = StudentTPrior(degrees_of_freedom=df, scale=0.5)
    sample = torch.randn(10)
    with_constants = prior.prior_log_prob(sample)
    with norm_constants(False):
        without = prior.prior_log_prob(sample)
    constant = (
        math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    )
    torch.testing.assert_close(without, with_constants - constant)


def test_log_prob_gradcheck():
    sample = torch.randn(6, dtype=torch.float64, requires_grad=True)
    loc = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    prior = StudentTPrior(degrees_of_freedom=2.5)
    assert torch.autograd.gradcheck(
        lambda w, m, s: prior.log_prob(w, (m, s)), (sample, loc, log_scale)
    )


def test_kaiming_rescale_keeps_df():
    prior = StudentTPrior(degrees_of_freedom=3.0, loc=0.0, scale=1.0)
    prior.kaiming_rescale(3)  # factor 1/3
    assert prior.degrees_of_freedom == 3.0
    assert math.exp(float(prior.log_scale)) == pytest.approx(1 / 3 + 1e-5, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"degrees_of_freedom": 0.0},
            r"StudentTPrior: degrees_of_freedom must be positive and finite, got 0.0",
        ),
        (
            {"degrees_of_freedom": -1.0},
            r"StudentTPrior: degrees_of_freedom must be positive and finite, got -1.0",
        ),
        ({"scale": 0.0}, r"StudentTPrior: scale must be positive and finite, got 0.0"),
        ({"loc": math.inf}, r"StudentTPrior: loc must be finite, got inf"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudentTPrior(**kwargs)


def test_no_closed_form_kl():
    assert not has_closed_form_kl(StudentTPrior(), MeanFieldNormal())


def test_the_released_keyword_df_still_works_and_warns():
    with pytest.warns(DeprecationWarning, match="use degrees_of_freedom"):
        prior = StudentTPrior(df=5.0)
    assert prior.degrees_of_freedom == 5.0 and prior.df == 5.0
