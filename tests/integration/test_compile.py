"""torch.compile: a compiled model and a compiled training step run and match eager.

The autosampled forward runs eagerly inside compiled code (one graph break; dynamo
cannot trace graph breaks inside vmap yet), so with the same seed the compiled and
eager results are identical, not only equal in distribution.
"""

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical
from torch_blue.vi.functional import attention as functional_attention


def _training_step(model, lr=1e-3):
    """One SGD step on the KL loss over the trainable parameters; returns the loss."""
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), 100)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=3), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _setup(estimator):
    torch.manual_seed(0)
    model = vi.VISequential(vi.VILinear(6, 8), nn.ReLU(), vi.VILinear(8, 3))
    model.estimator = estimator
    return model, _training_step(model)


@pytest.mark.parametrize("backend", ["eager", "inductor"])
@pytest.mark.parametrize(
    "estimator",
    ["reparameterization", "local_reparameterization", "flipout", "shared_flipout"],
)
def test_compiled_training_step_matches_eager(estimator, backend):
    torch._dynamo.reset()
    x = torch.randn(5, 6)
    y = torch.randint(0, 3, (5,))
    _, eager_step = _setup(estimator)
    torch.manual_seed(1)
    eager = [eager_step(x, y) for _ in range(3)]
    _, step = _setup(estimator)
    compiled_step = torch.compile(step, backend=backend)
    torch.manual_seed(1)
    compiled = [compiled_step(x, y) for _ in range(3)]
    torch.testing.assert_close(torch.stack(compiled), torch.stack(eager))


def test_compiled_model_returns_vireturn():
    torch._dynamo.reset()
    model = vi.VISequential(vi.VILinear(6, 8), nn.ReLU(), vi.VILinear(8, 3))
    out = torch.compile(model, backend="eager")(torch.randn(5, 6), samples=4)
    assert isinstance(out, vi.VIReturn) and out.log_probs.shape == (4, 2)


class _Mixed(vi.VIModule):
    """Every new layer family in one model, called as one autosampled forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = vi.VIEmbedding(10, 6)
        self.rnn = vi.VIGRU(6, 6, batch_first=True)
        self.attn = vi.VITransformerEncoderLayer(6, 2, dim_feedforward=8)
        self.norm = vi.VIBatchNorm1d(6)
        self.up = vi.VIConvTranspose1d(6, 2, 3)
        self.head = vi.VILinear(2 * 6, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))
        h = self.norm(self.attn(h).transpose(1, 2))
        return self.head(self.up(h).flatten(1))


def _mixed_step(tokens: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = _Mixed()
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), 100)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(tokens, samples=2), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("attention", ["matmul", "fused"])
def test_compiled_training_step_of_every_layer_family_matches_eager(attention, monkeypatch):
    if attention == "fused":  # the attention core's kernel for long sequences
        monkeypatch.setattr(functional_attention, "MATMUL_MAX_POSITIONS", 0)
    torch._dynamo.reset()
    tokens = torch.randint(0, 10, (4, 4))
    y = torch.randint(0, 3, (4,))
    eager_step = _mixed_step(tokens, y)
    torch.manual_seed(1)
    eager = torch.stack([eager_step() for _ in range(2)])
    compiled_step = torch.compile(_mixed_step(tokens, y), backend="eager")
    torch.manual_seed(1)
    compiled = torch.stack([compiled_step() for _ in range(2)])
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("kind", ["last_layer", "adapters"])
def test_compiled_partly_bayesian_training_step_matches_eager(kind):
    # Partly Bayesian models (plain layers beside random ones) compile like any other.
    def setup():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        if kind == "last_layer":
            vi.convert_to_vimodule(model, keep_weights=True, include="2")
        else:
            vi.add_lora(model, rank=2)
            with torch.no_grad():
                model[2].lora_B.weight.fill_(0.1)
        return _training_step(model, lr=1e-2)

    torch._dynamo.reset()
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    eager_step = setup()
    torch.manual_seed(1)
    eager = [eager_step(x, y) for _ in range(3)]
    compiled_step = torch.compile(setup(), backend="eager")
    torch.manual_seed(1)
    compiled = [compiled_step(x, y) for _ in range(3)]
    torch.testing.assert_close(torch.stack(compiled), torch.stack(eager))
