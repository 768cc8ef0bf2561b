"""The attention core on tensors: what ``F.multi_head_attention_forward`` computes."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from torch_blue.vi.functional import (
    additive_mask,
    is_causal_mask,
    safe_softmax,
    sampled_attention,
    sequence_length,
    transpose_qkv,
)
from torch_blue.vi.functional import attention as functional_attention

E, HEADS, N, L, S = 8, 2, 3, 4, 6  # embedding, heads, batch, query and key lengths


def test_additive_mask_turns_true_into_minus_infinity():
    mask = torch.tensor([[False, True], [True, False]])
    expected = torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]])
    assert torch.equal(additive_mask(mask, torch.float32), expected)
    floats = torch.randn(2, 2, dtype=torch.float64)
    assert torch.equal(additive_mask(floats, torch.float32), floats.float())
    assert additive_mask(None, torch.float32) is None


def test_safe_softmax_gives_zero_weights_to_fully_masked_rows():
    scores = torch.randn(3, 5)
    scores[1] = float("-inf")
    weights = safe_softmax(scores)
    assert torch.equal(weights[1], torch.zeros(5))
    torch.testing.assert_close(weights[[0, 2]], torch.softmax(scores[[0, 2]], dim=-1))
    assert safe_softmax(torch.tensor([[float("nan"), 0.0]])).isnan().any()


def test_is_causal_mask_recognises_bool_and_additive_masks():
    additive = nn.Transformer.generate_square_subsequent_mask(4)
    assert is_causal_mask(additive, 4)
    assert is_causal_mask(torch.ones(4, 4, dtype=torch.bool).triu(1), 4)
    assert not is_causal_mask(additive, 5)
    assert not is_causal_mask(torch.zeros(4, 4), 4)
    assert not is_causal_mask(None, 4)


def test_transpose_qkv_keeps_which_inputs_are_the_same():
    x, memory, other = torch.randn(N, L, E), torch.randn(N, S, E), torch.randn(N, S, E)
    q, k, v = transpose_qkv(x, x, x)
    assert q.shape == (L, N, E) and q is k is v
    q, k, v = transpose_qkv(x, memory, memory)
    assert k is v and q is not k and torch.equal(q, x.transpose(0, 1))
    q, k, v = transpose_qkv(x, memory, other)
    assert k is not v and torch.equal(v, other.transpose(0, 1))


def test_sequence_length():
    assert sequence_length(torch.randn(N, L, E), batch_first=True) == L
    assert sequence_length(torch.randn(L, N, E), batch_first=False) == L
    assert sequence_length(torch.randn(L, E), batch_first=True) == L


CASES = {
    "self": {},
    "cross": {"cross": True},
    "shared_memory": {"cross": True, "shared_memory": True},
    "separate_weights": {"cross": True, "separate": True},
    "bias_kv_zero_attn": {"bias_kv": True, "zero_attn": True},
    "no_bias": {"bias": False},
    "no_out_proj": {"out_proj": False},
}
MASKS = ["none", "bool", "float3d", "padding", "causal"]


def _inputs(cross=False, shared_memory=False):
    query = torch.randn(N, L, E)
    if not cross:
        return query, query, query, L
    key = torch.randn(N, S, E)
    return query, key, key if shared_memory else torch.randn(N, S, E), S


def _masks(kind, source):
    if kind == "bool":
        mask = torch.rand(L, source) > 0.6
        mask[:, 0] = False
        return {"attn_mask": mask}
    if kind == "float3d":
        return {"attn_mask": torch.randn(N * HEADS, L, source)}
    if kind == "padding":
        padding = torch.zeros(N, source, dtype=torch.bool)
        padding[0, source // 2 :] = True
        return {"key_padding_mask": padding}
    if kind == "causal" and source == L:
        return {"attn_mask": nn.Transformer.generate_square_subsequent_mask(L)}
    return {}


@pytest.fixture(params=["matmul", "fused"])
def kernel(request, monkeypatch):
    """Run the core with each kernel, whatever the sequence lengths."""
    limit = 2**62 if request.param == "matmul" else 0
    monkeypatch.setattr(functional_attention, "MATMUL_MAX_POSITIONS", limit)
    return request.param


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masks", MASKS)
def test_sampled_attention_computes_what_torch_computes(case, masks, kernel):
    options = CASES[case]
    if masks == "causal" and options.get("bias_kv"):
        pytest.skip(
            "torch then swaps the causal mask for the kernel's causal flag, which "
            "ignores the bias and zero key columns; the core keeps the padded mask"
        )
    query, key, value, source = _inputs(options.get("cross"), options.get("shared_memory"))
    mask_kwargs = _masks(masks, source)
    separate = options.get("separate", False)
    in_proj = (
        tuple(torch.randn(E, E) for _ in range(3)) if separate else (torch.randn(3 * E, E),)
    )
    in_bias = torch.randn(3 * E) if options.get("bias", True) else None
    bias_k, bias_v = (
        (torch.randn(1, 1, E), torch.randn(1, 1, E))
        if options.get("bias_kv")
        else (None, None)
    )
    zero_attn = options.get("zero_attn", False)
    out_proj = options.get("out_proj", True)  # else torch's projects with the identity
    out_weight, out_bias = (
        (torch.randn(E, E), torch.randn(E)) if out_proj else (torch.eye(E), torch.zeros(E))
    )
    is_causal = masks == "causal" and source == L
    projections = {}
    if separate:
        projections = {
            "use_separate_proj_weight": True,
            "q_proj_weight": in_proj[0],
            "k_proj_weight": in_proj[1],
            "v_proj_weight": in_proj[2],
        }
    expected, _ = F.multi_head_attention_forward(
        *(x.transpose(0, 1) for x in (query, key, value)),
        E,
        HEADS,
        None if separate else in_proj[0],
        in_bias,
        bias_k,
        bias_v,
        zero_attn,
        0.0,
        out_weight,
        out_bias,
        need_weights=False,
        is_causal=is_causal,
        **mask_kwargs,
        **projections,
    )
    expected = expected.transpose(0, 1)
    output = sampled_attention(
        query,
        key,
        value,
        HEADS,
        in_proj,
        in_bias,
        bias_k,
        bias_v,
        zero_attn,
        0.0,
        out_weight if out_proj else None,
        out_bias if out_proj else None,
        mask_kwargs.get("attn_mask"),
        mask_kwargs.get("key_padding_mask"),
        is_causal,
    )
    torch.testing.assert_close(output, expected, atol=1e-4, rtol=1e-4)
