"""``convert_to_vimodule``, ``convert_norms`` and ``ban_convert``."""

import io

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import convert
from torch_blue.vi.distributions import Categorical, MeanFieldNormal, NonBayesian


@pytest.fixture(autouse=True)
def _restore_banlists():
    saved = {mode: set(classes) for mode, classes in convert._banlists.items()}
    yield
    for mode, classes in saved.items():
        convert._banlists[mode].clear()
        convert._banlists[mode].update(classes)


class Gate(nn.Module):
    """A custom layer with parameters: y = sigmoid(gate) * x @ proj + shift."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.randn(features))
        self.proj = nn.Parameter(torch.randn(features, features) / features**0.5)
        self.register_parameter("shift", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate) * (x @ self.proj)


class Net(nn.Module):
    """A custom container without own parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6, 5), nn.ReLU())
        self.gate = Gate(5)
        self.norm = nn.LayerNorm(5)
        self.head = nn.ModuleList([nn.Linear(5, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate(self.body(self.conv(x)))
        return self.head[0](self.norm(h))


def test_converts_in_place_to_the_twins():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Conv1d(1, 2, 3))
    first = model[0]
    result = vi.convert_to_vimodule(model)
    assert result is model and model[0] is first
    assert type(model) is vi.VISequential
    assert type(model[0]) is vi.VILinear and type(model[2]) is vi.VIConv1d
    assert type(model[1]) is nn.ReLU
    assert (model[0].in_features, model[0].out_features) == (4, 8)
    assert model[2].kernel_size == (3,)


def test_custom_modules_get_generated_classes():
    model = Net()
    vi.convert_to_vimodule(model)
    assert isinstance(model, vi.VIModule) and type(model).__name__ == "AVINet"
    assert type(model.gate).__name__ == "AVIGate"
    assert model.gate.random_variables == ("gate", "proj", "shift")
    assert type(model.norm) is nn.LayerNorm  # norms stay deterministic by default
    assert type(model.head) is nn.ModuleList and type(model.head[0]) is vi.VILinear
    out = model(torch.randn(7, 2, 6), samples=4)
    assert out.shape == (4, 7, 3) and out.log_probs.shape == (4, 2)
    assert not torch.equal(out[0], out[1])


def test_the_converted_model_samples_once_per_call(monkeypatch):
    from torch_blue.vi import base

    model = Net()
    vi.convert_to_vimodule(model)
    calls = []

    def counting(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return sampled_call(module, *args, **kwargs)

    sampled_call = base.sampled_call
    monkeypatch.setattr(base, "sampled_call", counting)
    out = model(torch.randn(7, 2, 6), samples=3)
    assert calls == ["AVINet"]
    assert out.shape == (3, 7, 3)


def test_non_bayesian_keep_weights_reproduces_the_original():
    torch.manual_seed(1)
    model = Net()
    x = torch.randn(7, 2, 6)
    expected = model(x)
    vi.convert_to_vimodule(
        model,
        keep_weights=True,
        variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )
    out = model(x, samples=1)
    torch.testing.assert_close(out[0], expected)


def test_keep_weights_sets_the_means():
    torch.manual_seed(2)
    model = Net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    vi.convert_to_vimodule(model, keep_weights=True)
    assert torch.equal(model.gate._proj_mean, state["gate.proj"])
    assert torch.equal(model.body[1]._weight_mean, state["body.1.weight"])
    assert torch.equal(model.norm.weight, state["norm.weight"])
    # and the mean network is the original network again
    x = torch.randn(3, 2, 6)
    torch.testing.assert_close(vi.to_deterministic(model)(x), _original_output(state, x))


def _original_output(state: dict, x: torch.Tensor) -> torch.Tensor:
    net = Net()
    net.load_state_dict(state)
    return net(x)


def test_without_keep_weights_everything_is_fresh():
    torch.manual_seed(3)
    model = nn.Linear(10, 10)
    old = model.weight.detach().clone()
    vi.convert_to_vimodule(model)
    assert not torch.equal(model._weight_mean, old)


def test_to_deterministic_returns_the_original_classes():
    model = Net()
    vi.convert_to_vimodule(model)
    plain = vi.to_deterministic(model)
    assert type(plain) is Net and type(plain.gate) is Gate
    assert type(plain.body[1]) is nn.Linear and type(plain.head) is nn.ModuleList
    assert set(plain.state_dict()) == set(Net().state_dict())
    x = torch.randn(3, 2, 6)
    with vi.mean_weights():
        expected = model(x)[0]
    assert torch.equal(plain(x), expected)


def test_vikwargs_reach_every_layer():
    model = nn.Sequential(nn.Linear(3, 4), Gate(4))
    prior = MeanFieldNormal(std=0.5)
    vi.convert_to_vimodule(model, prior=prior, return_log_probs=False)
    assert model[0].prior["weight"].std == 0.5 and model[1].prior["proj"].std == 0.5
    assert model[1].prior["proj"] is not model[0].prior["weight"]
    assert model(torch.randn(2, 3)).log_probs is None


def test_dtype_and_device_are_kept_per_parameter():
    model = nn.Sequential(nn.Linear(3, 4).double(), Gate(4))
    model[1].gate.data = model[1].gate.data.double()
    vi.convert_to_vimodule(model)
    assert model[0]._weight_mean.dtype == torch.float64
    assert model[1]._gate_mean.dtype == torch.float64
    assert model[1]._proj_log_std.dtype == torch.float32


def test_already_bayesian_modules_are_left_alone():
    layer = vi.VILinear(2, 2)
    model = nn.Sequential(layer, nn.Linear(2, 2))
    vi.convert_to_vimodule(model)
    assert model[0] is layer and type(model[1]) is vi.VILinear


def test_parameter_free_models_stay_plain():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())
    vi.convert_to_vimodule(model)
    assert type(model) is nn.Sequential


def test_convert_norms_makes_norms_bayesian():
    vi.utils.convert.convert_norms(True)
    model = nn.Sequential(nn.Linear(3, 6), nn.GroupNorm(2, 6))
    with pytest.warns(UserWarning, match="only one-dimensional random variables"):
        vi.convert_to_vimodule(model)
    assert isinstance(model[1], vi.VIModule)
    assert model[1].random_variables == ("weight", "bias")
    vi.utils.convert.convert_norms(False)
    other = nn.Sequential(nn.Linear(3, 6), nn.GroupNorm(2, 6))
    vi.convert_to_vimodule(other)
    assert type(other[1]) is nn.GroupNorm


def test_ban_modes():
    convert.ban_convert(nn.Linear)
    model = nn.Sequential(nn.Linear(2, 2), nn.Conv1d(1, 1, 1))
    vi.convert_to_vimodule(model)
    assert type(model[0]) is nn.Linear and type(model[1]) is vi.VIConv1d
    convert.ban_convert(nn.Linear, unban=True)

    convert.ban_convert(Net, ban_mode="submodule")
    net = Net()
    vi.convert_to_vimodule(net)
    assert type(net) is Net and type(net.body[1]) is nn.Linear
    convert.ban_convert(Net, ban_mode="submodule", unban=True)

    convert.ban_convert([nn.Linear], ban_mode="replace")
    replaced = nn.Linear(2, 2)
    vi.convert_to_vimodule(replaced)
    assert type(replaced).__name__ == "AVILinear"
    assert replaced(torch.randn(3, 2), samples=2).shape == (2, 3, 2)

    convert.ban_convert(Gate, ban_mode="reuse")
    a, b = Gate(2), Gate(2)
    vi.convert_to_vimodule(a)
    vi.convert_to_vimodule(b)
    assert type(a) is not type(b)
    convert.ban_convert(Gate, ban_mode="reuse", unban=True)
    c, d = Gate(2), Gate(2)
    vi.convert_to_vimodule(c)
    vi.convert_to_vimodule(d)
    assert type(c) is type(d)


def test_bad_arguments_raise():
    with pytest.raises(
        TypeError, match=r"convert_to_vimodule: module must be an nn\.Module"
    ):
        vi.convert_to_vimodule(torch.zeros(2))
    with pytest.raises(ValueError, match="ban_convert: ban_mode must be one of"):
        convert.ban_convert(nn.Linear, ban_mode="forbid")
    with pytest.raises(TypeError, match=r"ban_convert: class_names must hold nn\.Module"):
        convert.ban_convert(int)
    with pytest.raises(TypeError, match="convert_norms: mode must be a bool"):
        convert.convert_norms("on")


def test_a_converted_model_trains():
    torch.manual_seed(4)
    model = Net()
    vi.convert_to_vimodule(model)
    x, y = torch.randn(64, 2, 6), torch.randint(0, 3, (64,))
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=4), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < sum(losses[:10])


def test_convert_then_ddp_trains(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        vi.convert_to_vimodule(model)
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=16)
        out = ddp(torch.randn(16, 3), samples=3)
        assert out.shape == (3, 16, 2) and out.log_probs.shape == (3, 2)
        loss_fn(out, torch.randint(0, 2, (16,))).backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()
    finally:
        torch.distributed.destroy_process_group()


def test_converted_norms_keep_their_own_scale_prior():
    convert.convert_norms(True)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.LayerNorm(4))
    vi.convert_to_vimodule(model)
    assert type(model[1]) is vi.VIBatchNorm1d and type(model[2]) is vi.VILayerNorm
    assert float(model[1].prior["weight"].mean) == 1.0
    assert float(model[2].prior["weight"].mean) == 1.0
    assert float(model[0].prior["weight"].mean) == 0.0
    chosen = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    vi.convert_to_vimodule(chosen, prior=MeanFieldNormal(std=0.5))
    assert float(chosen[1].prior["weight"].mean) == 0.0  # the user's choice wins


def test_plain_norms_left_alone_train_under_autosampling():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    vi.convert_to_vimodule(model)
    assert type(model[1]) is nn.BatchNorm1d
    out = model(torch.randn(8, 3), samples=3)
    assert out.shape == (3, 8, 2) and int(model[1].num_batches_tracked) == 1


# ------------------------------------------------------------------ partial conversion
def _random_variables(model: nn.Module) -> list[str]:
    return [key for key, *_ in vi.base.named_random_variables(model)]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ("head", None, ["head.0.weight", "head.0.bias"]),
        ("head.*", None, ["head.0.weight", "head.0.bias"]),
        (nn.Linear, None, ["body.1.weight", "body.1.bias", "head.0.weight", "head.0.bias"]),
        (
            lambda name, module: name == "gate",
            None,
            ["gate.gate", "gate.proj"],
        ),
        (
            ["conv", Gate],
            None,
            ["conv.weight", "conv.bias", "gate.gate", "gate.proj"],
        ),
        (None, ["body", "gate", "head"], ["conv.weight", "conv.bias"]),
        ("body", "body.1", None),  # nothing with parameters is left
        ("*", ["conv", nn.Linear], ["gate.gate", "gate.proj"]),
    ],
)
def test_include_and_exclude_choose_subtrees(include, exclude, expected):
    model = Net()
    if expected is None:
        with pytest.raises(ValueError, match="choose no module with parameters"):
            vi.convert_to_vimodule(model, include=include, exclude=exclude)
        return
    vi.convert_to_vimodule(model, include=include, exclude=exclude)
    assert _random_variables(model) == expected


def test_modules_not_chosen_keep_class_weights_and_flags():
    torch.manual_seed(4)
    model = Net()
    model.conv.weight.requires_grad_(False)
    conv, body_linear = model.conv, model.body[1]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    vi.convert_to_vimodule(model, keep_weights=True, include="head")
    assert model.conv is conv and type(conv) is nn.Conv1d
    assert type(body_linear) is nn.Linear and type(model.gate) is Gate
    assert type(model.body) is nn.Sequential  # no Bayesian part inside
    assert type(model).__name__ == "AVINet"  # a Bayesian container, samples once
    assert not model.conv.weight.requires_grad and model.conv.bias.requires_grad
    state = model.state_dict()
    for key in ("conv.weight", "body.1.weight", "gate.proj", "norm.weight"):
        assert torch.equal(state[key], weights[key])
    assert torch.equal(state["head.0._weight_mean"], weights["head.0.weight"])


def test_a_partly_bayesian_model_computes_the_original_at_the_mean():
    torch.manual_seed(5)
    model = Net()
    x = torch.randn(6, 2, 6)
    expected = model(x)
    vi.convert_to_vimodule(model, keep_weights=True, include=["gate", "head"])
    with vi.mean_weights():
        torch.testing.assert_close(model(x)[0], expected)
    plain = vi.to_deterministic(model)
    assert (
        type(plain) is Net and type(plain.gate) is Gate and type(plain.head[0]) is nn.Linear
    )
    torch.testing.assert_close(plain(x), expected)
    out = model(x, samples=3)
    assert out.shape == (3, 6, 3) and not torch.equal(out[0], out[1])


def test_the_kl_counts_only_the_bayesian_parts():
    # The log-probs of the partly Bayesian model are those of its head alone: with
    # the same seed, the head called on the features draws the same weights.
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(5, 4).double()
    model.double()
    vi.convert_to_vimodule(model, include="2")
    torch.manual_seed(7)
    out = model(x, samples=4)
    features = model[1](model[0](x))
    torch.manual_seed(7)
    head = model[2](features, samples=4)
    torch.testing.assert_close(out.log_probs, head.log_probs)
    torch.testing.assert_close(out.as_plain(), head.as_plain())
    loss = vi.KullbackLeiblerLoss(Categorical(), dataset_size=100)(
        out, torch.tensor([0, 1, 2, 0, 1])
    )
    loss.backward()
    assert model[0].weight.grad is not None  # the plain parts train as usual
    assert model[2]._weight_log_std.grad is not None


def test_include_naming_a_module_overrides_the_norm_ban():
    model = Net()
    vi.convert_to_vimodule(model, include="norm")
    assert type(model.norm) is vi.VILayerNorm
    model = Net()
    vi.convert_to_vimodule(model, include=nn.LayerNorm)
    assert type(model.norm) is vi.VILayerNorm
    model = Net()
    vi.convert_to_vimodule(model, include="*")  # a subtree: the ban holds inside
    assert type(model.norm) is nn.LayerNorm
    model = Net()
    vi.convert_to_vimodule(model, include=["norm", "gate"], exclude="norm")
    assert type(model.norm) is nn.LayerNorm


def test_a_twin_is_not_used_where_exclude_keeps_a_part_inside():
    torch.manual_seed(8)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x = torch.randn(3, 5, 8)
    expected = encoder(x)
    vi.convert_to_vimodule(encoder, keep_weights=True, include="layers.*.linear2")
    assert type(encoder.layers[0].linear2) is vi.VILinear
    assert type(encoder.layers[0].linear1) is nn.Linear
    assert _random_variables(encoder) == [
        f"layers.{i}.linear2.{v}" for i in (0, 1) for v in ("weight", "bias")
    ]
    with vi.mean_weights():
        torch.testing.assert_close(encoder(x)[0], expected)
    twin = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    vi.convert_to_vimodule(twin, include="*", exclude="linear1")
    assert type(twin) is not vi.VITransformerEncoderLayer
    assert type(twin.linear1) is nn.Linear and type(twin.linear2) is vi.VILinear


def test_partly_bayesian_checkpoints_round_trip():
    torch.manual_seed(9)
    model = vi.convert_to_vimodule(Net(), include="head")
    with torch.no_grad():
        model.conv.weight.add_(1.0)
        model.head[0]._weight_mean.add_(1.0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = vi.convert_to_vimodule(Net(), include="head")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(4, 2, 6)
    torch.manual_seed(10)
    expected = model(x, samples=3)
    torch.manual_seed(10)
    torch.testing.assert_close(restored(x, samples=3), expected)


@pytest.mark.parametrize("argument", ["include", "exclude"])
def test_an_entry_matching_nothing_is_named(argument):
    with pytest.raises(
        ValueError, match=rf"'haed' \({argument}\) matches no module of Net"
    ):
        vi.convert_to_vimodule(Net(), **{argument: ["head", "haed"]})
    with pytest.raises(ValueError, match=rf"class Embedding \({argument}\)"):
        vi.convert_to_vimodule(Net(), **{argument: nn.Embedding})
    with pytest.raises(ValueError, match="matches no module"):
        vi.convert_to_vimodule(Net(), **{argument: lambda name, module: False})


@pytest.mark.parametrize("bad", [3, [], ["head", 3.5], int])
def test_bad_selections_raise_type_errors(bad):
    with pytest.raises(TypeError, match="convert_to_vimodule: include"):
        vi.convert_to_vimodule(Net(), include=bad)


def test_a_module_used_twice_in_a_sequential_keeps_both_places():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    vi.convert_to_vimodule(model)
    assert len(model) == 3 and model[0] is model[2]
    out = model(torch.randn(2, 3), samples=2)
    assert out.shape == (2, 2, 3)


def test_moped_on_a_partly_bayesian_model_sets_only_its_bayesian_parts():
    torch.manual_seed(11)
    trained = Net()
    model = Net()
    model.load_state_dict(trained.state_dict())
    vi.convert_to_vimodule(model, include="head")
    vi.moped(model, trained, delta=0.1)
    assert torch.equal(model.head[0]._weight_mean, trained.head[0].weight)
    expected_std = (0.1 * trained.head[0].weight.abs()).clamp_min(1e-6)
    torch.testing.assert_close(model.head[0]._weight_log_std.exp(), expected_std)
    assert type(model.conv) is nn.Conv1d


@pytest.mark.parametrize("kind", ["partial", "adapters"])
def test_to_deterministic_keeps_a_module_used_twice_shared(kind):
    torch.manual_seed(12)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 2))
    if kind == "partial":
        vi.convert_to_vimodule(model, keep_weights=True, include="4")
    else:
        vi.add_lora(model, rank=1, include="0")
        with torch.no_grad():
            model[0].lora_B.weight.fill_(0.3)
    x = torch.randn(3, 4)
    with vi.mean_weights():
        expected = model(x)[0]
    plain = vi.to_deterministic(model)
    assert list(plain._modules) == ["0", "1", "2", "3", "4"]
    assert plain[0] is plain[2]
    torch.testing.assert_close(plain(x), expected)


def test_names_with_pattern_characters_match_themselves():
    model = nn.Module()
    model.layers = nn.ModuleDict({"a[0]": nn.Linear(2, 2), "a0": nn.Linear(2, 2)})
    chosen = vi.selection.select_modules(model, include="layers.a[0]")
    assert model.layers["a[0]"] in chosen  # the exact name first
    assert model.layers["a0"] in chosen  # and as a pattern, "[0]" matches "0"


def test_patterns_and_predicates_keep_the_norm_ban():
    for include in ("norm*", lambda name, module: name == "norm"):
        model = Net()
        vi.convert_to_vimodule(model, include=[include, "head"])
        assert type(model.norm) is nn.LayerNorm


def test_a_module_instance_is_not_a_selection():
    model = Net()
    with pytest.raises(
        TypeError, match=r"holds the module Linear.*pass its name or its class"
    ):
        vi.convert_to_vimodule(model, include=model.head[0])
