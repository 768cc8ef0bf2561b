import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerLoss,
    VILinear,
    VISequential,
)
from torch_blue.vi.distributions import Categorical
from torch_blue.vi.schedules import (
    BlundellMinibatchWeighting,
    CyclicalKLAnnealing,
    KLSchedule,
    LinearKLWarmup,
)


def _loss(heat=1.0):
    return KullbackLeiblerLoss(Categorical(), dataset_size=100, heat=heat)


def _model():
    return VISequential(VILinear(3, 4), nn.ReLU(), VILinear(4, 2))


def _heats(schedule, steps):
    heats = [schedule.loss.heat]
    for _ in range(steps):
        schedule.step()
        heats.append(schedule.loss.heat)
    return heats


# ------------------------------------------------------------------ factors
@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (0.0, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
        (0.2, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]),
        (1.0, [1.0] * 7),
    ],
)
def test_linear_warmup_factors(start, expected):
    schedule = LinearKLWarmup(_loss(), warmup_steps=4, start=start)
    assert _heats(schedule, 6) == pytest.approx(expected)


def test_cyclical_factors_follow_fu_et_al():
    # T = 12, M = 3 cycles of 4 steps, ratio 0.5: tau = (t mod 4) / 4.
    schedule = CyclicalKLAnnealing(_loss(), total_steps=12, cycles=3, ratio=0.5)
    cycle = [0.0, 0.5, 1.0, 1.0]
    assert _heats(schedule, 13) == pytest.approx(cycle * 3 + [1.0, 1.0])


def test_cyclical_with_uneven_cycles_and_start():
    # T = 10, 4 cycles of 2.5 steps, ratio 0.8: tau = (4 t mod 10) / 10.
    schedule = CyclicalKLAnnealing(_loss(), total_steps=10, cycles=4, ratio=0.8, start=0.2)
    taus = [0.0, 0.4, 0.8, 0.2, 0.6, 0.0, 0.4, 0.8, 0.2, 0.6]
    expected = [0.2 + 0.8 * min(tau / 0.8, 1.0) for tau in taus] + [1.0]
    assert _heats(schedule, 10) == pytest.approx(expected)


def test_blundell_weights_hand_computed():
    # M = 3: pi = (4, 2, 1) / 7 and the KL weight per step is M * pi.
    schedule = BlundellMinibatchWeighting(_loss(), steps_per_epoch=3)
    expected = [12 / 7, 6 / 7, 3 / 7] * 2
    assert _heats(schedule, 5) == pytest.approx(expected, rel=1e-15)


def test_blundell_single_minibatch_is_the_plain_elbo():
    schedule = BlundellMinibatchWeighting(_loss(), steps_per_epoch=1)
    assert _heats(schedule, 3) == [1.0] * 4


@pytest.mark.parametrize("steps_per_epoch", [1, 2, 5, 60, 1000, 100_000])
def test_blundell_weights_average_to_one_per_epoch(steps_per_epoch):
    schedule = BlundellMinibatchWeighting(_loss(), steps_per_epoch=steps_per_epoch)
    heats = [schedule.factor(t) for t in range(steps_per_epoch)]
    assert all(math.isfinite(h) and h >= 0 for h in heats)
    assert math.fsum(heats) / steps_per_epoch == pytest.approx(1.0, rel=1e-12)
    if steps_per_epoch > 1:  # pi_i halves from one minibatch to the next
        assert heats[1] == pytest.approx(heats[0] / 2, rel=1e-15)


def test_blundell_large_epochs_do_not_overflow():
    m = 5000
    schedule = BlundellMinibatchWeighting(_loss(), steps_per_epoch=m)
    assert schedule.factor(0) == pytest.approx(m / 2)
    assert schedule.factor(m - 1) == 0.0  # M 2^-M underflows to exactly 0
    assert schedule.factor(m) == pytest.approx(m / 2)


# ------------------------------------------------------------------ composition
@pytest.mark.parametrize(
    "make",
    [
        lambda loss: LinearKLWarmup(loss, warmup_steps=4),
        lambda loss: CyclicalKLAnnealing(loss, total_steps=8, cycles=2),
        lambda loss: BlundellMinibatchWeighting(loss, steps_per_epoch=3),
    ],
)
def test_schedule_multiplies_the_base_heat(make):
    cold = make(_loss(heat=0.1))
    plain = make(_loss(heat=1.0))
    assert cold.base_heat == 0.1
    for _ in range(6):
        assert cold.loss.heat == pytest.approx(0.1 * plain.loss.heat)
        assert cold.get_last_heat() == cold.loss.heat
        assert cold.get_last_factor() == plain.loss.heat
        cold.step()
        plain.step()


def test_setting_base_heat_applies_at_once():
    schedule = LinearKLWarmup(_loss(), warmup_steps=4)
    schedule.step()
    schedule.base_heat = 2
    assert schedule.loss.heat == pytest.approx(0.5)
    with pytest.raises(ValueError, match="base_heat must be finite and non-negative"):
        schedule.base_heat = -1.0


def _batch():
    return torch.randn(8, 3), torch.randint(0, 2, (8,))


@pytest.mark.parametrize("analytical", [False, True])
def test_heat_scales_the_kl_term_of_both_losses(analytical):
    model = _model()
    if analytical:
        loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 100, heat=0.5)
    else:
        loss_fn = KullbackLeiblerLoss(Categorical(), 100, heat=0.5)
    x, y = _batch()
    output = model(x, samples=3)
    if analytical:
        kl = loss_fn.prior_matching()
    else:
        kl = (output.log_probs[:, 1] - output.log_probs[:, 0]).mean()
    schedule = LinearKLWarmup(loss_fn, warmup_steps=2)
    without_kl = loss_fn(output, y)  # factor 0
    schedule.step()
    half = loss_fn(output, y)  # heat 0.5 * 0.5
    schedule.step()
    full = loss_fn(output, y)  # heat 0.5
    # The losses are per training example (reduction="mean"): KL / dataset_size.
    assert torch.allclose(full - without_kl, 0.5 * kl / 100, rtol=1e-5)
    assert torch.allclose(half - without_kl, 0.25 * kl / 100, rtol=1e-5)


def test_warmup_trains_a_model_with_both_losses():
    model = _model()
    losses = [
        KullbackLeiblerLoss(Categorical(), 100),
        AnalyticalKullbackLeiblerLoss(model, Categorical(), 100),
    ]
    schedules = [LinearKLWarmup(loss, warmup_steps=3) for loss in losses]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _batch()
    for _ in range(4):
        loss = sum(loss_fn(model(x, samples=2), y) for loss_fn in losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for schedule in schedules:
            schedule.step()
    assert [loss_fn.heat for loss_fn in losses] == [1.0, 1.0]


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize(
    "make",
    [
        lambda loss: LinearKLWarmup(loss, warmup_steps=7, start=0.1),
        lambda loss: CyclicalKLAnnealing(loss, total_steps=9, cycles=2, ratio=0.7),
        lambda loss: BlundellMinibatchWeighting(loss, steps_per_epoch=4),
    ],
)
def test_state_dict_round_trip_resumes_identically(make):
    original = make(_loss(heat=0.3))
    for _ in range(5):
        original.step()
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed_loss = _loss(heat=1.0)
    resumed = make(resumed_loss)  # fresh schedule on a fresh loss
    resumed.load_state_dict(state)
    assert resumed.last_step == 5
    assert resumed.base_heat == 0.3
    assert resumed_loss.heat == original.loss.heat
    assert _heats(resumed, 12) == _heats(original, 12)


def test_load_state_dict_replaces_hyperparameters():
    schedule = LinearKLWarmup(_loss(), warmup_steps=4)
    other = LinearKLWarmup(_loss(), warmup_steps=10, start=0.5)
    other.step()
    schedule.load_state_dict(other.state_dict())
    assert (schedule.warmup_steps, schedule.start, schedule.last_step) == (10, 0.5, 1)
    assert schedule.loss.heat == pytest.approx(0.55)


def test_load_state_dict_rejects_bad_states():
    schedule = LinearKLWarmup(_loss(), warmup_steps=4)
    with pytest.raises(KeyError, match=r"missing keys \['start'\]"):
        schedule.load_state_dict({"warmup_steps": 3, "base_heat": 1.0, "last_step": 0})
    other = CyclicalKLAnnealing(_loss(), total_steps=8).state_dict()
    with pytest.raises(KeyError, match="unexpected keys"):
        schedule.load_state_dict(other)
    state = schedule.state_dict()
    with pytest.raises(ValueError, match="warmup_steps must be at least 1"):
        schedule.load_state_dict({**state, "warmup_steps": 0})
    with pytest.raises(ValueError, match="last_step must be at least 0"):
        schedule.load_state_dict({**state, "last_step": -1})
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        schedule.load_state_dict([1, 2])
    assert schedule.state_dict() == state  # nothing changed on failure


def test_repr_names_the_settings():
    schedule = LinearKLWarmup(_loss(heat=0.5), warmup_steps=4)
    schedule.step()
    assert repr(schedule) == (
        "LinearKLWarmup(warmup_steps=4, start=0.0, base_heat=0.5, last_step=1)"
    )


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x: LinearKLWarmup(x, warmup_steps=0), ValueError, "warmup_steps must be"),
        (lambda x: LinearKLWarmup(x, warmup_steps=2.5), TypeError, "must be an int"),
        (lambda x: LinearKLWarmup(x, warmup_steps=True), TypeError, "must be an int"),
        (lambda x: LinearKLWarmup(x, 3, start=1.5), ValueError, r"start must lie in \[0"),
        (lambda x: LinearKLWarmup(x, 3, start=-0.1), ValueError, "start must lie in"),
        (lambda x: LinearKLWarmup(x, 3, start="0"), TypeError, "start must be a number"),
        (lambda x: CyclicalKLAnnealing(x, 0), ValueError, "total_steps must be at least 1"),
        (lambda x: CyclicalKLAnnealing(x, 3, cycles=4), ValueError, "must not exceed"),
        (lambda x: CyclicalKLAnnealing(x, 8, cycles=0), ValueError, "cycles must be"),
        (
            lambda x: CyclicalKLAnnealing(x, 8, ratio=0.0),
            ValueError,
            r"ratio must lie in \(0",
        ),
        (lambda x: CyclicalKLAnnealing(x, 8, ratio=1.2), ValueError, "ratio must lie in"),
        (
            lambda x: CyclicalKLAnnealing(x, 8, ratio=math.nan),
            ValueError,
            "ratio must lie in",
        ),
        (
            lambda x: BlundellMinibatchWeighting(x, steps_per_epoch=0),
            ValueError,
            "steps_per_epoch must be at least 1",
        ),
        (
            lambda x: BlundellMinibatchWeighting(x, steps_per_epoch=None),
            TypeError,
            "steps_per_epoch must be an int",
        ),
    ],
)
def test_invalid_arguments_raise(make, error, match):
    loss = _loss()
    with pytest.raises(error, match=match):
        make(loss)
    assert loss.heat == 1.0  # a failed construction leaves the loss alone


def test_loss_without_heat_is_rejected():
    with pytest.raises(TypeError, match=r"'heat' attribute\), got CrossEntropyLoss"):
        LinearKLWarmup(nn.CrossEntropyLoss(), warmup_steps=3)


def test_invalid_heat_on_the_loss_is_rejected():
    # The losses refuse such a heat themselves; any object with a heat is checked.
    loss = SimpleNamespace(heat=math.inf)
    with pytest.raises(ValueError, match="heat must be finite and non-negative"):
        LinearKLWarmup(loss, warmup_steps=3)


def test_base_class_needs_a_factor():
    with pytest.raises(NotImplementedError, match="does not define factor"):
        KLSchedule(_loss())
