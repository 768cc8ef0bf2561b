"""The shared log-densities of vi/functional/densities.py."""

import math

import pytest
import torch

from torch_blue.vi.functional import densities
from torch_blue.vi.utils import norm_constants


def test_constants():
    assert densities.LOG_2PI == pytest.approx(math.log(2 * math.pi))
    assert densities.HALF_LOG_2PI == pytest.approx(0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("nu", [1.0, 3.0, 30.0])
def test_student_t_matches_torch_and_drops_only_the_constant(nu):
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    loc, log_scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.5).double()
    expected = torch.distributions.StudentT(nu, loc, log_scale.exp()).log_prob(x)
    got = densities.student_t_log_density(x, loc, log_scale, nu)
    torch.testing.assert_close(got, expected)
    with norm_constants(False):
        without = densities.student_t_log_density(x, loc, log_scale, nu)
    constant = (
        math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    )
    torch.testing.assert_close(got - without, torch.full_like(x, constant))
