r"""The library's default distributions, in one place.

Every Bayesian layer, :class:`~torch_blue.vi.VIModule` and
:func:`~torch_blue.vi.convert_to_vimodule` take these as the defaults of their
``variational_distribution`` and ``prior`` arguments (each layer deep-copies them, so
the module-level instances are never changed). Why each is what it is, with the
measurements behind it, is in the documentation page "Defaults" (``docs/defaults.rst``).

* :data:`DEFAULT_VARIATIONAL_DISTRIBUTION`: :class:`MeanFieldNormal` whose scales start
  at ``0.03 / sqrt(fan_in)`` (with the layers' default Kaiming scaling), 3 % of the
  bound of the initial means (about a twentieth of their standard deviation): the
  network starts close to its deterministic twin, and the ELBO widens the scales as far
  as the data allow (0.1 until December 2026).
  ``MeanFieldNormal()`` starts at ``1 / sqrt(fan_in)`` (:ref:`upstream's default
  <migrating-defaults>`): the weight noise is then larger than the signal of the means
  and the network starts as a random function.
* :data:`DEFAULT_PRIOR`: the standard Normal :math:`\mathcal N(0, 1)` per weight.

Examples
--------
>>> from torch_blue.vi import VILinear
>>> from torch_blue.vi.distributions import MeanFieldNormal
>>> VILinear(4, 2).variational_distribution["weight"]
MeanFieldNormal(mean=0, std=0.03)
>>> wide_start = VILinear(4, 2, variational_distribution=MeanFieldNormal())
>>> round(wide_start._weight_log_std.exp().mean().item(), 3)  # 1 / sqrt(4)
0.5
"""

from .normal import MeanFieldNormal

__all__ = ["DEFAULT_PRIOR", "DEFAULT_VARIATIONAL_DISTRIBUTION", "INITIAL_STD"]

#: Initial posterior scale before Kaiming scaling (``std`` of the default
#: variational distribution).
INITIAL_STD = 0.03

#: Default variational distribution of every layer.
DEFAULT_VARIATIONAL_DISTRIBUTION = MeanFieldNormal(std=INITIAL_STD)

#: Default prior of every layer: the standard Normal.
DEFAULT_PRIOR = MeanFieldNormal()
