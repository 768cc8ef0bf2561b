"""The quickstart levels of the README, as runnable tests.

Level 1 of upstream's quickstart (``convert_to_vimodule``) belongs to the model
conversion feature and is tested with it.
"""

import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import (
    Categorical,
    MeanFieldNormal,
    NonBayesian,
    UniformPrior,
)


def _train(model, loss_fn, x, y, steps=60, samples=4, lr=0.02):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=samples), y)
        loss.backward()
        optimizer.step()
    return loss.item()


def _blobs(n=120):
    torch.manual_seed(0)
    y = torch.arange(n) % 3
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    return centres[y] + 0.3 * torch.randn(n, 2), y


def test_level_2_swap_classes_in_a_sequential_stack():
    x, y = _blobs()
    model = vi.VISequential(vi.VILinear(2, 16), nn.ReLU(), vi.VILinear(16, 3))
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(x))
    _train(model, loss_fn, x, y)
    model.return_log_probs = False
    with torch.no_grad():
        probs = model(x, samples=16).softmax(-1).mean(0)
    assert (probs.argmax(-1) == y).float().mean() > 0.95


def test_level_3_customise_prior_and_variational_distribution():
    x, y = _blobs()
    vikwargs = vi.VIkwargs(
        variational_distribution=MeanFieldNormal(std=0.1),
        prior=MeanFieldNormal(std=0.5),
        rescale_prior=False,
        kaiming_initialization=True,
        prior_initialization=False,
        return_log_probs=True,
        device=None,
        dtype=None,
    )
    model = vi.VISequential(vi.VILinear(2, 16, **vikwargs), nn.ReLU(),
                            vi.VILinear(16, 3, **vikwargs))  # fmt: skip
    assert float(model[0].prior["weight"].std) == 0.5
    assert model[0].prior["weight"] is not model[2].prior["weight"]  # each owns a copy
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(x))
    _train(model, loss_fn, x, y)
    with torch.no_grad():
        probs = model(x, samples=16).softmax(-1).mean(0)
    assert (probs.argmax(-1) == y).float().mean() > 0.95


def test_level_3_non_bayesian_baseline():
    x, y = _blobs()
    point = {"variational_distribution": NonBayesian(), "prior": UniformPrior()}
    model = vi.VISequential(
        vi.VILinear(2, 16, **point), nn.ReLU(), vi.VILinear(16, 3, **point)
    )
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(x))
    _train(model, loss_fn, x, y)
    out = model(x, samples=2)
    assert torch.equal(out[0], out[1])  # no randomness left
    assert torch.all(out.log_probs == 0)


class TwoTower(vi.VIModule):
    """Level 4: a non-sequential model with two inputs and two outputs."""

    def __init__(self):
        super().__init__()
        self.left = vi.VILinear(2, 8)
        self.right = vi.VILinear(2, 8)
        self.head = vi.VILinear(16, 3)
        self.aux = vi.VILinear(8, 1)

    def forward(self, a, b):
        h_left = torch.relu(self.left(a))
        h = torch.cat([h_left, torch.relu(self.right(b))], dim=-1)
        return self.head(h), self.aux(h_left)


def test_level_4_non_sequential_model_and_log_probs():
    x, y = _blobs()
    model = TwoTower()
    logits, aux = model(x, x.flip(-1), samples=5)
    assert logits.shape == (5, len(x), 3) and aux.shape == (5, len(x), 1)
    assert logits.log_probs is aux.log_probs and logits.log_probs.shape == (5, 2)
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(x))
    loss = loss_fn(logits, y)
    loss.backward()
    # The KL term covers every weight, including the unused auxiliary head.
    assert model.aux._weight_log_std.grad is not None
    assert model.head._weight_mean.grad is not None
    # Deployment drops the log-probs for every submodule.
    model.return_log_probs = False
    assert model(x, x, samples=2)[0].log_probs is None


class BayesianBilinear(vi.VIModule):
    """Level 5: a custom module with its own random variables."""

    def __init__(self, left, right, out, **vikwargs):
        super().__init__(
            variable_shapes={"weight": (out, left, right), "bias": (out,)}, **vikwargs
        )

    def forward(self, a, b):
        return torch.einsum("bi,oij,bj->bo", a, self.weight, b) + self.bias


def test_level_5_custom_module_with_weights():
    model = BayesianBilinear(2, 3, 4, prior=MeanFieldNormal(std=0.3))
    assert {n for n, _ in model.named_parameters()} == {
        "_weight_mean", "_weight_log_std", "_bias_mean", "_bias_log_std"
    }  # fmt: skip
    out = model(torch.randn(6, 2), torch.randn(6, 3), samples=7)
    assert out.shape == (7, 6, 4) and out.log_probs.shape == (7, 2)
    target = torch.randn(6, 4)
    loss = vi.KullbackLeiblerLoss(MeanFieldNormal(), dataset_size=60)(out, target)
    loss.backward()
    assert model._weight_log_std.grad.abs().sum() > 0
