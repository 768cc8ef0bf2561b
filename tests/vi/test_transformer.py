"""The transformer layers, stacks and model: twins of torch's transformer modules.

Comparisons with torch run its modules in training mode with gradients enabled (the
default): torch then takes its regular Python path. In eval mode without gradients
torch switches to fused fast paths (``_native_multi_head_attention``,
``_transformer_encoder_layer_fwd``, nested tensors in ``nn.TransformerEncoder``) whose
rounding differs and which, with nested tensors, zero the padded positions. All
layers here use dropout 0 (the default), so training mode computes the same function.
The attention itself is tested in ``test_attention``, whose helpers these share.
"""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import KullbackLeiblerLoss, VILinear, VIModule, VISequential
from torch_blue.vi.distributions import MeanFieldNormal, NonBayesian
from torch_blue.vi.functional import attention as functional_attention
from torch_blue.vi.transformer import (
    VIMultiheadAttention,
    VITransformer,
    VITransformerDecoder,
    VITransformerDecoderLayer,
    VITransformerEncoder,
    VITransformerEncoderLayer,
)
from torch_blue.vi.utils import ShapeError

from .test_attention import (
    FF,
    TOL,
    B,
    D,
    H,
    L,
    M,
    _assert_lanes_close,
    _freeze,
    _mask,
    _no_vi_inside,
    _torch_twin,
)


@pytest.mark.parametrize(
    ("build", "cls"),
    [
        (lambda: nn.MultiheadAttention(D, H), VIMultiheadAttention),
        (lambda: nn.TransformerEncoderLayer(D, H, FF), VITransformerEncoderLayer),
        (lambda: nn.TransformerDecoderLayer(D, H, FF), VITransformerDecoderLayer),
        (
            lambda: nn.TransformerEncoder(
                nn.TransformerEncoderLayer(D, H, FF, batch_first=True), 2
            ),
            VITransformerEncoder,
        ),
        (
            lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF), 2),
            VITransformerDecoder,
        ),
        (lambda: nn.Transformer(D, H, 1, 1, FF, batch_first=True), VITransformer),
    ],
)
def test_convert_gives_the_twin(build, cls):
    converted = vi.convert_to_vimodule(build())
    assert type(converted) is cls
    assert all(
        isinstance(m, nn.LayerNorm) for n, m in converted.named_modules() if "norm" in n
    )


# ---------------------------------------------------------------------- layers
LAYER_CONFIGS = [
    {"activation": nn.ReLU()},
    {"activation": "gelu", "batch_first": False},
    {"activation": nn.GELU(), "bias": False},
]


def _sequence(batch_first, length, batched=True):
    if not batched:
        return torch.randn(length, D)
    return torch.randn(B, length, D) if batch_first else torch.randn(length, B, D)


def _masks(kind, prefix, target, source=None):
    """Layer-style masks: ``{prefix}_mask``, ``{prefix}_key_padding_mask``, ..."""
    source = target if source is None else source
    result = {}
    if kind in ("causal", "causal_padding"):
        result[f"{prefix}_mask"] = nn.Transformer.generate_square_subsequent_mask(target)
        result["is_causal" if prefix == "src" else f"{prefix}_is_causal"] = True
    if kind in ("padding", "causal_padding"):
        padding = torch.zeros(B, source)
        padding[0, source // 2 :] = float("-inf")  # float: same type as the causal mask
        result[f"{prefix}_key_padding_mask"] = padding
    if kind == "bool":
        mask = torch.rand(target, source) > 0.6
        mask[:, 0] = False
        result[f"{prefix}_mask"] = mask
    return result


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("config", LAYER_CONFIGS)
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "causal_padding", "bool"])
def test_encoder_layer_matches_torch_at_zero_std(norm_first, config, masks):
    layer = VITransformerEncoderLayer(D, H, FF, norm_first=norm_first, **config)
    _freeze(layer)
    reference = _torch_twin(layer)
    assert type(reference) is nn.TransformerEncoderLayer
    x = _sequence(layer.self_attn.batch_first, L)
    kwargs = _masks(masks, "src", L)
    out = layer(x, samples=2, **kwargs)
    expected = reference(x, **kwargs)
    assert out.shape == (2, *expected.shape)
    _assert_lanes_close(out, expected)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("config", LAYER_CONFIGS)
@pytest.mark.parametrize("masks", ["none", "causal_padding", "bool"])
def test_decoder_layer_matches_torch_at_zero_std(norm_first, config, masks):
    layer = VITransformerDecoderLayer(D, H, FF, norm_first=norm_first, **config)
    _freeze(layer)
    reference = _torch_twin(layer)
    batch_first = layer.self_attn.batch_first
    tgt, memory = _sequence(batch_first, L), _sequence(batch_first, M)
    kwargs = _masks(masks, "tgt", L)
    if masks == "causal_padding":
        kwargs["memory_key_padding_mask"] = _masks("padding", "src", M)[
            "src_key_padding_mask"
        ]
    if masks == "bool":
        kwargs["memory_mask"] = _mask("bool")["attn_mask"]
    out = layer(tgt, memory, samples=2, **kwargs)
    expected = reference(tgt, memory, **kwargs)
    assert out.shape == (2, *expected.shape)
    _assert_lanes_close(out, expected)


def test_unbatched_layers_match_torch():
    encoder_layer = VITransformerEncoderLayer(D, H, FF)
    decoder_layer = VITransformerDecoderLayer(D, H, FF)
    for layer in (encoder_layer, decoder_layer):
        _freeze(layer)
    src, tgt = _sequence(True, M, batched=False), _sequence(True, L, batched=False)
    out = encoder_layer(src, samples=2, is_causal=True)
    causal = nn.Transformer.generate_square_subsequent_mask(M)
    _assert_lanes_close(out, _torch_twin(encoder_layer)(src, causal, is_causal=True))
    out = decoder_layer(tgt, src, samples=2)
    _assert_lanes_close(out, _torch_twin(decoder_layer)(tgt, src))


def _encoder(norm_first=False, batch_first=True):
    layer = VITransformerEncoderLayer(
        D, H, FF, batch_first=batch_first, norm_first=norm_first
    )
    return VITransformerEncoder(layer, 2, norm=nn.LayerNorm(D))


def _decoder(norm_first=False, batch_first=True):
    layer = VITransformerDecoderLayer(
        D, H, FF, batch_first=batch_first, norm_first=norm_first
    )
    return VITransformerDecoder(layer, 2, norm=nn.LayerNorm(D))


def _reinitialize_means(module):
    """Give every layer of a stack different means, so that a wrong mapping shows."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("_mean"):
                parameter.normal_(0.0, 0.3)


@pytest.mark.parametrize("masks", ["none", "causal_padding"])
def test_stacks_match_torch_at_zero_std(masks):
    encoder, decoder = _encoder(), _decoder()
    for module in (encoder, decoder):
        _freeze(module)
        _reinitialize_means(module)
    torch_encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True),
        2,
        norm=nn.LayerNorm(D),
        enable_nested_tensor=False,
    )
    torch_decoder = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True),
        2,
        norm=nn.LayerNorm(D),
    )
    src, tgt = _sequence(True, M), _sequence(True, L)
    src_kwargs = _masks(masks, "src", M)
    src_kwargs["mask"] = src_kwargs.pop("src_mask", None)
    src_kwargs.pop("is_causal", None)  # None: detected from the mask, as in torch
    out = encoder(src, samples=2, **src_kwargs)
    memory = _torch_twin(encoder, torch_encoder)(src, **src_kwargs)
    _assert_lanes_close(out, memory)
    tgt_kwargs = _masks(masks, "tgt", L)
    out = decoder(tgt, memory, samples=2, **tgt_kwargs)
    _assert_lanes_close(out, _torch_twin(decoder, torch_decoder)(tgt, memory, **tgt_kwargs))


@pytest.mark.parametrize(("norm_first", "batch_first"), [(False, False), (True, True)])
def test_transformer_matches_nn_transformer_at_zero_std(norm_first, batch_first):
    model = VITransformer(D, H, 2, 2, FF, norm_first=norm_first, batch_first=batch_first)
    _freeze(model)
    with warnings.catch_warnings():  # torch's note about its nested-tensor fast path
        warnings.simplefilter("ignore", UserWarning)
        reference = nn.Transformer(
            D, H, 2, 2, FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first
        )
    reference = _torch_twin(model, reference)
    src, tgt = _sequence(batch_first, M), _sequence(batch_first, L)
    kwargs = {
        "tgt_mask": nn.Transformer.generate_square_subsequent_mask(L),
        "tgt_is_causal": True,
        "src_key_padding_mask": _masks("padding", "src", M)["src_key_padding_mask"],
        "memory_key_padding_mask": _masks("padding", "src", M)["src_key_padding_mask"],
    }
    out = model(src, tgt, samples=2, **kwargs)
    expected = reference(src, tgt, **kwargs)
    assert out.shape == (2, *expected.shape)
    _assert_lanes_close(out, expected)


def _layer_inputs(name):
    if name == "encoder_layer":
        return (
            VITransformerEncoderLayer(D, H, FF),
            (_sequence(True, L),),
            _masks("causal_padding", "src", L),
        )
    if name == "decoder_layer":
        return (
            VITransformerDecoderLayer(D, H, FF, norm_first=True),
            (_sequence(True, L), _sequence(True, M)),
            _masks("causal", "tgt", L),
        )
    if name == "encoder":
        masks = _masks("causal_padding", "src", L)
        return (
            _encoder(norm_first=True),
            (_sequence(True, L),),
            {
                "mask": masks["src_mask"],
                "src_key_padding_mask": masks["src_key_padding_mask"],
            },
        )
    if name == "decoder":
        return (
            _decoder(),
            (_sequence(True, L), _sequence(True, M)),
            _masks("causal", "tgt", L),
        )
    model = VITransformer(D, H, 2, 1, FF)
    return model, (_sequence(False, M), _sequence(False, L)), _masks("causal", "tgt", L)


TWINS = {
    "encoder_layer": nn.TransformerEncoderLayer,
    "decoder_layer": nn.TransformerDecoderLayer,
    "encoder": nn.TransformerEncoder,
    "decoder": nn.TransformerDecoder,
    "transformer": nn.Transformer,
}
VI_TWINS = {
    "encoder_layer": VITransformerEncoderLayer,
    "decoder_layer": VITransformerDecoderLayer,
    "encoder": VITransformerEncoder,
    "decoder": VITransformerDecoder,
    "transformer": VITransformer,
}


@pytest.mark.parametrize("name", list(TWINS))
@pytest.mark.parametrize("training", [True, False])
def test_mean_weights_equal_to_deterministic_exactly(name, training):
    module, inputs, kwargs = _layer_inputs(name)
    module.train(training)
    plain = vi.to_deterministic(module)
    assert type(plain) is TWINS[name] and _no_vi_inside(plain)
    assert plain.training == training
    with vi.mean_weights():
        out = module(*inputs, **kwargs)
    assert out.shape[0] == 1 and out.log_probs is None
    # the attention is torch's own function, but the feed-forward blocks use
    # flat_linear, which equals nn.Linear's F.linear up to the summation order
    torch.testing.assert_close(out[0], plain(*inputs, **kwargs))


def test_deterministic_encoder_computes_padded_positions():
    # torch's nested-tensor path (eval, no grad, padding mask) would zero the padded
    # positions; the exported encoder leaves it off and agrees with the VI encoder.
    encoder = _encoder().eval()
    plain = vi.to_deterministic(encoder)
    assert plain.use_nested_tensor is False
    src = _sequence(True, L)
    padding = _masks("padding", "src", L)["src_key_padding_mask"] != 0
    with torch.no_grad(), vi.mean_weights():
        expected = encoder(src, src_key_padding_mask=padding)[0]
    with torch.no_grad():
        out = plain(src, src_key_padding_mask=padding)
    assert out[0, -1].abs().sum() > 0
    torch.testing.assert_close(out, expected, **TOL)


def _torch_module_and_inputs(name):
    src, tgt = _sequence(False, M), _sequence(False, L)  # sequence first
    if name == "encoder_layer":
        return nn.TransformerEncoderLayer(D, H, FF, activation="gelu", norm_first=True), (
            src,
        )
    if name == "decoder_layer":
        module = nn.TransformerDecoderLayer(D, H, FF, batch_first=True, bias=False)
        return module, (tgt.transpose(0, 1), src.transpose(0, 1))
    if name == "encoder":
        layer = nn.TransformerEncoderLayer(D, H, FF)
        return nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(D)), (src,)
    if name == "decoder":
        return nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF), 2), (tgt, src)
    return nn.Transformer(D, H, 2, 1, FF), (src, tgt)


@pytest.mark.parametrize("name", list(TWINS))
def test_conversion_keeps_weights_and_configuration(name):
    with warnings.catch_warnings():  # torch's note about its nested-tensor fast path
        warnings.simplefilter("ignore", UserWarning)
        module, inputs = _torch_module_and_inputs(name)
    module.eval()  # dropout (torch's default 0.1) off; gradients on: no fast path
    expected = module(*inputs)
    converted = vi.convert_to_vimodule(
        copy.deepcopy(module),
        keep_weights=True,
        variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )
    assert type(converted) is VI_TWINS[name] and not converted.training
    attention = next(m for m in converted.modules() if isinstance(m, VIMultiheadAttention))
    assert attention.dropout == 0.1
    torch.testing.assert_close(converted(*inputs, samples=1)[0], expected, **TOL)


def test_converted_layers_keep_their_dropout_when_exported():
    converted = vi.convert_to_vimodule(nn.TransformerEncoderLayer(D, H, FF, dropout=0.3))
    plain = vi.to_deterministic(converted)
    assert plain.dropout.p == plain.self_attn.dropout == 0.3
    assert plain.self_attn.batch_first is False


def test_stack_copies_own_their_parameters_and_start_equal():
    encoder = _encoder()
    first, second = (layer.linear1._weight_mean for layer in encoder.layers)
    assert first is not second and torch.equal(first, second)  # like torch's deep copies
    model = VITransformer(D, H, 2, 2, FF)
    for stack in (model.encoder, model.decoder):  # nn.Transformer re-initialises
        first, second = (layer.self_attn._in_proj_weight_mean for layer in stack.layers)
        assert not torch.equal(first, second)


def test_log_probs_of_a_point_mass_posterior_are_the_prior_density():
    model = VITransformer(
        D, H, 1, 1, FF, variational_distribution=NonBayesian(), rescale_prior=False
    )
    out = model(_sequence(False, M), _sequence(False, L), samples=2)
    means = [p for n, p in model.named_parameters() if n.endswith("_mean")]
    assert len(means) == 8 + 12  # encoder layer: 4 attention + 4 linear; decoder: 12
    log_prior = sum(torch.distributions.Normal(0.0, 1.0).log_prob(m).sum() for m in means)
    torch.testing.assert_close(
        out.log_probs[:, 0], log_prior.detach().expand(2), rtol=1e-5, atol=1e-3
    )
    assert torch.all(out.log_probs[:, 1] == 0)


def test_transformer_lanes_differ_and_carry_log_probs():
    model = VITransformer(D, H, 1, 1, FF)
    out = model(_sequence(False, M), _sequence(False, L), samples=3)
    assert out.shape == (3, L, B, D) and out.log_probs.shape == (3, 2)
    assert torch.isfinite(out.log_probs).all()
    assert not torch.allclose(out[0], out[1])
    assert not torch.equal(out.log_probs[0], out.log_probs[1])


def test_gradients_reach_every_variational_parameter():
    model = VITransformer(D, H, 1, 1, FF)
    model.encoder.layers[0].self_attn = VIMultiheadAttention(
        D, H, add_bias_kv=True, batch_first=False
    )
    out = model(_sequence(False, M), _sequence(False, L), samples=2)
    (out.pow(2).mean() + out.log_probs.sum()).backward()
    variational = [
        (n, p) for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].startswith("_")
    ]
    assert "encoder.layers.0.self_attn._bias_k_log_std" in dict(variational)
    missing = [n for n, p in variational if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_trains_with_the_kl_loss():
    torch.manual_seed(0)
    x = torch.randn(16, L, D)
    y = x.cumsum(dim=1)[..., :1] / 2  # depends on earlier positions: needs attention
    model = VISequential(VITransformerEncoderLayer(D, H, FF), VILinear(D, 1))
    loss_fn = KullbackLeiblerLoss(MeanFieldNormal(std=0.5), dataset_size=16, track=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=2), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # With 16 examples the KL term is most of the loss; both terms fall (1.0 for
    # both without training: lr=0).
    data = loss_fn.log["data_fitting"]
    assert sum(data[-5:]) < 0.85 * sum(data[:5])
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5])


def test_return_log_probs_off_everywhere():
    model = VITransformer(D, H, 1, 1, FF, return_log_probs=False)
    assert not any(m._return_log_probs for m in model.modules() if isinstance(m, VIModule))
    out = model(_sequence(False, M), _sequence(False, L), samples=3)
    assert out.shape == (3, L, B, D) and out.log_probs is None
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("estimator", ["local_reparameterization", "flipout"])
def test_estimator_reaches_the_linear_sublayers(estimator):
    model = VITransformer(D, H, 1, 1, FF, estimator=estimator)
    linears = [m for m in model.modules() if isinstance(m, VILinear)]
    assert len(linears) == 2 + 3 + 2 and all(m.estimator == estimator for m in linears)
    out = model(_sequence(False, M), _sequence(False, L), samples=2)
    assert torch.isfinite(out).all() and torch.isfinite(out.log_probs).all()
    model.return_log_probs = False
    assert model(_sequence(False, M), _sequence(False, L), samples=2).log_probs is None


def test_dropout_acts_per_sample_in_training_only():
    layer = VITransformerEncoderLayer(
        D, H, FF, dropout=0.5, variational_distribution=NonBayesian()
    )
    x = _sequence(True, L)
    out = layer(x, samples=2)
    assert not torch.allclose(out[0], out[1])  # the weights are equal: dropout differs
    layer.eval()
    out = layer(x, samples=2)
    assert torch.equal(out[0], out[1])


def test_works_inside_a_vi_model():
    model = VISequential(VITransformerEncoderLayer(D, H, FF), nn.ReLU(), VILinear(D, 2))
    out = model(_sequence(True, L), samples=3)
    assert out.shape == (3, B, L, 2) and out.log_probs.shape == (3, 2)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: VITransformerEncoderLayer(D, H, activation="tanh"),
            ValueError,
            "VITransformerEncoderLayer: activation must be 'relu', 'gelu'",
        ),
        (
            lambda: VITransformerDecoderLayer(D, H, activation=3),
            TypeError,
            "activation must be",
        ),
        (
            lambda: VITransformerEncoderLayer(D, H, dim_feedforward=0),
            ValueError,
            "dim_feedforward must be a positive int",
        ),
        (lambda: VITransformerEncoderLayer(D, 3), ValueError, "divisible by num_heads=3"),
        (
            lambda: VITransformerDecoderLayer(D, H, layer_norm_eps=0),
            ValueError,
            "layer_norm_eps must be a positive number",
        ),
        (lambda: VITransformerEncoderLayer(D, H, dropout=-0.1), ValueError, "dropout"),
        (
            lambda: VITransformerEncoderLayer(D, H, prior=[MeanFieldNormal()]),
            TypeError,
            "prior must be one distribution",
        ),
        (
            lambda: VITransformer(D, H, estimator="mc"),
            ValueError,
            "estimator must be one of",
        ),
        (
            lambda: VITransformer(D, H, num_encoder_layers=0),
            ValueError,
            "num_encoder_layers",
        ),
        (lambda: VITransformer(D, H, custom_encoder="big"), TypeError, "custom_encoder"),
        (
            lambda: VITransformerEncoder(VITransformerEncoderLayer(D, H), 0),
            ValueError,
            "VITransformerEncoder: num_layers must be a positive int",
        ),
        (lambda: VITransformerDecoder("layer", 2), TypeError, "must be an nn.Module"),
    ],
)
def test_layer_bad_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("name", "inputs", "match"),
    [
        (
            "encoder_layer",
            ((B, L, 5),),
            r"VITransformerEncoderLayer\(d_model=8\): expected "
            r"src of shape .* got shape \(3, 4, 5\)",
        ),
        ("encoder_layer", ((1, B, L, D),), r"got shape \(1, 3, 4, 8\)"),
        ("decoder_layer", ((B, L, D), (M, D)), "tgt and memory must both be batched"),
        ("decoder_layer", ((B, L, D), (B, M, 4)), r"expected memory of shape"),
        ("transformer", ((M, B, D), (L, B + 1, D)), "src and tgt must have the same batch"),
        (
            "transformer",
            ((M, B, D), (L, B, 6)),
            r"VITransformer\(d_model=8\): expected tgt",
        ),
    ],
)
def test_layer_bad_inputs_raise(name, inputs, match):
    module, _, _ = _layer_inputs(name)
    with pytest.raises(ShapeError, match=match):
        module(*(torch.randn(shape) for shape in inputs), samples=2)


def test_state_dict_matches_upstream_1_1_layout():
    # Keys of upstream torch_blue 1.1's VITransformerEncoderLayer(8, 2, 16, bias=False).
    upstream = [
        "self_attn._in_proj_weight_mean",
        "self_attn._in_proj_weight_log_std",
        "self_attn.out_proj._weight_mean",
        "self_attn.out_proj._weight_log_std",
        "linear1._weight_mean",
        "linear1._weight_log_std",
        "linear2._weight_mean",
        "linear2._weight_log_std",
        "norm1.weight",
        "norm2.weight",
    ]
    layer = VITransformerEncoderLayer(D, H, FF, bias=False)
    assert sorted(layer.state_dict()) == sorted(upstream)
    attention = VIMultiheadAttention(D, H, add_bias_kv=True, kdim=3, vdim=5)
    assert sorted(attention.state_dict()) == sorted(
        f"{prefix}_{param}"
        for prefix in (
            "_q_proj_weight",
            "_k_proj_weight",
            "_v_proj_weight",
            "_in_proj_bias",
            "_bias_k",
            "_bias_v",
            "out_proj._weight",
            "out_proj._bias",
        )
        for param in ("mean", "log_std")
    )


def test_state_dict_round_trip_gives_identical_outputs():
    model, other = VITransformer(D, H, 1, 1, FF), VITransformer(D, H, 1, 1, FF)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    src, tgt = _sequence(False, M), _sequence(False, L)
    outputs = []
    for module in (model, other):
        torch.manual_seed(1)
        outputs.append(module(src, tgt, samples=2))
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0].log_probs, outputs[1].log_probs)


def test_repr():
    text = repr(VITransformer(D, H, 1, 1, FF, activation="gelu"))
    assert "d_model=8, nhead=2, batch_first=False" in text
    assert "num_layers=1" in text and "activation=gelu" in text
    assert "embed_dim=8, num_heads=2, bias=True, batch_first=False" in text
    assert "(linear1): VILinear(in_features=8, out_features=16" in text


@pytest.mark.parametrize("fused_kernel", [False, True])
def test_fully_masked_padding_row_stays_finite_and_trains(monkeypatch, fused_kernel):
    # An empty document (every key masked) attends to nothing, as in torch's
    # kernels; a NaN there turned every attention parameter NaN after one step.
    if fused_kernel:
        monkeypatch.setattr(functional_attention, "MATMUL_MAX_POSITIONS", 0)
    torch.manual_seed(0)
    layer = VITransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
    x = torch.randn(2, 3, 8)
    mask = torch.tensor([[True] * 3, [False] * 3])
    out = layer(x, src_key_padding_mask=mask, samples=2)
    assert torch.isfinite(out).all()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    out.square().sum().backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in layer.parameters())
    with vi.mean_weights():
        mean_out = layer(x, src_key_padding_mask=mask)[0]
    twin = vi.to_deterministic(layer)  # torch's layer, training mode
    torch.testing.assert_close(mean_out, twin(x, src_key_padding_mask=mask))
