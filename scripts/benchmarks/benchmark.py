"""Benchmark torch_blue against plain PyTorch, upstream torch_blue 1.1 and BNN peers.

Three measurements, printed as Markdown tables:

1. **Training step time** (forward + backward + Adam step with S weight samples,
   ``--samples``, default 10) of an MLP 784-400-400-10 (batch 128), LeNet-5 (batch 64,
   1x28x28 inputs), a small transformer encoder classifier (sequence length 32,
   d_model 64, 4 heads, 2 layers, feed-forward 128, mean-pool, linear head; batch 32)
   and the same classifier built from the libraries' own transformer layers on
   sequences of length 128 (``encoder``), and a small MLP 13-50-50-10 (batch 32, the
   size of a UCI regression network, where per-call overhead decides; ``small``), on
   random data. The modes are

   * ``plain``: the ``torch.nn`` twin run on the S·B stacked batch (the input
     repeated S times), i.e. the cost of S deterministic passes; the reference of the
     ratios;
   * ``torch_blue``, ``torch_blue-local_reparameterization``, ``torch_blue-flipout``,
     ``torch_blue-shared_flipout``: this repository, with each gradient estimator and
     ``KullbackLeiblerLoss``; ``torch_blue-dense_local_reparameterization`` (LeNet-5
     only): local reparameterisation on the dense layers and weight sampling on the
     convolutions, the split of upstream's analytical path;
   * ``upstream``: torch_blue 1.1 with ``KullbackLeiblerLoss``; ``upstream-analytical``:
     torch_blue 1.1 with ``AnalyticalKullbackLeiblerLoss`` (its local
     reparameterisation path);
   * ``bayesian-torch`` (``LinearReparameterization``/``Conv2dReparameterization``),
     ``bayesian-torch-flipout`` (``LinearFlipout``/``Conv2dFlipout``) and ``blitz``
     (``BayesianLinear``/``BayesianConv2d`` with ``sample_elbo``): their idiomatic
     loop over the S samples. They have no transformer layers, so they skip those tasks;
   * ``hand-written-reparameterization``, ``hand-written-local_reparameterization``,
     ``hand-written-flipout``: the MLP and LeNet-5 with each estimator written directly
     in plain PyTorch for this one network (``scripts/benchmarks/reference_steps.py``: the
     first layer's sample-independent part computed once, samples batched). A section
     "torch_blue against hand-written steps" divides each torch_blue estimator's step
     time by its hand-written twin's, per round: what the library adds to the
     estimator's own cost.

   The transformer is the same custom module for torch_blue and upstream (a
   ``VIModule`` with ``VILinear`` projections, ``scaled_dot_product_attention`` and
   plain ``nn.LayerNorm``), and an ``nn.Module`` with ``nn.Linear`` for ``plain``.
   The ``encoder`` task uses ``vi.VITransformerEncoder`` of
   ``vi.VITransformerEncoderLayer`` for torch_blue and upstream and
   ``nn.TransformerEncoder`` (dropout 0) for ``plain``.

2. **Prediction time** of the MLP with S = 100 weight samples, batch 128, under
   ``torch.no_grad()``: torch_blue and upstream with ``return_log_probs = False``, a
   loop of 100 forwards for bayesian-torch and blitz, the 100·128 stacked batch for
   ``plain``.

   **Latency** (``latency``): the small MLP deployed, predicting S = 1, 10 and 100
   samples for a batch of 1 and of 64 under ``torch.no_grad()`` (torch_blue and
   upstream with ``return_log_probs = False``), against the plain twin on the stacked
   rows, the hand-written network predicting by local reparameterisation, and the
   peers' loops. A section "Targets for small networks" prints met/MISSED lines: each
   estimator within 1.2x of its hand-written step and 1.5x faster than the fastest peer
   mode on ``small``; prediction within 1.2x of the hand-written one and 2x faster than
   upstream at S = 10 and 100.

3. **Gradient variance** of torch_blue's estimators (the protocol of Kingma, Salimans &
   Welling 2015): the MLP at initialisation (same initial parameters for every
   estimator), batch 128, S = 1 and again with the training S; over 10 fixed
   minibatches x 20 noise draws, the gradient of the loss with respect to the top
   layer's weight means; reported is the variance across the 200 gradients, averaged
   over the elements. Data: Fashion-MNIST
   from ``/usr/share/datasets/fashion-mnist`` (Debian package
   ``dataset-fashion-mnist``), else scikit-learn's 8x8 digits (the MLP then has 64
   inputs).

Every measurement runs in its own process (``python scripts/benchmarks/benchmark.py --worker
...``, which prints one JSON line), one per library and mode, alternately over
``--rounds`` rounds (the order is reversed every other round). Each worker builds the
model, runs 5 warm-up steps, then times ``--steps`` steps and reports the median
milliseconds per step and the peak memory: on CPU the growth of the process's maximum
resident set size (``ru_maxrss``) from right before the first warm-up step to the end
of the timed steps; on CUDA ``torch.cuda.max_memory_allocated`` (model and data
included). The ratio to ``plain`` is computed per round from the medians of that
round; the tables give the median over rounds.

Peers: upstream torch_blue 1.1 has the same import name as this repository, so each
library runs in a subprocess whose ``PYTHONPATH`` starts with its directory.
``--fetch-peers DIR`` downloads the wheels with pip (``torch-blue==1.1.0``,
``bayesian-torch==0.5.0``, ``blitz-bayesian-pytorch==0.2.8``, without dependencies) and
unpacks torch-blue into ``DIR/torch_blue_1.1`` and the others into ``DIR/others``;
``--peers-dir DIR`` (default ``.bench/peers``) uses such a folder; ``--upstream-path``
and ``--others-path`` point at the two folders directly. A peer whose folder is
missing is skipped with a note. Upstream needs ``typing_extensions``, bayesian-torch
and blitz need nothing beyond torch and numpy.

Examples
--------
Fetch the peers once, then run the whole benchmark::

    python scripts/benchmarks/benchmark.py --fetch-peers .bench/peers

A smoke run of the MLP for torch_blue only::

    python scripts/benchmarks/benchmark.py --quick --tasks mlp --modes plain,torch_blue

The small network and latency, with every peer::

    python scripts/benchmarks/benchmark.py --tasks small,latency --peers-dir .bench/peers
"""

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parents[2]
SRC_DIR = REPO_ROOT / "src"
# Also in _common.py, which this script imports only where it runs this repository's
# torch_blue: its worker runs under upstream's too (``--worker`` with ``PYTHONPATH``).
DEFAULT_PEERS_DIR = REPO_ROOT / ".bench" / "peers"
ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout", "shared_flipout")
PEER_REQUIREMENTS = (
    "torch-blue==1.1.0",
    "bayesian-torch==0.5.0",
    "blitz-bayesian-pytorch==0.2.8",
)

TRAIN_TASKS = ("mlp", "lenet5", "transformer", "encoder", "small")
TASKS = (*TRAIN_TASKS, "prediction", "latency", "gradient-variance")
BATCH_SIZES = {"mlp": 128, "lenet5": 64, "transformer": 32, "encoder": 32, "small": 32}
#: The small network (a UCI-sized MLP): inputs and hidden width.
SMALL_IN, SMALL_HIDDEN = 13, 50
#: The latency task: batch sizes and sample counts of the deployed small MLP.
LATENCY_BATCHES = (1, 64)
LATENCY_SAMPLES = (1, 10, 100)
#: Timed calls per latency configuration, per ``--steps``.
LATENCY_CALLS_PER_STEP = 10
DATASET_SIZE = 60_000  # N of the loss for the timing runs (random data)
NUM_CLASSES = 10
PREDICTION_SAMPLES = 100
PREDICTION_BATCH = 128
SEQ_LEN, D_MODEL, HEADS, ENCODER_LAYERS, FEEDFORWARD = 32, 64, 4, 2, 128
ENCODER_SEQ_LEN = 128  # the encoder task: the libraries' transformer layers
ATTENTION_TASKS = ("transformer", "encoder")
GRADVAR_BATCH = 128
VMAP_LIBRARIES = ("torch_blue", "upstream")  # libraries that sample under torch.vmap
#: Local reparameterisation on the dense layers, weight sampling on the convolutions
#: (the split of upstream's analytical path).
DENSE_LOCAL = "dense_local_reparameterization"


@dataclass(frozen=True)
class Mode:
    """One benchmarked configuration.

    Attributes
    ----------
    name : str
        Name in ``--modes`` and in the tables.
    library : str
        ``"plain"``, ``"torch_blue"``, ``"upstream"``, ``"bayesian_torch"``,
        ``"blitz"`` or ``"reference"`` (``scripts/benchmarks/reference_steps.py``);
        decides the worker's ``PYTHONPATH``.
    variant : str
        Library-specific choice: estimator, loss or layer family.
    predicts : bool
        Whether the mode takes part in the prediction benchmark.
    tasks : tuple of str
        Training tasks the library can run.
    deploys : bool
        Whether the mode takes part in the latency benchmark.
    """

    name: str
    library: str
    variant: str = ""
    predicts: bool = False
    tasks: tuple[str, ...] = TRAIN_TASKS
    deploys: bool = False


#: The tasks of the libraries without transformer layers.
DENSE_TASKS = ("mlp", "lenet5", "small")


MODES = (
    Mode("plain", "plain", predicts=True, deploys=True),
    Mode("torch_blue", "torch_blue", "reparameterization", predicts=True, deploys=True),
    Mode("torch_blue-local_reparameterization", "torch_blue", "local_reparameterization"),
    Mode("torch_blue-flipout", "torch_blue", "flipout"),
    Mode("torch_blue-shared_flipout", "torch_blue", "shared_flipout"),
    Mode(
        "torch_blue-dense_local_reparameterization",
        "torch_blue",
        DENSE_LOCAL,
        tasks=("lenet5",),
    ),
    Mode("upstream", "upstream", "sampled", predicts=True, deploys=True),
    Mode("upstream-analytical", "upstream", "analytical"),
    Mode(
        "bayesian-torch",
        "bayesian_torch",
        "reparameterization",
        predicts=True,
        tasks=DENSE_TASKS,
        deploys=True,
    ),
    Mode("bayesian-torch-flipout", "bayesian_torch", "flipout", tasks=DENSE_TASKS),
    Mode("blitz", "blitz", predicts=True, tasks=DENSE_TASKS, deploys=True),
    *(
        Mode(
            f"hand-written-{estimator}",
            "reference",
            estimator,
            tasks=DENSE_TASKS,
            # (prediction samples the pre-activations, as torch_blue's does)
            deploys=estimator == "local_reparameterization",
        )
        for estimator in ("reparameterization", "local_reparameterization", "flipout")
    ),
)
MODES_BY_NAME = {mode.name: mode for mode in MODES}


# --------------------------------------------------------------------------- models
def layer_spec(task: str, in_features: int = 784) -> list[tuple]:
    """Architecture of the MLP or LeNet-5 as a list of layer descriptions.

    Parameters
    ----------
    task : {"mlp", "lenet5", "small"}
        The network.
    in_features : int, default: 784
        Input width of the MLP.

    Returns
    -------
    list of tuple
        ``("linear", in, out)``, ``("conv", in, out, kernel, padding)``, ``("relu",)``,
        ``("pool",)`` or ``("flatten",)`` entries.
    """
    if task == "mlp":
        return [
            ("flatten",),
            ("linear", in_features, 400),
            ("relu",),
            ("linear", 400, 400),
            ("relu",),
            ("linear", 400, NUM_CLASSES),
        ]
    if task == "small":
        return [
            ("linear", SMALL_IN, SMALL_HIDDEN),
            ("relu",),
            ("linear", SMALL_HIDDEN, SMALL_HIDDEN),
            ("relu",),
            ("linear", SMALL_HIDDEN, NUM_CLASSES),
        ]
    if task == "lenet5":
        return [
            ("conv", 1, 6, 5, 2),
            ("relu",),
            ("pool",),
            ("conv", 6, 16, 5, 0),
            ("relu",),
            ("pool",),
            ("flatten",),
            ("linear", 400, 120),
            ("relu",),
            ("linear", 120, 84),
            ("relu",),
            ("linear", 84, NUM_CLASSES),
        ]
    raise ValueError(f"no layer spec for task {task!r}")


def build_layers(
    spec: Sequence[tuple],
    linear: Callable[[int, int], nn.Module],
    conv: Callable[[int, int, int, int], nn.Module],
) -> list[nn.Module]:
    """Instantiate a layer spec with the given linear and convolution factories."""
    layers: list[nn.Module] = []
    for kind, *args in spec:
        if kind == "linear":
            layers.append(linear(*args))
        elif kind == "conv":
            layers.append(conv(*args))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "pool":
            layers.append(nn.MaxPool2d(2))
        elif kind == "flatten":
            layers.append(nn.Flatten())
        else:  # pragma: no cover - guarded by layer_spec
            raise ValueError(f"unknown layer kind {kind!r}")
    return layers


def transformer_classifier(
    base: type[nn.Module], linear: Callable[[int, int], nn.Module]
) -> nn.Module:
    """Small post-norm transformer encoder classifier on ``(B, SEQ_LEN, D_MODEL)`` inputs.

    Parameters
    ----------
    base : type
        Base class of the modules: ``nn.Module`` or a library's ``VIModule``.
    linear : callable
        ``linear(in_features, out_features)`` builds the projections.

    Returns
    -------
    nn.Module
        Two encoder layers (self-attention with ``scaled_dot_product_attention``,
        ReLU feed-forward, plain ``nn.LayerNorm``), mean-pool over the sequence, and a
        linear head to ``NUM_CLASSES``.
    """

    class EncoderLayer(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.qkv = linear(D_MODEL, 3 * D_MODEL)
            self.out_proj = linear(D_MODEL, D_MODEL)
            self.linear1 = linear(D_MODEL, FEEDFORWARD)
            self.linear2 = linear(FEEDFORWARD, D_MODEL)
            self.norm1 = nn.LayerNorm(D_MODEL)
            self.norm2 = nn.LayerNorm(D_MODEL)

        def forward(self, x: Tensor) -> Tensor:
            batch, length, _ = x.shape
            qkv = self.qkv(x).reshape(batch, length, 3, HEADS, D_MODEL // HEADS)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attention = F.scaled_dot_product_attention(q, k, v)
            attention = attention.transpose(1, 2).reshape(batch, length, D_MODEL)
            x = self.norm1(x + self.out_proj(attention))
            return self.norm2(x + self.linear2(F.relu(self.linear1(x))))

    class Classifier(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([EncoderLayer() for _ in range(ENCODER_LAYERS)])
            self.head = linear(D_MODEL, NUM_CLASSES)

        def forward(self, x: Tensor) -> Tensor:
            for layer in self.layers:
                x = layer(x)
            return self.head(x.mean(dim=-2))

    return Classifier()


def encoder_classifier(
    base: type[nn.Module], encoder: nn.Module, head: nn.Module
) -> nn.Module:
    """``head(encoder(x).mean(dim=-2))``: the ``encoder`` task's classifier.

    Parameters
    ----------
    base : type
        Base class of the classifier: ``nn.Module`` or a library's ``VIModule``.
    encoder, head : nn.Module
        The transformer encoder (batch first) and the linear head.
    """

    class Classifier(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = head

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.encoder(x).mean(dim=-2))

    return Classifier()


def build_plain(task: str, in_features: int = 784) -> nn.Module:
    """The deterministic ``torch.nn`` twin of a task's network."""
    if task == "transformer":
        return transformer_classifier(nn.Module, nn.Linear)
    if task == "encoder":
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, FEEDFORWARD, dropout=0.0, batch_first=True
        )
        encoder = nn.TransformerEncoder(layer, ENCODER_LAYERS, enable_nested_tensor=False)
        return encoder_classifier(nn.Module, encoder, nn.Linear(D_MODEL, NUM_CLASSES))
    return nn.Sequential(
        *build_layers(
            layer_spec(task, in_features),
            nn.Linear,
            lambda i, o, k, p: nn.Conv2d(i, o, k, padding=p),
        )
    )


def build_torch_blue(task: str, estimator: Optional[str], in_features: int = 784) -> Any:
    """The network built with whichever ``torch_blue`` is first on ``sys.path``.

    Parameters
    ----------
    task : str
        ``"mlp"``, ``"lenet5"``, ``"transformer"`` or ``"encoder"``.
    estimator : str or None
        Gradient estimator to set (this repository only), or ``DENSE_LOCAL``: local
        reparameterisation on the ``VILinear`` layers only; ``None`` keeps the default.
    in_features : int, default: 784
        Input width of the MLP.
    """
    from torch_blue import vi

    if task == "transformer":
        model = transformer_classifier(vi.VIModule, vi.VILinear)
    elif task == "encoder":
        layer = vi.VITransformerEncoderLayer(D_MODEL, HEADS, FEEDFORWARD)
        encoder = vi.VITransformerEncoder(layer, ENCODER_LAYERS)
        model = encoder_classifier(vi.VIModule, encoder, vi.VILinear(D_MODEL, NUM_CLASSES))
    else:
        model = vi.VISequential(
            *build_layers(
                layer_spec(task, in_features),
                vi.VILinear,
                lambda i, o, k, p: vi.VIConv2d(i, o, k, padding=p),
            )
        )
    if estimator == DENSE_LOCAL:
        for module in model.modules():
            if isinstance(module, vi.VILinear):
                module.estimator = "local_reparameterization"
    elif estimator is not None:
        model.estimator = estimator
    return model


class KLChain(nn.Module):
    """Chain of bayesian-torch layers and plain modules, summing the layers' KL terms.

    Parameters
    ----------
    layers : sequence of nn.Module
        Layers in order; those with a ``kl_div`` method are bayesian-torch layers
        returning ``(output, kl)``.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, return_kl: bool = True) -> tuple[Tensor, Any]:
        """Return the output and the summed KL divergence (0 if not ``return_kl``)."""
        kl: Any = 0.0
        for layer in self.layers:
            if not hasattr(layer, "kl_div"):
                x = layer(x)
            elif return_kl:
                x, layer_kl = layer(x)
                kl = kl + layer_kl
            else:
                x = layer(x, return_kl=False)
        return x, kl


def build_bayesian_torch(task: str, flipout: bool) -> KLChain:
    """The network with bayesian-torch's reparameterisation or Flipout layers."""
    from bayesian_torch import layers as bl

    linear = bl.LinearFlipout if flipout else bl.LinearReparameterization
    conv = bl.Conv2dFlipout if flipout else bl.Conv2dReparameterization
    return KLChain(
        build_layers(layer_spec(task), linear, lambda i, o, k, p: conv(i, o, k, padding=p))
    )


def build_blitz(task: str) -> nn.Module:
    """The network with blitz layers, decorated with ``variational_estimator``."""
    from blitz.modules import BayesianConv2d, BayesianLinear
    from blitz.utils import variational_estimator

    @variational_estimator
    class BlitzSequential(nn.Sequential):
        pass

    return BlitzSequential(
        *build_layers(
            layer_spec(task),
            BayesianLinear,
            lambda i, o, k, p: BayesianConv2d(i, o, (k, k), padding=p),
        )
    )


# --------------------------------------------------------------------------- steps
def task_data(
    task: str, batch: int, device: torch.device, seed: int
) -> tuple[Tensor, Tensor]:
    """Random inputs and labels of the right shape for a task (fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    shape = {
        "mlp": (batch, 1, 28, 28),
        "lenet5": (batch, 1, 28, 28),
        "transformer": (batch, SEQ_LEN, D_MODEL),
        "encoder": (batch, ENCODER_SEQ_LEN, D_MODEL),
        "small": (batch, SMALL_IN),
    }[task]
    x = torch.randn(shape, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return x.to(device), y.to(device)


def stacked(x: Tensor, samples: int) -> Tensor:
    """The batch repeated ``samples`` times along dimension 0."""
    return x.repeat(samples, *([1] * (x.dim() - 1)))


def make_train_step(
    mode: Mode, task: str, samples: int, device: torch.device, seed: int
) -> Callable[[], None]:
    """Build model, data, loss and optimiser; return a closure doing one training step."""
    torch.manual_seed(seed)
    x, y = task_data(task, BATCH_SIZES[task], device, seed)
    n = DATASET_SIZE
    if mode.library == "plain":
        model = build_plain(task).to(device)
        x, y = stacked(x, samples), stacked(y, samples)

        def loss_fn() -> Tensor:
            return n * F.cross_entropy(model(x), y)

    elif mode.library in ("torch_blue", "upstream"):
        from torch_blue import vi
        from torch_blue.vi.distributions import Categorical

        estimator = mode.variant if mode.library == "torch_blue" else None
        model = build_torch_blue(task, estimator).to(device)
        if mode.variant == "analytical":
            criterion = vi.AnalyticalKullbackLeiblerLoss(model, Categorical(), n)
        else:
            criterion = vi.KullbackLeiblerLoss(Categorical(), dataset_size=n)

        def loss_fn() -> Tensor:
            return criterion(model(x, samples=samples), y)

    elif mode.library == "reference":
        import reference_steps  # (next to this script, first on sys.path when run)

        model = reference_steps.ReferenceNetwork(layer_spec(task), mode.variant).to(device)

        def loss_fn() -> Tensor:
            return reference_steps.reference_loss(model, x, y, samples, n)

    elif mode.library == "bayesian_torch":
        model = build_bayesian_torch(task, mode.variant == "flipout").to(device)

        def loss_fn() -> Tensor:
            loss: Any = 0.0
            for _ in range(samples):
                out, kl = model(x)
                loss = loss + n * F.cross_entropy(out, y) + kl
            return loss / samples

    elif mode.library == "blitz":
        model = build_blitz(task).to(device)
        criterion = nn.CrossEntropyLoss()

        def loss_fn() -> Tensor:
            return model.sample_elbo(
                inputs=x,
                labels=y,
                criterion=criterion,
                sample_nbr=samples,
                complexity_cost_weight=1 / n,
            )

    else:  # pragma: no cover - guarded by MODES
        raise ValueError(f"unknown library {mode.library!r}")

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    backend = attention_backend(mode, task, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with backend():
            loss = loss_fn()
        loss.backward()
        optimizer.step()

    return step


def attention_backend(
    mode: Mode, task: str, device: torch.device
) -> Callable[[], AbstractContextManager]:
    """Context factory choosing the attention kernel of a training step.

    Under ``torch.vmap`` (torch_blue and upstream) on CUDA the memory-efficient
    ``scaled_dot_product_attention`` kernel fails in the backward pass ("LSE is not
    correctly aligned"), so those modes use the math kernel there.
    """
    if task in ATTENTION_TASKS and device.type == "cuda" and mode.library in VMAP_LIBRARIES:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return lambda: sdpa_kernel(SDPBackend.MATH)
    return nullcontext


def make_predict_step(
    mode: Mode,
    samples: int,
    device: torch.device,
    seed: int,
    task: str = "mlp",
    batch: int = PREDICTION_BATCH,
) -> Callable[[], None]:
    """Return a closure predicting ``samples`` outputs of a task's network for a batch.

    The deployed call: ``no_grad``, torch_blue and upstream with
    ``return_log_probs = False``, the hand-written network by local
    reparameterisation without its KL term, peers by their loop over the samples,
    ``plain`` on the stacked ``samples * batch`` rows. The ``prediction`` task uses
    the MLP, the ``latency`` task the small network.
    """
    torch.manual_seed(seed)
    x, _ = task_data(task, batch, device, seed)
    if mode.library == "plain":
        model = build_plain(task).to(device)
        x = stacked(x, samples)

        def predict() -> Tensor:
            return model(x)

    elif mode.library in ("torch_blue", "upstream"):
        model = build_torch_blue(task, None).to(device)
        model.return_log_probs = False

        def predict() -> Tensor:
            return model(x, samples=samples)

    elif mode.library == "reference":
        import reference_steps  # (next to this script, first on sys.path when run)

        model = reference_steps.ReferenceNetwork(layer_spec(task), mode.variant).to(device)

        def predict() -> Tensor:
            return model(x, samples, with_kl=False)[0]

    elif mode.library == "bayesian_torch":
        model = build_bayesian_torch(task, mode.variant == "flipout").to(device)

        def predict() -> Tensor:
            return torch.stack([model(x, return_kl=False)[0] for _ in range(samples)])

    elif mode.library == "blitz":
        model = build_blitz(task).to(device)

        def predict() -> Tensor:
            return torch.stack([model(x) for _ in range(samples)])

    else:  # pragma: no cover - guarded by MODES
        raise ValueError(f"unknown library {mode.library!r}")
    model.eval()

    def step() -> None:
        with torch.no_grad():
            predict()

    return step


def latency_key(batch: int, samples: int) -> str:
    """The pseudo-task of one latency configuration in the tables."""
    return f"latency B={batch} S={samples}"


def max_rss_mib() -> float:
    """Maximum resident set size of this process so far, in MiB (Linux: KiB units)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def time_steps(
    step: Callable[[], None], warmup: int, steps: int, device: torch.device
) -> dict[str, Any]:
    """Run ``warmup`` untimed and ``steps`` timed steps.

    Returns
    -------
    dict
        ``ms`` (median milliseconds per step), ``times`` (all timed steps, ms) and
        ``peak_mib`` (see the module docstring).
    """
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = max_rss_mib()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = max_rss_mib() - rss_before
    return {"ms": statistics.median(times), "times": times, "peak_mib": peak}


# --------------------------------------------------------------------------- data


def gradient_variances(
    batches: int, draws: int, device: torch.device, seed: int, samples: int = 1
) -> dict[str, Any]:
    """Variance of the top layer's weight-mean gradients per estimator (this repository).

    Parameters
    ----------
    batches : int
        Number of fixed minibatches of ``GRADVAR_BATCH`` examples.
    draws : int
        Noise draws (forward/backward passes) per minibatch.
    device : torch.device
        Where to compute.
    seed : int
        Seed of the initial parameters, the minibatches and the noise.
    samples : int, default: 1
        S of each forward (1 in Kingma et al.'s protocol; the training S shows what
        ``shared_flipout``'s sharing of one perturbation by the samples costs).

    Returns
    -------
    dict
        ``variances`` (estimator -> mean over elements of the variance across the
        ``batches * draws`` gradients), ``source`` (data description) and
        ``gradients`` (their count per estimator).
    """
    from _common import gradient_variance_data, top_layer_gradients  # (next to this script)
    from torch_blue import vi
    from torch_blue.vi.distributions import Categorical

    x_all, y_all, source = gradient_variance_data()
    rng = np.random.default_rng(seed)
    index = torch.from_numpy(rng.permutation(len(x_all))[: batches * GRADVAR_BATCH])
    x_batches = x_all[index].to(device).split(GRADVAR_BATCH)
    y_batches = y_all[index].to(device).split(GRADVAR_BATCH)
    torch.manual_seed(seed)
    model = build_torch_blue("mlp", None, in_features=x_all.shape[1]).to(device)
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(x_all))
    gradients = top_layer_gradients(
        model, loss_fn, list(zip(x_batches, y_batches)), draws, samples, seed + 1
    )
    variances = {
        estimator: grads.flatten(0, 1).var(dim=0).mean().item()
        for estimator, grads in gradients.items()
    }
    return {"variances": variances, "source": source, "gradients": batches * draws}


# --------------------------------------------------------------------------- worker
def run_worker(args: argparse.Namespace) -> int:
    """Run one measurement in this process and print its result as one JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker == "gradient-variance":
        result = {
            str(samples): gradient_variances(
                args.gv_batches, args.gv_draws, device, args.seed, samples
            )
            for samples in sorted({1, args.samples})
        }
    else:
        mode = MODES_BY_NAME[args.mode]
        if args.worker == "latency":
            calls = args.steps * LATENCY_CALLS_PER_STEP
            result = {}
            for batch in LATENCY_BATCHES:
                for samples in LATENCY_SAMPLES:
                    step = make_predict_step(
                        mode, samples, device, args.seed, "small", batch
                    )
                    key = latency_key(batch, samples)
                    result[key] = time_steps(step, args.warmup * 10, calls, device)
            print(json.dumps(result))
            return 0
        if args.worker == "train":
            step = make_train_step(mode, args.task, args.samples, device, args.seed)
        else:
            step = make_predict_step(mode, PREDICTION_SAMPLES, device, args.seed)
        result = time_steps(step, args.warmup, args.steps, device)
    print(json.dumps(result))
    return 0


PACKAGES = {
    "plain": "torch_blue",
    "torch_blue": "torch_blue",
    "upstream": "torch_blue",
    "bayesian_torch": "bayesian_torch",
    "blitz": "blitz",
    "reference": "torch_blue",
}


def locate_peers(
    peers_dir: Path, upstream_path: Optional[Path], others_path: Optional[Path]
) -> dict[str, Path]:
    """Folder to put first on ``PYTHONPATH`` for each library (it may be missing)."""
    upstream = upstream_path or peers_dir / "torch_blue_1.1"
    others = others_path or peers_dir / "others"
    return {
        "plain": SRC_DIR,
        "torch_blue": SRC_DIR,
        "upstream": upstream.resolve(),
        "bayesian_torch": others.resolve(),
        "blitz": others.resolve(),
        "reference": SRC_DIR,
    }


def split_available(
    modes: Sequence[Mode], folders: dict[str, Path]
) -> tuple[list[Mode], list[str]]:
    """The modes whose library is present, and one note per missing library."""
    available, missing = [], {}
    for mode in modes:
        package = folders[mode.library] / PACKAGES[mode.library]
        if package.is_dir():
            available.append(mode)
        else:
            missing.setdefault(package, []).append(mode.name)
    notes = [
        f"{', '.join(names)}: skipped, {package} is missing (fetch the peers with "
        "--fetch-peers DIR or point at them with --upstream-path/--others-path)"
        for package, names in missing.items()
    ]
    return available, notes


def fetch_peers(target: Path) -> None:
    """Download the peer wheels with pip and unpack them below ``target``."""
    wheels = target / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", *PEER_REQUIREMENTS,
         "-d", str(wheels)],
        check=True,
    )  # fmt: skip
    for wheel in sorted(wheels.glob("*.whl")):
        name = wheel.name.lower()
        if name.startswith("torch_blue-1.1.0"):
            folder = target / "torch_blue_1.1"
        elif name.startswith(("bayesian_torch-", "blitz_bayesian_pytorch-")):
            folder = target / "others"
        else:
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
        print(f"unpacked {wheel.name} into {folder}", file=sys.stderr)


def worker_command(args: argparse.Namespace, kind: str, **options: Any) -> list[str]:
    """Command line of a worker process."""
    command = [sys.executable, str(SCRIPT), "--worker", kind]
    for name, value in {
        "samples": args.samples,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "device": args.device,
        "seed": args.seed,
        **options,
    }.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def run_subprocess(command: list[str], pythonpath: Path, threads: int) -> dict:
    """Run a worker with ``pythonpath`` first on ``PYTHONPATH``; return its JSON result.

    Raises
    ------
    RuntimeError
        If the worker fails; the message holds the last line of its error output.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pythonpath), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"worker failed ({done.returncode}): {errors[-1]}")
    return json.loads(lines[-1])


def round_order(jobs: Sequence[tuple[str, str, Mode]], round_: int) -> list:
    """The jobs grouped by task, the modes of each task reversed in odd rounds."""
    tasks = list(dict.fromkeys(task for _, task, _ in jobs))
    ordered = []
    for task in tasks:
        group = [job for job in jobs if job[1] == task]
        ordered += group if round_ % 2 == 0 else group[::-1]
    return ordered


# --------------------------------------------------------------------------- report
def median_or_none(values: Iterable[Optional[float]]) -> Optional[float]:
    """Median of the values that are not ``None`` (``None`` if there are none)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def fmt(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
    """Format a number for a table cell; ``-`` for ``None``."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summarise(
    runs: dict[tuple[str, str], list[Optional[dict]]], rounds: int
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (task, mode): median ms, per-round and median ratios to plain, median peak."""
    summary = {}
    for (task, mode), results in runs.items():
        plain = runs.get((task, "plain"), [None] * rounds)
        ratios = [
            r["ms"] / p["ms"] if r is not None and p is not None else None
            for r, p in zip(results, plain)
        ]
        summary[task, mode] = {
            "ms": median_or_none(r["ms"] if r else None for r in results),
            "ratio": median_or_none(ratios),
            "ratios": ratios,
            "peak": median_or_none(r["peak_mib"] if r else None for r in results),
        }
    return summary


def environment_header(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """Lines naming the machine, the settings and the command line."""
    device = args.device
    if device == "cuda":
        device += f" ({torch.cuda.get_device_name()})"
    memory = (
        "torch.cuda.max_memory_allocated (model and data included)"
        if args.device == "cuda"
        else "growth of ru_maxrss (max resident set size) from right before the first "
        "warm-up step to the end of the timed steps"
    )
    return "\n".join(
        [
            "# torch_blue benchmark",
            "",
            f"Machine: {platform.platform()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{args.threads} threads, device {device}",
            f"Command: python scripts/benchmarks/benchmark.py {shlex.join(argv)}",
            f"Settings: {args.rounds} rounds, {args.warmup} warm-up + {args.steps} timed "
            f"steps per worker, S = {args.samples} samples for training, "
            f"S = {PREDICTION_SAMPLES} for prediction, seed {args.seed}",
            f"Peak MiB: {memory}.",
        ]
    )


# --------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"of {', '.join(TASKS)}")
    parser.add_argument(
        "--modes", default=",".join(MODES_BY_NAME), help=f"of {', '.join(MODES_BY_NAME)}"
    )
    parser.add_argument("--samples", type=int, default=10, help="S for training")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps per worker")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round, 3 steps, 1 warm-up, tiny gradient-variance run (for tests)",
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    parser.add_argument(
        "--plot", type=Path, help="also draw the training ratios to plain (a PNG) here"
    )
    parser.add_argument(
        "--plot-from",
        type=Path,
        metavar="MARKDOWN",
        help="only draw --plot from a report written earlier with --output",
    )
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR)
    parser.add_argument("--fetch-peers", type=Path, metavar="DIR")
    parser.add_argument("--upstream-path", type=Path, help="folder holding torch_blue 1.1")
    parser.add_argument(
        "--others-path", type=Path, help="folder holding bayesian_torch and blitz"
    )
    parser.add_argument("--gv-batches", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--gv-draws", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker",
        choices=("train", "predict", "latency", "gradient-variance"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 3, 1
        args.gv_batches, args.gv_draws = 2, 3
    args.task_list = [t for t in args.tasks.split(",") if t]
    args.mode_list = [m for m in args.modes.split(",") if m]
    for name, chosen, known in (
        ("task", args.task_list, TASKS),
        ("mode", args.mode_list, MODES_BY_NAME),
    ):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {list(known)}")
    if min(args.rounds, args.steps, args.threads, args.samples) < 1 or args.warmup < 0:
        parser.error("rounds, steps, threads and samples must be >= 1, warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("note: CUDA is not available, running on cpu", file=sys.stderr)
        args.device = "cpu"
    return args


def run_rounds(
    args: argparse.Namespace,
    jobs: Sequence[tuple[str, str, Mode]],
    folders: dict[str, Path],
    notes: list[str],
) -> dict[tuple[str, str], list[Optional[dict]]]:
    """Run every job once per round in its own worker; failures go to ``notes``.

    Returns
    -------
    dict
        ``(task, mode name)`` -> one worker result per round (``None`` if it failed).
    """
    runs: dict[tuple[str, str], list[Optional[dict]]] = {
        (task, mode.name): [None] * args.rounds for _, task, mode in jobs
    }
    for round_ in range(args.rounds):
        for kind, task, mode in round_order(jobs, round_):
            options = {"mode": mode.name} | ({"task": task} if kind == "train" else {})
            command = worker_command(args, kind, **options)
            label = f"[round {round_ + 1}/{args.rounds}] {task} {mode.name}"
            try:
                result = run_subprocess(command, folders[mode.library], args.threads)
            except RuntimeError as error:
                notes.append(f"{label}: {error}")
                print(f"{label}: {error}", file=sys.stderr)
                continue
            runs[task, mode.name][round_] = result
            if kind == "latency":
                print(f"{label}: {len(result)} configurations", file=sys.stderr)
                continue
            print(
                f"{label}: {result['ms']:.2f} ms, peak {result['peak_mib']:.1f} MiB",
                file=sys.stderr,
            )
    return split_latency(runs)


def split_latency(
    runs: dict[tuple[str, str], list[Optional[dict]]],
) -> dict[tuple[str, str], list[Optional[dict]]]:
    """Runs with each latency worker's result split into one pseudo-task per setting."""
    split = {}
    for (task, mode), results in runs.items():
        if task != "latency":
            split[task, mode] = results
            continue
        for batch in LATENCY_BATCHES:
            for samples in LATENCY_SAMPLES:
                key = latency_key(batch, samples)
                split[key, mode] = [r[key] if r else None for r in results]
    return split


def ratio_cells(summary: dict[str, Any]) -> list[str]:
    """Table cells: median ratio to plain and the per-round ratios."""
    per_round = " / ".join(fmt(r) for r in summary["ratios"])
    return [fmt(summary["ratio"], suffix="x"), per_round if summary["ratio"] else "-"]


def training_section(
    summary: dict[tuple[str, str], dict[str, Any]],
    tasks: Sequence[str],
    modes: Sequence[Mode],
    samples: int,
) -> str:
    """Markdown table of the training benchmark."""
    rows = [
        [task, mode.name, fmt(s["ms"]), *ratio_cells(s), fmt(s["peak"], 1)]
        for task in tasks
        for mode in modes
        if (s := summary.get((task, mode.name))) is not None
    ]
    header = [
        "task",
        "mode",
        "median ms/step",
        "ratio to plain",
        "ratios per round",
        "peak MiB",
    ]
    return (
        f"## Training step (forward + backward + Adam), S = {samples}\n\n"
        + markdown_table(header, rows)
    )


def hand_written_section(
    runs: dict[tuple[str, str], list[Optional[dict]]],
    summary: dict[tuple[str, str], dict[str, Any]],
    tasks: Sequence[str],
) -> Optional[str]:
    """Markdown comparing each torch_blue estimator with its hand-written step.

    ``None`` when no pair of modes ran.
    """
    rows = []
    for task in tasks:
        for estimator in ESTIMATORS:
            suffix = "" if estimator == ESTIMATORS[0] else f"-{estimator}"
            ours_name = f"torch_blue{suffix}"
            hand_name = f"hand-written-{estimator}"
            ours, hand = runs.get((task, ours_name)), runs.get((task, hand_name))
            if ours is None or hand is None:
                continue
            ratios = [o["ms"] / h["ms"] if o and h else None for o, h in zip(ours, hand)]
            if all(r is None for r in ratios):
                continue
            rows.append(
                [
                    task,
                    estimator,
                    fmt(median_or_none(ratios), suffix="x"),
                    " / ".join(fmt(r) for r in ratios),
                    fmt(summary[task, hand_name]["ratio"], suffix="x"),
                    fmt(summary[task, ours_name]["ratio"], suffix="x"),
                ]
            )
    if not rows:
        return None
    header = [
        "task",
        "estimator",
        "torch_blue / hand-written",
        "per round",
        "hand-written / plain",
        "torch_blue / plain",
    ]
    return (
        "## torch_blue against hand-written steps of the same estimator\n\n"
        "The step time of each torch_blue estimator divided by that of the plain-PyTorch "
        "step written for this one network and estimator "
        "(scripts/benchmarks/reference_steps.py), "
        "per round, median over rounds: what the library adds to the estimator's own "
        "cost.\n\n" + markdown_table(header, rows)
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark (or, with ``--worker``, one measurement); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.plot_from is not None:
        if args.plot is None:
            raise SystemExit("benchmark.py: --plot-from needs --plot PATH")
        ratios = read_training_ratios(args.plot_from.read_text())
        if not ratios:
            raise SystemExit(f"benchmark.py: no training table in {args.plot_from}")
        plot_training(ratios, _plot_title(args), args.plot)
        return 0
    if args.fetch_peers is not None:
        fetch_peers(args.fetch_peers)
        args.peers_dir = args.fetch_peers
    folders = locate_peers(args.peers_dir, args.upstream_path, args.others_path)
    modes = [MODES_BY_NAME[m] for m in args.mode_list]
    available, notes = split_available(modes, folders)
    train_tasks = [t for t in args.task_list if t in TRAIN_TASKS]
    for task in train_tasks:
        names = [m.name for m in available if task not in m.tasks]
        if names:
            notes.append(f"{task}: {', '.join(names)} skipped (the library has no {task})")
    if "encoder" in train_tasks and any(m.library == "upstream" for m in available):
        notes.append(
            "encoder: upstream's VIMultiheadAttention always computes the attention "
            "weights (need_weights=True); torch_blue's layers ask for none"
        )
    if "transformer" in train_tasks and any(m.library in VMAP_LIBRARIES for m in available):
        notes.append(
            "transformer: torch_blue and upstream run scaled_dot_product_attention under "
            "torch.vmap; "
            + (
                "on CUDA its memory-efficient kernel fails there, so they use the math "
                "kernel"
                if args.device == "cuda"
                else "torch has no batching rule for it there, so upstream's call loops "
                "over the samples; torch_blue calls it once on the stacked samples"
            )
        )
    jobs = [
        ("train", task, mode)
        for task in train_tasks
        for mode in available
        if task in mode.tasks
    ]
    if "prediction" in args.task_list:
        jobs += [("predict", "prediction", m) for m in available if m.predicts]
    if "latency" in args.task_list:
        jobs += [("latency", "latency", m) for m in available if m.deploys]
    runs = run_rounds(args, jobs, folders, notes)
    summary = summarise(runs, args.rounds)
    sections = [environment_header(args, argv)]
    if train_tasks:
        sections.append(training_section(summary, train_tasks, available, args.samples))
        hand_written = hand_written_section(runs, summary, train_tasks)
        if hand_written is not None:
            sections.append(hand_written)
    if "prediction" in args.task_list:
        sections.append(prediction_section(runs, summary, available, args.rounds))
    if "latency" in args.task_list:
        sections.append(latency_section(runs, summary, available))
    if "small" in train_tasks or "latency" in args.task_list:
        sections.append(targets_section(runs, args.task_list))
    if "gradient-variance" in args.task_list:
        sections.append(gradient_variance_section(args, notes))
    if notes:
        sections.append("Notes:\n\n" + "\n".join(f"- {note}" for note in notes))
    report = "\n\n".join(sections) + "\n"
    print(report, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    if args.plot is not None and train_tasks:
        ratios = {
            (task, mode.name): summary[task, mode.name]["ratio"]
            for task in train_tasks
            for mode in available
            if summary.get((task, mode.name), {}).get("ratio") is not None
        }
        plot_training(ratios, _plot_title(args), args.plot)
    return 0


def _plot_title(args: argparse.Namespace) -> str:
    return (
        f"Training step, S = {args.samples} ({args.device}, {args.threads} threads), "
        "lower is faster\ntorch_blue in blue, hand-written steps in green, peers in gray"
    )


def plot_training(ratios: dict[tuple[str, str], float], title: str, path: Path) -> None:
    """Bars per task: each mode's median step time as a multiple of plain PyTorch's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(task for task, _ in ratios))
    fig, axes = plt.subplots(
        len(tasks), 1, figsize=(8, 0.45 * len(ratios) + 1.2 * len(tasks)), squeeze=False
    )
    largest = max(ratios.values(), default=1.0)
    for ax, task in zip(axes[:, 0], tasks):
        rows = [(m, r) for (t, m), r in ratios.items() if t == task and m != "plain"]
        names = [m for m, _ in rows][::-1]
        values = [r for _, r in rows][::-1]
        colours = [
            "tab:blue"
            if n.startswith("torch_blue")
            else "tab:green"
            if n.startswith("hand-written")
            else "tab:gray"
            for n in names
        ]
        bars = ax.barh(names, values, color=colours)
        ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], padding=3)
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_xlim(0, largest * 1.15)
        ax.set_title(task, loc="left")
    axes[-1, 0].set_xlabel("step time / plain PyTorch on the S x B batch (1 = dashed line)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_training_ratios(markdown: str) -> dict[tuple[str, str], float]:
    """The median ratios of a report's training table, by (task, mode)."""
    ratios = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[3].endswith("x") and cells[0] != "task":
            try:
                ratios[cells[0], cells[1]] = float(cells[3][:-1])
            except ValueError:
                continue
    return ratios


def prediction_section(
    runs: dict[tuple[str, str], list[Optional[dict]]],
    summary: dict[tuple[str, str], dict[str, Any]],
    available: Sequence[Mode],
    rounds: int,
) -> str:
    """Markdown of the prediction benchmark, with torch_blue's speed-up over upstream."""
    rows = [
        [mode.name, fmt(s["ms"]), *ratio_cells(s), fmt(s["peak"], 1)]
        for mode in available
        if (s := summary.get(("prediction", mode.name))) is not None
    ]
    header = ["mode", "median ms/call", "ratio to plain", "ratios per round", "peak MiB"]
    text = (
        f"## Prediction, MLP, S = {PREDICTION_SAMPLES}, batch {PREDICTION_BATCH}, "
        "no_grad, return_log_probs = False\n\n" + markdown_table(header, rows)
    )
    ours = runs.get(("prediction", "torch_blue"), [None] * rounds)
    upstream = runs.get(("prediction", "upstream"), [None] * rounds)
    speedup = median_or_none(
        u["ms"] / o["ms"] if u and o else None for o, u in zip(ours, upstream)
    )
    if speedup is not None:
        text += (
            f"\n\ntorch_blue vs upstream: {speedup:.2f}x faster "
            "(median over rounds of upstream ms / torch_blue ms)"
        )
    return text


def round_ratios(
    runs: dict[tuple[str, str], list[Optional[dict]]],
    task: str,
    numerator: str,
    denominator: str,
) -> list[Optional[float]]:
    """Per round: ``numerator``'s median time over ``denominator``'s (or ``None``)."""
    tops = runs.get((task, numerator), [])
    bottoms = runs.get((task, denominator), [])
    return [t["ms"] / b["ms"] if t and b else None for t, b in zip(tops, bottoms)]


def latency_section(
    runs: dict[tuple[str, str], list[Optional[dict]]],
    summary: dict[tuple[str, str], dict[str, Any]],
    available: Sequence[Mode],
) -> str:
    """Markdown of the latency benchmark: every setting and mode, with ratios."""
    hand = "hand-written-local_reparameterization"
    rows = []
    for batch in LATENCY_BATCHES:
        for samples in LATENCY_SAMPLES:
            key = latency_key(batch, samples)
            for mode in available:
                s = summary.get((key, mode.name))
                if s is None or s["ms"] is None:
                    continue
                to_hand = median_or_none(round_ratios(runs, key, mode.name, hand))
                rows.append(
                    [
                        str(batch),
                        str(samples),
                        mode.name,
                        fmt(s["ms"] * 1e3, 0),
                        fmt(s["ratio"], suffix="x"),
                        fmt(to_hand, suffix="x"),
                    ]
                )
    header = ["batch", "S", "mode", "median us/call", "ratio to plain", "to hand-written"]
    return (
        f"## Latency: the small MLP ({SMALL_IN}-{SMALL_HIDDEN}-{SMALL_HIDDEN}-"
        f"{NUM_CLASSES}) deployed, no_grad, return_log_probs = False\n\n"
        "One call predicting S samples for a batch. plain: the twin on the S x batch "
        "stacked rows; hand-written: local reparameterisation in plain PyTorch "
        "(scripts/benchmarks/reference_steps.py), the pre-activation sampling torch_blue's "
        "prediction uses on dense layers; peers: their loop over the samples.\n\n"
        + markdown_table(header, rows)
    )


def _target_line(met: Optional[bool], text: str) -> str:
    return f"- {'not measured' if met is None else 'met' if met else 'MISSED'}: {text}"


def _small_targets(runs: dict[tuple[str, str], list[Optional[dict]]]) -> list[str]:
    peers = [m.name for m in MODES if m.library in ("upstream", "bayesian_torch", "blitz")]
    lines = []
    for estimator in ESTIMATORS:
        ours = "torch_blue" + ("" if estimator == ESTIMATORS[0] else f"-{estimator}")
        if not runs.get(("small", ours)):
            continue
        hand = f"hand-written-{estimator}"
        if runs.get(("small", hand)):
            ratio = median_or_none(round_ratios(runs, "small", ours, hand))
            lines.append(
                _target_line(
                    None if ratio is None else ratio <= 1.2,
                    f"small, {estimator}: {fmt(ratio)}x its hand-written step (<= 1.2x)",
                )
            )
        speedups = []
        for round_, result in enumerate(runs["small", ours]):
            peer_ms = [
                runs["small", p][round_]["ms"]
                for p in peers
                if runs.get(("small", p)) and runs["small", p][round_]
            ]
            speedups.append(min(peer_ms) / result["ms"] if result and peer_ms else None)
        speedup = median_or_none(speedups)
        lines.append(
            _target_line(
                None if speedup is None else speedup >= 1.5,
                f"small, {estimator}: {fmt(speedup)}x faster than the fastest peer mode "
                "(>= 1.5x)",
            )
        )
    stretch = (("reparameterization", 2.5), ("local_reparameterization", 2.0))
    for estimator, bound in stretch:
        ours = "torch_blue" + ("" if estimator == ESTIMATORS[0] else f"-{estimator}")
        ratio = median_or_none(round_ratios(runs, "small", ours, "plain"))
        if ratio is not None:
            lines.append(
                _target_line(
                    ratio <= bound,
                    f"stretch, small, {estimator}: {fmt(ratio)}x plain (<= {bound}x)",
                )
            )
    return lines


def _latency_targets(runs: dict[tuple[str, str], list[Optional[dict]]]) -> list[str]:
    lines = []
    for batch in LATENCY_BATCHES:
        for samples in (s for s in LATENCY_SAMPLES if s > 1):
            key = latency_key(batch, samples)
            hand = "hand-written-local_reparameterization"
            ratio = median_or_none(round_ratios(runs, key, "torch_blue", hand))
            speedup = median_or_none(round_ratios(runs, key, "upstream", "torch_blue"))
            lines.append(
                _target_line(
                    None if ratio is None else ratio <= 1.2,
                    f"{key}: {fmt(ratio)}x the hand-written prediction (<= 1.2x)",
                )
            )
            lines.append(
                _target_line(
                    None if speedup is None else speedup >= 2.0,
                    f"{key}: {fmt(speedup)}x faster than upstream (>= 2x)",
                )
            )
    return lines


def targets_section(
    runs: dict[tuple[str, str], list[Optional[dict]]], tasks: Sequence[str]
) -> str:
    """The speed targets of small networks, met or MISSED (medians over rounds)."""
    lines = []
    if "small" in tasks:
        lines += _small_targets(runs)
    if "latency" in tasks:
        lines += _latency_targets(runs)
    return "## Targets for small networks\n\n" + "\n".join(lines)


def gradient_variance_section(args: argparse.Namespace, notes: list[str]) -> str:
    """Run the gradient-variance worker and format its result."""
    command = worker_command(
        args, "gradient-variance", gv_batches=args.gv_batches, gv_draws=args.gv_draws
    )
    print("gradient variance ...", file=sys.stderr)
    try:
        result = run_subprocess(command, SRC_DIR, args.threads)
    except RuntimeError as error:
        notes.append(f"gradient variance: {error}")
        return "## Gradient variance\n\nfailed (see the notes)"
    columns = ["estimator"]
    by_samples = {int(samples): part["variances"] for samples, part in result.items()}
    for samples in by_samples:
        columns += [
            f"variance, S = {samples}",
            f"ratio to reparameterization, S = {samples}",
        ]
    rows = []
    for estimator in next(iter(by_samples.values())):
        row = [estimator]
        for variances in by_samples.values():
            value = variances[estimator]
            row += [f"{value:.4g}", fmt(value / variances["reparameterization"], 3, "x")]
        rows.append(row)
    first = next(iter(result.values()))
    return (
        "## Gradient variance (torch_blue, MLP at initialisation, batch "
        f"{GRADVAR_BATCH})\n\n"
        f"Data: {first['source']}. Variance across {args.gv_batches} minibatches x "
        f"{args.gv_draws} noise draws = {first['gradients']} gradients of the loss "
        "w.r.t. the top layer's weight means, averaged over the elements; S = 1 is "
        "the protocol of Kingma et al. (2015), the training S shows the cost of "
        "shared_flipout's one perturbation for all samples.\n\n"
        + markdown_table(columns, rows)
    )


if __name__ == "__main__":
    sys.exit(main())
