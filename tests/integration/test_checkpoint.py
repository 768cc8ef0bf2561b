"""Save and resume mid-training: bit-for-bit the uninterrupted run on CPU."""

import io

import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical

STEPS, SPLIT = 12, 5


def _setup() -> tuple:
    torch.manual_seed(0)
    model = vi.VISequential(
        vi.VIConv1d(1, 3, 3, estimator="flipout"),
        nn.ReLU(),
        nn.Flatten(),
        nn.BatchNorm1d(3 * 6),
        vi.VILinear(3 * 6, 4, estimator="local_reparameterization"),
        nn.Tanh(),
        vi.VILinear(4, 2),
    )
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = vi.LinearKLWarmup(loss_fn, warmup_steps=8)
    return model, loss_fn, optimizer, schedule


def _train(model, loss_fn, optimizer, schedule, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)  # the data loader's batch
        x = torch.randn(16, 1, 8, generator=generator)
        y = torch.randint(0, 2, (16,), generator=generator)
        optimizer.zero_grad()
        loss_fn(model(x, samples=3), y).backward()
        optimizer.step()
        schedule.step()


def test_resumed_training_equals_the_uninterrupted_run():
    model, loss_fn, optimizer, schedule = _setup()
    _train(model, loss_fn, optimizer, schedule, range(STEPS))
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, loss_fn, optimizer, schedule = _setup()
    _train(model, loss_fn, optimizer, schedule, range(SPLIT))
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": torch.get_rng_state(),
        },
        buffer,
    )

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)  # a fresh process would start from another state
    model, loss_fn, optimizer, schedule = _setup()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    torch.set_rng_state(checkpoint["rng"])
    _train(model, loss_fn, optimizer, schedule, range(SPLIT, STEPS))

    assert loss_fn.heat == 1.0  # the warm-up resumed where it stopped
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_a_different_rng_state_gives_a_different_run():
    # The check above can fail: without the generator state the runs part ways.
    model, loss_fn, optimizer, schedule = _setup()
    _train(model, loss_fn, optimizer, schedule, range(STEPS))
    reference = model.state_dict()["6._weight_mean"].clone()
    model, loss_fn, optimizer, schedule = _setup()
    _train(model, loss_fn, optimizer, schedule, range(SPLIT))
    torch.manual_seed(123)
    _train(model, loss_fn, optimizer, schedule, range(SPLIT, STEPS))
    assert not torch.equal(model.state_dict()["6._weight_mean"], reference)
