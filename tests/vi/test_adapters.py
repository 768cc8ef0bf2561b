"""Bayesian low-rank adapters: ``VILoRALinear``, ``VILoRAConv2d`` and ``add_lora``."""

import io

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical, MeanFieldNormal
from torch_blue.vi.sampling import SamplingState

ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout")


class Pretrained(nn.Module):
    """A small CNN with a classifier head, standing in for a pretrained network."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2)
        )
        self.norm = nn.LayerNorm(6 * 3 * 3)
        self.hidden = nn.Linear(6 * 3 * 3, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.features(x).flatten(1))
        return self.head(torch.relu(self.hidden(h)))


def _perturb(model: nn.Module, seed: int = 0) -> None:
    """Move every adapter away from its start (B = 0), as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and not name.endswith("log_std"):
                noise = torch.randn(
                    parameter.shape, generator=generator, dtype=parameter.dtype
                )
                parameter.add_(0.3 * noise)


def _images(seed: int = 1, batch: int = 5) -> torch.Tensor:
    return torch.randn(batch, 1, 7, 7, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_adapted_model_starts_as_the_pretrained_one(estimator):
    torch.manual_seed(0)
    model = Pretrained()
    x = _images()
    expected = model(x)
    vi.add_lora(model, rank=2, estimator=estimator)
    out = model(x, samples=4)
    assert out.shape == (4, 5, 3)
    # B starts at zero, so every sample of the update is zero despite A's noise
    for sample in out.as_plain():
        torch.testing.assert_close(sample, expected)


def test_add_lora_replaces_the_chosen_layers_and_freezes_the_rest():
    model = Pretrained()
    hidden = model.hidden
    vi.add_lora(model, rank=2, exclude="head")
    assert type(model.features[0]) is vi.VILoRAConv2d
    assert type(model.features[2]) is vi.VILoRAConv2d
    assert type(model.hidden) is vi.VILoRALinear and model.hidden.base is hidden
    assert type(model.head) is nn.Linear and type(model.norm) is nn.LayerNorm
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 3 * 3  # A's mean and log-std, B, for three layers
    random = [key for key, *_ in vi.base.named_random_variables(model)]
    assert random == [
        "features.0.lora_A.weight",
        "features.2.lora_A.weight",
        "hidden.lora_A.weight",
    ]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradients_reach_only_the_adapters(estimator):
    torch.manual_seed(1)
    model = vi.add_lora(Pretrained(), rank=2, estimator=estimator)
    _perturb(model)
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=50)
    loss_fn(model(_images(), samples=3), torch.tensor([0, 1, 2, 0, 1])).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


@pytest.mark.parametrize("alpha", [None, 6.0])
def test_to_deterministic_merges_the_mean_update(alpha):
    torch.manual_seed(2)
    model = Pretrained().double()
    vi.add_lora(model, rank=3, alpha=alpha)
    _perturb(model)
    x = _images().double()
    with vi.mean_weights():
        expected = model(x)[0]
    plain = vi.to_deterministic(model)
    assert type(plain) is Pretrained
    assert type(plain.hidden) is nn.Linear and type(plain.features[2]) is nn.Conv2d
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in Pretrained().parameters()
    )
    torch.testing.assert_close(plain(x), expected)
    adapter = model.hidden
    assert adapter.scaling == (1.0 if alpha is None else alpha / 3)
    a_mean = adapter.lora_A._weight_mean
    torch.testing.assert_close(
        plain.hidden.weight,
        adapter.base.weight + adapter.scaling * adapter.lora_B.weight @ a_mean,
    )


@pytest.mark.parametrize(
    "geometry",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 2), stride=2, dilation=(1, 2), padding=2),
        dict(kernel_size=3, padding="same", padding_mode="reflect", bias=False),
    ],
)
def test_conv_adapters_merge_for_every_geometry(geometry):
    torch.manual_seed(3)
    base = nn.Conv2d(3, 5, **geometry).double()
    adapter = vi.VILoRAConv2d(base, rank=2)
    _perturb(adapter)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    with vi.mean_weights():
        expected = adapter(x)[0]
    merged = adapter.merged()
    assert type(merged) is nn.Conv2d and merged.padding_mode == base.padding_mode
    torch.testing.assert_close(merged(x), expected)


def test_adapter_samples_vary_around_the_merged_network():
    # With B away from zero the update is random: samples differ, and their mean
    # approaches the mean network (A enters linearly). Tolerance: 5 standard errors.
    torch.manual_seed(4)
    adapter = vi.VILoRALinear(nn.Linear(6, 4).double(), rank=2)
    _perturb(adapter)
    x = torch.randn(3, 6, dtype=torch.float64)
    samples = adapter(x, samples=4000).as_plain().detach()
    assert samples.std(0).min() > 0
    error = samples.mean(0) - adapter.merged()(x)
    assert torch.all(error.abs() <= 5 * samples.std(0) / 4000**0.5)


def test_a_layer_used_twice_gets_one_adapter():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    vi.add_lora(model, rank=1)
    assert model[0] is model[2] and type(model[0]) is vi.VILoRALinear


def test_a_layer_on_its_own_becomes_its_adapter():
    layer = nn.Linear(4, 2)
    adapter = vi.add_lora(layer, rank=1)
    assert type(adapter) is vi.VILoRALinear and adapter.base is layer
    assert adapter(torch.randn(3, 4), samples=2).shape == (2, 3, 2)


def test_adapter_checkpoints_round_trip():
    def build() -> nn.Module:
        torch.manual_seed(5)
        return vi.add_lora(Pretrained(), rank=2)

    trained = build()
    _perturb(trained)
    state = vi.adapter_state_dict(trained)
    stored = sum(v.numel() for v in state.values())
    assert stored < sum(p.numel() for p in Pretrained().parameters())
    assert not any(key.endswith(("base.weight", "base.bias")) for key in state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = build()
    vi.load_adapter_state_dict(restored, torch.load(buffer, weights_only=True))
    x = _images()
    with vi.mean_weights():
        torch.testing.assert_close(restored(x), trained(x))
    # the full state dict round-trips as well
    full = build()
    full.load_state_dict(trained.state_dict())
    torch.manual_seed(6)
    expected = trained(x, samples=3)
    torch.manual_seed(6)
    torch.testing.assert_close(full(x, samples=3), expected)


def test_adapters_are_not_loaded_onto_other_base_weights():
    torch.manual_seed(7)
    trained = vi.add_lora(Pretrained(), rank=2)
    state = vi.adapter_state_dict(trained)
    other = vi.add_lora(Pretrained(), rank=2)  # other pretrained weights
    with pytest.raises(ValueError, match=r"base weights of adapter 'features\.0' differ"):
        vi.load_adapter_state_dict(other, state)
    fewer = vi.add_lora(Pretrained(), rank=2, include="hidden")
    with pytest.raises(ValueError, match="has no adapter there"):
        vi.load_adapter_state_dict(fewer, state)


def test_missing_and_unexpected_entries_are_named():
    torch.manual_seed(8)
    trained = vi.add_lora(Pretrained(), rank=2)
    state = vi.adapter_state_dict(trained)
    del state["hidden.lora_B.weight"]
    state["hidden.lora_C"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['hidden.lora_B.weight'\]"):
        vi.load_adapter_state_dict(trained, state)


def test_adapters_train():
    # The target is the pretrained network plus a rank-1 change of its hidden layer;
    # fine-tuning the adapter alone removes most of the error of the mean prediction.
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    x = torch.randn(64, 5)
    with torch.no_grad():
        change = torch.randn(16, 1) @ torch.randn(1, 5)
        target = net[2](torch.tanh(x @ (net[0].weight + change).T + net[0].bias))
    vi.add_lora(net, rank=1, include="0")

    def error() -> float:
        with torch.no_grad(), vi.mean_weights():
            return (net(x)[0] - target).square().mean().item()

    start = error()
    loss_fn = vi.KullbackLeiblerLoss(MeanFieldNormal(std=0.05), dataset_size=64)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.03)
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn(net(x, samples=2), target).backward()
        optimizer.step()
    assert error() < 0.1 * start


def test_bad_arguments_raise():
    with pytest.raises(
        TypeError, match=r"VILoRALinear: base must be an torch\.nn\.modules"
    ):
        vi.VILoRALinear(nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="VILoRAConv2d: base must be"):
        vi.VILoRAConv2d(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="VILoRALinear: rank"):
        vi.VILoRALinear(nn.Linear(2, 2), rank=0)
    with pytest.raises(ValueError, match="VILoRALinear: alpha must be a positive number"):
        vi.VILoRALinear(nn.Linear(2, 2), alpha=-1.0)
    with pytest.raises(ValueError, match="groups=1, got groups=2"):
        vi.VILoRAConv2d(nn.Conv2d(2, 2, 1, groups=2))
    with pytest.raises(ValueError, match=r"add_lora: include/exclude choose no nn\.Linear"):
        vi.add_lora(Pretrained(), include="norm")
    with pytest.raises(ValueError, match=r"'classifier' \(include\) matches no module"):
        vi.add_lora(Pretrained(), include="classifier")
    with pytest.raises(TypeError, match=r"add_lora: model must be an nn\.Module"):
        vi.add_lora("model")


@pytest.mark.parametrize("kind", ["adapters", "partial"])
@pytest.mark.parametrize("grad", [True, False])
def test_bayesian_parts_in_torch_transformer_layers_draw_once(kind, grad, monkeypatch):
    # torch's encoder layers read their linear layers' weights in eval mode to test
    # whether a fused kernel applies; while such a model's lanes run, that fast path
    # is off, so every random variable is drawn and recorded once per call.
    torch.manual_seed(10)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(3, 5, 8)
    if kind == "adapters":
        vi.add_lora(encoder, rank=2)
        _perturb(encoder)
    else:
        vi.convert_to_vimodule(encoder, keep_weights=True, include="layers.*.linear2")
    records = []
    add = SamplingState.add

    def counting(self, module, variable, log_probs):
        records.append((id(module), variable))
        return add(self, module, variable, log_probs)

    monkeypatch.setattr(SamplingState, "add", counting)
    with torch.set_grad_enabled(grad):
        out = encoder(x, samples=3)
    assert len(records) == len(set(records)) == 4  # two layers, two variables each
    assert out.log_probs.shape == (3, 2)
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    with torch.no_grad(), vi.mean_weights():
        mean = encoder(x)[0]
    torch.testing.assert_close(vi.to_deterministic(encoder)(x), mean, atol=1e-5, rtol=1e-5)
    encoder.train()
    encoder(x, samples=3).sum().backward()  # training: dropout in the plain attention
    assert any(p.grad is not None for p in encoder.parameters())


def test_grouped_convolutions_are_left_alone_unless_named():
    torch.manual_seed(11)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    vi.add_lora(net, rank=1)
    assert type(net[0]) is nn.Conv2d and type(net[1]) is vi.VILoRAConv2d
    assert net(torch.randn(2, 4, 5, 5), samples=2).shape == (2, 2, 2, 3, 3)


@pytest.mark.parametrize(
    ("build", "options", "message"),
    [
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.Conv2d(4, 4, 1, groups=2)),
            {"include": ["0", "1"]},
            "groups=1",
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
            {"estimator": "nope"},
            "estimator",
        ),
    ],
)
def test_a_failing_add_lora_leaves_the_model_as_it_was(build, options, message):
    net = build()
    before = [
        (type(m), [p.requires_grad for p in m.parameters(recurse=False)])
        for m in net.modules()
    ]
    with pytest.raises(ValueError, match=message):
        vi.add_lora(net, rank=1, **options)
    after = [
        (type(m), [p.requires_grad for p in m.parameters(recurse=False)])
        for m in net.modules()
    ]
    assert after == before


def test_an_adapter_that_cannot_be_built_leaves_its_base_trainable():
    base = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="estimator"):
        vi.VILoRALinear(base, estimator="nope")
    assert all(p.requires_grad for p in base.parameters())


def test_adapters_of_another_rank_are_refused_before_anything_is_loaded():
    torch.manual_seed(12)
    trained = vi.add_lora(Pretrained(), rank=2)
    trained.head.base.requires_grad_(True)
    state = vi.adapter_state_dict(trained)
    torch.manual_seed(12)
    other = vi.add_lora(Pretrained(), rank=3)
    other.head.base.requires_grad_(True)
    head = other.head.base.weight.detach().clone()
    with pytest.raises(
        ValueError, match=r"other shapes \(another rank\?\): features\.0\.lora_A"
    ):
        vi.load_adapter_state_dict(other, state)
    assert torch.equal(other.head.base.weight, head)
