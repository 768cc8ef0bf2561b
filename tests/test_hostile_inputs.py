"""Hostile inputs: every public entry point against bad or extreme arguments.

Each row is one call and what it must do: raise a named error (type and a message
fragment that names the module or function and the argument), or give a finite
result. The rows are built per entry point from tables of bad values, so adding a
layer or a distribution adds its rows. ``docs/reliability.rst`` quotes the counts
per section, which ``python tests/test_hostile_inputs.py`` prints.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pytest
import torch
from torch import nn

from torch_blue import uncertainty, vi
from torch_blue.vi import distributions as dist
from torch_blue.vi.utils import (
    MissingLogProbsError,
    NoVariablesError,
    ShapeError,
    UnsupportedDistributionError,
)


@dataclass(frozen=True)
class Row:
    """One hostile call: ``error`` with ``fragments`` in its message, or a finite result."""

    name: str
    call: Callable[[], Any]
    error: Optional[Any] = None
    fragments: tuple[str, ...] = ()
    section: str = ""


ROWS: list[Row] = []
SECTION = ""  # the entry points the rows below exercise


def raises(name: str, call: Callable[[], Any], error: Any, *fragments: str) -> None:
    ROWS.append(Row(name, call, error, fragments, SECTION))


def finite(name: str, call: Callable[[], Any]) -> None:
    ROWS.append(Row(name, call, section=SECTION))


# ----------------------------------------------------------- layer constructors
SECTION = "layer constructors"
#: Values that are not a size (a positive int); numpy ints are sizes.
BAD_SIZES = [0, -1, 2.5, "3", True, None, np.float64(3.0)]

LAYERS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "VILinear": (vi.VILinear, {"in_features": 4, "out_features": 2}),
    "VIEmbedding": (vi.VIEmbedding, {"num_embeddings": 5, "embedding_dim": 3}),
    "VIRNN": (vi.VIRNN, {"input_size": 3, "hidden_size": 4, "num_layers": 1}),
    "VILSTM": (vi.VILSTM, {"input_size": 3, "hidden_size": 4, "num_layers": 1}),
    "VIGRU": (vi.VIGRU, {"input_size": 3, "hidden_size": 4, "num_layers": 1}),
    "VIMultiheadAttention": (vi.VIMultiheadAttention, {"embed_dim": 4, "num_heads": 2}),
    "VITransformerEncoderLayer": (
        vi.VITransformerEncoderLayer,
        {"d_model": 4, "nhead": 2, "dim_feedforward": 8},
    ),
    "VITransformerDecoderLayer": (
        vi.VITransformerDecoderLayer,
        {"d_model": 4, "nhead": 2, "dim_feedforward": 8},
    ),
    "VITransformer": (
        vi.VITransformer,
        {
            "d_model": 4,
            "nhead": 2,
            "num_encoder_layers": 1,
            "num_decoder_layers": 1,
            "dim_feedforward": 8,
        },
    ),
}
for dims in (1, 2, 3):
    for kind in ("Conv", "ConvTranspose"):
        name = f"VI{kind}{dims}d"
        LAYERS[name] = (
            getattr(vi, name),
            {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "groups": 1},
        )
    LAYERS[f"VIBatchNorm{dims}d"] = (
        getattr(vi, f"VIBatchNorm{dims}d"),
        {"num_features": 3},
    )

SIZE_ARGUMENTS = {
    "VIConv": ("in_channels", "out_channels", "groups"),
    "VIConvTranspose": ("in_channels", "out_channels", "groups"),
}

for layer_name, (cls, good) in LAYERS.items():
    for argument in good:
        if argument == "kernel_size":
            continue  # (a tuple argument: below)
        for bad in BAD_SIZES:
            raises(
                f"{layer_name}({argument}={bad!r})",
                lambda cls=cls, good=good, argument=argument, bad=bad: cls(
                    **{**good, argument: bad}
                ),
                ValueError,
                f"{layer_name}: {argument} must be a positive int",
            )
    raises(
        f"{layer_name}(return_log_probs='no')",
        lambda cls=cls, good=good: cls(**good, return_log_probs="no"),
        TypeError,
        "return_log_probs must be a bool",
    )

for dims in (1, 2, 3):
    for kind in ("Conv", "ConvTranspose"):
        name = f"VI{kind}{dims}d"
        cls = getattr(vi, name)
        for argument, bad in (
            ("kernel_size", (3,) * (dims + 1)),
            ("kernel_size", 0),
            ("stride", (1,) * (dims + 1)),
            ("stride", 0),
            ("dilation", -1),
            ("padding", -1),
        ):
            raises(
                f"{name}({argument}={bad!r})",
                lambda cls=cls, argument=argument, bad=bad: cls(
                    2, 4, **{"kernel_size": 3, argument: bad}
                ),
                ValueError,
                f"{name}: {argument} must be a",
            )
        raises(
            f"{name}(groups=3)",
            lambda cls=cls: cls(2, 4, 3, groups=3),
            ValueError,
            "divisible by groups",
        )

raises(
    "VILinear(estimator='mc')",
    lambda: vi.VILinear(2, 2, estimator="mc"),
    ValueError,
    "VILinear: estimator must be one of",
)
raises(
    "VIRNN(estimator='local_reparameterization')",
    lambda: vi.VIRNN(2, 2, estimator="local_reparameterization"),
    ValueError,
    "VIRNN: estimator must be one of",
)
raises(
    "VILinear(estimator='flipout', RadialNormal)",
    lambda: vi.VILinear(
        2, 2, estimator="flipout", variational_distribution=dist.RadialNormal()
    ),
    UnsupportedDistributionError,
    "needs MeanFieldNormal",
)
raises(
    "VILinear(prior=Categorical())",
    lambda: vi.VILinear(2, 2, prior=dist.Categorical()),
    UnsupportedDistributionError,
    "cannot be used as prior",
)
raises(
    "VILinear(bias=False, one-entry tuple)",
    lambda: vi.VILinear(
        2, 2, bias=False, variational_distribution=(dist.MeanFieldNormal(),)
    ),
    ValueError,
    "'bias' switched off here",
)
raises(
    "VIModule(variable_shapes={'w': 3})",
    lambda: vi.VIModule(variable_shapes={"w": 3}),
    ShapeError,
    "the shape of random variable 'w'",
)
raises(
    "VIModule(variable_shapes={'w': (0,)})",
    lambda: vi.VIModule(variable_shapes={"w": (0,)}),
    ShapeError,
    "must contain positive ints",
)
raises(
    "VIModule(variable_shapes={'forward': (2,)})",
    lambda: vi.VIModule(variable_shapes={"forward": (2,)}),
    ValueError,
    "would shadow an existing attribute",
)
raises(
    "VIModule(variable_shapes=[('w', (2,))])",
    lambda: vi.VIModule(variable_shapes=[("w", (2,))]),
    TypeError,
    "variable_shapes must be a mapping",
)
raises(
    "VIEmbedding(padding_idx=5)",
    lambda: vi.VIEmbedding(5, 3, padding_idx=5),
    ValueError,
    "VIEmbedding: padding_idx must be an int in",
)
raises(
    "VIRNN(proj_size=-1)",
    lambda: vi.VILSTM(3, 4, proj_size=-1),
    ValueError,
    "proj_size must be a non-negative int",
)
raises(
    "VIMultiheadAttention(5, 2)",
    lambda: vi.VIMultiheadAttention(5, 2),
    ValueError,
    "divisible by num_heads",
)

# ------------------------------------------------------ distribution constructors
SECTION = "distribution constructors"
#: Bad values of a positive scale-like argument and the error each must raise.
BAD_POSITIVE = [
    (0.0, ValueError),
    (-1.0, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    ("1", TypeError),
    (None, TypeError),
    (torch.ones(2), TypeError),
]
BAD_SCALE = [*BAD_POSITIVE, (1e-300, ValueError), (1e300, ValueError)]
BAD_FINITE = [
    (math.nan, ValueError),
    (math.inf, ValueError),
    (1e39, ValueError),
    ("0", TypeError),
]
BAD_NON_NEGATIVE = [(-1.0, ValueError), (math.nan, ValueError), ("0", TypeError)]

DISTRIBUTIONS = {
    "MeanFieldNormal": (
        dist.MeanFieldNormal,
        {"mean": BAD_FINITE, "std": BAD_SCALE, "eps": BAD_NON_NEGATIVE},
    ),
    "LaplacePrior": (dist.LaplacePrior, {"loc": BAD_FINITE, "scale": BAD_POSITIVE}),
    "StudentTPrior": (
        dist.StudentTPrior,
        {"degrees_of_freedom": BAD_POSITIVE, "loc": BAD_FINITE, "scale": BAD_SCALE},
    ),
    "ScaleMixtureNormalPrior": (
        dist.ScaleMixtureNormalPrior,
        {"sigma_1": BAD_SCALE, "sigma_2": BAD_SCALE},
    ),
    "HorseshoePrior": (dist.HorseshoePrior, {"scale": BAD_SCALE}),
    "NormalGammaPrior": (
        dist.NormalGammaPrior,
        {
            "loc": BAD_FINITE,
            "kappa": BAD_POSITIVE,
            "alpha": BAD_POSITIVE,
            "beta": BAD_POSITIVE,
        },
    ),
    "RadialNormal": (dist.RadialNormal, {"mean": BAD_FINITE, "std": BAD_SCALE}),
    "MeanFieldStudentT": (
        dist.MeanFieldStudentT,
        {"mean": BAD_FINITE, "scale": BAD_SCALE, "degrees_of_freedom": BAD_POSITIVE},
    ),
    "StudentTLikelihood": (
        dist.StudentTLikelihood,
        {"scale": BAD_SCALE, "degrees_of_freedom": BAD_POSITIVE},
    ),
    "LearnedNoiseNormal": (dist.LearnedNoiseNormal, {"std": BAD_SCALE}),
    "BasicQuietPrior": (
        dist.BasicQuietPrior,
        {
            "std_ratio": BAD_POSITIVE,
            "mean_mean": BAD_FINITE,
            "mean_std": BAD_SCALE,
            "eps": BAD_NON_NEGATIVE,
        },
    ),
    "Categorical": (dist.Categorical, {"eps": BAD_NON_NEGATIVE}),
    "Bernoulli": (dist.Bernoulli, {"eps": BAD_NON_NEGATIVE}),
    "HeteroscedasticNormal": (dist.HeteroscedasticNormal, {"min_scale": BAD_NON_NEGATIVE}),
}
for dist_name, (cls, arguments) in DISTRIBUTIONS.items():
    for argument, bads in arguments.items():
        for bad, error in bads:
            raises(
                f"{dist_name}({argument}={bad!r})",
                lambda cls=cls, argument=argument, bad=bad: cls(**{argument: bad}),
                error,
                f"{dist_name}: {argument} must be",
            )
for cls in (dist.Categorical, dist.Bernoulli):
    raises(
        f"{cls.__name__}(input_type='scores')",
        lambda cls=cls: cls(input_type="scores"),
        ValueError,
        "input_type must be 'logits' or 'probs'",
    )
raises(
    "ScaleMixtureNormalPrior(pi=1.5)",
    lambda: dist.ScaleMixtureNormalPrior(pi=1.5),
    ValueError,
    "ScaleMixtureNormalPrior: pi must",
)
raises(
    "LearnedNoiseNormal(num_outputs=0)",
    lambda: dist.LearnedNoiseNormal(num_outputs=0),
    ValueError,
    "num_outputs must be a positive int or None",
)

# ------------------------------------------------------------ call arguments
SECTION = "call arguments and module state"
BAD_SAMPLES = [
    (0, ValueError),
    (-1, ValueError),
    (2.5, ValueError),
    ("2", ValueError),
    (True, ValueError),
    (2**62, ValueError),
]


def _linear() -> vi.VILinear:
    return vi.VILinear(4, 2)


for bad, error in BAD_SAMPLES:
    raises(
        f"VILinear(x, samples={bad!r})",
        lambda bad=bad: _linear()(torch.ones(3, 4), samples=bad),
        error,
        "VILinear: samples must be",
    )
    if bad != 2**62:  # (a chunk larger than the samples is one chunk)
        raises(
            f"VILinear(x, chunk_size={bad!r})",
            lambda bad=bad: _linear()(torch.ones(3, 4), samples=2, chunk_size=bad),
            error,
            "VILinear: chunk_size must be",
        )


def _wrong_channels(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.ones(shape[0], shape[1] + 1, *shape[2:])


INPUT_LAYERS = {
    "VILinear": (lambda: vi.VILinear(4, 2), (3, 4)),
    "VIConv1d": (lambda: vi.VIConv1d(2, 3, 3), (1, 2, 6)),
    "VIConv2d": (lambda: vi.VIConv2d(2, 3, 3), (1, 2, 6, 6)),
    "VIConvTranspose2d": (lambda: vi.VIConvTranspose2d(2, 3, 3), (1, 2, 6, 6)),
    "VIBatchNorm1d": (lambda: vi.VIBatchNorm1d(4), (3, 4)),
    "VILayerNorm": (lambda: vi.VILayerNorm(4), (3, 4)),
}
BAD_INPUTS = {
    "list": (lambda shape: torch.ones(shape).tolist(), TypeError, "must be a Tensor"),
    "numpy": (
        lambda shape: np.ones(shape, dtype=np.float32),
        TypeError,
        "must be a Tensor",
    ),
    "int64": (lambda shape: torch.ones(shape, dtype=torch.long), TypeError, "dtype"),
    "bool": (lambda shape: torch.ones(shape, dtype=torch.bool), TypeError, "dtype"),
    "complex": (lambda shape: torch.ones(shape, dtype=torch.cfloat), TypeError, "dtype"),
    "float64": (lambda shape: torch.ones(shape, dtype=torch.float64), TypeError, "dtype"),
    "wrong last dim": (
        lambda shape: torch.ones(*shape[:-1], shape[-1] + 1),
        ShapeError,
        "expected",
    ),
    "0-d": (lambda shape: torch.tensor(1.0), ShapeError, "expected"),
}
for layer_name, (make, shape) in INPUT_LAYERS.items():
    for input_name, (make_input, error, fragment) in BAD_INPUTS.items():
        if (
            layer_name.startswith(("VIConv", "VIBatchNorm"))
            and input_name == "wrong last dim"
        ):
            make_input = _wrong_channels
        raises(
            f"{layer_name}({input_name} input)",
            lambda make=make, make_input=make_input, shape=shape: make()(
                make_input(shape), samples=2
            ),
            error,
            f"{layer_name}",
            fragment,
        )

SEQUENCE_LAYERS = {
    "VILSTM": lambda x: vi.VILSTM(3, 4, batch_first=True)(x, samples=2),
    "VIGRU": lambda x: vi.VIGRU(3, 4, batch_first=True)(x, samples=2),
    "VIMultiheadAttention": lambda x: vi.VIMultiheadAttention(3, 1)(x, x, x, samples=2),
    "VITransformerEncoderLayer": lambda x: vi.VITransformerEncoderLayer(3, 1, 8)(
        x, samples=2
    ),
    "VITransformerDecoderLayer": lambda x: vi.VITransformerDecoderLayer(3, 1, 8)(
        x, torch.ones(2, 4, 3), samples=2
    ),
}
for layer_name, run in SEQUENCE_LAYERS.items():
    for dtype in (torch.long, torch.bool, torch.float64):
        raises(
            f"{layer_name}({dtype} input)",
            lambda run=run, dtype=dtype: run(torch.ones(2, 4, 3, dtype=dtype)),
            TypeError,
            f"{layer_name}: the input's dtype {dtype}",
        )
    raises(
        f"{layer_name}(list input)",
        lambda run=run: run(torch.ones(2, 4, 3).tolist()),
        TypeError,
        f"{layer_name}",
        "must be a Tensor",
    )

raises(
    "meta input, CPU parameters",
    lambda: _linear()(torch.empty(3, 4, device="meta"), samples=2),
    RuntimeError,
    "an input is on device meta",
)
raises(
    "samples= inside a sampled forward",
    lambda: vi.VISequential(_Inner())(torch.ones(2, 4), samples=2),
    TypeError,
    "can only be given to the outermost module",
)
raises(
    "sampled inputs disagree",
    lambda: _Pair()(
        vi.VIReturn(torch.ones(2, 3, 4), None), vi.VIReturn(torch.ones(3, 3, 4), None)
    ),
    ShapeError,
    "disagree on the number of samples",
)
raises(
    "samples disagree with the sampled input",
    lambda: _linear()(vi.VIReturn(torch.ones(2, 3, 4), None), samples=3),
    ShapeError,
    "samples=3 but the sampled input carries 2",
)
raises(
    "sampled_forward with a 0-d sampled input",
    lambda: _linear().sampled_forward(torch.tensor(1.0), sampled_input=True),
    ShapeError,
    "needs a leading sample dimension",
)
raises(
    "setting a random variable",
    lambda: setattr(_linear(), "weight", torch.ones(2, 4)),
    AttributeError,
    "'weight' is a random variable",
)
raises(
    "return_log_probs = 1",
    lambda: setattr(_linear(), "return_log_probs", 1),
    TypeError,
    "return_log_probs must be a bool",
)
raises(
    "reuse_draws with flipout",
    lambda: setattr(vi.VILinear(2, 2, estimator="flipout"), "reuse_draws", True),
    ValueError,
    "reuse_draws needs estimator='reparameterization'",
)
raises(
    "estimator on a model without layers",
    lambda: setattr(vi.VIModule(), "estimator", "flipout"),
    NoVariablesError,
    "no layer inside supports",
)
raises(
    "gather_log_probs without draws",
    lambda: _linear().gather_log_probs(),
    NoVariablesError,
    "no random variable was drawn",
)
raises("mean_weights(mode=1)", lambda: vi.mean_weights(1), TypeError, "mode must be a bool")


class _Inner(vi.VIModule):
    def __init__(self):
        super().__init__()
        self.layer = vi.VILinear(4, 2)

    def forward(self, x):
        return self.layer(x, samples=2)


class _Pair(vi.VIModule):
    def __init__(self):
        super().__init__()
        self.layer = vi.VILinear(4, 2)

    def forward(self, a, b):
        return self.layer(a) + self.layer(b)


# ------------------------------------------------------------------- losses
SECTION = "losses"


def _kl(**kwargs: Any) -> vi.KullbackLeiblerLoss:
    return vi.KullbackLeiblerLoss(dist.Categorical(), **{"dataset_size": 10, **kwargs})


def _analytical(**kwargs: Any) -> vi.AnalyticalKullbackLeiblerLoss:
    return vi.AnalyticalKullbackLeiblerLoss(
        _linear(), dist.Categorical(), **{"dataset_size": 10, **kwargs}
    )


LOSS_SETTINGS = {
    "dataset_size": [
        (0, ValueError),
        (-3, ValueError),
        (2.5, ValueError),
        ("10", ValueError),
        (True, ValueError),
    ],
    "heat": [
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
    "objective": [("mse", ValueError), (None, ValueError)],
    "reduction": [("none", ValueError), (None, ValueError)],
}
for loss_name, make_loss in (
    ("KullbackLeiblerLoss", _kl),
    ("AnalyticalKullbackLeiblerLoss", _analytical),
):
    for setting, bads in LOSS_SETTINGS.items():
        for bad, error in bads:
            raises(
                f"{loss_name}({setting}={bad!r})",
                lambda make_loss=make_loss, setting=setting, bad=bad: make_loss(
                    **{setting: bad}
                ),
                error,
                f"{loss_name}: {setting}",
            )
            raises(
                f"{loss_name}.{setting} = {bad!r}",
                lambda make_loss=make_loss, setting=setting, bad=bad: setattr(
                    make_loss(), setting, bad
                ),
                error,
                f"{loss_name}: {setting}",
            )
    raises(
        f"{loss_name}(predictive=prior)",
        lambda make_loss=make_loss: (
            vi.KullbackLeiblerLoss(dist.UniformPrior(), 10)
            if make_loss is _kl
            else vi.AnalyticalKullbackLeiblerLoss(_linear(), dist.UniformPrior(), 10)
        ),
        UnsupportedDistributionError,
        "cannot be used as predictive distribution",
    )


def _OUT() -> vi.VIReturn:  # noqa: N802 - reads as the output of a model
    return _linear()(torch.ones(3, 4), samples=2)


raises(
    "KL loss without log-probs",
    lambda: _kl()(_OUT().as_plain(), torch.tensor([0, 1, 0])),
    MissingLogProbsError,
    "needs the weights' log-probabilities",
)
raises(
    "KL loss without dataset_size",
    lambda: vi.KullbackLeiblerLoss(dist.Categorical())(_OUT(), torch.tensor([0, 1, 0])),
    ValueError,
    "dataset_size (the number of training examples) is required",
)
for loss_name, make_loss in (
    ("KullbackLeiblerLoss", _kl),
    ("AnalyticalKullbackLeiblerLoss", _analytical),
):
    for target_name, target, error, fragment in (
        ("class 2 of 2", torch.tensor([0, 2, 1]), ValueError, "class indices in [0, 1]"),
        ("class -1", torch.tensor([0, -1, 1]), ValueError, "class indices in [0, 1]"),
        ("class -100", torch.tensor([0, -100, 1]), ValueError, "class indices in [0, 1]"),
        (
            "float targets",
            torch.tensor([0.0, 1.0, 1.0]),
            TypeError,
            "integer class indices",
        ),
        (
            "bool targets",
            torch.tensor([True, False, True]),
            TypeError,
            "integer class indices",
        ),
        ("2 targets for 3 outputs", torch.tensor([0, 1]), ShapeError, "target shape (2,)"),
        ("list targets", [0, 1, 0], TypeError, "the target must be a Tensor"),
    ):
        raises(
            f"{loss_name}({target_name})",
            lambda make_loss=make_loss, target=target: make_loss()(_OUT(), target),
            error,
            fragment,
        )
raises(
    "AnalyticalKullbackLeiblerLoss(model='x')",
    lambda: vi.AnalyticalKullbackLeiblerLoss("x", dist.Categorical(), 10),
    TypeError,
    "model must be an nn.Module",
)
raises(
    "AnalyticalKullbackLeiblerLoss(plain model)",
    lambda: vi.AnalyticalKullbackLeiblerLoss(nn.Linear(2, 2), dist.Categorical(), 10),
    NoVariablesError,
    "the model has no random variables",
)
raises(
    "AnalyticalKullbackLeiblerLoss(kl_samples=0)",
    lambda: _analytical(kl_samples=0),
    ValueError,
    "kl_samples must be a positive int",
)

# --------------------------------------------------------------- likelihoods
SECTION = "likelihoods"
LIKELIHOOD_CASES = [
    (
        "Categorical(probs) negative",
        dist.Categorical(input_type="probs"),
        torch.tensor([1]),
        torch.tensor([[[0.5, -0.1, 0.6]]]),
        ValueError,
        "must be probabilities (non-negative)",
    ),
    (
        "Categorical(probs) all zero",
        dist.Categorical(input_type="probs"),
        torch.tensor([1]),
        torch.zeros(1, 1, 3),
        ValueError,
        "all zero over the 3 classes",
    ),
    (
        "Bernoulli(probs) above 1",
        dist.Bernoulli(input_type="probs"),
        torch.tensor([1.0]),
        torch.tensor([[1.5]]),
        ValueError,
        "in [0, 1]",
    ),
    (
        "Bernoulli(probs) below 0",
        dist.Bernoulli(input_type="probs"),
        torch.tensor([1.0]),
        torch.tensor([[-0.5]]),
        ValueError,
        "in [0, 1]",
    ),
    (
        "Bernoulli targets 2",
        dist.Bernoulli(),
        torch.tensor([2.0]),
        torch.zeros(2, 1),
        ValueError,
        "0/1 labels or probabilities",
    ),
    (
        "Bernoulli complex targets",
        dist.Bernoulli(),
        torch.ones(1, dtype=torch.cfloat),
        torch.zeros(2, 1),
        TypeError,
        "targets must be 0/1 labels",
    ),
    (
        "MeanFieldNormal target shape",
        dist.MeanFieldNormal(),
        torch.zeros(3),
        torch.zeros(2, 4),
        ShapeError,
        "target shape (3,)",
    ),
    (
        "MeanFieldNormal 0-d output",
        dist.MeanFieldNormal(),
        torch.zeros(()),
        torch.tensor(1.0),
        ShapeError,
        "needs a leading sample dimension",
    ),
    (
        "HeteroscedasticNormal odd output",
        dist.HeteroscedasticNormal(),
        torch.zeros(4, 1),
        torch.zeros(2, 4, 3),
        ShapeError,
        "(mean, raw scale) halves",
    ),
    (
        "HeteroscedasticNormal int targets",
        dist.HeteroscedasticNormal(),
        torch.zeros(4, 1, dtype=torch.long),
        torch.zeros(2, 4, 2),
        TypeError,
        "regression targets must be floating point",
    ),
    (
        "Categorical 1-d output",
        dist.Categorical(),
        torch.tensor([0]),
        torch.zeros(3),
        ShapeError,
        "does not match the model output",
    ),
]
for case_name, likelihood, target, samples, error, fragment in LIKELIHOOD_CASES:
    raises(
        case_name,
        lambda likelihood=likelihood, target=target, samples=samples: (
            likelihood.log_prob_from_samples(target, samples)
        ),
        error,
        fragment,
    )

# -------------------------------------------------------------- uncertainty
SECTION = "uncertainty functions"
PROBS = torch.softmax(torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0)), -1)
LABELS = torch.tensor([0, 1, 2, 0, 1])
UNCERTAINTY_CASES = [
    (
        "accuracy(label 3)",
        lambda: uncertainty.accuracy(PROBS, torch.tensor([0, 1, 3, 0, 1])),
    ),
    (
        "accuracy(label -1)",
        lambda: uncertainty.accuracy(PROBS, torch.tensor([0, -1, 2, 0, 1])),
    ),
    ("accuracy(4 labels)", lambda: uncertainty.accuracy(PROBS, LABELS[:4])),
    ("accuracy(float labels)", lambda: uncertainty.accuracy(PROBS, LABELS.float())),
    (
        "expected_calibration_error(n_bins=0)",
        lambda: uncertainty.expected_calibration_error(PROBS, LABELS, n_bins=0),
    ),
    (
        "expected_calibration_error(n_bins=2.5)",
        lambda: uncertainty.expected_calibration_error(PROBS, LABELS, n_bins=2.5),
    ),
    ("predictive_entropy(0-d)", lambda: uncertainty.predictive_entropy(torch.tensor(1.0))),
    ("mutual_information(1-d)", lambda: uncertainty.mutual_information(torch.ones(3))),
    (
        "credible_interval(level=0)",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), 1.0, level=0.0),
    ),
    (
        "credible_interval(level=1)",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), 1.0, level=1.0),
    ),
    (
        "credible_interval(level='0.9')",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), 1.0, level="0.9"),
    ),
    (
        "credible_interval(stds<0)",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), -1.0),
    ),
    (
        "credible_interval(stds NaN)",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), math.nan),
    ),
    (
        "credible_interval(method='t')",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), 1.0, method="t"),
    ),
    (
        "credible_interval(stds shape)",
        lambda: uncertainty.credible_interval(torch.zeros(4, 2), torch.ones(3)),
    ),
    (
        "mixture_quantile(q=1.5)",
        lambda: uncertainty.mixture_quantile(torch.zeros(4, 2), 1.0, 1.5),
    ),
    (
        "mixture_quantile(inf means)",
        lambda: uncertainty.mixture_quantile(torch.tensor([[-math.inf], [1.0]]), 1.0, 0.5),
    ),
    (
        "mixture_quantile(empty samples)",
        lambda: uncertainty.mixture_quantile(torch.zeros(0, 2)),
    ),
    (
        "interval_coverage(lower > upper)",
        lambda: uncertainty.interval_coverage(
            torch.ones(3), torch.zeros(3), torch.zeros(3)
        ),
    ),
    (
        "interval_coverage(shapes)",
        lambda: uncertainty.interval_coverage(
            torch.zeros(3), torch.ones(2), torch.zeros(3)
        ),
    ),
    (
        "auroc(labels 2)",
        lambda: uncertainty.auroc(torch.rand(4), torch.tensor([0, 1, 2, 0])),
    ),
    ("auroc(one class)", lambda: uncertainty.auroc(torch.rand(4), torch.zeros(4))),
    ("auroc(shapes)", lambda: uncertainty.auroc(torch.rand(4), torch.tensor([0, 1, 1]))),
    ("rmse(shapes)", lambda: uncertainty.rmse(torch.zeros(4, 3), torch.zeros(2))),
    (
        "negative_log_likelihood(label 3)",
        lambda: uncertainty.negative_log_likelihood(PROBS, torch.tensor([0, 1, 3, 0, 1])),
    ),
    (
        "brier_score(label 3)",
        lambda: uncertainty.brier_score(PROBS, torch.tensor([0, 1, 3, 0, 1])),
    ),
    ("predictive_std(0-d)", lambda: uncertainty.predictive_std(torch.tensor(1.0))),
]
for case_name, call in UNCERTAINTY_CASES:
    # The uncertainty functions raise UncertaintyInputError or ShapeError (both
    # ValueErrors) or TypeError, naming the function.
    function = case_name.split("(")[0]
    raises(case_name, call, (ValueError, TypeError), function)

# -------------------------------------------------------- conversion, pruning
SECTION = "conversion and pruning"
raises(
    "convert_to_vimodule('x')",
    lambda: vi.convert_to_vimodule("x"),
    TypeError,
    "convert_to_vimodule",
)
raises(
    "to_deterministic('x')", lambda: vi.to_deterministic("x"), TypeError, "to_deterministic"
)
for bad in (1.5, -0.1, math.nan, "0.5"):
    raises(
        f"prune(sparsity={bad!r})",
        lambda bad=bad: vi.prune(_linear(), sparsity=bad),
        (ValueError, TypeError),
        "sparsity",
    )
raises("prune(no target)", lambda: vi.prune(_linear()), ValueError, "prune")
raises(
    "prune(sparsity and threshold)",
    lambda: vi.prune(_linear(), sparsity=0.5, threshold=1.0),
    ValueError,
    "prune",
)
raises(
    "prune(scope='x')",
    lambda: vi.prune(_linear(), sparsity=0.5, scope="x"),
    ValueError,
    "scope",
)
raises(
    "prune(masks shape)",
    lambda: vi.prune(_linear(), masks={"weight": torch.ones(3, 3, dtype=torch.bool)}),
    ShapeError,
    "weight",
)
raises(
    "prune(mask key)",
    lambda: vi.prune(_linear(), masks={"nothing": torch.ones(2, 4, dtype=torch.bool)}),
    (ValueError, KeyError),
    "nothing",
)
raises(
    "prune(plain model)",
    lambda: vi.prune(nn.Linear(2, 2), sparsity=0.5),
    NoVariablesError,
    "prune",
)
raises(
    "signal_to_noise(Radial)",
    lambda: vi.signal_to_noise(
        vi.VILinear(2, 2, variational_distribution=dist.RadialNormal())
    ),
    UnsupportedDistributionError,
    "signal_to_noise",
)

# --------------------------------------------------------------- checkpoints
SECTION = "checkpoints"
raises(
    "load_state_dict(missing key)",
    lambda: _linear().load_state_dict({"_weight_mean": torch.zeros(2, 4)}),
    RuntimeError,
    "Missing key(s)",
)
raises(
    "load_state_dict(shape)",
    lambda: _linear().load_state_dict({k: torch.zeros(1) for k in _linear().state_dict()}),
    RuntimeError,
    "size mismatch",
)


# ------------------------------------------------------ extreme but valid: finite
SECTION = "extreme but valid inputs (finite results)"


def _run(model: nn.Module, x: torch.Tensor, record: bool = True, **kwargs: Any) -> Any:
    model.return_log_probs = record
    out = model(x, samples=3, **kwargs)
    values = [out.float()]
    if record:
        values.append(out.log_probs)
    return values


for dtype_name, dtype, big in (
    ("fp16", torch.float16, 300.0),
    ("bf16", torch.bfloat16, 1e4),
    ("fp32", torch.float32, 2e19),
):
    for estimator in ("reparameterization", "local_reparameterization", "flipout"):
        for record in (True, False):
            finite(
                f"VILinear {dtype_name} |x|={big:g} {estimator} record={record}",
                lambda dtype=dtype, big=big, estimator=estimator, record=record: _run(
                    vi.VILinear(4, 2, estimator=estimator).to(dtype),
                    torch.full((3, 4), big, dtype=dtype),
                    record,
                ),
            )
        finite(
            f"VIConv1d {dtype_name} |x|={big:g} {estimator}",
            lambda dtype=dtype, big=big, estimator=estimator: _run(
                vi.VIConv1d(2, 3, 3, estimator=estimator).to(dtype),
                torch.full((1, 2, 5), big, dtype=dtype),
            ),
        )
finite(
    "pruned fp16 layer log-probs",
    lambda: _run(
        vi.prune(vi.VILinear(32, 32).half(), sparsity=0.9), torch.randn(2, 32).half()
    ),
)
finite(
    "VITransformerEncoderLayer, empty document",
    lambda: _run(
        vi.VITransformerEncoderLayer(8, 2, 16, dropout=0.0),
        torch.randn(2, 3, 8),
        src_key_padding_mask=torch.tensor([[True] * 3, [False] * 3]),
    ),
)
finite(
    "MeanFieldNormal(std=1.1e-19) prior log-probs",
    lambda: dist.MeanFieldNormal(std=1.1e-19).prior_log_prob(torch.zeros(3)),
)
finite(
    "HeteroscedasticNormal(min_scale=0), raw scale -200",
    lambda: dist.HeteroscedasticNormal(min_scale=0.0).log_prob_from_samples(
        torch.zeros(1, 1), torch.tensor([[[0.0, -200.0]]])
    ),
)
finite(
    "float64 model",
    lambda: _run(
        vi.VILinear(4, 2, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    ),
)
finite(
    "one sample",
    lambda: [
        uncertainty.predictive_entropy(PROBS[:1]),
        uncertainty.mutual_information(PROBS[:1]),
    ],
)
finite("empty batch", lambda: _run(vi.VILinear(4, 2), torch.zeros(0, 4), record=False))
finite(
    "numpy int sizes and samples",
    lambda: _run(vi.VILinear(np.int64(4), np.int64(2)), torch.ones(3, 4)),
)
finite(
    "Categorical(probs) unnormalised",
    lambda: dist.Categorical(input_type="probs").log_prob_from_samples(
        torch.tensor([1]), torch.tensor([[[1.0, 2.0, 1.0]]])
    ),
)


# --------------------------------------------------------------------- the test
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input(row: Row) -> None:
    torch.manual_seed(0)
    if row.error is not None:
        with pytest.raises(row.error) as info:
            row.call()
        for fragment in row.fragments:
            assert fragment in str(info.value), (fragment, str(info.value))
        return
    values = row.call()
    for value in values if isinstance(values, (list, tuple)) else [values]:
        assert torch.isfinite(torch.as_tensor(value)).all(), value


def test_the_table_has_at_least_300_rows():
    assert len(ROWS) >= 300


def counts() -> dict[str, int]:
    """Rows per section (``docs/reliability.rst`` quotes them)."""
    found: dict[str, int] = {}
    for row in ROWS:
        found[row.section] = found.get(row.section, 0) + 1
    return found


if __name__ == "__main__":  # python tests/test_hostile_inputs.py: the counts
    for section, count in counts().items():
        print(f"{count:4d}  {section}")
    print(f"{len(ROWS):4d}  rows")
