"""Mean-weight mode and the export to a plain ``torch.nn`` model."""

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical, MeanFieldStudentT
from torch_blue.vi.utils import MissingLogProbsError


class Scaled(vi.VIModule):
    """A custom layer with a helper method and a plain attribute."""

    def __init__(self, features: int) -> None:
        super().__init__(variable_shapes={"scale": (1, features), "shift": None})
        self.power = 2

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.shift is None
        return self._transform(x) ** self.power


def _model() -> vi.VISequential:
    return vi.VISequential(
        vi.VIConv2d(1, 3, 3, padding=1, estimator="flipout"),
        nn.ReLU(),
        nn.Flatten(),
        vi.VILinear(3 * 5 * 5, 6, estimator="local_reparameterization"),
        nn.Tanh(),
        vi.VIResidualConnection(vi.VILinear(6, 6), nn.ReLU()),
        Scaled(6),
        vi.VILinear(6, 2, bias=False),
    )


def _is_plain(model: nn.Module) -> bool:
    """No VIModule inside, and nothing but torch.nn classes or plain copies."""
    return not any(
        isinstance(m, vi.VIModule)
        or any(k.__module__.startswith("torch_blue") for k in type(m).__mro__[1:])
        for m in model.modules()
    )


def test_mean_weights_reads_the_means_and_records_nothing():
    layer = vi.VILinear(3, 2)
    x = torch.randn(4, 3)
    with vi.mean_weights():
        out = layer(x)
        many = layer(x, samples=3)
    assert out.shape == (1, 4, 2) and out.log_probs is None
    torch.testing.assert_close(out[0], x @ layer._weight_mean.T + layer._bias_mean)
    assert torch.equal(many[0], many[1]) and torch.equal(many[0], many[2])


def test_mean_weights_is_left_on_exit_and_can_be_nested():
    layer = vi.VILinear(3, 2)
    x = torch.randn(4, 3)
    with vi.mean_weights():
        with vi.mean_weights(False):
            inner = layer(x, samples=2)
        after = layer(x, samples=2)
    outside = layer(x, samples=2)
    assert inner.log_probs is not None and not torch.equal(inner[0], inner[1])
    assert after.log_probs is None and torch.equal(after[0], after[1])
    assert outside.log_probs is not None and not torch.equal(outside[0], outside[1])


@pytest.mark.parametrize(
    "estimator", ["reparameterization", "local_reparameterization", "flipout"]
)
def test_mean_weights_ignores_the_estimator(estimator):
    conv = vi.VIConv1d(2, 3, 3, estimator=estimator)
    x = torch.randn(5, 2, 7)
    with vi.mean_weights():
        out = conv(x, samples=2)
    expected = nn.functional.conv1d(x, conv._weight_mean, conv._bias_mean)
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], expected)


def test_mean_weights_uses_the_location_of_other_families():
    layer = vi.VILinear(3, 2, variational_distribution=MeanFieldStudentT())
    x = torch.randn(4, 3)
    with vi.mean_weights():
        out = layer(x)
    torch.testing.assert_close(out[0], x @ layer._weight_mean.T + layer._bias_mean)


def test_mean_weights_outputs_cannot_feed_the_loss():
    model = vi.VILinear(3, 4)
    loss = vi.KullbackLeiblerLoss(Categorical(), dataset_size=10)
    with vi.mean_weights():
        out = model(torch.randn(2, 3))
    with pytest.raises(MissingLogProbsError):
        loss(out, torch.tensor([0, 1]))


def test_mean_weights_rejects_a_non_bool():
    with pytest.raises(TypeError, match="mean_weights: mode must be a bool"):
        vi.mean_weights("yes")


def test_to_deterministic_matches_mean_mode_exactly():
    model = _model()
    x = torch.randn(7, 1, 5, 5)
    plain = vi.to_deterministic(model)
    with vi.mean_weights():
        expected = model(x)
    assert torch.equal(plain(x), expected[0])
    assert _is_plain(plain)


def test_to_deterministic_builds_torch_twins():
    plain = vi.to_deterministic(_model())
    assert type(plain) is nn.Sequential
    assert type(plain[0]) is nn.Conv2d and plain[0].padding == (1, 1)
    assert type(plain[3]) is nn.Linear and plain[7].bias is None
    assert isinstance(plain[5], nn.Sequential)  # residual block: a plain subclass
    assert type(plain[5]).__name__ == "ResidualConnection"
    assert type(plain[6]).__name__ == "Scaled" and plain[6].power == 2
    assert "scale" in dict(plain[6].named_parameters())
    assert plain[6].shift is None


def test_to_deterministic_leaves_the_model_unchanged():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = vi.to_deterministic(model)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert isinstance(model[0], vi.VIConv2d)


def test_to_deterministic_keeps_mode_dtype_and_plain_containers():
    model = nn.Sequential(vi.VILinear(3, 4, dtype=torch.float64), nn.Dropout(0.5))
    model.eval()
    plain = vi.to_deterministic(model)
    assert not plain.training and not plain[0].training
    assert plain[0].weight.dtype == torch.float64
    assert _is_plain(plain)
    torch.testing.assert_close(plain[0].weight, model[0]._weight_mean)


def test_to_deterministic_output_traces_and_exports():
    model = _model().eval()
    plain = vi.to_deterministic(model)
    x = torch.randn(2, 1, 5, 5)
    traced = torch.jit.trace(plain, x)
    torch.testing.assert_close(traced(x), plain(x))
    exported = torch.export.export(plain, (x,))
    torch.testing.assert_close(exported.module()(x), plain(x))


def test_to_deterministic_rejects_a_non_module():
    with pytest.raises(TypeError, match=r"to_deterministic: model must be an nn\.Module"):
        vi.to_deterministic(torch.zeros(3))
