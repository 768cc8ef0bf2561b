import pytest
import torch
from torch import nn

from torch_blue.errors import ShapeError
from torch_blue.uncertainty import (
    DeepEnsemble,
    MCDropout,
    UncertaintyInputError,
    accuracy,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
)

P = 0.3  # dropout probability of the linear test model


def _dropout_linear(features=5, classes=3):
    """Dropout on the inputs, then a linear layer: E[output] is the eval output and
    Var[output_k] = p / (1 - p) * sum_j W_kj² x_j² exactly."""
    return nn.Sequential(nn.Dropout(P), nn.Linear(features, classes))


def _theory(net, x):
    """Mean and variance of the dropout outputs of ``_dropout_linear``, per element."""
    weight = net[1].weight
    with torch.no_grad():
        mean = net.eval()(x)
        variance = P / (1 - P) * (x.square() @ weight.square().T)
    return mean, variance


def _moments(out):
    """Sample mean and variance over dim 0, with their standard errors."""
    n = out.shape[0]
    mean, variance = out.mean(0), out.var(0, unbiased=False)
    fourth = (out - mean).pow(4).mean(0)
    return mean, variance, (variance / n).sqrt(), ((fourth - variance.square()) / n).sqrt()


def _flags(model):
    return [m.training for m in model.modules()]


# ------------------------------------------------------------------ MCDropout
@pytest.mark.parametrize("batched", [True, False])
def test_mc_dropout_shape(batched):
    net = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).eval()
    mc = MCDropout(net, samples=7, batched=batched)
    x = torch.randn(5, 4)
    assert mc(x).shape == (7, *net(x).shape) == (7, 5, 3)
    assert mc(x, samples=2).shape == (2, 5, 3)  # the call's samples win
    assert mc.samples == 7


def test_mc_dropout_keeps_trailing_dimensions():
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Dropout1d(0.5)).eval()
    x = torch.randn(3, 2, 10)
    assert MCDropout(net, 4)(x).shape == (4, 3, 4, 8)
    assert MCDropout(net, 4, batched=False)(x).shape == (4, 3, 4, 8)


@pytest.mark.parametrize("batched", [True, False])
def test_mc_dropout_mean_and_variance_match_the_dropout_distribution(batched):
    torch.manual_seed(1)
    net = _dropout_linear()
    x = torch.randn(4, 5)
    expected_mean, expected_variance = _theory(net, x)
    with torch.no_grad():
        out = MCDropout(net, samples=4000, batched=batched)(x)
    mean, variance, se_mean, se_variance = _moments(out)
    # each element within five standard errors (a 1-in-a-million event per element)
    assert ((mean - expected_mean).abs() <= 5 * se_mean).all()
    assert ((variance - expected_variance).abs() <= 5 * se_variance).all()
    assert (variance > 0).all()


def test_batched_and_looped_passes_give_the_same_distribution():
    torch.manual_seed(2)
    net = _dropout_linear().eval()
    x = torch.randn(4, 5)
    with torch.no_grad():
        batched = _moments(MCDropout(net, samples=4000)(x))
        looped = _moments(MCDropout(net, samples=4000, batched=False)(x))
    for estimate, se in ((0, 2), (1, 3)):  # means, then variances
        difference = (batched[estimate] - looped[estimate]).abs()
        tolerance = 5 * (batched[se].square() + looped[se].square()).sqrt()
        assert (difference <= tolerance).all()


@pytest.mark.parametrize("batched", [True, False])
def test_mc_dropout_samples_differ_but_the_eval_model_is_deterministic(batched):
    net = _dropout_linear().eval()
    x = torch.randn(1, 5).expand(6, 5)  # identical rows
    out = MCDropout(net, samples=8, batched=batched)(x)
    assert not torch.equal(out[0], out[1])  # a new mask per sample ...
    assert not torch.equal(out[0, 0], out[0, 1])  # ... and per row
    assert torch.equal(net(x), net(x))  # without the wrapper dropout is off


@pytest.mark.parametrize(
    ("dropout", "shape"),
    [
        (nn.Dropout, (4, 6)),
        (nn.Dropout1d, (4, 3, 6)),
        (nn.Dropout2d, (4, 3, 5, 5)),
        (nn.Dropout3d, (4, 3, 2, 3, 3)),
        (nn.AlphaDropout, (4, 6)),
        (nn.FeatureAlphaDropout, (4, 3, 5, 5)),
    ],
)
def test_every_dropout_module_is_switched_on(dropout, shape):
    net = nn.Sequential(nn.Identity(), dropout(0.5)).eval()
    x = torch.randn(shape)
    out = MCDropout(net, samples=5)(x)
    assert out.shape == (5, *shape)
    assert not torch.equal(out[0], out[1])
    assert not any(_flags(net))


# ------------------------------------------------------------- modes restored
@pytest.mark.parametrize("mode", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_training_flags_are_restored(mode, batched):
    net = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6))
    net.train(mode)
    before = _flags(net)
    MCDropout(net, samples=3, batched=batched)(torch.randn(5, 4))
    assert _flags(net) == before


@pytest.mark.parametrize("grad", [True, False])
def test_transformer_layers_drop_out_too(grad):
    # In eval mode without gradients torch's encoder layer takes a fused kernel that
    # skips its dropout modules; MCDropout switches the layer itself, and its
    # attention, so that every pass drops out.
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True).eval()
    before = _flags(layer)
    with torch.set_grad_enabled(grad):
        out = MCDropout(layer, samples=3)(torch.randn(4, 5, 8))
    assert (out[0] - out[1]).abs().max() > 0.05
    assert _flags(layer) == before


@pytest.mark.parametrize("batched", [True, False])
def test_an_in_place_dropout_leaves_the_input_alone(batched):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Linear(4, 2))
    x = torch.randn(6, 4)
    copy = x.clone()
    out = MCDropout(net, samples=5, batched=batched)(x)
    assert torch.equal(x, copy)
    assert out.std(0).min() > 0  # every pass drew its own mask from the same input


def test_mixed_dropout_flags_are_restored_one_by_one():
    net = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    net.eval()
    net[1][1].train()
    before = _flags(net)
    MCDropout(net, samples=2)(torch.randn(3, 4))
    assert _flags(net) == before == [False, False, False, False, True]


class _Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        assert self.dropout.training  # active inside the wrapper
        self.dropout(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("batched", [True, False])
def test_flags_are_restored_after_an_exception(batched):
    net = _Fails().eval()
    with pytest.raises(RuntimeError, match="boom"):
        MCDropout(net, samples=2, batched=batched)(torch.randn(3, 4))
    assert not any(_flags(net))


def test_flags_are_restored_after_a_batched_shape_error():
    class Pooled(nn.Module):  # mixes the rows: not fit for batched=True
        def __init__(self):
            super().__init__()
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.dropout(x).sum(0)

    net = Pooled().eval()
    with pytest.raises(ShapeError, match=r"MCDropout.*batched=False"):
        MCDropout(net, samples=3)(torch.randn(4, 2))
    assert not any(_flags(net))
    assert MCDropout(net, samples=3, batched=False)(torch.randn(4, 2)).shape == (3, 2)


def test_batch_norm_in_eval_mode_uses_its_running_statistics():
    norm = nn.BatchNorm1d(4)
    norm.running_mean.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    net = nn.Sequential(norm, nn.Dropout(P)).eval()
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.randn(6, 4)
    with torch.no_grad():
        expected = norm(x)  # eval: normalised with the running statistics
        out = MCDropout(net, samples=50)(x)
    kept = out != 0
    assert kept.any() and (~kept).any()
    # every kept element is the eval-mode normalisation, scaled by 1 / (1 - p)
    scaled = (out * (1 - P))[kept]
    assert torch.allclose(scaled, expected.expand_as(out)[kept], atol=1e-6)
    assert not norm.training
    for key, value in norm.state_dict().items():  # running statistics untouched
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("batched", [True, False])
def test_gradients_flow_to_the_parameters(batched):
    net = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).eval()
    MCDropout(net, samples=4, batched=batched)(torch.randn(5, 4)).square().sum().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_no_grad_gives_outputs_without_a_graph():
    net = _dropout_linear().eval()
    with torch.no_grad():
        out = MCDropout(net)(torch.randn(2, 5))
    assert not out.requires_grad


def test_model_is_a_registered_submodule():
    net = _dropout_linear()
    mc = MCDropout(net)
    assert mc.model is net
    assert set(mc.state_dict()) == {f"model.{key}" for key in net.state_dict()}
    assert mc.to(torch.float64).model[1].weight.dtype == torch.float64
    mc.eval()
    assert not net.training
    assert "samples=10, batched=True" in repr(mc)


# ---------------------------------------------------------------- DeepEnsemble
def test_deep_ensemble_stacks_the_members_in_order():
    members = [nn.Linear(4, 3) for _ in range(4)]
    ensemble = DeepEnsemble(members)
    x = torch.randn(5, 4)
    out = ensemble(x)
    assert out.shape == (4, 5, 3) and len(ensemble) == 4
    assert isinstance(ensemble.members, nn.ModuleList)
    for index, member in enumerate(members):
        assert ensemble.members[index] is member
        assert torch.equal(out[index], member(x))


def test_deep_ensemble_passes_keyword_arguments_and_takes_any_iterable():
    class Shift(nn.Module):
        def __init__(self, offset):
            super().__init__()
            self.offset = offset

        def forward(self, x, *, scale=1.0):
            return scale * x + self.offset

    ensemble = DeepEnsemble(Shift(k) for k in range(3))
    out = ensemble(torch.zeros(2), scale=2.0)
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    assert len(DeepEnsemble(nn.ModuleList([nn.Identity()]))) == 1


def test_deep_ensemble_gradients_and_state_dict():
    ensemble = DeepEnsemble([nn.Linear(3, 2), nn.Linear(3, 2)])
    ensemble(torch.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in ensemble.parameters())
    assert "members.1.weight" in ensemble.state_dict()


# ------------------------------------------------------------ scored by metrics
def _scores(samples, targets):
    return (
        accuracy(samples, targets, "logits"),
        negative_log_likelihood(samples, targets, "logits"),
        expected_calibration_error(samples, targets, input_type="logits"),
        mutual_information(samples, "logits"),
    )


def _assert_same_scores(samples, by_hand, targets):
    for score, expected in zip(_scores(samples, targets), _scores(by_hand, targets)):
        assert torch.isfinite(score).all()
        assert torch.equal(score, expected)


@pytest.mark.parametrize("batched", [True, False])
def test_mc_dropout_output_is_scored_like_its_passes_by_hand(batched):
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).eval()
    x, targets = torch.randn(10, 4), torch.randint(0, 3, (10,))
    torch.manual_seed(3)
    with torch.no_grad():
        samples = MCDropout(net, samples=6, batched=batched)(x)
    torch.manual_seed(3)  # the same passes, written out
    net[1].train()
    with torch.no_grad():
        if batched:
            by_hand = net(x.repeat(6, 1)).reshape(6, 10, 3)
        else:
            by_hand = torch.stack([net(x) for _ in range(6)])
    assert torch.equal(samples, by_hand)
    _assert_same_scores(samples, by_hand, targets)


def test_deep_ensemble_output_is_scored_like_its_members_by_hand():
    members = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(5)]
    x, targets = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with torch.no_grad():
        samples = DeepEnsemble(members)(x)
        by_hand = torch.stack([member(x) for member in members])
    _assert_same_scores(samples, by_hand, targets)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("model", [None, "net", lambda x: x])
def test_mc_dropout_rejects_a_model_that_is_not_a_module(model):
    with pytest.raises(TypeError, match=r"MCDropout: model must be a torch\.nn\.Module"):
        MCDropout(model)


def test_mc_dropout_needs_a_dropout_layer():
    with pytest.raises(ValueError, match=r"MCDropout: model \(a Linear\) has no dropout"):
        MCDropout(nn.Linear(3, 2))
    with pytest.raises(UncertaintyInputError, match="MC dropout needs dropout layers"):
        MCDropout(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))


@pytest.mark.parametrize("samples", [0, -2, 2.5, True, "3", None])
def test_mc_dropout_rejects_bad_samples(samples):
    with pytest.raises(UncertaintyInputError, match="MCDropout: samples must be an int"):
        MCDropout(_dropout_linear(), samples=samples)
    mc = MCDropout(_dropout_linear())
    if samples is not None:  # None in forward means the wrapper's samples
        with pytest.raises(UncertaintyInputError, match=f"got {samples!r}"):
            mc(torch.randn(2, 5), samples=samples)


def test_mc_dropout_rejects_a_batched_flag_that_is_not_a_bool():
    with pytest.raises(TypeError, match="MCDropout: batched must be True or False, got 1"):
        MCDropout(_dropout_linear(), batched=1)


def test_mc_dropout_input_checks():
    net = nn.Sequential(nn.Dropout(0.5))
    with pytest.raises(ShapeError, match="MCDropout: x must have a batch dimension"):
        MCDropout(net)(torch.tensor(1.0))
    assert MCDropout(net, 3, batched=False)(torch.tensor(1.0)).shape == (3,)
    with pytest.raises(TypeError, match="MCDropout: x must be a Tensor, got list"):
        MCDropout(net)([1.0, 2.0])


def test_mc_dropout_needs_a_tensor_output():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.dropout(x), x

    for batched in (True, False):
        with pytest.raises(TypeError, match="MCDropout: the model must return a Tensor"):
            MCDropout(Pair(), batched=batched)(torch.randn(2, 3))


def test_deep_ensemble_needs_a_member():
    with pytest.raises(ValueError, match="DeepEnsemble: models must hold at least one"):
        DeepEnsemble([])
    with pytest.raises(UncertaintyInputError, match="models"):
        DeepEnsemble(nn.ModuleList())


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([nn.Linear(2, 2), "net"], r"models\[1\] must be a torch\.nn\.Module, got str"),
        ([None], r"models\[0\] must be a torch\.nn\.Module, got NoneType"),
        (nn.Linear(2, 2), "models must be a sequence of torch.nn.Module, got a single"),
        (3, "models must be a sequence of torch.nn.Module, got int"),
        ("net", "models must be a sequence of torch.nn.Module, got str"),
    ],
)
def test_deep_ensemble_rejects_members_that_are_not_modules(models, message):
    with pytest.raises(TypeError, match=f"DeepEnsemble: {message}"):
        DeepEnsemble(models)


def test_deep_ensemble_members_must_agree_in_shape():
    ensemble = DeepEnsemble([nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 2)])
    with pytest.raises(
        ShapeError,
        match=r"member 2 returned shape \(5, 2\), but member 0 returned shape \(5, 3\)",
    ):
        ensemble(torch.randn(5, 4))


def test_deep_ensemble_members_must_return_tensors():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="DeepEnsemble: member 1 must return a Tensor"):
        DeepEnsemble([nn.Identity(), Pair()])(torch.randn(2))
