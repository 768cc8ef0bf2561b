r"""Schedules of the KL weight (``heat``) of the losses, stepped like LR schedulers.

Both losses, :class:`~torch_blue.vi.KullbackLeiblerLoss` and
:class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss`, compute per optimisation step

.. math::
    \mathcal L = N\,\mathrm{mean}_b\,\mathrm{NLL}_b + \mathrm{heat}\cdot
    \mathrm{KL}(q\,\|\,p),

the full-data negative ELBO estimated from one minibatch. A schedule changes the
loss's ``heat`` attribute from step to step, in the style of
:mod:`torch.optim.lr_scheduler`: build it with the loss, call :meth:`~KLSchedule.step`
once after every optimiser step, and save :meth:`~KLSchedule.state_dict` with the
checkpoint so that training resumes on the same schedule.

How a schedule composes with your ``heat``
    The heat the loss has when the schedule is built is the *base heat*
    :math:`\lambda` (default 1). The schedule then sets ``loss.heat = base_heat *
    factor(step)``, where ``factor`` is the schedule's shape (0 to 1 for the
    annealing schedules). To change the base heat later, set
    ``schedule.base_heat``; a value written to ``loss.heat`` directly is overwritten
    at the next step.

Tempered and "cold" posteriors (no class needed)
    A constant base heat :math:`\lambda \ne 1` is all a tempered posterior needs:
    ``KullbackLeiblerLoss(Categorical(), N, heat=0.1)``. The loss is then
    :math:`\lambda\,\mathrm{KL}(q\,\|\,p_\lambda)` up to a constant, with
    :math:`p_\lambda(w) \propto p(\mathcal D \mid w)^{1/\lambda}\, p(w)`: the
    likelihood counted :math:`1/\lambda` times. :math:`\lambda < 1` is a "cold"
    posterior in the sense of Wenzel et al. (2020), who temper the prior as well,
    :math:`(p(\mathcal D \mid w)\,p(w))^{1/T}`. For a Normal prior
    :math:`\mathcal N(0, s^2)` that is the same target as ``heat = T`` with the
    prior standard deviation :math:`s\sqrt T`. A schedule multiplies the base heat,
    so a warm-up towards a cold posterior is ``LinearKLWarmup(loss, n)`` on a loss
    built with ``heat=0.1``.

Order of calls, as for learning rates: the loss of the first optimisation step uses
``factor(0)``; after ``k`` calls of :meth:`~KLSchedule.step` the loss uses
``factor(k)``.

.. code-block:: python

    from torch_blue.vi.schedules import LinearKLWarmup

    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(train_set))
    schedule = LinearKLWarmup(loss_fn, warmup_steps=10 * len(loader))
    for epoch in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x, samples=4), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()

References
----------
Bowman et al. (2016), "Generating sentences from a continuous space"; Sønderby et
al. (2016), "Ladder variational autoencoders"; Fu et al. (2019), "Cyclical annealing
schedule: a simple approach to mitigating KL vanishing"; Blundell et al. (2015),
"Weight uncertainty in neural networks"; Wenzel et al. (2020), "How good is the Bayes
posterior in deep neural networks really?".
"""

import math
from collections.abc import Mapping
from typing import Any

from .utils.checks import check_weight

__all__ = [
    "BlundellMinibatchWeighting",
    "CyclicalKLAnnealing",
    "KLSchedule",
    "LinearKLWarmup",
]


def _check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be at least {minimum}, got {value!r}")
    return int(value)


def _check_number(
    owner: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    low_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{owner}: {name} must lie in {interval}, got {value!r}")
    return value


class KLSchedule:
    r"""Base class of the KL-weight schedules.

    A subclass lists its hyperparameters in ``_hyperparameters`` (they are stored as
    attributes and saved by :meth:`state_dict`), validates them in
    :meth:`_validate` and implements :meth:`factor`.

    Parameters
    ----------
    loss : KullbackLeiblerLoss or AnalyticalKullbackLeiblerLoss
        The loss whose ``heat`` to drive (any object with a numeric ``heat``
        attribute). Its current heat becomes the :attr:`base_heat`.

    Attributes
    ----------
    loss
        The driven loss.
    last_step : int
        Number of :meth:`step` calls so far; the loss uses ``factor(last_step)``.
    """

    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, loss: Any) -> None:
        owner = type(self).__name__
        if not hasattr(loss, "heat"):
            raise TypeError(
                f"{owner}: loss must be a KullbackLeiblerLoss or "
                "AnalyticalKullbackLeiblerLoss (an object with a 'heat' attribute), got "
                f"{type(loss).__name__}"
            )
        self.loss = loss
        self._base_heat = check_weight(owner, "the loss's heat", loss.heat)
        self.last_step = 0
        self._apply()

    # -------------------------------------------------------------- subclass hooks
    def factor(self, step: int) -> float:
        """The factor of the base heat at optimisation step ``step`` (0-based)."""
        raise NotImplementedError(f"{type(self).__name__} does not define factor")

    def _validate(self, **hyperparameters: Any) -> dict[str, Any]:
        """Check the hyperparameters; return them normalised."""
        return hyperparameters

    # -------------------------------------------------------------- public API
    @property
    def base_heat(self) -> float:
        """The heat the schedule multiplies (the loss's heat at construction)."""
        return self._base_heat

    @base_heat.setter
    def base_heat(self, value: float) -> None:
        self._base_heat = check_weight(type(self).__name__, "base_heat", value)
        self._apply()

    def step(self) -> None:
        """Advance by one optimisation step and update the loss's ``heat``."""
        self.last_step += 1
        self._apply()

    def get_last_factor(self) -> float:
        """The factor the loss's heat has now, ``factor(last_step)``."""
        return self.factor(self.last_step)

    def get_last_heat(self) -> float:
        """The heat the loss has now, ``base_heat * factor(last_step)``."""
        return self._base_heat * self.get_last_factor()

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (plain Python numbers; the loss is not included).

        Loads with ``torch.load(..., weights_only=True)``.
        """
        state = {name: getattr(self, name) for name in self._hyperparameters}
        state["base_heat"] = self._base_heat
        state["last_step"] = self.last_step
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and set the loss's heat to match.

        As in :mod:`torch.optim.lr_scheduler`, the saved hyperparameters replace
        those given to the constructor.
        """
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{owner}: state_dict must be a mapping, got {type(state_dict).__name__}"
            )
        expected = {*self._hyperparameters, "base_heat", "last_step"}
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise KeyError(
                f"{owner}: state_dict does not fit this schedule: missing keys "
                f"{missing}, unexpected keys {unexpected}"
            )
        values = self._validate(**{k: state_dict[k] for k in self._hyperparameters})
        base_heat = check_weight(owner, "base_heat", state_dict["base_heat"])
        last_step = _check_int(owner, "last_step", state_dict["last_step"], 0)
        for name, value in values.items():
            setattr(self, name, value)
        self._base_heat = base_heat
        self.last_step = last_step
        self._apply()

    def _apply(self) -> None:
        self.loss.heat = self.get_last_heat()

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyperparameters)
        return (
            f"{type(self).__name__}({arguments}, base_heat={self._base_heat:g}, "
            f"last_step={self.last_step})"
        )


class LinearKLWarmup(KLSchedule):
    r"""KL annealing: the factor rises linearly from ``start`` to 1, then stays at 1.

    .. math::
        \mathrm{factor}(t) = \mathrm{start} + (1 - \mathrm{start})
        \min\!\left(\frac{t}{\mathrm{warmup\_steps}},\, 1\right)

    Training first fits the data and only gradually pays the full price of the KL
    term, which keeps a Bayesian network from collapsing onto its prior early on
    (Bowman et al. 2016; Sønderby et al. 2016).

    Parameters
    ----------
    loss : KullbackLeiblerLoss or AnalyticalKullbackLeiblerLoss
        The loss to drive; its heat is the base heat.
    warmup_steps : int
        Optimisation steps until the factor reaches 1 (positive).
    start : float, default: 0.0
        Factor at step 0, in ``[0, 1]``.

    Examples
    --------
    >>> from torch_blue.vi import KullbackLeiblerLoss
    >>> from torch_blue.vi.distributions import Categorical
    >>> loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=100)
    >>> schedule = LinearKLWarmup(loss_fn, warmup_steps=4)
    >>> heats = [loss_fn.heat]
    >>> for _ in range(5):
    ...     schedule.step()
    ...     heats.append(loss_fn.heat)
    >>> heats
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    _hyperparameters = ("warmup_steps", "start")

    def __init__(self, loss: Any, warmup_steps: int, start: float = 0.0) -> None:
        values = self._validate(warmup_steps=warmup_steps, start=start)
        self.warmup_steps: int = values["warmup_steps"]
        self.start: float = values["start"]
        super().__init__(loss)

    def _validate(self, **hyperparameters: Any) -> dict[str, Any]:
        owner = type(self).__name__
        return {
            "warmup_steps": _check_int(
                owner, "warmup_steps", hyperparameters["warmup_steps"], 1
            ),
            "start": _check_number(owner, "start", hyperparameters["start"], 0.0, 1.0),
        }

    def factor(self, step: int) -> float:
        """``start + (1 - start) * min(step / warmup_steps, 1)``."""
        progress = min(step / self.warmup_steps, 1.0)
        return self.start + (1.0 - self.start) * progress


class CyclicalKLAnnealing(KLSchedule):
    r"""Cyclical KL annealing (Fu et al. 2019): repeated linear warm-ups.

    ``total_steps`` are split into ``cycles`` equal cycles. Within a cycle, at
    position :math:`\tau \in [0, 1)`, the factor rises linearly over the first
    ``ratio`` of the cycle and then stays at 1:

    .. math::
        \tau(t) = \frac{(t \cdot \mathrm{cycles}) \bmod \mathrm{total\_steps}}
        {\mathrm{total\_steps}}, \qquad
        \mathrm{factor}(t) = \mathrm{start} + (1 - \mathrm{start})
        \min\!\left(\frac{\tau}{\mathrm{ratio}},\, 1\right).

    From step ``total_steps`` on the factor stays at 1. Fu et al. use 4 cycles and
    ratio 0.5 (the defaults here).

    Parameters
    ----------
    loss : KullbackLeiblerLoss or AnalyticalKullbackLeiblerLoss
        The loss to drive; its heat is the base heat.
    total_steps : int
        Optimisation steps covered by the cycles (positive).
    cycles : int, default: 4
        Number of cycles, between 1 and ``total_steps``.
    ratio : float, default: 0.5
        Fraction of each cycle spent increasing the factor, in ``(0, 1]``.
    start : float, default: 0.0
        Factor at the start of each cycle, in ``[0, 1]``.

    Examples
    --------
    >>> from torch_blue.vi import KullbackLeiblerLoss
    >>> from torch_blue.vi.distributions import Categorical
    >>> loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=100)
    >>> schedule = CyclicalKLAnnealing(loss_fn, total_steps=8, cycles=2, ratio=0.5)
    >>> [schedule.factor(t) for t in range(10)]
    [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    """

    _hyperparameters = ("total_steps", "cycles", "ratio", "start")

    def __init__(
        self,
        loss: Any,
        total_steps: int,
        cycles: int = 4,
        ratio: float = 0.5,
        start: float = 0.0,
    ) -> None:
        values = self._validate(
            total_steps=total_steps, cycles=cycles, ratio=ratio, start=start
        )
        self.total_steps: int = values["total_steps"]
        self.cycles: int = values["cycles"]
        self.ratio: float = values["ratio"]
        self.start: float = values["start"]
        super().__init__(loss)

    def _validate(self, **hyperparameters: Any) -> dict[str, Any]:
        owner = type(self).__name__
        total_steps = _check_int(owner, "total_steps", hyperparameters["total_steps"], 1)
        cycles = _check_int(owner, "cycles", hyperparameters["cycles"], 1)
        if cycles > total_steps:
            raise ValueError(
                f"{owner}: cycles ({cycles}) must not exceed total_steps ({total_steps})"
            )
        return {
            "total_steps": total_steps,
            "cycles": cycles,
            "ratio": _check_number(
                owner, "ratio", hyperparameters["ratio"], 0.0, 1.0, low_open=True
            ),
            "start": _check_number(owner, "start", hyperparameters["start"], 0.0, 1.0),
        }

    def factor(self, step: int) -> float:
        """The factor at ``step``: see the class docstring."""
        if step >= self.total_steps:
            return 1.0
        # Integer arithmetic: the position in the cycle is exact.
        position = (step * self.cycles % self.total_steps) / self.total_steps
        return self.start + (1.0 - self.start) * min(position / self.ratio, 1.0)


class BlundellMinibatchWeighting(KLSchedule):
    r"""The minibatch KL weights of Blundell et al. (2015, eq. 9), in our loss scaling.

    Blundell et al. split one epoch into :math:`M` minibatches and give minibatch
    :math:`i = 1, \dots, M` the cost

    .. math::
        F_i = \pi_i\,\mathrm{KL}(q\,\|\,p) + \mathrm{NLL}_i, \qquad
        \pi_i = \frac{2^{M-i}}{2^M - 1}, \qquad \sum_{i=1}^M \pi_i = 1,

    where :math:`\mathrm{NLL}_i` is *summed* over the minibatch, so that
    :math:`\sum_i F_i` is the full-data negative ELBO: early minibatches pay most of
    the KL term, late ones are driven by the data.

    Our losses are scaled differently: with :math:`B = N/M` examples per minibatch
    the data term is :math:`N\,\mathrm{mean}_b\,\mathrm{NLL} = M\,\mathrm{NLL}_i`, so
    the loss of step :math:`i` with KL weight :math:`h_i` is

    .. math::
        \mathcal L_i = M\,\mathrm{NLL}_i + h_i\,\mathrm{KL}
        = M \left(\mathrm{NLL}_i + \frac{h_i}{M}\,\mathrm{KL}\right).

    It is :math:`M F_i` (the same gradient direction, at the per-step scale of our
    losses) exactly when :math:`h_i = M \pi_i`. Then the mean of the losses over an
    epoch, :math:`\frac1M\sum_i \mathcal L_i = \sum_i F_i`, is the full-data
    negative ELBO, as it is with the constant :math:`h = 1`, and
    :math:`\frac1M\sum_i h_i = 1`. This schedule therefore uses

    .. math::
        \mathrm{factor}(t) = M \pi_i = \frac{M\, 2^{-i}}{1 - 2^{-M}}, \qquad
        i = (t \bmod M) + 1,

    computed with :func:`math.ldexp` (exact powers of two; no overflow for any
    :math:`M`, values below the smallest float become 0). The first minibatch of an
    epoch gets :math:`h_1 \approx M/2`, the last :math:`h_M \approx M 2^{-M}`.

    Call :meth:`~KLSchedule.step` exactly once per minibatch, so that the step count
    and the position in the epoch agree (``steps_per_epoch = len(loader)``).

    Parameters
    ----------
    loss : KullbackLeiblerLoss or AnalyticalKullbackLeiblerLoss
        The loss to drive; its heat is the base heat.
    steps_per_epoch : int
        :math:`M`, the number of minibatches per epoch (positive).

    Examples
    --------
    >>> from torch_blue.vi import KullbackLeiblerLoss
    >>> from torch_blue.vi.distributions import Categorical
    >>> loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=300)
    >>> schedule = BlundellMinibatchWeighting(loss_fn, steps_per_epoch=3)
    >>> [round(7 * schedule.factor(t), 10) for t in range(4)]  # 12/7, 6/7, 3/7, ...
    [12.0, 6.0, 3.0, 12.0]
    """

    _hyperparameters = ("steps_per_epoch",)

    def __init__(self, loss: Any, steps_per_epoch: int) -> None:
        values = self._validate(steps_per_epoch=steps_per_epoch)
        self.steps_per_epoch: int = values["steps_per_epoch"]
        super().__init__(loss)

    def _validate(self, **hyperparameters: Any) -> dict[str, Any]:
        owner = type(self).__name__
        return {
            "steps_per_epoch": _check_int(
                owner, "steps_per_epoch", hyperparameters["steps_per_epoch"], 1
            )
        }

    def factor(self, step: int) -> float:
        """``M * 2**-i / (1 - 2**-M)`` with ``i = step % M + 1``."""
        m = self.steps_per_epoch
        i = step % m + 1
        # 1 - 2**-M is exact in double precision up to M = 53 and rounds to 1 above.
        return math.ldexp(float(m), -i) / (1.0 - math.ldexp(1.0, -m))
