"""The stacked path gives what the lanes give, and is taken only where it applies."""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import VILinear, VIReturn, VISequential, _stacked, base
from torch_blue.vi.distributions import (
    LaplacePrior,
    MeanFieldNormal,
    MeanFieldStudentT,
    ScaleMixtureNormalPrior,
)
from torch_blue.vi.estimators import ESTIMATORS
from torch_blue.vi.sampling import current_state
from torch_blue.vi.utils import ShapeError


def _general_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every call that takes the general (vmap) path."""
    calls = []
    general = base.sampled_call

    def spy(*args, **kwargs):
        calls.append(args[0])
        return general(*args, **kwargs)

    monkeypatch.setattr(base, "sampled_call", spy)
    return calls


def _run(model, x, seed, stacked, **kwargs):
    """Output, log-probs and parameter gradients of one seeded call."""
    previous = _stacked.ENABLED
    _stacked.ENABLED = stacked
    try:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        out = model(x, **kwargs)
        total = out.as_plain().square().sum()
        if out.log_probs is not None:
            total = total + out.log_probs.sum()
        total.backward()
    finally:
        _stacked.ENABLED = previous
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    log_probs = None if out.log_probs is None else out.log_probs.detach()
    return out.as_plain().detach(), log_probs, grads


def _assert_same(model, x, seed=0, **kwargs):
    """The stacked path and the lanes agree (float64, same seed)."""
    out_s, lp_s, grads_s = _run(model, x, seed, True, **kwargs)
    out_g, lp_g, grads_g = _run(model, x, seed, False, **kwargs)
    assert out_s.shape == out_g.shape
    torch.testing.assert_close(out_s, out_g, rtol=1e-10, atol=1e-12)
    if lp_g is None:
        assert lp_s is None
    else:
        assert lp_s.shape == lp_g.shape
        torch.testing.assert_close(lp_s, lp_g, rtol=1e-10, atol=1e-9)
    assert grads_s.keys() == grads_g.keys() and grads_g
    for name in grads_g:
        torch.testing.assert_close(grads_s[name], grads_g[name], rtol=1e-9, atol=1e-10)


def _mlp(estimator="reparameterization", **layer_kwargs):
    torch.manual_seed(123)
    model = VISequential(
        nn.Flatten(),
        VILinear(12, 16, **layer_kwargs),
        nn.Tanh(),
        VILinear(16, 16, **layer_kwargs),
        nn.ReLU(),
        VILinear(16, 3, bias=False, **layer_kwargs),
    ).double()
    model.estimator = estimator
    return model


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("record", [True, False])
def test_same_values_log_probs_and_gradients_as_the_lanes(estimator, record):
    model = _mlp(estimator)
    model.return_log_probs = record
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    _assert_same(model, x, samples=4)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("record", [True, False])
def test_large_layers_use_the_fused_kernels_and_still_agree(estimator, record):
    # 128 x 256 weights over 8 samples cross the fused functions' threshold
    torch.manual_seed(0)
    model = VISequential(VILinear(256, 128), nn.ReLU(), VILinear(128, 4)).double()
    model.estimator = estimator
    model.return_log_probs = record
    _assert_same(model, torch.randn(70, 256, dtype=torch.float64), samples=8)


def test_prediction_samples_preactivations_of_shared_inputs_alike():
    # 400 samples x 16 outputs x (12 inputs - 5 rows) saved: local noise, unfused
    model = _mlp()
    model.return_log_probs = False
    _assert_same(model, torch.randn(5, 12, dtype=torch.float64), samples=400)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_sampled_inputs_sequences_and_vireturn_inputs_agree(estimator, monkeypatch):
    model = _mlp(estimator)[1:]  # from VILinear(12, 16) on
    x = torch.randn(3, 5, 7, 12, dtype=torch.float64)  # (S, batch, positions, in)
    results = []
    for stacked in (True, False):
        monkeypatch.setattr(_stacked, "ENABLED", stacked)
        torch.manual_seed(2)
        results.append(model.sampled_forward(x, sampled_input=True))
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0].log_probs, results[1].log_probs)
    assert results[0].shape == (3, 5, 7, 3)
    monkeypatch.setattr(_stacked, "ENABLED", True)
    # a VIReturn input is mapped over and its log-probs are added
    _assert_same(model, VIReturn(x, torch.ones(3, 2, dtype=torch.float64)), seed=3)
    # positions of a shared input
    _assert_same(model, x[0], seed=4, samples=3)


def _cnn():
    torch.manual_seed(7)
    return VISequential(
        vi.VIConv1d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool1d(2),
        vi.VIConv1d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        nn.AdaptiveAvgPool1d(3),
        nn.Flatten(),
        VILinear(12, 3),
    ).double()


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("shape", [(5, 2, 8), (2, 8)], ids=["batched", "unbatched"])
def test_convolutions_and_pooling_agree(record, shape):
    model = _cnn()
    if len(shape) == 2:  # one example without a batch dimension
        model[-2] = nn.Flatten(0)
    model.return_log_probs = record
    _assert_same(model, torch.randn(shape, dtype=torch.float64), samples=3)


def test_large_and_grouped_convolutions_agree():
    torch.manual_seed(3)
    model = VISequential(
        vi.VIConv2d(4, 16, 3, padding=1, groups=2),  # a shared input, grouped: a loop
        nn.ReLU(),
        vi.VIConv2d(16, 32, 3, padding=1),  # past the fused threshold
        nn.MaxPool2d(2),
        vi.VIConv2d(32, 8, 3),
    ).double()
    _assert_same(model, torch.randn(8, 4, 12, 12, dtype=torch.float64), samples=4)


def test_dropout_softmax_flatten_unflatten_linear_and_layer_norm_agree():
    torch.manual_seed(0)
    model = VISequential(
        nn.Unflatten(1, (2, 6)),
        nn.Flatten(start_dim=-2),
        nn.Dropout(0.3),
        VILinear(12, 8),
        nn.LayerNorm(8),
        nn.GELU(),
        nn.Dropout(0.2),
        nn.Linear(8, 8),
        VILinear(8, 5),
        nn.LogSoftmax(dim=1),
        nn.Softmax(dim=-1),
    ).double()
    _assert_same(model, torch.randn(6, 12, dtype=torch.float64), samples=5)
    model.eval()
    _assert_same(model, torch.randn(6, 12, dtype=torch.float64), samples=5)


@pytest.mark.parametrize(
    "layer_kwargs",
    [
        {"variational_distribution": MeanFieldStudentT()},
        {"prior": LaplacePrior()},
        {"prior": ScaleMixtureNormalPrior()},
        {"prior": MeanFieldNormal(0.5, 2.0)},
    ],
    ids=["student_t_posterior", "laplace_prior", "scale_mixture_prior", "shifted_prior"],
)
def test_other_distributions_draw_the_same_numbers(layer_kwargs):
    model = _mlp(**layer_kwargs)
    _assert_same(model, torch.randn(4, 12, dtype=torch.float64), samples=3)


def test_the_stacked_path_is_taken_for_dense_and_convolution_stacks(monkeypatch):
    calls = _general_calls(monkeypatch)
    model = VISequential(nn.Flatten(), VILinear(4, 3), nn.ReLU(), VILinear(3, 2))
    out = model(torch.randn(5, 2, 2), samples=6)
    assert isinstance(out, VIReturn) and out.shape == (6, 5, 2)
    assert out.log_probs.shape == (6, 2)
    assert _cnn()(torch.randn(5, 2, 8, dtype=torch.float64)).shape == (10, 5, 3)
    assert calls == []


class _OwnForward(VILinear):
    def forward(self, input_):
        return super().forward(input_) * 2


class _Plain(nn.Module):
    def forward(self, x):
        return x


def _with(child):
    return lambda: VISequential(VILinear(4, 4), child)


def _hooked_model():
    model = VISequential(VILinear(4, 4))
    model.register_forward_hook(lambda *args: None)
    return model


def _hooked_child():
    model = VISequential(VILinear(4, 4))
    model[0].register_forward_pre_hook(lambda *args: None)
    return model


def _reusing():
    model = VISequential(VILinear(4, 4))
    model[0].reuse_draws = True
    return model


@pytest.mark.parametrize(
    "build, call, context",
    [
        (_with(_OwnForward(4, 4)), {}, nullcontext),
        (_with(_Plain()), {}, nullcontext),
        (_with(nn.BatchNorm1d(4)), {}, nullcontext),
        (_with(vi.VIConv1d(3, 1, 1, estimator="flipout")), {}, nullcontext),
        (_with(nn.MaxPool1d(2, return_indices=True)), {}, nullcontext),
        (_with(nn.Softmax()), {}, nullcontext),
        (lambda: vi.VIResidualConnection(VILinear(4, 4)), {}, nullcontext),
        (_hooked_model, {}, nullcontext),
        (_hooked_child, {}, nullcontext),
        (_reusing, {}, nullcontext),
        (_with(nn.ReLU()), {"chunk_size": 2}, nullcontext),
        (_with(nn.ReLU()), {}, vi.mean_weights),
        (_with(nn.ReLU()), {}, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    ],
    ids=[
        "child_with_own_forward",
        "custom_plain_module",
        "batch_norm",
        "convolution_with_flipout",
        "pooling_with_indices",
        "softmax_without_dim",
        "residual_block",
        "hook_on_model",
        "hook_on_child",
        "reuse_draws",
        "chunk_size",
        "mean_weights",
        "autocast",
    ],
)
def test_the_general_path_is_taken_where_the_stacked_one_does_not_apply(
    monkeypatch, build, call, context
):
    calls = _general_calls(monkeypatch)
    model = build()
    with context():
        model(torch.randn(3, 4), **call)
    assert len(calls) == 1


def test_global_hooks_and_function_transforms_take_the_general_path(monkeypatch):
    calls = _general_calls(monkeypatch)
    model = VISequential(VILinear(4, 4))
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        model(torch.randn(3, 4))
    finally:
        handle.remove()
    assert len(calls) == 1
    params = dict(model.named_parameters())
    torch.func.grad(
        lambda p: torch.func.functional_call(model, p, (torch.randn(3, 4),)).sum()
    )(params)
    assert len(calls) == 2


def test_half_precision_inputs_take_the_general_path(monkeypatch):
    calls = _general_calls(monkeypatch)
    model = VISequential(VILinear(4, 4)).half()
    model(torch.randn(3, 4).half())
    assert len(calls) == 1


def test_bad_inputs_raise_the_errors_of_the_lanes():
    model = VISequential(VILinear(4, 3))
    for stacked in (True, False):
        _stacked.ENABLED = stacked
        try:
            with pytest.raises(ShapeError, match=r"dimension is 4, got shape \(2, 5\)"):
                model(torch.randn(2, 5))
            with pytest.raises(TypeError, match="VILinear: the input's dtype"):
                model(torch.ones(2, 4, dtype=torch.long))
            with pytest.raises(ShapeError, match="samples=3 but the sampled input"):
                model(VIReturn(torch.randn(2, 4), None), samples=3)
            assert current_state() is None  # (no state left behind)
        finally:
            _stacked.ENABLED = True


def test_a_sequential_without_random_layers_still_returns_samples():
    model = VISequential(nn.ReLU())
    x = torch.randn(2, 3)
    out = model(x, samples=4)
    assert out.shape == (4, 2, 3)
    torch.testing.assert_close(out.as_plain(), torch.relu(x).expand(4, 2, 3))
    assert torch.equal(out.log_probs, torch.zeros(4, 2))


def test_entries_run_in_order_reused_modules_twice(monkeypatch):
    act = nn.ReLU()
    torch.manual_seed(0)
    linear = VILinear(4, 4)
    model = VISequential(VILinear(4, 4), act, linear, act, linear).double()
    _assert_same(model, torch.randn(5, 4, dtype=torch.float64), samples=3)
    # an entry set to None raises in the lanes: the stacked path leaves it to them
    calls = _general_calls(monkeypatch)
    model.add_module("gap", None)
    with pytest.raises(TypeError):
        model(torch.randn(5, 4, dtype=torch.float64))
    assert len(calls) == 1


def test_dropout_after_a_layer_with_a_shared_input_draws_the_lanes_masks():
    torch.manual_seed(0)
    model = VISequential(VILinear(4, 6), nn.Dropout(0.5), VILinear(6, 2)).double()
    _assert_same(model, torch.randn(5, 4, dtype=torch.float64), samples=3)
    conv = VISequential(vi.VIConv1d(2, 3, 3), nn.Dropout(0.5)).double()
    _assert_same(conv, torch.randn(4, 2, 6, dtype=torch.float64), samples=3)


def test_outputs_are_contiguous_as_the_lanes_are():
    out = VISequential(VILinear(4, 3))(torch.randn(5, 4), samples=2)
    assert out.is_contiguous() and out.view(-1).shape == (30,)


class _Clipped(VILinear):
    def sample_variable(self, variable):
        draw = super().sample_variable(variable)
        return None if draw is None else draw.clamp(-0.1, 0.1)


def test_subclasses_and_instance_forwards_take_the_lanes(monkeypatch):
    calls = _general_calls(monkeypatch)
    VISequential(_Clipped(4, 4), nn.ReLU())(torch.randn(3, 4))
    layer = VILinear(4, 4)
    layer.forward = lambda x: VILinear.forward(layer, x) * 2
    VISequential(layer)(torch.randn(3, 4))
    softmax = nn.Softmax(dim=-1)
    softmax.forward = lambda x: x
    VISequential(VILinear(4, 4), softmax)(torch.randn(3, 4))
    assert len(calls) == 3


@pytest.mark.parametrize(
    "module",
    [nn.Softmax(dim=-3), nn.Flatten(-3, -1), nn.Unflatten(-3, (2, 2)), nn.Flatten(2)],
    ids=["softmax", "flatten_start", "unflatten", "flatten_positive"],
)
def test_dimensions_out_of_range_for_one_sample_raise_on_both_paths(module, monkeypatch):
    model = VISequential(VILinear(4, 4), module)
    for stacked in (True, False):
        monkeypatch.setattr(_stacked, "ENABLED", stacked)
        with pytest.raises(IndexError):
            model(torch.randn(5, 4), samples=2)


def test_a_learned_prior_mean_keeps_its_gradient():
    from torch_blue.vi.distributions.kl import kl_divergence
    from torch_blue.vi.estimators import expected_log_probs

    layer = VILinear(3, 2, estimator="local_reparameterization").double()
    prior = layer.prior["weight"]
    prior.mean = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(expected_log_probs(layer, "weight")[0], prior.mean)[0]
    parameters = tuple(layer.get_variational_parameters("weight"))
    kl = kl_divergence(prior, layer.variational_distribution["weight"], parameters)
    # E log p = -H[q] - KL, and the entropy does not depend on the prior
    want = torch.autograd.grad(-kl, prior.mean)[0]
    torch.testing.assert_close(got, want)
    assert got != 0


# ------------------------------------------------------------ partly Bayesian stacks
def _plain_cnn() -> nn.Sequential:
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 8),
        nn.Tanh(),
        nn.Dropout(0.3),
        nn.Linear(8, 3),
    ).double()


def test_plain_convolutions_before_a_bayesian_head_take_the_stacked_path(monkeypatch):
    model = vi.convert_to_vimodule(_plain_cnn(), keep_weights=True, include="9")
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    _assert_same(model, x, samples=4)
    calls = _general_calls(monkeypatch)
    model(x, samples=2)
    assert calls == []


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("first", ["0", "3"])
def test_plain_convolutions_on_shared_and_sampled_inputs_agree(batched, first):
    # Bayesian first or second convolution: the plain ones see shared inputs, or
    # (S, N, C, H, W) and unbatched (S, C, H, W) samples.
    torch.manual_seed(8)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.Conv2d(4, 2, 1),
    ).double()
    model = vi.convert_to_vimodule(net, keep_weights=True, include=first)
    x = torch.randn(*((5,) if batched else ()), 2, 8, 8, dtype=torch.float64)
    _assert_same(model, x, samples=3)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("record", [True, False])
def test_low_rank_adapters_take_the_stacked_path(batched, record, monkeypatch):
    torch.manual_seed(9)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Tanh()
    )
    if batched:
        net.extend([nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 3)])
    model = vi.add_lora(net.double(), rank=2)
    model.return_log_probs = record
    with torch.no_grad():  # away from the start (B = 0), as training would move it
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and not name.endswith("log_std"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    x = torch.randn(*((5,) if batched else ()), 2, 8, 8, dtype=torch.float64)
    _assert_same(model, x, samples=4)
    calls = _general_calls(monkeypatch)
    model(x, samples=2)
    assert calls == []


@pytest.mark.parametrize("estimator", ["local_reparameterization", "flipout"])
def test_adapters_take_the_lanes_where_their_factor_would(estimator, monkeypatch):
    model = vi.add_lora(_plain_cnn(), rank=2, estimator=estimator)
    calls = _general_calls(monkeypatch)
    model(torch.randn(2, 1, 6, 6, dtype=torch.float64), samples=2)
    assert calls == [model]  # a convolution's factor: weight sampling only
    mlp = vi.add_lora(_plain_cnn()[6:], rank=2, estimator=estimator)
    _assert_same(mlp, torch.randn(5, 36, dtype=torch.float64), samples=3)


def test_a_plain_convolution_refuses_bad_samples_as_the_lanes_do(monkeypatch):
    # Each sample is 2-d here, which conv2d refuses: both paths raise torch's error
    # instead of reading the sample dimension as channels.
    model = VISequential(VILinear(4, 6), nn.Unflatten(-1, (2, 3)), nn.Conv2d(3, 5, 1))
    model.return_log_probs = False
    for stacked in (True, False):
        monkeypatch.setattr(_stacked, "ENABLED", stacked)
        with pytest.raises(RuntimeError, match=r"Expected 3D .*or 4D"):
            model(torch.randn(4), samples=3)
