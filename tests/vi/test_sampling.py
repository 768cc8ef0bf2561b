"""Autosampling contracts: call-time outermost module, shapes, log-prob aggregation."""

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import (
    VILinear,
    VIModule,
    VIResidualConnection,
    VIReturn,
    VISequential,
    sampling,
)
from torch_blue.vi.sampling import DEFAULT_SAMPLES, current_state
from torch_blue.vi.utils import ShapeError


class TwoHeads(VIModule):
    """Several outputs, one of them None."""

    def __init__(self):
        super().__init__()
        self.body = VILinear(3, 4)
        self.head_a = VILinear(4, 2)
        self.head_b = VILinear(4, 1)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.head_a(h), (self.head_b(h), None)


class Reuse(VIModule):
    """Reads its weight twice per forward."""

    def __init__(self):
        super().__init__(variable_shapes={"weight": (2, 2)})

    def forward(self, x):
        return x @ self.weight + x @ self.weight


class Wrapper(VIModule):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 2


def test_standalone_layer_adds_one_sample_dimension():
    out = VILinear(3, 2)(torch.randn(5, 3), samples=7)
    assert isinstance(out, VIReturn)
    assert out.shape == (7, 5, 2)
    assert out.log_probs.shape == (7, 2)


def test_default_number_of_samples():
    out = VILinear(3, 2)(torch.randn(5, 3))
    assert out.shape == (DEFAULT_SAMPLES, 5, 2) and DEFAULT_SAMPLES == 10


def test_unbatched_input():
    assert VILinear(3, 2)(torch.randn(3), samples=4).shape == (4, 2)


def test_several_outputs_each_carry_the_same_log_probs():
    out_a, (out_b, nothing) = TwoHeads()(torch.randn(5, 3), samples=6)
    assert out_a.shape == (6, 5, 2) and out_b.shape == (6, 5, 1)
    assert nothing is None
    assert out_a.log_probs is out_b.log_probs
    assert out_a.log_probs.shape == (6, 2)


def test_layer_attached_after_construction_is_not_outermost():
    model = VIModule()
    model.layer = VILinear(3, 2)
    model.forward = lambda x: model.layer(x)
    assert model(torch.randn(5, 3), samples=3).shape == (3, 5, 2)


def test_nested_model_gives_one_sample_dimension():
    inner = VISequential(VILinear(3, 4), nn.ReLU(), VILinear(4, 2))
    # The inner model alone is outermost ...
    assert inner(torch.randn(5, 3), samples=2).shape == (2, 5, 2)
    # ... and inside another model it is not.
    outer = Wrapper(inner)
    assert outer(torch.randn(5, 3), samples=3).shape == (3, 5, 2)
    assert Wrapper(outer)(torch.randn(5, 3), samples=4).shape == (4, 5, 2)


def test_vi_layers_inside_plain_sequential_chain_their_samples():
    model = nn.Sequential(VILinear(3, 4), nn.ReLU(), VILinear(4, 2))
    out = model(torch.randn(5, 3))
    assert out.shape == (DEFAULT_SAMPLES, 5, 2)
    assert isinstance(out, VIReturn) and out.log_probs.shape == (DEFAULT_SAMPLES, 2)


def test_chained_calls_accumulate_log_probs_of_both_layers():
    torch.manual_seed(0)
    first, second = VILinear(3, 4), VILinear(4, 2)
    x = torch.randn(5, 3)
    h = first(x, samples=3)
    out = second(h)
    assert out.shape == (3, 5, 2)
    # The second layer's own contribution: its prior/variational densities only.
    own = out.log_probs - h.log_probs
    assert torch.all(own[:, 1] > -1e3) and not torch.allclose(own, torch.zeros_like(own))


def test_chained_call_with_conflicting_samples_raises():
    h = VILinear(3, 4)(torch.randn(5, 3), samples=3)
    with pytest.raises(ShapeError, match="samples=5 but the sampled input carries 3"):
        VILinear(4, 2)(h, samples=5)


@pytest.mark.parametrize("samples", [0, -1, 2.0, "3", True, None])
def test_samples_must_be_a_positive_int(samples):
    layer = VILinear(3, 2)
    if samples is None:  # None means "default" when calling, but not for sampled_forward
        with pytest.raises(ValueError, match="samples must be a positive int"):
            layer.sampled_forward(torch.randn(1, 3), samples=0)
        return
    with pytest.raises(ValueError, match="samples must be a positive int"):
        layer(torch.randn(1, 3), samples=samples)


def test_samples_on_an_inner_call_raises():
    class Bad(VIModule):
        def __init__(self):
            super().__init__()
            self.layer = VILinear(3, 2)

        def forward(self, x):
            return self.layer(x, samples=3)

    with pytest.raises(TypeError, match="outermost"):
        Bad()(torch.randn(1, 3))


def test_sampled_forward_with_sampled_input():
    layer = VILinear(3, 2)
    x = torch.randn(4, 5, 3)
    out = layer.sampled_forward(x, sampled_input=True)
    assert out.shape == (4, 5, 2)
    # Lane s sees x[s]: with the weight noise switched off the lanes are exact.
    with torch.no_grad():
        layer._weight_log_std.fill_(-30.0)
        layer._bias_log_std.fill_(-30.0)
    out = layer.sampled_forward(x, sampled_input=True)
    expected = torch.nn.functional.linear(x, layer._weight_mean, layer._bias_mean)
    assert torch.allclose(out, expected, atol=1e-5)


def test_state_is_closed_after_a_call_even_on_error():
    layer = VILinear(3, 2)
    with pytest.raises(ShapeError):
        layer(torch.randn(4, 5), samples=2)
    assert current_state() is None


def test_lanes_draw_independent_weights_with_the_right_moments():
    torch.manual_seed(0)
    layer = VILinear(3, 2, bias=False)
    samples = 20_000
    # F.linear(I, W) = W^T, so every lane returns its own weight sample.
    draws = layer(torch.eye(3), samples=samples).as_plain().detach().transpose(1, 2)
    mean = layer._weight_mean.detach()
    std = layer._weight_log_std.detach().exp()
    # 5 standard errors: sigma/sqrt(n) for the mean, sigma/sqrt(2n) for the std.
    assert torch.all((draws.mean(0) - mean).abs() < 5 * std / samples**0.5)
    assert torch.all((draws.std(0) - std).abs() < 5 * std / (2 * samples) ** 0.5)
    # Independent lanes: neighbouring lanes are uncorrelated.
    centred = (draws - mean) / std
    correlation = (centred[1:] * centred[:-1]).mean()
    assert abs(correlation.item()) < 5 / (samples * 6) ** 0.5


def test_log_probs_equal_the_densities_of_the_drawn_weights():
    torch.manual_seed(0)
    layer = VILinear(3, 2, bias=False)
    out = layer(torch.eye(3), samples=5)
    for s in range(5):
        weight = out[s].as_plain().T if isinstance(out[s], VIReturn) else out[s].T
        expected = layer.get_log_probs(weight, "weight")
        assert torch.allclose(out.log_probs[s], expected, atol=1e-4)


def test_repeated_accesses_are_averaged_not_summed():
    torch.manual_seed(0)
    module = Reuse()
    out = module(torch.ones(1, 2), samples=50_000)
    # Averaging two accesses keeps the expected log q at -entropy; summing would double it.
    mean_log_q = out.log_probs[:, 1].mean()
    entropy = torch.distributions.Normal(
        module._weight_mean, module._weight_log_std.exp()
    ).entropy()
    # per-draw log q of 4 weights has std sqrt(4 * 0.5); averaging two halves the variance.
    standard_error = (4 * 0.5 / 2) ** 0.5 / 50_000**0.5
    assert abs(mean_log_q.item() + entropy.sum().item()) < 5 * standard_error


def test_return_log_probs_false_returns_vireturn_without_log_probs():
    model = VISequential(VILinear(3, 4), nn.ReLU(), VILinear(4, 2))
    model.return_log_probs = False
    out = model(torch.randn(5, 3), samples=3)
    assert isinstance(out, VIReturn) and out.log_probs is None
    model.return_log_probs = True
    assert model(torch.randn(5, 3), samples=3).log_probs.shape == (3, 2)


def test_gradients_reach_every_variational_parameter():
    model = VISequential(VILinear(3, 4), nn.ReLU(), VILinear(4, 2))
    out = model(torch.randn(5, 3), samples=3)
    (out.sum() + out.log_probs.sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_keyword_arguments_are_shared_across_samples():
    class Scaled(VIModule):
        def __init__(self):
            super().__init__()
            self.layer = VILinear(3, 2)

        def forward(self, x, scale=1.0):
            return self.layer(x) * scale

    out = Scaled()(torch.randn(4, 3), samples=2, scale=0.0)
    assert torch.equal(out.as_plain(), torch.zeros(2, 4, 2))


def test_the_forward_runs_once_per_call_not_once_per_sample():
    calls = []

    class Counting(VIModule):
        def __init__(self):
            super().__init__()
            self.layer = VILinear(3, 2)

        def forward(self, x):
            calls.append(1)
            return self.layer(x)

    Counting()(torch.randn(4, 3), samples=16)
    assert len(calls) == 1


def test_sampled_forward_and_log_probs_pass_gradcheck_in_float64():
    layer = VILinear(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())

    def sampled(*values):
        torch.manual_seed(0)  # the same weight noise on every evaluation
        out = torch.func.functional_call(
            layer, dict(zip(names, values)), (x,), {"samples": 3}
        )
        return out.as_plain(), out.log_probs

    assert torch.autograd.gradcheck(sampled, params)


def test_chunked_sampling_gives_the_same_distribution():
    torch.manual_seed(0)
    layer = VILinear(3, 2, bias=False)
    samples = 20_000
    out = layer(torch.eye(3), samples=samples, chunk_size=999)
    assert out.shape == (samples, 3, 2) and out.log_probs.shape == (samples, 2)
    draws = out.as_plain().detach().transpose(1, 2)
    mean = layer._weight_mean.detach()
    std = layer._weight_log_std.detach().exp()
    # 5 standard errors, as in the unchunked moment test; chunks draw independently.
    assert torch.all((draws.mean(0) - mean).abs() < 5 * std / samples**0.5)
    assert torch.all((draws.std(0) - std).abs() < 5 * std / (2 * samples) ** 0.5)
    assert not torch.equal(draws[0], draws[999])


@pytest.mark.parametrize("chunk_size", [0, 2.5, True])
def test_chunk_size_must_be_a_positive_int(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        VILinear(3, 2)(torch.randn(1, 3), samples=4, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_plain_batch_norm_trains_inside_the_lanes(chunk_size):
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(4, momentum=0.3)
    model = vi.VISequential(vi.VILinear(3, 4), norm)
    x = torch.randn(16, 3)
    out = model(x, samples=4, chunk_size=chunk_size)
    # every lane is normalised with its own batch statistics
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.var(dim=1, unbiased=False), torch.ones(4, 4), atol=1e-3, rtol=0
    )
    # one running-statistics update, from the lanes' statistics averaged
    assert int(norm.num_batches_tracked) == 1
    assert out.log_probs.shape == (4, 2)


def test_plain_batch_norm_running_stats_are_the_lane_average():
    from torch_blue.vi.distributions import NonBayesian

    norm = nn.BatchNorm1d(2, momentum=0.5)
    linear = vi.VILinear(2, 2, variational_distribution=NonBayesian(), prior=NonBayesian())
    model = vi.VISequential(linear, norm)
    lanes = torch.randn(3, 10, 2)
    model.sampled_forward(lanes, sampled_input=True)
    hidden = lanes @ linear._weight_mean.detach().T + linear._bias_mean.detach()
    var, mean = torch.var_mean(hidden, dim=1, correction=1)
    torch.testing.assert_close(norm.running_mean, 0.5 * mean.mean(0))
    torch.testing.assert_close(norm.running_var, 0.5 + 0.5 * var.mean(0))
    assert int(norm.num_batches_tracked) == 1


def test_plain_batch_norm_in_eval_mode_uses_running_stats():
    norm = nn.BatchNorm1d(3)
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    model = vi.VISequential(norm, vi.VILinear(3, 2)).eval()
    x = torch.randn(5, 3)
    plain = vi.to_deterministic(model)
    with vi.mean_weights():
        torch.testing.assert_close(model(x)[0], plain(x))


def test_fused_functions_pay_off_from_a_size_counted_over_the_lanes(monkeypatch):
    monkeypatch.setattr(sampling, "FUSED_MIN_ELEMENTS", 100)
    seen = []

    class Probe(VIModule):
        def forward(self, x):
            seen.append((sampling.fused_pays_off(10), sampling.fused_pays_off(9)))
            return x

    Probe()(torch.zeros(1), samples=10)
    Probe()(torch.zeros(1), samples=20, chunk_size=5)
    # 10 elements x 10 lanes pays off; 10 x 5 lanes per chunk (one call per chunk) not
    assert seen[0] == (True, False)
    assert len(seen) > 1 and all(s == (False, False) for s in seen[1:])
    assert not sampling.fused_pays_off(99) and sampling.fused_pays_off(100)  # outside


# ------------------------------------------------------------- reliability
def test_meta_input_with_real_parameters_raises():
    # F.linear of a meta input and CPU weights would give uninitialised memory.
    layer = VILinear(4, 2)
    with pytest.raises(RuntimeError, match="VILinear: an input is on device meta"):
        layer(torch.empty(3, 4, device="meta"), samples=2)
    meta = VILinear(4, 2, device="meta")
    assert meta(torch.empty(3, 4, device="meta"), samples=2).shape == (2, 3, 2)
    with pytest.raises(RuntimeError, match="parameters are on meta"):
        meta(torch.ones(3, 4), samples=2)


def test_sampled_input_by_keyword_is_mapped_over():
    first, second = VILinear(4, 3), VILinear(3, 2)
    hidden = first(torch.randn(5, 4), samples=3)
    torch.manual_seed(0)
    positional = second(hidden)
    torch.manual_seed(0)
    keyword = second(input_=hidden)
    assert keyword.shape == (3, 5, 2)  # no second sample dimension
    assert torch.equal(keyword, positional)
    assert torch.equal(keyword.log_probs, positional.log_probs)  # first's included
    with pytest.raises(ShapeError, match="samples=4 but the sampled input carries 3"):
        second(input_=hidden, samples=4)


def test_plain_batch_norm_is_safe_across_threads():
    # Two threads calling one model: the lane-safe forward one call installs must
    # not disappear under the other (it raised "Batch norm got a batched tensor").
    import threading

    torch.manual_seed(0)
    model = VISequential(VILinear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), VILinear(8, 2))
    errors, calls = [], 150

    def work():
        for _ in range(calls):
            try:
                model(torch.randn(16, 4), samples=3).sum().backward()
            except Exception as error:  # collected for the assertion below
                errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert int(model[1].num_batches_tracked) == 4 * calls
    assert "forward" not in model[1].__dict__  # removed by the last call


def test_plain_batch_norm_in_eval_runs_its_own_forward_during_a_call():
    norm = nn.BatchNorm1d(3).eval()
    model = VISequential(VILinear(2, 3), norm)
    x = torch.randn(5, 2)
    with vi.mean_weights():
        out = model(x)[0]
    expected = norm(x @ model[0]._weight_mean.T + model[0]._bias_mean)
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------- inputs as pytrees
class _Pair(VIModule):
    """Adds its layer's output to every tensor of a nested input."""

    def __init__(self):
        super().__init__()
        self.layer = VILinear(3, 3)

    def forward(self, pair, extra=None):
        first, (second,) = pair
        out = {"first": self.layer(first), "second": self.layer(second)}
        if extra is not None:
            out["extra"] = self.layer(extra["x"])
        return out


def test_vireturns_nested_in_arguments_are_mapped_over_and_add_their_log_probs():
    earlier = VILinear(2, 3)
    x = earlier(torch.randn(4, 2), samples=5)
    model = _Pair()
    torch.manual_seed(1)
    out = model((x, [x]), extra={"x": x})
    assert set(out) == {"first", "second", "extra"}
    for value in out.values():
        assert isinstance(value, VIReturn) and value.shape == (5, 4, 3)
        assert value.log_probs.shape == (5, 2)
        assert not torch.equal(value[0], value[1])
    # The input's log-probs are added once (the same VIReturn appears three times).
    plain = x.as_plain()
    torch.manual_seed(1)
    own = model.sampled_forward((plain, [plain]), {"x": plain}, sampled_input=True)
    torch.testing.assert_close(out["extra"], own["extra"].as_plain())
    torch.testing.assert_close(out["first"].log_probs, own["first"].log_probs + x.log_probs)


def test_sampled_input_covers_the_tensors_nested_in_positional_arguments():
    x = torch.randn(5, 4, 3)
    out = _Pair().sampled_forward((x, [x]), sampled_input=True)
    assert out["first"].shape == (5, 4, 3) and out["second"].shape == (5, 4, 3)


def test_a_nested_sampled_input_with_another_sample_count_raises():
    x = VILinear(2, 3)(torch.randn(4, 2), samples=5)
    y = VILinear(2, 3)(torch.randn(4, 2), samples=6)
    with pytest.raises(ShapeError, match=r"disagree on the number of samples: \[5, 6\]"):
        _Pair()((x, [y]))


class _PackedLinear(VIModule):
    """A layer applied to the data of a PackedSequence."""

    def __init__(self):
        super().__init__()
        self.layer = VILinear(3, 2)

    def forward(self, packed):
        return nn.utils.rnn.PackedSequence(self.layer(packed.data), *tuple(packed)[1:])


def test_packed_sequences_share_their_batch_sizes_and_sample_their_data():
    packed = nn.utils.rnn.pack_padded_sequence(
        torch.randn(4, 3, 3), [2, 4, 1], enforce_sorted=False
    )
    out = _PackedLinear()(packed, samples=5)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    assert isinstance(out.data, VIReturn) and out.data.shape == (5, 7, 2)
    assert out.data.log_probs.shape == (5, 2)
    assert out.batch_sizes is packed.batch_sizes
    assert out.sorted_indices is packed.sorted_indices
    # A packed output of an earlier call is mapped over by its data.
    again = _PackedLinear()
    again.layer = VILinear(2, 2)
    chained = again(out)
    assert chained.data.shape == (5, 7, 2) and chained.batch_sizes is packed.batch_sizes


class _SampledBatchSizes(VIModule):
    def __init__(self):
        super().__init__()
        self.layer = VILinear(3, 3)

    def forward(self, x):
        data = self.layer(x)
        return nn.utils.rnn.PackedSequence(data, (data[:, 0] > 0).long().cpu())


def test_packed_outputs_with_sampled_batch_sizes_raise():
    with pytest.raises(ShapeError, match="batch_sizes or permutations differ"):
        _SampledBatchSizes()(torch.randn(4, 3), samples=3)


# ---------------------------------------------------------------- lane rules
def test_lane_rules_are_entered_around_the_lanes_of_the_outermost_module():
    from contextlib import contextmanager

    seen = []

    @contextmanager
    def rule(model):
        seen.append(("enter", type(model).__name__, current_state()))
        yield
        seen.append(("exit", type(model).__name__))

    assert {"batch_norm", "attention"} <= set(sampling.lane_rules())
    sampling.register_lane_rule("test", rule)
    try:
        # (a residual block runs lanes; a plain dense stack takes the stacked path)
        VIResidualConnection(VILinear(2, 2), VILinear(2, 2))(torch.randn(3, 2), samples=2)
    finally:
        del sampling._LANE_RULES["test"]
    assert seen == [
        ("enter", "VIResidualConnection", None),
        ("exit", "VIResidualConnection"),
    ]
