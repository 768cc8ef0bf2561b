import pytest
import torch
from torch import nn
from torch.testing import assert_close

from torch_blue import vi
from torch_blue.vi import KullbackLeiblerLoss, VILinear, VIModule, VISequential
from torch_blue.vi.distributions import (
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
    NonBayesian,
)
from torch_blue.vi.embedding import VIEmbedding
from torch_blue.vi.utils import ShapeError
from torch_blue.vi.utils.convert import convert_to_vimodule

ESTIMATORS = ["reparameterization", "local_reparameterization", "flipout", "shared_flipout"]
OPTIONS = [
    {},
    {"padding_idx": 3},
    {"padding_idx": -1},
    {"max_norm": 0.3},
    {"max_norm": 0.5, "norm_type": 1.0, "padding_idx": 0},
    {"scale_grad_by_freq": True},
]
TOKENS = torch.tensor([[1, 3, 3, 0], [9, 3, 5, 1]])


def _freeze_to_mean(layer):
    with torch.no_grad():
        layer._weight_log_std.fill_(-30.0)


def _mean_twin(layer):
    reference = layer._to_torch()
    with torch.no_grad():
        reference.weight.copy_(layer._weight_mean)
    return reference


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_output_shapes_equal_torch_with_a_sample_dimension(shape):
    layer = VIEmbedding(10, 4)
    tokens = torch.randint(0, 10, shape)
    out = layer(tokens, samples=3)
    assert out.shape == (3, *nn.Embedding(10, 4)(tokens).shape)
    assert out.log_probs.shape == (3, 2)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_torch_with_zero_variance(options, estimator):
    layer = VIEmbedding(10, 4, estimator=estimator, **options)
    with torch.no_grad():  # large rows, so that max_norm acts
        layer._weight_mean.mul_(5.0)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    expected = reference(TOKENS)
    for lane in layer(TOKENS, samples=2):
        assert_close(lane, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTIONS)
def test_mean_weights_equal_to_deterministic(options):
    layer = VIEmbedding(10, 4, **options)
    with torch.no_grad():
        layer._weight_mean.mul_(5.0)
    plain = vi.to_deterministic(layer)
    assert type(plain) is nn.Embedding
    assert not any(isinstance(m, VIModule) for m in plain.modules())
    with vi.mean_weights():
        out = layer(TOKENS)
    if "max_norm" in options:
        # the layer's functional renormalisation against torch's in-place kernel
        assert_close(out[0], plain(TOKENS))
    else:
        assert torch.equal(out[0], plain(TOKENS))  # the same lookup


def test_convert_keeps_weights_and_reproduces_torch():
    module = nn.Embedding(10, 4, padding_idx=2, max_norm=1.0)
    with torch.no_grad():
        module.weight[2] = 0.5  # torch keeps a non-zero padding row as given
    tokens = torch.tensor([[2, 1, 7], [2, 2, 9]])
    expected = module(tokens).detach()
    converted = convert_to_vimodule(
        module, keep_weights=True, variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )  # fmt: skip
    assert type(converted) is VIEmbedding
    assert converted.padding_idx == 2 and converted.max_norm == 1.0
    assert_close(converted(tokens, samples=1)[0], expected)
    assert type(convert_to_vimodule(nn.Embedding(10, 4))) is VIEmbedding


def test_trains_with_kl_loss():
    torch.manual_seed(0)
    tokens = torch.randint(0, 12, (64,))
    labels = tokens % 3
    model = VISequential(VIEmbedding(12, 8), nn.ReLU(), VILinear(8, 3))
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=64, track=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(model(tokens, samples=4), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Learning shows in the data term (1.0 without it: lr=0); with 64 examples the KL
    # term is most of the loss and falls as fast as Adam widens the posterior scales.
    data = loss_fn.log["data_fitting"]
    assert sum(data[-5:]) < 0.3 * sum(data[:5])
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


@pytest.mark.parametrize("padding_idx", [None, 4])
def test_log_probs_score_the_drawn_table_without_the_padding_row(padding_idx):
    layer = VIEmbedding(6, 3, padding_idx=padding_idx)
    out = layer(torch.arange(6), samples=4)  # every row: the whole drawn table
    assert out.log_probs.shape == (4, 2)
    assert not torch.allclose(out[0], out[1])
    keep = torch.ones(6, dtype=torch.bool)
    if padding_idx is not None:
        keep[padding_idx] = False
    parameters = tuple(layer.get_variational_parameters("weight"))
    for table, log_probs in zip(out.as_plain(), out.log_probs):
        log_p = layer.prior["weight"].prior_log_prob(table)[keep].sum()
        log_q = layer.variational_distribution["weight"].log_prob(table, parameters)
        assert_close(log_probs, torch.stack([log_p, log_q[keep].sum()]), atol=1e-3,
                     rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("return_log_probs", [True, False])
def test_padding_tokens_read_zeros_and_get_no_gradient(estimator, return_log_probs):
    layer = VIEmbedding(10, 4, padding_idx=3, max_norm=2.0, estimator=estimator,
                        return_log_probs=return_log_probs)  # fmt: skip
    assert torch.equal(layer._weight_mean[3], torch.zeros(4))
    out = layer(TOKENS, samples=5)
    assert torch.equal(out[:, TOKENS == 3], torch.zeros(5, 3, 4))
    loss = out.square().sum()
    if return_log_probs:
        loss = loss + out.log_probs.sum()
    loss.backward()
    for parameter in layer.parameters():
        assert torch.equal(parameter.grad[3], torch.zeros(4))
        assert parameter.grad[1].abs().sum() > 0


def test_padding_row_is_deterministic_at_its_mean():
    layer = VIEmbedding(10, 4, padding_idx=3)
    with torch.no_grad():
        layer._weight_mean[3] = 0.25
    out = layer(TOKENS, samples=3)
    assert torch.equal(out[:, TOKENS == 3], torch.full((3, 3, 4), 0.25))
    layer.reset_variational_parameters()
    assert torch.equal(layer._weight_mean[3], torch.zeros(4))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_per_token_moments_match_the_variational_distribution(estimator):
    layer = VIEmbedding(10, 4, padding_idx=0, estimator=estimator)
    # shared_flipout: the lanes of one call share a perturbation; one lane per chunk
    # (each draws its own) gives independent draws.
    chunk_size, n = (1, 4_000) if estimator == "shared_flipout" else (None, 20_000)
    with torch.no_grad():
        out = layer(TOKENS, samples=n, chunk_size=chunk_size).as_plain()
        mean = layer._weight_mean[TOKENS]
        var = torch.exp(2 * layer._weight_log_std[TOKENS])
        var[TOKENS == 0] = 0.0
    # 5 standard errors: sd/sqrt(n) for the mean, var*sqrt(2/n) for the variance.
    assert torch.all((out.mean(0) - mean).abs() <= 5 * (var / n).sqrt())
    assert torch.all((out.var(0) - var).abs() <= 5 * var * (2 / n) ** 0.5)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_repeated_tokens_share_noise_only_under_weight_sampling(estimator):
    # Tokens 3 at positions (0, 1) and (0, 2): one drawn table gives them the same
    # vector; the per-occurrence estimators draw them independently (local
    # reparameterisation) or decorrelate them with random signs (flipout).
    n = 20_000
    layer = VIEmbedding(10, 1, estimator=estimator)
    with torch.no_grad():
        layer._weight_mean.zero_()
        out = layer(TOKENS, samples=n).as_plain()[:, 0, 1:3, 0]
    if estimator == "reparameterization":
        assert torch.equal(out[:, 0], out[:, 1])
    else:
        assert abs(torch.corrcoef(out.T)[0, 1]) < 5 / n**0.5


def test_prediction_mode_shares_the_table_within_a_sequence():
    # positions of one sequence share a draw, so repeated tokens stay equal
    layer = VIEmbedding(10, 4, return_log_probs=False)
    tokens = torch.tensor([[3, 3, 5]])
    out = layer(tokens, samples=2)
    assert out.log_probs is None
    assert torch.equal(out[:, 0, 0], out[:, 0, 1])
    assert not torch.equal(out[0], out[1])


def test_prediction_mode_draws_rows_for_single_tokens():
    layer = VIEmbedding(10, 4, return_log_probs=False)
    calls = []
    lookup = layer._lookup
    layer._lookup = lambda x, table: calls.append(table.shape) or lookup(x, table)
    out = layer(torch.tensor([3, 3, 5]), samples=2)
    assert out.log_probs is None and out.shape == (2, 3, 4)
    assert len(calls) == 2  # mean rows and std rows, no table drawn
    assert not torch.equal(out[:, 0], out[:, 1])  # per occurrence


@pytest.mark.parametrize("estimator", ["local_reparameterization", "flipout"])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_fast_estimators_record_the_closed_form_kl(estimator, padding_idx):
    layer = VIEmbedding(6, 3, padding_idx=padding_idx, estimator=estimator)
    out = layer(TOKENS % 6, samples=3)
    keep = torch.ones(6, dtype=torch.bool)
    if padding_idx is not None:
        keep[padding_idx] = False
    q = torch.distributions.Normal(
        layer._weight_mean[keep], layer._weight_log_std[keep].exp()
    )
    p = torch.distributions.Normal(0.0, 1.0)
    kl = torch.distributions.kl_divergence(q, p).sum()
    assert_close(out.log_probs[:, 1] - out.log_probs[:, 0], kl.expand(3))
    assert_close(out.log_probs[:, 1], -q.entropy().sum().expand(3))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_max_norm_bounds_every_looked_up_vector(estimator):
    layer = VIEmbedding(10, 4, max_norm=0.5, estimator=estimator)
    before = layer._weight_mean.detach().clone()
    out = layer(TOKENS, samples=50)
    assert torch.all(out.norm(dim=-1) <= 0.5 + 1e-5)
    assert torch.equal(layer._weight_mean, before)  # not renormalised in place


def test_scale_grad_by_freq_scales_gradients_as_torch():
    layer = VIEmbedding(10, 4, scale_grad_by_freq=True)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    layer(TOKENS, samples=1).sum().backward()
    reference(TOKENS).sum().backward()
    assert_close(layer._weight_mean.grad, reference.weight.grad)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradients_reach_every_variational_parameter(estimator):
    layer = VIEmbedding(10, 4, estimator=estimator)
    out = layer(torch.arange(10), samples=3)
    (out.square().sum() + out.log_probs.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.all(parameter.grad.abs().sum(1) > 0), name


def test_from_pretrained_sets_the_mean_and_freezes():
    table = torch.randn(7, 3)
    layer = VIEmbedding.from_pretrained(table, padding_idx=1)
    assert torch.equal(layer._weight_mean, table)
    assert not any(p.requires_grad for p in layer.parameters())
    assert all(
        p.requires_grad for p in VIEmbedding.from_pretrained(table, False).parameters()
    )
    with pytest.raises(ShapeError, match="embeddings must be a 2-d tensor"):
        VIEmbedding.from_pretrained(torch.randn(3))


def test_weight_sampling_with_other_distributions():
    layer = VIEmbedding(10, 4, padding_idx=3, variational_distribution=MeanFieldStudentT())
    out = layer(TOKENS, samples=3)
    assert torch.equal(out[:, TOKENS == 3], torch.zeros(3, 3, 4))
    assert torch.isfinite(out.log_probs).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_embeddings": 0}, ValueError, "num_embeddings must be a positive int"),
        ({"embedding_dim": 2.5}, ValueError, "embedding_dim must be a positive int"),
        ({"padding_idx": 10}, ValueError, "padding_idx must be an int in"),
        ({"padding_idx": -11}, ValueError, "padding_idx must be an int in"),
        ({"max_norm": -1.0}, ValueError, "max_norm must be positive"),
        ({"sparse": True}, ValueError, "sparse=True is not supported"),
        ({"_weight": torch.zeros(3, 4)}, ShapeError, r"_weight must have shape \(10, 4\)"),
        ({"estimator": "lrt"}, ValueError, "estimator must be one of"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    arguments = {"num_embeddings": 10, "embedding_dim": 4, **kwargs}
    with pytest.raises(error, match=rf"VIEmbedding: .*{match}"):
        VIEmbedding(**arguments)


def test_bad_inputs_raise():
    layer = VIEmbedding(10, 4)
    with pytest.raises(TypeError, match=r"VIEmbedding\(num_embeddings=10\).*torch.float32"):
        layer(torch.zeros(3), samples=2)
    with pytest.raises(IndexError, match=r"VIEmbedding\(num_embeddings=10\).*\[0, 10\)"):
        layer(torch.tensor([1, 10]), samples=2)
    with pytest.raises(ValueError, match=r"cannot convert an nn\.Embedding with sparse"):
        convert_to_vimodule(nn.Embedding(10, 4, sparse=True))


def test_student_t_posterior_rejects_fast_estimators():
    with pytest.raises(ValueError, match="needs MeanFieldNormal"):
        VIEmbedding(10, 4, variational_distribution=MeanFieldStudentT(),
                    estimator="local_reparameterization")  # fmt: skip


def test_repr():
    text = repr(VIEmbedding(10, 4, padding_idx=0, max_norm=1.0, estimator="flipout"))
    assert "10, 4, padding_idx=0, max_norm=1.0, estimator='flipout'" in text
    assert "prior=MeanFieldNormal(mean=0, std=1)" in text
    assert isinstance(VIEmbedding(3, 2).prior["weight"], MeanFieldNormal)
