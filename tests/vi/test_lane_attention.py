"""Attention in the lanes of a sampled forward: one kernel call, the loop's results."""

import math
from contextlib import nullcontext

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from torch_blue import vi
from torch_blue.vi import _lane_attention, sampling
from torch_blue.vi._lane_attention import lane_attention

S, B, H, L, M, E = 3, 2, 4, 5, 6, 8


def _routing():
    # A fresh owner: the routing is on for a module's first sampled forward.
    return lane_attention(torch.nn.Module())


def _tensor(*shape: int) -> Tensor:
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


# Each case: per-lane shapes of query, key, value (and mask), which are batched over
# the lanes, and the keyword arguments of scaled_dot_product_attention.
CASES = {
    "4d": ([(B, H, L, E), (B, H, M, E), (B, H, M, 3)], (1, 1, 1), {}),
    "4d-shared-key-value": ([(B, H, L, E), (B, H, M, E), (B, H, M, E)], (1, 0, 0), {}),
    "4d-shared-query": ([(B, H, L, E), (B, H, M, E), (B, H, M, E)], (0, 1, 1), {}),
    "4d-broadcast-batch": ([(B, H, L, E), (1, H, M, E), (1, H, M, E)], (1, 1, 1), {}),
    "3d": ([(B, L, E), (B, M, E), (B, M, E)], (1, 1, 1), {}),
    "2d": ([(L, E), (M, E), (M, E)], (1, 1, 1), {}),
    "5d": ([(2, B, H, L, E), (2, B, H, M, E), (2, B, H, M, E)], (1, 1, 1), {}),
    "causal-scale": ([(B, H, L, E)] * 3, (1, 1, 1), {"is_causal": True, "scale": 0.3}),
    "gqa": ([(B, H, L, E), (B, 2, M, E), (B, 2, M, E)], (1, 1, 1), {"enable_gqa": True}),
}

MASKS = {
    "bool-shared": ((L, M), False, torch.bool),
    "per-example-shared": ((B, 1, L, M), False, torch.float64),
    "per-lane": ((B, H, L, M), True, torch.float64),
    "per-lane-low-rank": ((L, M), True, torch.float64),
}


def _lanes(shapes, batched) -> list[Tensor]:
    return [
        _tensor(*((S,) if lane else ()), *shape) for shape, lane in zip(shapes, batched)
    ]


def _compare(inputs: list[Tensor], in_dims: tuple, attend) -> None:
    """vmap with lane_attention against torch's own per-lane evaluation."""
    with _routing():
        got = torch.vmap(attend, in_dims=in_dims, randomness="different")(*inputs)
    want = torch.stack(
        [
            attend(*(t if d is None else t[s] for t, d in zip(inputs, in_dims)))
            for s in range(S)
        ]
    )
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(want)
    wanted = [t for t in inputs if t.requires_grad]
    for g, w in zip(
        torch.autograd.grad((got * weight).sum(), wanted),
        torch.autograd.grad((want * weight).sum(), wanted),
    ):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("case", CASES)
def test_lanes_match_the_loop(case):
    torch.manual_seed(0)
    shapes, batched, kwargs = CASES[case]
    inputs = _lanes(shapes, batched)

    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    _compare(inputs, tuple(0 if lane else None for lane in batched), attend)


@pytest.mark.parametrize("mask", MASKS)
def test_masks_match_the_loop(mask):
    torch.manual_seed(1)
    shape, batched, dtype = MASKS[mask]
    q, k, v = _lanes([(B, H, L, E), (B, H, M, E), (B, H, M, E)], (True, True, True))
    if dtype is torch.bool:
        attn_mask = torch.rand(*shape) > 0.3
        attn_mask[..., 0] = True  # no row fully masked
    else:
        attn_mask = torch.randn(*((S,) if batched else ()), *shape, dtype=dtype)

    def attend(q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

    _compare([q, k, v, attn_mask], (0, 0, 0, 0 if batched else None), attend)


def test_one_kernel_call_for_all_lanes(graph_node_names):
    # torch's loop would put S attention nodes in the graph; the stacked call one.
    q, k, v = _lanes([(B, H, L, E)] * 3, (True, True, True))
    with _routing():
        out = torch.vmap(F.scaled_dot_product_attention, randomness="different")(q, k, v)
    nodes = graph_node_names(out)
    attention = [name for name in nodes if "ScaledDotProduct" in name]
    assert len(attention) == 1, nodes


def test_dropout_differs_between_lanes_and_keeps_the_mean():
    # Identical lanes with dropout: outputs differ from lane to lane (independent
    # masks, as in torch's loop under randomness="different"), and their average is
    # the attention without dropout (dropout rescales by 1 / (1 - p)).
    torch.manual_seed(2)
    lanes, p = 4000, 0.5
    q, k, v = (torch.randn(1, 1, 3, 4, dtype=torch.float64) for _ in range(3))

    def attend(lane: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q + lane, k, v, dropout_p=p)

    with _routing():
        out = torch.vmap(attend, randomness="different")(torch.zeros(lanes, 1, 1, 1, 1))
    assert not torch.equal(out[0], out[1])
    exact = F.scaled_dot_product_attention(q, k, v)
    standard_error = out.std(dim=0) / math.sqrt(lanes)
    assert ((out.mean(dim=0) - exact).abs() <= 5 * standard_error).all()


def test_dropout_randomness_same_and_error_follow_torch():
    torch.manual_seed(3)
    q = torch.randn(1, 1, 3, 4).expand(S, 1, 1, 3, 4)  # identical lanes

    def attend(x: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)

    with _routing():
        same = torch.vmap(attend, randomness="same")(q)
        torch.testing.assert_close(same[0], same[1])
        with pytest.raises(RuntimeError, match="randomness"):
            torch.vmap(attend, randomness="error")(q)


@pytest.mark.parametrize("inside_vmap", [False, True], ids=["no-vmap", "unbatched-lanes"])
def test_unbatched_call_uses_one_dropout_mask(inside_vmap):
    # Without batched inputs the function keeps the kernel's graph: the backward
    # uses the mask of the forward. The output is linear in the values for a fixed
    # mask, so <out, g> = <v, grad_v> holds exactly only with the same mask.
    torch.manual_seed(4)
    q, k, v = (_tensor(1, 2, 5, 4) for _ in range(3))

    def attend(_lane: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)

    with _routing():
        if inside_vmap:
            out = torch.vmap(attend, randomness="different")(torch.zeros(1))[0]
        else:
            out = attend(torch.zeros(()))
    g = torch.randn_like(out)
    (grad_v,) = torch.autograd.grad((out * g).sum(), v)
    torch.testing.assert_close((out * g).sum(), (v * grad_v).sum())


def test_unbatched_call_without_grad_keeps_no_graph():
    q, k, v = (_tensor(1, 2, 5, 4) for _ in range(3))
    with _routing(), torch.no_grad():
        out = F.scaled_dot_product_attention(q, k, v)
    assert not out.requires_grad
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v).detach())


class Attention(vi.VIModule):
    """A user's custom Bayesian attention block."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = vi.VILinear(E, 3 * E)
        self.out = vi.VILinear(E, E)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, 2, E // 2)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attention.transpose(1, 2).reshape(batch, length, E))


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_custom_module_matches_torch_loop(monkeypatch, chunk_size):
    # The sampled forward routes attention through the stacked call (per chunk of
    # samples with chunk_size); with the routing switched off, torch loops over the
    # samples. Same seed, same draws:
    # same outputs, log-probabilities and gradients.
    results = {}
    for route in (True, False):
        if not route:
            monkeypatch.setitem(
                sampling._LANE_RULES, "attention", lambda owner: nullcontext()
            )
        torch.manual_seed(5)
        model = Attention().double()
        x = torch.randn(B, L, E, dtype=torch.float64)
        out = model(x, samples=S, chunk_size=chunk_size)
        loss = out.square().sum() - out.log_probs.sum()
        results[route] = (
            out,
            out.log_probs,
            torch.autograd.grad(loss, list(model.parameters())),
        )
    got, want = results[True], results[False]
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w)


class Recurrent(vi.VIModule):
    """No attention: the routing turns off after the first sampled forward."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = vi.VIGRU(E, E, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]


def test_routing_stays_on_only_for_modules_that_attend(monkeypatch):
    intercepted = []
    handler = _lane_attention._LaneAttentionMode.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        intercepted.append(func)
        return handler(self, func, types, args, kwargs)

    monkeypatch.setattr(_lane_attention._LaneAttentionMode, "__torch_function__", counting)
    x = torch.randn(B, L, E)
    for model in (Attention(), Recurrent()):
        calls = []
        for _ in range(3):
            intercepted.clear()
            model(x, samples=S)
            calls.append(intercepted.count(F.scaled_dot_product_attention))
        if isinstance(model, Attention):
            assert calls == [1, 1, 1]  # routed on every call
        else:
            assert len(intercepted) == 0 and calls == [0, 0, 0]  # off after the probe


def test_plain_attention_with_dropout_draws_a_mask_per_sample():
    # A plain transformer layer left in a partly Bayesian model: in training mode
    # its attention dropout sees a query shared by the samples, which vmap refuses
    # to drop out in place; the lane rule gives each sample its own copy and mask.
    from torch_blue.vi.distributions import NonBayesian

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.5, batch_first=True)
    vi.convert_to_vimodule(
        layer,
        keep_weights=True,
        include="linear2",
        variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )
    x = torch.randn(3, 5, 8)
    out = layer(x, samples=4).as_plain()
    assert not torch.allclose(out[0], out[1])  # weights equal: only dropout differs
    out.sum().backward()
    assert layer.self_attn.in_proj_weight.grad is not None
    assert sampling._patched_forwards == {}
    assert "forward" not in layer.self_attn.__dict__
    layer.eval()
    with torch.no_grad():
        out = layer(x, samples=4).as_plain()
    torch.testing.assert_close(out[0], out[3])


def test_subclasses_of_plain_attention_drop_out_per_sample_too():
    class Attention(torch.nn.MultiheadAttention):
        pass

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention(8, 2, dropout=0.5, batch_first=True)
            self.out = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.out(self.attention(x, x, x, need_weights=False)[0])

    torch.manual_seed(1)
    block = vi.convert_to_vimodule(Block(), include="out")
    out = block(torch.randn(3, 5, 8), samples=2)
    assert out.shape == (2, 3, 5, 8)
