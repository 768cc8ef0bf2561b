r"""Pruning and compression of Bayesian networks by their signal-to-noise ratio.

A weight whose variational posterior :math:`\mathcal N(\mu, \sigma^2)` is wide
compared with its mean carries little information: the network works about as well
without it (Graves 2011; Blundell et al. 2015, section 5.3). Its *signal-to-noise
ratio* :math:`|\mu| / \sigma` ranks the weights; pruning sets the lowest-ranked ones
to exactly zero. The KL divergence :math:`\mathrm{KL}(q\,\|\,p)` of the remaining
weights is the number of nats needed to transmit them (the description length of
Hinton & van Camp 1993, Graves 2011, Louizos et al. 2017).

* :func:`signal_to_noise` -- :math:`|\mu|/\sigma` per random variable;
* :func:`pruning_masks` -- which weights to keep, for a target sparsity or an SNR
  threshold, over the whole model or per layer;
* :func:`prune` -- apply masks in place (or to a copy);
* :func:`compression_report`, :func:`description_length` -- KL per layer and in
  total, with the sparsity, as a Markdown table.

What "pruned" means here
    :func:`prune` writes the pruning into the variational parameters themselves: a
    pruned weight gets mean 0 and log standard deviation :data:`PRUNED_LOG_STD`
    (:math:`-1000`), so that :math:`\sigma = e^{-1000}` is exactly 0 in every
    floating-point type. Every weight draw, every gradient estimator (local
    reparameterisation and Flipout included), :class:`~torch_blue.vi.mean_weights`
    and :func:`~torch_blue.vi.to_deterministic` then see an exact zero; no hook or
    extra state is needed and a pruned model saves and loads like any other (a
    weight with mean 0 and :math:`\sigma = 0` is recognised as pruned).

    The losses know nothing of pruning: they score a pruned weight as a point mass,
    which adds a constant of about 1000 nats per pruned weight to their KL term. The
    constant does not change the gradients of the other weights, but the loss value
    is no longer a description length: use :func:`compression_report`, which counts
    pruned weights as removed (cost 0; the cost of transmitting the mask itself is
    not included). Training a pruned model moves the pruned means away from 0 again;
    to fine-tune, keep the masks and re-apply them after every optimiser step
    (``prune(model, masks=masks)``).

Examples
--------
>>> import torch
>>> from torch import nn
>>> from torch_blue import vi
>>> from torch_blue.vi.pruning import compression_report, prune
>>> model = vi.VISequential(vi.VILinear(4, 8), nn.ReLU(), vi.VILinear(8, 2))
>>> _ = prune(model, sparsity=0.5)
>>> plain = vi.to_deterministic(model)
>>> int((plain[0].weight == 0).sum() + (plain[2].weight == 0).sum()) > 0
True
>>> compression_report(model).sparsity
0.5
"""

import math
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.nn import Module

from .base import VIModule, named_random_variables
from .distributions import MeanFieldNormal, Prior
from .distributions.kl import has_closed_form_kl, kl_divergence, monte_carlo_kl_draws
from .utils.checks import check_int
from .utils.errors import NoVariablesError, ShapeError, UnsupportedDistributionError

__all__ = [
    "PRUNED_LOG_STD",
    "CompressionReport",
    "LayerReport",
    "compression_report",
    "description_length",
    "prune",
    "pruning_masks",
    "signal_to_noise",
]

#: Log standard deviation of a pruned weight: :math:`e^{-1000}` is exactly 0 in
#: float16, bfloat16, float32 and float64.
PRUNED_LOG_STD = -1000.0

SCOPES = ("global", "layer")
KL_METHODS = ("auto", "closed_form", "monte_carlo")


# ------------------------------------------------------------------------ helpers
def _variables(model: Module, owner: str) -> list[tuple[str, str, VIModule, str]]:
    """``(key, layer, module, variable)`` for every random variable of ``model``.

    ``key`` is the name of the variable's entry in the deterministic twin's state
    dict (``"0.weight"``), ``layer`` the module's name (``""`` for the model).
    """
    if not isinstance(model, Module):
        raise TypeError(f"{owner}: model must be an nn.Module, got {type(model).__name__}")
    found = [tuple(v) for v in named_random_variables(model)]
    if not found:
        raise NoVariablesError(
            f"{owner}: {type(model).__name__} has no random variables; pruning needs a "
            "Bayesian model made of torch_blue.vi modules"
        )
    return found


def _normal_parameters(
    module: VIModule, variable: str, key: str, owner: str
) -> tuple[Tensor, Tensor]:
    dist = module.variational_distribution[variable]
    if not isinstance(dist, MeanFieldNormal):
        raise UnsupportedDistributionError(
            f"{owner}: the signal-to-noise ratio needs MeanFieldNormal variational "
            f"distributions, but {key!r} ({type(module).__name__}) has "
            f"{type(dist).__name__}"
        )
    mean, log_std = module.get_variational_parameters(variable)
    return mean, log_std


def _is_pruned(mean: Tensor, log_std: Tensor) -> Tensor:
    """Where a Normal weight is a point mass at zero."""
    return (mean == 0) & (torch.exp(log_std) == 0)


def _pruned_elements(module: VIModule, variable: str) -> Optional[Tensor]:
    """Boolean mask of the pruned elements of ``variable``, or ``None`` if none."""
    if not isinstance(module.variational_distribution[variable], MeanFieldNormal):
        return None
    mean, log_std = module.get_variational_parameters(variable)
    pruned = _is_pruned(mean.detach(), log_std.detach())
    return pruned if bool(pruned.any()) else None


# ------------------------------------------------------------------------ ranking
def signal_to_noise(model: Module) -> dict[str, Tensor]:
    r"""Signal-to-noise ratio :math:`|\mu| / \sigma` of every weight.

    Parameters
    ----------
    model : nn.Module
        A model with random variables whose variational distribution is
        :class:`~torch_blue.vi.distributions.MeanFieldNormal`.

    Returns
    -------
    dict[str, Tensor]
        One detached tensor per random variable, of the variable's shape, keyed like
        the state dict of :func:`~torch_blue.vi.to_deterministic` (``"0.weight"``;
        ``"weight"`` for a single layer), in module order. A pruned weight (mean 0,
        :math:`\sigma = 0`) has ratio 0; a weight with :math:`\sigma = 0` and a
        non-zero mean has ratio ``inf``.

    Raises
    ------
    NoVariablesError
        If ``model`` has no random variables.
    UnsupportedDistributionError
        If a variational distribution is not a Normal.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(2, 1)
    >>> with torch.no_grad():
    ...     _ = layer._weight_mean.copy_(torch.tensor([[-2.0, 0.5]]))
    ...     _ = layer._weight_log_std.fill_(0.0)
    ...     _ = layer._bias_mean.fill_(3.0)
    ...     _ = layer._bias_log_std.fill_(torch.log(torch.tensor(2.0)))
    >>> signal_to_noise(layer)
    {'weight': tensor([[2.0000, 0.5000]]), 'bias': tensor([1.5000])}
    """
    ratios = {}
    with torch.no_grad():
        for key, _, module, variable in _variables(model, "signal_to_noise"):
            mean, log_std = _normal_parameters(module, variable, key, "signal_to_noise")
            ratio = mean.abs() / torch.exp(log_std)
            ratios[key] = torch.where(
                _is_pruned(mean, log_std), torch.zeros_like(ratio), ratio
            )
    return ratios


def _check_target(
    owner: str, sparsity: Optional[float], threshold: Optional[float]
) -> tuple[Optional[float], Optional[float]]:
    if (sparsity is None) == (threshold is None):
        raise ValueError(f"{owner}: give exactly one of sparsity and threshold")
    value = sparsity if sparsity is not None else threshold
    name = "sparsity" if sparsity is not None else "threshold"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if sparsity is not None:
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"{owner}: sparsity is the fraction of weights to prune and must lie "
                f"in [0, 1), got {value!r}"
            )
        return value, None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{owner}: threshold must be a finite non-negative signal-to-noise ratio, "
            f"got {value!r}"
        )
    return None, value


def pruning_masks(
    model: Module,
    sparsity: Optional[float] = None,
    threshold: Optional[float] = None,
    scope: str = "global",
) -> dict[str, Tensor]:
    r"""Which weights to keep: ``True`` for kept, ``False`` for pruned.

    Weights are ranked by :func:`signal_to_noise`. With ``sparsity`` the
    ``round(sparsity * n)`` weights of lowest ratio are pruned, among all ``n``
    weights of the model (``scope="global"``) or of each layer
    (``scope="layer"``: the random variables of one module, e.g. a ``VILinear``'s
    weight and bias, form one group). Ties are broken by position: among equal
    ratios the weight that comes first (module order, then variable order, then
    row-major) is pruned first. With ``threshold`` every weight whose ratio is below
    it is pruned (the scope makes no difference).

    Parameters
    ----------
    model : nn.Module
        A model with mean-field Normal random variables.
    sparsity : float, optional
        Fraction of weights to prune, in ``[0, 1)``.
    threshold : float, optional
        Prune the weights with :math:`|\mu|/\sigma <` ``threshold`` (finite,
        non-negative). Give exactly one of ``sparsity`` and ``threshold``.
    scope : {"global", "layer"}, default: "global"
        Rank the weights over the whole model or within each layer.

    Returns
    -------
    dict[str, Tensor]
        Boolean masks keyed like :func:`signal_to_noise`.

    Raises
    ------
    ValueError
        If both or neither target is given, or a target or ``scope`` is invalid.
    NoVariablesError, UnsupportedDistributionError
        As :func:`signal_to_noise`.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(4, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer._weight_mean.copy_(torch.tensor([[0.1, -3.0, 0.2, 1.0]]))
    ...     _ = layer._weight_log_std.fill_(0.0)
    >>> pruning_masks(layer, sparsity=0.5)
    {'weight': tensor([[False,  True, False,  True]])}
    >>> pruning_masks(layer, threshold=0.15)
    {'weight': tensor([[False,  True,  True,  True]])}
    """
    owner = "pruning_masks"
    sparsity, threshold = _check_target(owner, sparsity, threshold)
    if scope not in SCOPES:
        raise ValueError(f"{owner}: scope must be one of {SCOPES}, got {scope!r}")
    ratios = signal_to_noise(model)
    for key, ratio in ratios.items():
        if bool(torch.isnan(ratio).any()):
            raise ValueError(f"{owner}: the variational parameters of {key!r} contain NaN")
    if threshold is not None:
        return {key: ratio >= threshold for key, ratio in ratios.items()}
    groups: dict[str, list[str]] = {}
    for key, layer, _, _ in _variables(model, owner):
        groups.setdefault(layer if scope == "layer" else "", []).append(key)
    masks = {}
    for keys in groups.values():
        flat = torch.cat([ratios[key].flatten() for key in keys])
        keep = torch.ones_like(flat, dtype=torch.bool)
        n_pruned = round(sparsity * flat.numel())
        if n_pruned:
            order = torch.argsort(flat, stable=True)
            keep[order[:n_pruned]] = False
        for key, part in zip(keys, keep.split([ratios[k].numel() for k in keys])):
            masks[key] = part.view_as(ratios[key])
    return masks


# ------------------------------------------------------------------------ pruning
def prune(
    model: Module,
    sparsity: Optional[float] = None,
    threshold: Optional[float] = None,
    scope: str = "global",
    *,
    masks: Optional[Mapping[str, Tensor]] = None,
    inplace: bool = True,
) -> Module:
    r"""Prune the weights of lowest signal-to-noise ratio: mean 0 and no noise.

    Pruned weights get mean 0 and log standard deviation :data:`PRUNED_LOG_STD`, so
    that every draw of them is exactly 0 (see the module docstring for why, and for
    what the losses make of it). The pruned model still runs with samples; its
    export by :func:`~torch_blue.vi.to_deterministic` has exact zeros in their
    place. Already pruned weights have ratio 0, so pruning again to a higher
    sparsity keeps them pruned.

    Parameters
    ----------
    model : nn.Module
        A model with mean-field Normal random variables.
    sparsity, threshold, scope
        The target, as in :func:`pruning_masks`.
    masks : Mapping[str, Tensor], optional
        Boolean masks (``True`` = keep) keyed like :func:`signal_to_noise`, instead
        of a target; variables without a mask are left as they are. Re-apply the
        same masks after every optimiser step to fine-tune a pruned model.
    inplace : bool, default: True
        Prune ``model`` itself; ``False`` prunes a deep copy and leaves ``model``
        untouched.

    Returns
    -------
    nn.Module
        The pruned model (``model`` itself when ``inplace``).

    Raises
    ------
    ValueError
        Unless exactly one of ``sparsity``, ``threshold`` and ``masks`` is given, or
        for an invalid target.
    KeyError
        If a mask names no random variable of the model.
    TypeError, ShapeError
        If a mask is not a boolean tensor of the variable's shape.

    Examples
    --------
    >>> import torch
    >>> from torch_blue import vi
    >>> model = vi.VILinear(10, 10)
    >>> plain = vi.to_deterministic(prune(model, sparsity=0.9, inplace=False))
    >>> int((plain.weight == 0).sum() + (plain.bias == 0).sum())
    99
    >>> model(torch.randn(3, 10), samples=4).shape  # the original is untouched
    torch.Size([4, 3, 10])
    """
    owner = "prune"
    given = sum(value is not None for value in (sparsity, threshold, masks))
    if given != 1:
        raise ValueError(f"{owner}: give exactly one of sparsity, threshold and masks")
    if not inplace:
        model = deepcopy(model)
    variables = {key: (module, variable) for key, _, module, variable in _variables(
        model, owner
    )}  # fmt: skip
    if masks is None:
        masks = pruning_masks(model, sparsity, threshold, scope)
    elif not isinstance(masks, Mapping):
        raise TypeError(
            f"{owner}: masks must be a mapping from variable names to boolean tensors, "
            f"got {type(masks).__name__}"
        )
    checked = []
    for key, keep in masks.items():
        if key not in variables:
            raise KeyError(
                f"{owner}: mask {key!r} names no random variable of the model; it has "
                f"{sorted(variables)}"
            )
        module, variable = variables[key]
        mean, log_std = _normal_parameters(module, variable, key, owner)
        if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
            raise TypeError(
                f"{owner}: the mask of {key!r} must be a boolean tensor (True = keep), "
                f"got {keep.dtype if isinstance(keep, Tensor) else type(keep).__name__}"
            )
        if keep.shape != mean.shape:
            raise ShapeError(
                f"{owner}: the mask of {key!r} has shape {tuple(keep.shape)}, the "
                f"variable has shape {tuple(mean.shape)}"
            )
        checked.append((mean, log_std, keep.to(mean.device)))
    with torch.no_grad():  # validated everything before changing anything
        for mean, log_std, keep in checked:
            mean.masked_fill_(~keep, 0.0)
            log_std.masked_fill_(~keep, PRUNED_LOG_STD)
    return model


# ------------------------------------------------------------------------ report
@dataclass(frozen=True)
class LayerReport:
    r"""KL divergence and sparsity of one layer (the random variables of one module).

    Attributes
    ----------
    name : str
        The module's name in the model (``""`` for the model itself).
    weights : int
        Number of weights (elements of all random variables).
    pruned : int
        Number of pruned weights.
    kl : float
        :math:`\mathrm{KL}(q\,\|\,p)` of the kept weights, in nats.
    kl_stderr : float
        Standard error of ``kl`` (0 for a closed form).
    method : str
        ``"closed form"`` or ``"Monte Carlo (n draws)"`` (joined by ``" + "`` when
        the variables of the layer differ).
    """

    name: str
    weights: int
    pruned: int
    kl: float
    kl_stderr: float
    method: str

    @property
    def kept(self) -> int:
        """Number of weights left."""
        return self.weights - self.pruned

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights."""
        return self.pruned / self.weights


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer KL divergences and sparsities, with totals.

    ``str(report)`` is :meth:`to_markdown`.

    Attributes
    ----------
    layers : tuple[LayerReport, ...]
        One entry per module with random variables, in module order.
    """

    layers: tuple[LayerReport, ...]

    @property
    def kl(self) -> float:
        r"""Total :math:`\mathrm{KL}(q\,\|\,p)` of the kept weights, in nats."""
        return math.fsum(layer.kl for layer in self.layers)

    @property
    def kl_stderr(self) -> float:
        """Standard error of :attr:`kl` (the layers' estimates are independent)."""
        return math.sqrt(math.fsum(layer.kl_stderr**2 for layer in self.layers))

    @property
    def weights(self) -> int:
        """Number of weights in the model."""
        return sum(layer.weights for layer in self.layers)

    @property
    def pruned(self) -> int:
        """Number of pruned weights in the model."""
        return sum(layer.pruned for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights in the model."""
        return self.pruned / self.weights

    def to_markdown(self) -> str:
        """A Markdown table: one row per layer and a total row."""
        lines = [
            "| layer | weights | kept | sparsity | KL (nats) | nats per kept weight "
            "| KL method |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        methods = ", ".join(dict.fromkeys(layer.method for layer in self.layers))
        rows = [(layer.name or "(model)", layer, layer.method) for layer in self.layers]
        rows.append(("**total**", self, methods))
        for name, item, method in rows:
            kl = f"{item.kl:.1f}"
            if item.kl_stderr > 0:
                kl += f" ± {item.kl_stderr:.1f}"
            kept = item.weights - item.pruned
            per_weight = f"{item.kl / kept:.3f}" if kept else "n/a"
            lines.append(
                f"| {name} | {item.weights} | {kept} | {100 * item.sparsity:.1f}% | "
                f"{kl} | {per_weight} | {method} |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _check_kl_options(owner: str, method: str, mc_samples: int) -> None:
    if method not in KL_METHODS:
        raise ValueError(f"{owner}: method must be one of {KL_METHODS}, got {method!r}")
    check_int(owner, "mc_samples", mc_samples, 2, " (for a standard error)")


def _scalar_hyperparameters(prior: Prior) -> bool:
    """Whether every hyperparameter of ``prior`` is a scalar (or ``None``)."""
    return all(
        not isinstance(value, Tensor) or value.numel() == 1
        for value in prior.get_parameters()
    )


def _monte_carlo_kl(
    module: VIModule, variable: str, keep: Optional[Tensor], draws: int
) -> tuple[float, float]:
    """Mean and standard error of the Monte Carlo KL of one variable (in float64)."""
    values = monte_carlo_kl_draws(
        module.prior[variable],
        module.variational_distribution[variable],
        [p.double() for p in module.get_variational_parameters(variable)],
        draws,
        [p.double() for p in module._prior_hyperparameters(variable)],
        keep,
    )
    return float(values.mean()), float(values.std() / math.sqrt(draws))


def compression_report(
    model: Module, *, method: str = "auto", mc_samples: int = 256
) -> CompressionReport:
    r"""KL divergence :math:`\mathrm{KL}(q\,\|\,p)` and sparsity of every layer.

    The KL divergence of a layer, summed over its kept weights, is the number of
    nats needed to transmit them with bits-back coding (the description length of
    the weights; Hinton & van Camp 1993, Graves 2011). Pruned weights (mean 0,
    :math:`\sigma = 0`, as left by :func:`prune`) count as removed, at cost 0.

    A variable whose ``(prior, variational)`` pair has a closed form (see
    :func:`~torch_blue.vi.distributions.has_closed_form_kl`) uses it; otherwise the
    KL is estimated from ``mc_samples`` draws of the variational distribution (with
    the global random generator: seed it for reproducible numbers), with its
    standard error. So is the KL of a pruned variable whose prior has per-weight
    hyperparameters (e.g. an empirical-Bayes prior), since a closed form sums over
    the whole tensor. Computed in float64 without gradients.

    Parameters
    ----------
    model : nn.Module
        A model with random variables (any variational family; only Normal weights
        can be pruned).
    method : {"auto", "closed_form", "monte_carlo"}, default: "auto"
        Closed form where available (``"auto"``), always (error if missing) or
        never.
    mc_samples : int, default: 256
        Draws per variable for the Monte Carlo estimate (at least 2).

    Returns
    -------
    CompressionReport
        One :class:`LayerReport` per module with random variables.

    Raises
    ------
    NoVariablesError
        If ``model`` has no random variables.
    UnsupportedDistributionError
        With ``method="closed_form"`` when a pair has no closed form.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, prior_initialization=True)  # q = p: nothing to send
    >>> report = compression_report(layer)
    >>> report.kl, report.weights, report.sparsity
    (0.0, 8, 0.0)
    >>> print(report)
    | layer | weights | kept | sparsity | KL (nats) | nats per kept weight | KL method |
    |---|---:|---:|---:|---:|---:|---|
    | (model) | 8 | 8 | 0.0% | 0.0 | 0.000 | closed form |
    | **total** | 8 | 8 | 0.0% | 0.0 | 0.000 | closed form |
    """
    owner = "compression_report"
    _check_kl_options(owner, method, mc_samples)
    layers: dict[str, list] = {}
    with torch.no_grad():
        for key, layer, module, variable in _variables(model, owner):
            dist = module.variational_distribution[variable]
            prior = module.prior[variable]
            pruned = _pruned_elements(module, variable)
            keep = None if pruned is None else ~pruned
            parameters = module.get_variational_parameters(variable)
            numel = parameters[0].numel()
            n_pruned = 0 if pruned is None else int(pruned.sum())
            closed = method == "closed_form" or (
                method == "auto" and has_closed_form_kl(prior, dist)
            )
            if closed and keep is not None and not _scalar_hyperparameters(prior):
                # The closed form sums over the whole tensor and the prior's own
                # per-weight hyperparameters cannot be restricted to the kept ones.
                if method == "closed_form":
                    raise UnsupportedDistributionError(
                        f"{owner}: {key!r} has pruned weights and a prior with "
                        f"per-weight hyperparameters ({type(prior).__name__}); its KL "
                        "over the kept weights has no closed form here, use "
                        "method='auto' or 'monte_carlo'"
                    )
                closed = False
            if closed:
                # Only the kept elements: the closed forms sum element-wise terms and
                # the prior's hyperparameters are scalars.
                selected = [(p if keep is None else p[keep]).double() for p in parameters]
                kl = float(kl_divergence(prior, dist, selected))
                stderr, how = 0.0, "closed form"
            else:
                kl, stderr = _monte_carlo_kl(module, variable, keep, mc_samples)
                how = f"Monte Carlo ({mc_samples} draws)"
            layers.setdefault(layer, []).append((numel, n_pruned, kl, stderr, how))
    reports = []
    for name, entries in layers.items():
        reports.append(
            LayerReport(
                name=name,
                weights=sum(e[0] for e in entries),
                pruned=sum(e[1] for e in entries),
                kl=math.fsum(e[2] for e in entries),
                kl_stderr=math.sqrt(math.fsum(e[3] ** 2 for e in entries)),
                method=" + ".join(dict.fromkeys(e[4] for e in entries)),
            )
        )
    return CompressionReport(tuple(reports))


def description_length(
    model: Module, *, method: str = "auto", mc_samples: int = 256
) -> float:
    r"""Total :math:`\mathrm{KL}(q\,\|\,p)` of the kept weights, in nats.

    The total of :func:`compression_report` (same arguments). Divide by
    :math:`\ln 2` for bits.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, bias=False, prior_initialization=True)
    >>> with torch.no_grad():
    ...     _ = layer._weight_mean.fill_(1.0)  # KL = 6 * (1 / 2) for a standard prior
    >>> description_length(layer)
    3.0
    """
    return compression_report(model, method=method, mc_samples=mc_samples).kl
