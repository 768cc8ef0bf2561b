import pytest
import torch
from torch import nn
from torch.testing import assert_close

from torch_blue import vi
from torch_blue.vi import KullbackLeiblerLoss, VIConv1d, VIModule, VISequential
from torch_blue.vi.distributions import MeanFieldNormal, NonBayesian
from torch_blue.vi.normalization import (
    VIBatchNorm1d,
    VIBatchNorm2d,
    VIBatchNorm3d,
    VILayerNorm,
)
from torch_blue.vi.utils import ShapeError
from torch_blue.vi.utils.convert import convert_norms, convert_to_vimodule

BATCH_NORMS = [
    (VIBatchNorm1d, nn.BatchNorm1d, (8, 3)),
    (VIBatchNorm1d, nn.BatchNorm1d, (8, 3, 5)),
    (VIBatchNorm2d, nn.BatchNorm2d, (4, 3, 3, 5)),
    (VIBatchNorm3d, nn.BatchNorm3d, (4, 3, 2, 3, 2)),
]
LAYER_NORMS = [
    ({"normalized_shape": 6}, (4, 6)),
    ({"normalized_shape": (5, 6)}, (2, 3, 5, 6)),
    ({"normalized_shape": [3, 5, 6]}, (2, 3, 5, 6)),
    ({"normalized_shape": 6, "bias": False}, (7, 6)),
    ({"normalized_shape": 6, "elementwise_affine": False}, (2, 6)),
]


def _freeze_to_mean(layer):
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-30.0)


def _mean_twin(layer):
    """The torch twin with the layer's means and buffers, and random affine means."""
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("mean"):
                parameter.add_(0.3 * torch.randn_like(parameter))
    reference = layer._to_torch()
    state = {
        key: getattr(layer, f"_{key}_mean") if key in ("weight", "bias") else value
        for key, value in reference.state_dict().items()
    }
    state.update(dict(layer.named_buffers()))
    reference.load_state_dict(state)
    return reference


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), BATCH_NORMS)
@pytest.mark.parametrize(
    "options",
    [{}, {"momentum": None}, {"affine": False}, {"bias": False}, {"eps": 1e-2}],
)
def test_batch_norm_matches_torch_in_train_and_eval_mode(vi_cls, nn_cls, shape, options):
    layer = vi_cls(3, **options)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    for _ in range(3):
        x = 2 * torch.randn(shape) + 1
        expected = reference(x)
        out = layer(x, samples=2)
        assert out.shape == (2, *expected.shape)
        for lane in out:
            assert_close(lane, expected, atol=1e-5, rtol=1e-5)
    assert_close(layer.running_mean, reference.running_mean)
    assert_close(layer.running_var, reference.running_var)
    assert torch.equal(layer.num_batches_tracked, reference.num_batches_tracked)
    layer.eval()
    reference.eval()
    x = torch.randn(shape)
    assert_close(layer(x, samples=2)[1], reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_without_running_stats_batch_statistics_are_always_used(training):
    layer = VIBatchNorm1d(3, track_running_stats=False).train(training)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer).train(training)
    assert layer.running_mean is None and layer.num_batches_tracked is None
    x = torch.randn(6, 3, 4)
    assert_close(layer(x, samples=2)[0], reference(x), atol=1e-5, rtol=1e-5)


def test_each_lane_is_normalised_with_its_own_batch_statistics():
    # The convolution makes the lanes differ; each lane is then normalised over its
    # own batch: zero mean and unit (biased) variance per lane and channel.
    model = VISequential(VIConv1d(2, 3, 3), VIBatchNorm1d(3, affine=False))
    out = model(torch.randn(8, 2, 10), samples=5).as_plain()
    assert not torch.allclose(out[0], out[1])
    assert_close(out.mean(dim=(1, 3)), torch.zeros(5, 3), atol=1e-5, rtol=0)
    assert_close(out.var(dim=(1, 3), unbiased=False), torch.ones(5, 3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_stats_follow_the_mean_over_lanes(momentum):
    layer = VIBatchNorm1d(3, momentum=momentum)
    lanes = torch.randn(4, 8, 3, 5) * torch.arange(1.0, 5.0).view(4, 1, 1, 1)
    expected_mean, expected_var = torch.zeros(3), torch.ones(3)
    for step in range(1, 3):
        x = lanes + step
        layer.sampled_forward(x, sampled_input=True)
        factor = 1 / step if momentum is None else momentum
        lane_mean = x.mean(dim=(1, 3)).mean(0)
        lane_var = x.var(dim=(1, 3), unbiased=True).mean(0)
        expected_mean = (1 - factor) * expected_mean + factor * lane_mean
        expected_var = (1 - factor) * expected_var + factor * lane_var
        assert_close(layer.running_mean, expected_mean)
        assert_close(layer.running_var, expected_var)
        assert int(layer.num_batches_tracked) == step


def test_chunked_samples_update_the_running_stats_once():
    x = torch.randn(6, 8, 3, 5)
    whole, chunked = VIBatchNorm1d(3), VIBatchNorm1d(3)
    whole.sampled_forward(x, sampled_input=True)
    chunked.sampled_forward(x, sampled_input=True, chunk_size=4)
    assert_close(chunked.running_mean, whole.running_mean)
    assert_close(chunked.running_var, whole.running_var)
    assert int(chunked.num_batches_tracked) == 1


def test_forward_outside_a_sampled_call_updates_directly():
    layer = VIBatchNorm1d(3)
    reference = _mean_twin(layer)
    x = torch.randn(8, 3)
    layer.forward(x)
    reference(x)
    assert_close(layer.running_mean, reference.running_mean)
    assert_close(layer.running_var, reference.running_var)
    layer.reset_log_probs()


def test_eval_mode_uses_and_keeps_the_running_stats():
    layer = VIBatchNorm1d(3, affine=False)
    with torch.no_grad():
        layer.running_mean.fill_(2.0)
        layer.running_var.fill_(4.0)
    model = VISequential(VIConv1d(2, 3, 1), layer).eval()
    x = torch.randn(4, 2, 5)
    out = model(x, samples=3)
    assert torch.equal(layer.running_mean, torch.full((3,), 2.0))
    assert int(layer.num_batches_tracked) == 0
    # Each lane's convolution output, normalised with the running statistics.
    model[0].eval()
    with vi.mean_weights():
        conv = model[0](x)[0]
        assert_close(model(x)[0], (conv - 2.0) / (4.0 + 1e-5) ** 0.5)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(("options", "shape"), LAYER_NORMS)
def test_layer_norm_matches_torch(options, shape):
    layer = VILayerNorm(**options)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    assert type(reference) is nn.LayerNorm
    x = torch.randn(shape)
    out = layer(x, samples=3)
    assert out.shape == (3, *shape)
    for lane in out:
        assert_close(lane, reference(x), atol=1e-5, rtol=1e-5)


NORMS = [
    (lambda: VIBatchNorm1d(3), (8, 3, 5)),
    (lambda: VIBatchNorm2d(3, bias=False), (4, 3, 3, 5)),
    (lambda: VIBatchNorm3d(3), (4, 3, 2, 3, 2)),
    (lambda: VILayerNorm((3, 5)), (4, 3, 5)),
]


@pytest.mark.parametrize(("factory", "shape"), NORMS)
@pytest.mark.parametrize("training", [True, False])
def test_mean_weights_equal_to_deterministic(factory, shape, training):
    layer = factory().train(training)
    plain = vi.to_deterministic(layer)
    assert type(plain) is layer._torch_twin
    assert plain.training == training
    assert not any(isinstance(m, VIModule) for m in plain.modules())
    assert set(plain.state_dict()) == set(layer._to_torch().state_dict())
    x = torch.randn(shape)
    with vi.mean_weights():
        out = layer(x)
    if training and not isinstance(layer, VILayerNorm):
        # batch statistics: the lane-safe F.batch_norm call (no running statistics)
        # against torch.nn's, which may take another kernel
        assert_close(out[0], plain(x))
    else:
        assert torch.equal(out[0], plain(x))  # the same F.batch_norm/F.layer_norm call


@pytest.mark.parametrize(
    "module",
    [nn.BatchNorm1d(3), nn.BatchNorm2d(3, affine=False), nn.LayerNorm([3, 4])],
)
def test_convert_leaves_norms_alone_unless_asked(module):
    twins = {nn.BatchNorm1d: VIBatchNorm1d, nn.BatchNorm2d: VIBatchNorm2d,
             nn.LayerNorm: VILayerNorm}  # fmt: skip
    cls = type(module)
    assert type(convert_to_vimodule(module)) is cls
    model = convert_to_vimodule(nn.Sequential(nn.Linear(4, 3), cls(3)))
    assert type(model[1]) is cls
    convert_norms(True)
    try:
        assert type(convert_to_vimodule(module)) is twins[cls]
    finally:
        convert_norms(False)


@pytest.mark.parametrize(
    ("module", "shape"),
    [(nn.BatchNorm1d(3), (8, 3)), (nn.BatchNorm2d(3, momentum=None), (4, 3, 2, 2)),
     (nn.LayerNorm(5), (4, 5))],
)  # fmt: skip
def test_convert_keeps_weights_and_buffers(module, shape):
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    for _ in range(3):  # non-trivial running statistics
        module(torch.randn(shape))
    x = torch.randn(shape)
    expected_train = module(x).detach()
    module.eval()
    expected_eval = module(x).detach()
    module.train()
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    convert_norms(True)
    try:
        converted = convert_to_vimodule(
            module, keep_weights=True, variational_distribution=NonBayesian(),
            prior=NonBayesian(),
        )  # fmt: skip
    finally:
        convert_norms(False)
    assert isinstance(converted, VIModule)
    for name, value in converted.named_buffers():
        assert torch.equal(value, buffers[name])
    converted.eval()
    assert_close(converted(x, samples=1)[0], expected_eval)
    converted.train()
    assert_close(converted(x, samples=1)[0], expected_train)


@pytest.mark.parametrize("cls", [VIBatchNorm1d, VILayerNorm])
def test_affine_parameters_start_at_one_and_zero_with_small_spread(cls):
    layer = cls(4)
    assert torch.equal(layer._weight_mean, torch.ones(4))
    assert torch.equal(layer._bias_mean, torch.zeros(4))
    for parameter in (layer._weight_log_std, layer._bias_log_std):
        assert_close(parameter.exp(), torch.full((4,), 0.01), atol=1e-4, rtol=0)
    wide = cls(4, kaiming_initialization=False)
    assert torch.equal(wide._weight_log_std, torch.zeros(4))
    assert torch.equal(wide._weight_mean, torch.ones(4))


@pytest.mark.parametrize("cls", [VIBatchNorm2d, VILayerNorm])
def test_default_prior_centres_the_scale_at_one(cls):
    layer = cls(4)
    assert float(layer.prior["weight"].mean) == 1.0
    assert float(layer.prior["bias"].mean) == 0.0
    # So the KL term does not pull the initial scales towards zero ...
    kl = vi.AnalyticalKullbackLeiblerLoss(layer, MeanFieldNormal(), 1).prior_matching()
    zero_centred = cls(4, prior=MeanFieldNormal())
    assert float(zero_centred.prior["weight"].mean) == 0.0  # ... an explicit prior is kept
    zero_kl = vi.AnalyticalKullbackLeiblerLoss(
        zero_centred, MeanFieldNormal(), 1
    ).prior_matching()
    assert_close(zero_kl - kl, torch.tensor(4 * 0.5))  # (1 - 0)^2 / 2 per channel
    initialised = cls(4, prior_initialization=True)
    assert torch.equal(initialised._weight_mean, torch.ones(4))
    assert torch.equal(initialised._weight_log_std, torch.zeros(4))


@pytest.mark.parametrize("cls", [VIBatchNorm1d, VILayerNorm])
def test_trains_with_kl_loss(cls):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    normalised = nn.functional.layer_norm(x, (4,)) if cls is VILayerNorm else (
        (x - x.mean(0)) / x.std(0, unbiased=False))  # fmt: skip
    target = 3 * normalised - 1
    layer = cls(4)
    loss_fn = KullbackLeiblerLoss(MeanFieldNormal(std=0.1), dataset_size=64)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(layer(x, samples=4), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])


@pytest.mark.parametrize("cls", [VIBatchNorm1d, VILayerNorm])
def test_lanes_differ_and_log_probs_score_the_drawn_affine_parameters(cls):
    # Two rows with known normalised values read scale and shift off the output.
    layer = cls(4).eval()
    with torch.no_grad():
        layer._weight_log_std.fill_(-1.0)
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]])
    normalised = (
        nn.functional.layer_norm(x, (4,)) if cls is VILayerNorm else x / (1 + 1e-5) ** 0.5
    )
    out = layer(x, samples=3)
    assert out.log_probs.shape == (3, 2)
    assert not torch.allclose(out[0], out[1])
    for lane, log_probs in zip(out.as_plain(), out.log_probs):
        weight = (lane[0] - lane[1]) / (normalised[0] - normalised[1])
        bias = lane[0] - weight * normalised[0]
        expected = layer.get_log_probs(weight, "weight") + layer.get_log_probs(bias, "bias")
        assert_close(log_probs, expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("factory", "shape"), NORMS)
def test_gradients_reach_every_variational_parameter(factory, shape):
    layer = factory()
    out = layer(torch.randn(shape), samples=3)
    (out.pow(3).sum() + out.log_probs.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (VIBatchNorm1d(3), (2, 3, 4, 5), r"VIBatchNorm1d\(num_features=3\).*\(N, 3\)"),
        (VIBatchNorm2d(3), (2, 3, 4), r"VIBatchNorm2d\(num_features=3\).*\(N, 3, H, W\)"),
        (VIBatchNorm2d(3), (2, 4, 4, 4), r"VIBatchNorm2d\(num_features=3\).*got \(2, 4"),
        (VIBatchNorm3d(3), (2, 3, 4, 4), r"VIBatchNorm3d\(num_features=3\)"),
        (VIBatchNorm1d(3), (1, 3), "more than 1 value per channel"),
        (VILayerNorm((3, 4)), (2, 4, 3), r"VILayerNorm\(normalized_shape=\(3, 4\)\)"),
        (VILayerNorm(4), (), r"expected input of shape \(\*, 4\)"),
    ],
)
def test_bad_inputs_raise(layer, shape, match):
    with pytest.raises(ShapeError, match=match):
        layer(torch.randn(shape), samples=2)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: VIBatchNorm1d(0), "num_features must be a positive int"),
        (
            lambda: VIBatchNorm2d(3, momentum=2.0),
            r"momentum must be a number in \[0, 1\] or None \(cumulative average\)",
        ),
        (lambda: VIBatchNorm3d(3, eps=-1.0), "eps must be a non-negative number"),
        (lambda: VILayerNorm([]), "normalized_shape must be a positive int"),
        (lambda: VILayerNorm((3, 0)), "normalized_shape must be a positive int"),
        (lambda: VILayerNorm("4"), "normalized_shape must be a positive int"),
    ],
)
def test_bad_arguments_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_repr():
    text = repr(VIBatchNorm2d(3, momentum=None, bias=False))
    assert "3, eps=1e-05, momentum=None, affine=True, track_running_stats=True" in text
    assert "bias=False" in text and "prior=MeanFieldNormal(mean=1, std=1)" in text
    text = repr(VILayerNorm((3, 4)))
    assert "(3, 4), eps=1e-05, elementwise_affine=True" in text
    assert "prior=(MeanFieldNormal(mean=1, std=1), MeanFieldNormal(mean=0" in text


def test_rescale_prior_has_no_effect_on_norms():
    layer = VIBatchNorm1d(3, rescale_prior=True)
    assert float(layer.prior["weight"].mean) == 1.0
    assert float(layer.prior["weight"].std) == 1.0
