"""VIMultiheadAttention: the twin of ``nn.MultiheadAttention`` and its attention core.

Comparisons with torch run its module in training mode with gradients enabled (the
default), where torch takes its regular Python path (see ``test_transformer``). The
helpers here are shared with the transformer tests.
"""

import copy

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import VILinear, VIModule
from torch_blue.vi.attention import VIMultiheadAttention
from torch_blue.vi.distributions import MeanFieldNormal, NonBayesian
from torch_blue.vi.functional import attention as functional_attention
from torch_blue.vi.utils import ShapeError

D, H, FF, B, L, M = 8, 2, 16, 3, 4, 6  # model size, heads, feed-forward, batch, lengths
TOL = {"atol": 1e-5, "rtol": 1e-4}


def _freeze(module):
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-30.0)


def _mean_state(module):
    """``module``'s state dict in torch names: ``a._weight_mean`` -> ``a.weight``."""
    state = {}
    for key, value in module.state_dict().items():
        *path, leaf = key.split(".")
        if leaf.endswith("_log_std"):
            continue
        if leaf.startswith("_") and leaf.endswith("_mean"):
            leaf = leaf[1 : -len("_mean")]
        state[".".join([*path, leaf])] = value
    return state


def _torch_twin(module, reference=None):
    """The torch module loaded by hand with ``module``'s means (strict names)."""
    reference = module._to_torch() if reference is None else reference
    reference.load_state_dict(_mean_state(module), strict=True)
    return reference


def _assert_lanes_close(out, expected):
    for lane in out:
        torch.testing.assert_close(lane, expected, **TOL)


def _no_vi_inside(module):
    return not any(isinstance(m, VIModule) for m in module.modules())


def _mask(kind, target=L, source=M, batch=B):
    if kind == "bool":
        mask = torch.rand(target, source) > 0.6
        mask[:, 0] = False  # no fully masked rows (NaN in torch as well)
        return {"attn_mask": mask}
    if kind == "float3d":
        return {"attn_mask": torch.randn(batch * H, target, source)}
    if kind == "padding":
        padding = torch.zeros(batch, source, dtype=torch.bool)
        padding[0, source // 2 :] = True
        return {"key_padding_mask": padding}
    if kind == "float_padding":
        return {"key_padding_mask": torch.randn(batch, source)}
    if kind == "causal":
        return {
            "attn_mask": nn.Transformer.generate_square_subsequent_mask(target),
            "is_causal": True,
        }
    return {}


# ---------------------------------------------------------------------- attention
ATTENTION_CASES = [
    {},
    {"kdim": 3, "vdim": 5},
    {"add_bias_kv": True, "add_zero_attn": True},
    {"bias": False},
    {"batch_first": False},
]


def _qkv(attention, batched=True, self_attention=False):
    def make(length, size):
        if not batched:
            return torch.randn(length, size)
        shape = (B, length, size) if attention.batch_first else (length, B, size)
        return torch.randn(shape)

    if self_attention:
        x = make(L, D)
        return x, x, x
    return make(L, D), make(M, attention.kdim), make(M, attention.vdim)


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("masks", ["none", "bool", "float3d", "padding", "float_padding"])
@pytest.mark.parametrize("average", [True, False])
def test_attention_matches_torch_at_zero_std(case, masks, average):
    attention = VIMultiheadAttention(D, H, **case)
    _freeze(attention)
    reference = _torch_twin(attention)
    q, k, v = _qkv(attention)
    kwargs = {"average_attn_weights": average, **_mask(masks)}
    out, weights = attention(q, k, v, samples=2, **kwargs)
    expected, expected_weights = reference(q, k, v, **kwargs)
    assert out.shape == (2, *expected.shape)
    assert weights.shape == (2, *expected_weights.shape)
    _assert_lanes_close(out, expected)
    _assert_lanes_close(weights, expected_weights)


@pytest.mark.parametrize("self_attention", [True, False])
def test_attention_unbatched_and_causal_match_torch(self_attention):
    attention = VIMultiheadAttention(D, H)
    _freeze(attention)
    reference = _torch_twin(attention)
    q, k, v = _qkv(attention, batched=False, self_attention=self_attention)
    out, weights = attention(q, k, v, samples=2)
    expected, expected_weights = reference(q, k, v)
    assert out.shape == (2, L, D) and weights.shape == (2, L, k.shape[0])
    _assert_lanes_close(out, expected)
    _assert_lanes_close(weights, expected_weights)
    q, k, v = _qkv(attention, self_attention=True)
    causal = _mask("causal")
    out, _ = attention(q, k, v, samples=2, **causal)
    _assert_lanes_close(out, reference(q, k, v, **causal)[0])


def test_is_causal_without_mask_applies_the_causal_mask():
    attention = VIMultiheadAttention(D, H, variational_distribution=NonBayesian())
    q, k, v = _qkv(attention, self_attention=True)
    out, weights = attention(q, k, v, samples=1, is_causal=True)
    expected, _ = attention(q, k, v, samples=1, attn_mask=_mask("causal")["attn_mask"])
    torch.testing.assert_close(out, expected)
    assert torch.all(weights[0].triu(1) == 0)


def test_attention_output_shapes():
    attention = VIMultiheadAttention(D, H, batch_first=False)
    q, k, v = _qkv(attention)
    out, weights = attention(q, k, v, samples=3, average_attn_weights=False)
    assert out.shape == (3, L, B, D) and weights.shape == (3, B, H, L, M)
    assert out.log_probs.shape == (3, 2) and torch.equal(weights.log_probs, out.log_probs)
    out, weights = attention(q, k, v, samples=3, need_weights=False)
    assert out.shape == (3, L, B, D) and weights is None


CORE_INPUTS = (
    "cross",
    "self",
    "unbatched",
    "unbatched_masks",
    "none",
    "bool",
    "float3d",
    "padding",
    "causal_padding",
)


@pytest.fixture(params=["matmul", "fused"])
def cpu_attention_kernel(request, monkeypatch):
    """Run sampled attention on CPU with each kernel, whatever the sequence lengths."""
    limit = 2**62 if request.param == "matmul" else 0
    monkeypatch.setattr(functional_attention, "MATMUL_MAX_POSITIONS", limit)
    return request.param


def _draw_and_grad(attention, inputs, seed, **kwargs):
    """Output and gradients (parameters, then inputs) of one seeded sampled call."""
    attention.zero_grad()
    inputs = [x.detach().requires_grad_() for x in inputs]
    torch.manual_seed(seed)
    out, _ = attention(*inputs, samples=3, **kwargs)
    (
        out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    ).sum().backward()
    grads = [p.grad.clone() for p in attention.parameters()]
    return out, grads + [x.grad for x in inputs]


@pytest.mark.parametrize(
    ("case", "inputs"),
    [
        (case, inputs)
        for case in [*ATTENTION_CASES, {"estimator": "local_reparameterization"}]
        for inputs in CORE_INPUTS
        # self-attention needs kdim = vdim = embed_dim
        if "kdim" not in case or inputs not in ("self", "causal_padding")
    ],
)
def test_attention_without_weights_computes_the_weights_path(
    case, inputs, cpu_attention_kernel
):
    # need_weights=False runs our own core, need_weights=True torch's matmul path;
    # both read the weights in the same order, so one seed gives the same draws.
    case = dict(case)
    estimator = case.pop("estimator", None)
    attention = VIMultiheadAttention(D, H, dtype=torch.float64, **case)
    if estimator is not None:  # out_proj samples its outputs (applied late)
        attention.out_proj = VILinear(D, D, estimator=estimator, dtype=torch.float64)
    batched = not inputs.startswith("unbatched")
    q, k, v = _qkv(attention, batched, self_attention=inputs in ("self", "causal_padding"))
    if q is k is v:  # one tensor three times, as self-attention passes it
        q = k = v = q.double()
    else:
        q, k, v = (x.double() for x in (q, k, v))
    source = k.shape[-2] if attention.batch_first or not batched else k.shape[0]
    masks = {}
    if inputs == "causal_padding":
        masks = {**_mask("causal"), **_mask("float_padding", source=source)}
    elif inputs in ("bool", "float3d", "padding"):
        masks = _mask(inputs, source=source)
    elif inputs == "unbatched_masks":  # a 3-d mask per head, padding of the keys
        masks = {
            **_mask("float3d", source=source, batch=1),
            "key_padding_mask": _mask("float_padding", source=source)["key_padding_mask"][
                0
            ],
        }
    masks = {
        name: m.double() if isinstance(m, torch.Tensor) and m.is_floating_point() else m
        for name, m in masks.items()
    }
    with_core, core_grads = _draw_and_grad(
        attention, [q, k, v], 5, need_weights=False, **masks
    )
    with_torch, torch_grads = _draw_and_grad(attention, [q, k, v], 5, **masks)
    assert with_core.shape == with_torch.shape
    torch.testing.assert_close(with_core, with_torch)
    for found, expected in zip(core_grads, torch_grads):
        torch.testing.assert_close(found, expected)


def test_attention_without_weights_attends_once_for_all_samples(
    graph_node_names, cpu_attention_kernel
):
    # torch's multi_head_attention_forward would call the fused kernel once per
    # sample under vmap; ours computes one softmax, or calls the kernel once.
    attention = VIMultiheadAttention(D, H)
    out, _ = attention(*_qkv(attention), samples=4, need_weights=False)
    nodes = graph_node_names(out)
    fused = [n for n in nodes if "ScaledDotProduct" in n]
    softmax = [n for n in nodes if "Softmax" in n]
    if cpu_attention_kernel == "fused":
        assert len(fused) == 1 and not softmax, nodes
    else:
        assert len(softmax) == 1 and not fused, nodes


def test_attention_dropout_without_weights_keeps_the_mean(cpu_attention_kernel):
    # Zero weight spread: the lanes differ only by their dropout masks, which
    # rescale by 1 / (1 - p); the mean over lanes is the output without dropout.
    attention = VIMultiheadAttention(D, H, dropout=0.5, dtype=torch.float64)
    _freeze(attention)
    q, k, v = (x.double() for x in _qkv(attention))
    samples = 4000
    with torch.no_grad():
        out, _ = attention(q, k, v, samples=samples, need_weights=False)
        attention.eval()
        expected, _ = attention(q, k, v, samples=1, need_weights=False)
    assert not torch.allclose(out[0], out[1])
    error = out.std(dim=0) / samples**0.5
    assert torch.all((out.mean(dim=0) - expected[0]).abs() <= 5 * error + 1e-12)


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("need_weights", [True, False])
def test_attention_mean_weights_equal_to_deterministic_exactly(case, need_weights):
    attention = VIMultiheadAttention(D, H, **case)
    plain = vi.to_deterministic(attention)
    assert type(plain) is nn.MultiheadAttention and _no_vi_inside(plain)
    assert plain.batch_first == attention.batch_first
    for self_attention in (True, False) if attention._qkv_same_embed_dim else (False,):
        q, k, v = _qkv(attention, self_attention=self_attention)
        source = L if self_attention else M
        kwargs = {"need_weights": need_weights, **_mask("padding", source=source)}
        with vi.mean_weights():
            out, weights = attention(q, k, v, **kwargs)
        expected, expected_weights = plain(q, k, v, **kwargs)
        assert torch.equal(out[0], expected)
        assert (
            weights is None
            if not need_weights
            else torch.equal(weights[0], expected_weights)
        )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"kdim": 3, "vdim": 5, "bias": False},
        {"add_bias_kv": True, "add_zero_attn": True, "batch_first": True, "dropout": 0.2},
    ],
)
def test_attention_conversion(options):
    torch_attention = nn.MultiheadAttention(D, H, **options)
    torch_attention.eval()  # dropout off; gradients on, so no fast path
    q = torch.randn(B, L, D) if torch_attention.batch_first else torch.randn(L, B, D)
    k = torch.randn(*q.shape[:-1], torch_attention.kdim)
    v = torch.randn(*q.shape[:-1], torch_attention.vdim)
    expected, expected_weights = torch_attention(q, k, v)
    converted = vi.convert_to_vimodule(
        copy.deepcopy(torch_attention),
        keep_weights=True,
        variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )
    assert type(converted) is VIMultiheadAttention and not converted.training
    for name in ("batch_first", "dropout", "kdim", "vdim", "add_zero_attn"):
        assert getattr(converted, name) == getattr(torch_attention, name), name
    out, weights = converted(q, k, v, samples=1)
    torch.testing.assert_close(out[0], expected, **TOL)
    torch.testing.assert_close(weights[0], expected_weights, **TOL)


def test_attention_log_probs_are_those_of_the_draws(monkeypatch):
    attention = VIMultiheadAttention(D, H, add_bias_kv=True)
    draws = []
    sample_variable = VIModule.sample_variable

    def recording(self, variable):
        sample = sample_variable(self, variable)
        if sample is not None:
            draws.append((self, variable, sample.detach()))
        return sample

    monkeypatch.setattr(VIModule, "sample_variable", recording)
    q, k, v = _qkv(attention, self_attention=True)
    attention.forward(q, k, v)  # outside a sampled call the draws stay on the modules
    assert sorted(variable for _, variable, _ in draws) == [
        "bias",
        "bias_k",
        "bias_v",
        "in_proj_bias",
        "in_proj_weight",
        "weight",
    ]
    expected = sum(module.get_log_probs(sample, var) for module, var, sample in draws)
    torch.testing.assert_close(attention.gather_log_probs(), expected, rtol=1e-5, atol=1e-3)


def test_attention_lanes_differ():
    attention = VIMultiheadAttention(D, H)
    out, _ = attention(*_qkv(attention), samples=3)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_attention_priors_are_rescaled_per_projection():
    attention = VIMultiheadAttention(D, H, kdim=3, vdim=5)
    for variable, fan_in in (
        ("q_proj_weight", D),
        ("k_proj_weight", 3),
        ("v_proj_weight", 5),
    ):
        std = attention.prior[variable].std
        torch.testing.assert_close(
            std, torch.tensor(1 / (3 * fan_in) ** 0.5), rtol=1e-3, atol=0
        )
    unscaled = VIMultiheadAttention(D, H, rescale_prior=False)
    assert float(unscaled.prior["in_proj_weight"].std) == 1.0


def test_attention_takes_upstreams_nine_distributions():
    dists = [MeanFieldNormal()] * 9
    dists[4] = dists[6] = NonBayesian()  # out_proj_weight, out_proj_bias
    attention = VIMultiheadAttention(D, H, variational_distribution=dists)
    assert type(attention.out_proj.variational_distribution["weight"]) is NonBayesian
    assert type(attention.variational_distribution["in_proj_weight"]) is MeanFieldNormal
    with pytest.raises(ValueError, match=r"VIMultiheadAttention: prior takes one .* got 2"):
        VIMultiheadAttention(D, H, prior=(MeanFieldNormal(), MeanFieldNormal()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 6, "num_heads": 4}, "embed_dim=6 must be divisible by num_heads=4"),
        ({"embed_dim": D, "num_heads": 0}, "num_heads must be a positive int"),
        ({"embed_dim": D, "num_heads": H, "kdim": 0}, "kdim must be a positive int"),
        (
            {"embed_dim": D, "num_heads": H, "dropout": 1.5},
            r"dropout must be a number in \[0, 1\]",
        ),
    ],
)
def test_attention_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIMultiheadAttention(**kwargs)


@pytest.mark.parametrize(
    ("shapes", "masks", "match"),
    [
        (
            ((B, L, 5), (B, M, D), (B, M, D)),
            {},
            r"last dimension of query to be 8, got "
            r"shape \(3, 4, 5\)",
        ),
        (((B, L, D), (B, M, D), (B, M + 1, D)), {}, "same sequence length"),
        (((B, L, D), (B + 1, M, D), (B + 1, M, D)), {}, "same batch size"),
        (((1, B, L, D),) * 3, {}, r"query must be \(L, E\) unbatched or 3-D"),
        (((L, D), (B, M, D), (B, M, D)), {}, "all be batched or all unbatched"),
        (
            ((B, L, D), (B, M, D), (B, M, D)),
            {"attn_mask": torch.zeros(L, L)},
            r"attn_mask must have shape \(4, 6\) or \(6, 4, 6\), got \(4, 4\)",
        ),
        (
            ((B, L, D), (B, M, D), (B, M, D)),
            {"key_padding_mask": torch.zeros(B, L)},
            r"key_padding_mask must have shape \(3, 6\)",
        ),
    ],
)
def test_attention_bad_inputs_raise(shapes, masks, match):
    attention = VIMultiheadAttention(D, H)
    q, k, v = (torch.randn(shape) for shape in shapes)
    with pytest.raises(
        ShapeError, match=r"VIMultiheadAttention\(embed_dim=8, num_heads=2\)"
    ):
        attention(q, k, v, samples=2, **masks)
    with pytest.raises(ShapeError, match=match):
        attention(q, k, v, samples=2, **masks)


def test_attention_integer_mask_raises():
    attention = VIMultiheadAttention(D, H)
    q, k, v = _qkv(attention)
    with pytest.raises(TypeError, match="attn_mask must be a bool or floating-point mask"):
        attention(q, k, v, attn_mask=torch.zeros(L, M, dtype=torch.long), samples=2)


def test_old_paths_still_import():
    from torch_blue.vi import transformer

    assert transformer.VIMultiheadAttention is VIMultiheadAttention
    assert vi.VIMultiheadAttention is VIMultiheadAttention
    assert transformer.MATMUL_MAX_POSITIONS == functional_attention.MATMUL_MAX_POSITIONS
