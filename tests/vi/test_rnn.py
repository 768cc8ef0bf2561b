"""Bayesian recurrent layers: torch twins, weights shared over time, estimators."""

import itertools
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import rnn as torch_rnn

from torch_blue import vi
from torch_blue.vi import KullbackLeiblerLoss
from torch_blue.vi.distributions import Categorical, NonBayesian
from torch_blue.vi.rnn import (
    VIGRU,
    VILSTM,
    VIRNN,
    pack_padded_sequence,
    pad_packed_sequence,
)
from torch_blue.vi.utils import ShapeError, UnsupportedDistributionError
from torch_blue.vi.utils.convert import convert_to_vimodule

pytestmark = [
    # torch's own notes about its oneDNN kernels, raised by the reference modules
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported"),
    pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The recurrences run many tiny ops; with two intra-op threads on a busy two-core
    # machine each op waits for a descheduled worker (10x slower runs).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (VI class, torch class, extra constructor arguments)
KINDS = {
    "rnn_tanh": (VIRNN, nn.RNN, {}),
    "rnn_relu": (VIRNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (VIGRU, nn.GRU, {}),
    "lstm": (VILSTM, nn.LSTM, {}),
    "lstm_proj": (VILSTM, nn.LSTM, {"proj_size": 3}),
}
IN, HIDDEN, BATCH, STEPS = 4, 5, 3, 4


def _layer(kind, **options):
    vi_cls, _, extra = KINDS[kind]
    return vi_cls(IN, HIDDEN, **extra, **options)


def _freeze_to_mean(layer):
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-30.0)


def _twin_with_means(layer):
    """The torch twin of ``layer`` holding its variational means, same mode."""
    _, torch_cls, extra = KINDS[_kind_of(layer)]
    reference = torch_cls(
        IN,
        HIDDEN,
        num_layers=layer.num_layers,
        bias=layer.bias,
        batch_first=layer.batch_first,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
        **extra,
    )
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.copy_(getattr(layer, f"_{name}_mean"))
    return reference.train(layer.training)


def _kind_of(layer):
    if isinstance(layer, VIRNN):
        return "rnn_tanh" if layer.nonlinearity == "tanh" else "rnn_relu"
    if isinstance(layer, VIGRU):
        return "gru"
    return "lstm_proj" if layer.proj_size else "lstm"


def _states(kind, layers, directions, batch):
    out = 3 if kind == "lstm_proj" else HIDDEN
    lead = (layers * directions,) if batch is None else (layers * directions, batch)
    h0 = torch.randn(*lead, out)
    return (h0, torch.randn(*lead, HIDDEN)) if kind.startswith("lstm") else h0


def _flat(result):
    """``(output, h_n[, c_n])`` as a flat tuple of tensors."""
    output, state = result
    return (output, *state) if isinstance(state, tuple) else (output, state)


def _assert_lanes_match(sampled, expected, **tolerance):
    for got, want in zip(_flat(sampled), _flat(expected)):
        assert got.shape[1:] == want.shape
        for lane in got.as_plain():
            torch.testing.assert_close(lane, want, **tolerance)


# ----------------------------------------------------------------- torch twins
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_random_variables_are_named_and_shaped_like_torch_parameters(kind, bias):
    layer = _layer(kind, num_layers=2, bidirectional=True, bias=bias)
    reference = _twin_with_means(layer)
    expected = {name: p.shape for name, p in reference.named_parameters()}
    assert layer.random_variables == tuple(expected)
    for name, shape in expected.items():
        assert getattr(layer, f"_{name}_mean").shape == shape
    assert set(vi.to_deterministic(layer).state_dict()) == set(expected)


GRID = list(
    itertools.product(
        [1, 2],  # num_layers
        [False, True],  # bidirectional
        ["sequence_first", "batch_first", "unbatched"],
        [True, False],  # bias
        [False, True],  # initial states given
        [False, True],  # train mode (dropout 0)
    )
)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "layout", "bias", "with_states", "train"), GRID
)
def test_matches_torch_at_zero_std(
    kind, num_layers, bidirectional, layout, bias, with_states, train
):
    layer = _layer(
        kind,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=layout == "batch_first",
        bias=bias,
    ).train(train)
    _freeze_to_mean(layer)
    reference = _twin_with_means(layer)
    shape = {
        "sequence_first": (STEPS, BATCH, IN),
        "batch_first": (BATCH, STEPS, IN),
        "unbatched": (STEPS, IN),
    }[layout]
    x = torch.randn(shape)
    args = (x,)
    if with_states:
        batch = None if layout == "unbatched" else BATCH
        args = (x, _states(kind, num_layers, 1 + bidirectional, batch))
    with torch.no_grad():
        _assert_lanes_match(layer(*args, samples=2), reference(*args), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_outputs_carry_the_sample_dimension_and_log_probs(kind):
    layer = _layer(kind, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, IN)
    result = layer(x, samples=3)
    expected = _twin_with_means(layer)(x)
    for got, want in zip(_flat(result), _flat(expected)):
        assert got.shape == (3, *want.shape)
        assert got.log_probs.shape == (3, 2)
    output = result[0]
    assert not torch.allclose(output[0], output[1])  # stochastic lanes


# ----------------------------------------------------------------- packed sequences
class _PackedModel(vi.VIModule):
    """Packs inside the sampled forward, like a model with variable-length inputs."""

    def __init__(self, layer, packer, per_sample_input):
        super().__init__()
        self.rnn = layer
        self.packer = packer
        self.per_sample_input = per_sample_input

    def forward(self, x, lengths, hx=None):
        if self.per_sample_input:  # as after a Bayesian embedding
            x = x + 0.0 * torch.randn(())
        packed = self.packer(x, lengths, enforce_sorted=False)
        output, state = self.rnn(packed, hx)
        assert isinstance(output, torch_rnn.PackedSequence)
        assert torch.equal(output.batch_sizes, packed.batch_sizes)
        return pad_packed_sequence(output, batch_first=False)[0], state


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
@pytest.mark.parametrize(
    ("packer", "per_sample_input"),
    [
        (torch_rnn.pack_padded_sequence, False),
        (pack_padded_sequence, False),
        (pack_padded_sequence, True),
    ],
)
@pytest.mark.parametrize("with_states", [False, True])
def test_packed_sequences_match_torch(
    kind, num_layers, bidirectional, packer, per_sample_input, with_states
):
    layer = _layer(kind, num_layers=num_layers, bidirectional=bidirectional)
    _freeze_to_mean(layer)
    reference = _twin_with_means(layer)
    x, lengths = torch.randn(6, 4, IN), torch.tensor([4, 6, 1, 4])
    hx = _states(kind, num_layers, 1 + bidirectional, 4) if with_states else None
    model = _PackedModel(layer, packer, per_sample_input)
    result = model(x, lengths, hx, samples=2)
    out, state = reference(
        torch_rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), hx
    )
    expected = (torch_rnn.pad_packed_sequence(out)[0], state)
    _assert_lanes_match(result, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gru", "lstm_proj"])
@pytest.mark.parametrize("with_states", [False, True])
def test_outermost_call_on_a_packed_sequence(kind, with_states):
    layer = _layer(kind, num_layers=2, bidirectional=True)
    _freeze_to_mean(layer)
    reference = _twin_with_means(layer)
    x, lengths = torch.randn(6, 4, IN), torch.tensor([4, 6, 1, 4])
    packed = torch_rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = _states(kind, 2, 2, 4) if with_states else None
    output, state = layer(packed, hx, samples=3)
    expected_output, expected_state = reference(packed, hx)
    assert isinstance(output, torch_rnn.PackedSequence)
    for got, want in zip(output[1:], packed[1:]):
        assert got is want  # batch_sizes and permutations are shared by all samples
    assert output.data.shape == (3, *expected_output.data.shape)
    assert output.data.log_probs.shape == (3, 2)
    padded, out_lengths = pad_packed_sequence(output, batch_first=True)
    expected_padded = torch_rnn.pad_packed_sequence(expected_output, batch_first=True)[0]
    assert torch.equal(out_lengths, lengths) and padded.log_probs.shape == (3, 2)
    _assert_lanes_match((padded, state), (expected_padded, expected_state), atol=1e-5,
                        rtol=0)  # fmt: skip


def test_sampled_inputs_pack_and_run_per_sample():
    layer = VIGRU(IN, HIDDEN)
    _freeze_to_mean(layer)
    reference = _twin_with_means(layer)
    embedded = vi.VILinear(IN, IN)(torch.randn(6, 4, IN), samples=3)  # (S, T, B, IN)
    lengths = torch.tensor([4, 6, 1, 4])
    packed = pack_padded_sequence(embedded, lengths, enforce_sorted=False)
    assert packed.data.shape == (3, 15, IN)
    assert packed.data.log_probs is embedded.log_probs
    output, h_n = layer(packed)
    assert output.data.shape == (3, 15, HIDDEN)
    # the embedding's log-probs add to the GRU's (whose log q is huge at std ~0)
    assert not torch.allclose(h_n.log_probs, embedded.log_probs)
    for lane in range(3):
        plain = torch_rnn.pack_padded_sequence(
            embedded.as_plain()[lane], lengths, enforce_sorted=False
        )
        expected_output, expected_h = reference(plain)
        torch.testing.assert_close(output.data[lane], expected_output.data, atol=1e-5,
                                   rtol=0)  # fmt: skip
        torch.testing.assert_close(h_n[lane], expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_sampled_states_of_an_earlier_call_are_mapped_over(kind):
    layer = _layer(kind, num_layers=2)
    _freeze_to_mean(layer)
    reference = _twin_with_means(layer)
    x = torch.randn(STEPS, BATCH, IN)
    first = layer(x, samples=3)[1]
    output, state = layer(x, first)  # continue each sample from its own state
    assert output.shape == (3, STEPS, BATCH, HIDDEN)
    lanes = first if isinstance(first, tuple) else (first,)
    for lane in range(3):
        hx = tuple(t.as_plain()[lane] for t in lanes)
        expected = reference(x, hx if len(hx) == 2 else hx[0])
        for got, want in zip(_flat((output, state)), _flat(expected)):
            torch.testing.assert_close(got[lane], want, atol=1e-5, rtol=0)


def test_per_sample_packing_with_torch_gives_a_clear_error():
    model = _PackedModel(VIGRU(IN, HIDDEN), torch_rnn.pack_padded_sequence, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # vmap's fallback warning
        with pytest.raises(ShapeError, match=r"VIGRU.*torch_blue.vi.rnn.pack_padded"):
            model(torch.randn(6, 4, IN), torch.tensor([4, 6, 1, 4]), samples=2)


# ----------------------------------------------------------------- mean network
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("estimator", ["reparameterization", "flipout"])
def test_mean_weights_equal_to_deterministic_exactly(kind, estimator):
    layer = _layer(
        kind, num_layers=2, bidirectional=True, batch_first=True, estimator=estimator
    ).eval()
    plain = vi.to_deterministic(layer)
    assert type(plain) is KINDS[kind][1]
    assert not any(isinstance(m, vi.VIModule) for m in plain.modules())
    x = torch.randn(BATCH, STEPS, IN)
    # The oneDNN LSTM kernel rounds differently from torch's native one, which the
    # layer follows op by op; switch it off. (Still compared to rounding: the layer
    # reimplements torch's kernels, whose internals may change.)
    with torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
        with vi.mean_weights():
            result = layer(x)
        expected = plain(x)
    for got, want in zip(_flat(result), _flat(expected)):
        assert got.shape == (1, *want.shape) and got.log_probs is None
        torch.testing.assert_close(got[0], want)


@pytest.mark.parametrize("kind", list(KINDS))
def test_convert_keeps_torch_weights(kind):
    _, torch_cls, extra = KINDS[kind]
    module = torch_cls(IN, HIDDEN, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(STEPS, BATCH, IN)
    with torch.no_grad():
        expected = module(x)
    converted = convert_to_vimodule(
        module, keep_weights=True, variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )  # fmt: skip
    assert type(converted) is KINDS[kind][0]
    with torch.no_grad():
        _assert_lanes_match(converted(x, samples=1), expected, atol=1e-6, rtol=0)


def test_convert_builds_the_twin_inside_a_model():
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(IN, HIDDEN, batch_first=True, proj_size=2)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    model = convert_to_vimodule(Classifier())
    assert type(model.lstm) is VILSTM and model.lstm.proj_size == 2
    assert model.lstm.batch_first
    out = model(torch.randn(BATCH, STEPS, IN), samples=4)
    assert out.shape == (4, BATCH, 3) and out.log_probs.shape == (4, 2)


# ----------------------------------------------------------------- log-probs, grads
def test_each_weight_is_drawn_once_and_its_log_probs_recorded():
    layer = VILSTM(IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2)
    drawn = {}
    original = layer.sample_variable

    def capture(variable):
        sample = original(variable)
        drawn.setdefault(variable, []).append(sample)
        return sample

    layer.sample_variable = capture
    layer.forward(torch.randn(STEPS, BATCH, IN))  # outside a sampled call
    assert set(drawn) == set(layer.random_variables)
    assert all(len(samples) == 1 for samples in drawn.values())
    expected = torch.zeros(2)
    for variable, (sample,) in drawn.items():
        mean, log_std = layer.get_variational_parameters(variable)
        expected[0] += torch.distributions.Normal(0.0, 1.0).log_prob(sample).sum()
        expected[1] += (
            torch.distributions.Normal(mean, log_std.exp()).log_prob(sample).sum()
        )
    torch.testing.assert_close(layer.gather_log_probs(), expected)


@pytest.mark.parametrize("estimator", ["reparameterization", "flipout", "shared_flipout"])
def test_gradients_reach_every_variational_parameter(estimator):
    layer = VILSTM(IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2,
                   estimator=estimator)  # fmt: skip
    output, (h_n, c_n) = layer(torch.randn(STEPS, BATCH, IN), samples=2)
    (output.sum() + h_n.sum() + c_n.sum() + output.log_probs.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_prediction_mode_keeps_sampling_without_log_probs():
    layer = VIGRU(IN, HIDDEN, return_log_probs=False)
    output, h_n = layer(torch.randn(STEPS, BATCH, IN), samples=3)
    assert output.log_probs is None and h_n.log_probs is None
    assert not torch.allclose(output[0], output[1])


# ----------------------------------------------------------------- semantics
def _constant_input_rnn(estimator):
    """h_t = tanh(w x_t) with the recurrent weight ~0: constant iff w is."""
    layer = VIRNN(1, 1, bias=False, estimator=estimator)
    with torch.no_grad():
        layer._weight_hh_l0_mean.zero_()
        layer._weight_hh_l0_log_std.fill_(-30.0)
        layer._weight_ih_l0_mean.fill_(0.3)
        layer._weight_ih_l0_log_std.fill_(0.0)
    return layer


@pytest.mark.parametrize("estimator", ["reparameterization", "flipout"])
def test_weights_are_shared_over_time(estimator):
    layer = _constant_input_rnn(estimator)
    output = layer(torch.ones(6, 8, 1), samples=50)[0].as_plain()  # (S, T, B, 1)
    torch.testing.assert_close(output, output[:, :1].expand_as(output))
    across_lanes = output[:, 0, 0, 0]
    assert across_lanes.std() > 0.1
    across_batch = output[:, 0, :, 0]
    if estimator == "reparameterization":  # one weight for the whole batch
        torch.testing.assert_close(
            across_batch, across_batch[:, :1].expand_as(across_batch)
        )
    else:  # flipout: sequences see differently flipped perturbations
        assert (across_batch.std(dim=1) > 1e-3).float().mean() > 0.9


@pytest.mark.parametrize("estimator", ["reparameterization", "flipout", "shared_flipout"])
def test_packed_sequences_see_the_noise_of_their_padded_run(estimator):
    # Same seed, same draws: each packed sequence must get exactly its own weights
    # (flipout: its own signs) at every step, as in the padded run.
    layer = VILSTM(IN, HIDDEN, num_layers=2, proj_size=2, estimator=estimator)
    x, lengths = torch.randn(6, 4, IN), torch.tensor([6, 4, 4, 1])
    torch.manual_seed(1)
    padded, _ = layer(x, samples=2)
    torch.manual_seed(1)
    packed, (h_n, _) = layer(torch_rnn.pack_padded_sequence(x, lengths), samples=2)
    unpacked = pad_packed_sequence(packed)[0]
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(unpacked[:, :length, b], padded[:, :length, b])
        torch.testing.assert_close(h_n[:, -1, b], padded[:, length - 1, b])


def test_flipout_gives_the_per_sequence_distribution_of_weight_draws():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 2)
    n = 20_000
    reference = VIGRU(2, 2)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-1.0)
    outputs = {}
    for estimator in ("reparameterization", "flipout"):
        layer = VIGRU(2, 2, estimator=estimator)
        layer.load_state_dict(reference.state_dict())
        with torch.no_grad():
            outputs[estimator] = layer(x, samples=n)[0].as_plain()[:, -1]  # (n, B, H)
    a, b = outputs["reparameterization"], outputs["flipout"]
    # 5 standard errors of the difference of two independent means / variances.
    se_mean = ((a.var(0) + b.var(0)) / n).sqrt()
    assert torch.all((a.mean(0) - b.mean(0)).abs() < 5 * se_mean)
    se_var = (a.var(0) + b.var(0)) * (2 / n) ** 0.5
    assert torch.all((a.var(0) - b.var(0)).abs() < 5 * se_var)


def test_flipout_records_the_closed_form_kl():
    layer = VILSTM(IN, HIDDEN, bidirectional=True, proj_size=2, estimator="flipout")
    output = layer(torch.randn(STEPS, BATCH, IN), samples=3)[0]
    kl = vi.AnalyticalKullbackLeiblerLoss(layer, Categorical(), 1).prior_matching()
    torch.testing.assert_close(
        output.log_probs[:, 1] - output.log_probs[:, 0], kl.expand(3), atol=1e-3, rtol=0
    )


def test_dropout_between_layers_only_in_training():
    layer = VIGRU(IN, HIDDEN, num_layers=2, dropout=0.5)
    _freeze_to_mean(layer)
    x = torch.randn(STEPS, BATCH, IN)
    with torch.no_grad():
        train = layer(x, samples=2)[0]
        assert not torch.allclose(train[0], train[1])  # independent masks per sample
        layer.eval()
        _assert_lanes_match(layer(x, samples=2), _twin_with_means(layer)(x), atol=1e-5,
                            rtol=0)  # fmt: skip


# ----------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("vi_cls", "estimator"),
    [(VILSTM, "reparameterization"), (VIGRU, "flipout"), (VIRNN, "reparameterization")],
)
def test_learns_the_sign_of_a_sequence_sum(vi_cls, estimator):
    class Classifier(vi.VIModule):
        def __init__(self):
            super().__init__()
            self.rnn = vi_cls(1, 8, batch_first=True, estimator=estimator)
            self.head = vi.VILinear(8, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    torch.manual_seed(0)
    x = torch.randn(64, 6, 1)
    y = (x.sum(dim=(1, 2)) > 0).long()
    model = Classifier()
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=64, track=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=4), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Learning shows in the data term (1.0 without it: lr=0); with 64 examples the KL
    # term is most of the loss and falls as fast as Adam widens the posterior scales.
    data = loss_fn.log["data_fitting"]
    assert sum(data[-5:]) < 0.5 * sum(data[:5])
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


# ----------------------------------------------------------------- errors, repr
@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (VILSTM, {"hidden_size": 0}, ValueError, "VILSTM: hidden_size must be a positive"),
        (VIGRU, {"num_layers": 0}, ValueError, "VIGRU: num_layers must be a positive"),
        (VILSTM, {"proj_size": 5}, ValueError, r"proj_size \(5\) must be smaller"),
        (VILSTM, {"proj_size": -1}, ValueError, "proj_size must be a non-negative"),
        (VIRNN, {"dropout": 1.5}, ValueError, r"dropout must be a number in \[0, 1\]"),
        (VIRNN, {"nonlinearity": "sigmoid"}, ValueError, "'tanh' or 'relu'"),
        (VIGRU, {"bias": "yes"}, TypeError, "VIGRU: bias must be a bool"),
        (VILSTM, {"estimator": "local_reparameterization"}, ValueError,
         "every time step"),
    ],
)  # fmt: skip
def test_bad_arguments_raise(cls, kwargs, error, match):
    arguments = {"input_size": IN, "hidden_size": HIDDEN, **kwargs}
    with pytest.raises(error, match=match):
        cls(**arguments)


def test_flipout_needs_normal_posteriors():
    with pytest.raises(UnsupportedDistributionError, match="flipout"):
        VIGRU(IN, HIDDEN, variational_distribution=NonBayesian(), prior=NonBayesian(),
              estimator="flipout")  # fmt: skip


def test_dropout_with_one_layer_warns_like_torch():
    for cls in (VIGRU, VIRNN, VILSTM):  # the warning points at the caller
        with pytest.warns(UserWarning, match="num_layers > 1") as record:
            cls(IN, HIDDEN, dropout=0.2)
        assert record[0].filename == __file__


def test_only_the_lstm_takes_a_projection():
    with pytest.raises(ValueError, match="proj_size is only supported by VILSTM"):
        VIGRU(IN, HIDDEN, proj_size=2)
    with pytest.raises(ValueError, match="proj_size is only supported by VILSTM"):
        VIRNN(IN, HIDDEN, proj_size=2)
    assert VIGRU(IN, HIDDEN, proj_size=0).mode == "GRU"


@pytest.mark.parametrize(
    ("cls", "args"),
    [
        (VIRNN, (IN, HIDDEN, 1, "relu", True, False, 0.0, False)),
        (VILSTM, (IN, HIDDEN, 1, True, False, 0.0, False, 2)),
        (VIGRU, (IN, HIDDEN, 1, True, False, 0.0, False, 0)),  # torch: proj_size 0
    ],
)
def test_torch_arguments_are_positional_and_vi_arguments_keyword_only(cls, args):
    with pytest.raises(TypeError):
        cls(*args, NonBayesian())
    layer = cls(*args, variational_distribution=NonBayesian(), prior=NonBayesian())
    assert layer.mode == {VIRNN: "RNN_RELU", VILSTM: "LSTM", VIGRU: "GRU"}[cls]
    assert layer.proj_size == (2 if cls is VILSTM else 0)


@pytest.mark.parametrize(
    ("kind", "args", "match"),
    [
        ("gru", (torch.randn(STEPS, BATCH, IN + 1),), r"VIGRU\(input_size=4.*\(4, 3, 5\)"),
        ("gru", (torch.randn(2, STEPS, BATCH, IN),), r"got \(2, 4, 3, 4\)"),
        ("rnn_tanh", (torch.randn(STEPS, BATCH, IN), torch.randn(1, 2, HIDDEN)),
         r"h_0 of shape .* = \(1, 3, 5\), got \(1, 2, 5\)"),
        ("rnn_tanh", (torch.randn(STEPS, IN), torch.randn(1, 1, HIDDEN)),
         r"unbatched 2-D input, h_0 must have shape \(1, 5\)"),
        ("lstm", (torch.randn(STEPS, BATCH, IN), torch.randn(1, BATCH, HIDDEN)),
         r"hx must be a tuple \(h_0, c_0\)"),
        ("gru", (torch_rnn.pack_sequence([torch.randn(3, IN + 1)]),),
         r"packed data of shape \(sum of lengths, 4\), got \(3, 5\)"),
        ("gru", (torch.randn(0, BATCH, IN),), "the sequence is empty"),
        ("lstm_proj", (torch.randn(STEPS, BATCH, IN),
                       (torch.randn(1, BATCH, HIDDEN), torch.randn(1, BATCH, HIDDEN))),
         r"proj_size\) = \(1, 3, 3\)"),
    ],
)  # fmt: skip
def test_bad_inputs_raise(kind, args, match):
    with pytest.raises((ShapeError, TypeError), match=match):
        _layer(kind)(*args, samples=2)


def test_repr_mirrors_torch():
    text = repr(VILSTM(IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2,
                       estimator="flipout"))  # fmt: skip
    assert text.startswith(
        "VILSTM(4, 5, proj_size=2, num_layers=2, bidirectional=True, "
        "variational_distribution=MeanFieldNormal"
    )
    assert "estimator='flipout'" in text
    assert "nonlinearity='relu'" in repr(VIRNN(IN, HIDDEN, nonlinearity="relu"))


def test_double_precision():
    layer = VILSTM(IN, HIDDEN, proj_size=2, estimator="flipout", dtype=torch.float64)
    x = torch.randn(STEPS, BATCH, IN, dtype=torch.float64)
    output, (h_n, c_n) = layer(x, samples=2)
    assert output.dtype == h_n.dtype == c_n.dtype == torch.float64


def test_estimator_property_and_flatten_parameters():
    layer = VIGRU(IN, HIDDEN)
    assert layer.estimator == "reparameterization"
    layer.estimator = "flipout"
    assert layer.estimator == "flipout"
    with pytest.raises(ValueError, match="estimator must be one of"):
        layer.estimator = "local_reparameterization"
    layer.flatten_parameters()  # a no-op kept for torch code
