"""A model mixing every kind of layer converts in one call and trains (issue-level)."""

import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical
from torch_blue.vi.utils import convert


class Mixed(nn.Module):
    """Tokens -> embedding -> LSTM -> batch norm -> attention -> image head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 8, num_layers=2, batch_first=True)
        self.norm = nn.BatchNorm1d(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.up = nn.ConvTranspose2d(1, 2, 3, stride=2)
        self.head = nn.Linear(2 * 9 * 9, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(tokens))  # (B, 4, 8)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h, _ = self.attn(h, h, h, need_weights=False)
        image = h.reshape(-1, 1, 4, 8)[..., :4]  # (B, 1, 4, 4)
        return self.head(self.up(image).flatten(1))


def _train(model: nn.Module, steps: int = 40) -> list[float]:
    tokens = torch.randint(0, 20, (32, 4))
    labels = tokens[:, 0] % 3
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(tokens, samples=3), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_mixed_model_converts_in_one_call_and_trains_in_train_mode():
    torch.manual_seed(0)
    model = vi.convert_to_vimodule(Mixed())
    kinds = {name: type(m).__name__ for name, m in model.named_children()}
    assert kinds == {
        "embed": "VIEmbedding",
        "lstm": "VILSTM",
        "norm": "BatchNorm1d",  # norms stay deterministic by default
        "attn": "VIMultiheadAttention",
        "up": "VIConvTranspose2d",
        "head": "VILinear",
    }
    assert model.training
    losses = _train(model)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert int(model.norm.num_batches_tracked) == len(losses)


def test_mixed_model_with_bayesian_norms_trains_and_exports():
    torch.manual_seed(1)
    convert.convert_norms(True)
    try:
        model = vi.convert_to_vimodule(Mixed())
    finally:
        convert.convert_norms(False)
    assert type(model.norm) is vi.VIBatchNorm1d
    losses = _train(model)
    assert sum(losses[-5:]) < sum(losses[:5])
    model.eval()
    plain = vi.to_deterministic(model)
    assert type(plain) is Mixed and type(plain.lstm) is nn.LSTM
    assert not any(isinstance(m, vi.VIModule) for m in plain.modules())
    tokens = torch.randint(0, 20, (5, 4))
    with vi.mean_weights():
        expected = model(tokens)[0]
    torch.testing.assert_close(plain(tokens), expected)
