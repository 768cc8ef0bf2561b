r"""Bayesian low-rank adapters for fine-tuning a pretrained network.

A pretrained layer with weight :math:`W_0` keeps :math:`W_0` frozen and learns a
low-rank update,

.. math:: y = W_0 x + b_0 + s \, B A x, \qquad A \in \mathbb R^{r \times d_\mathrm{in}},
   \quad B \in \mathbb R^{d_\mathrm{out} \times r},

with a variational posterior over the adapter (LoRA, Hu et al. 2022, made Bayesian as
in BLoB, Wang et al. 2024): :math:`A` is a random variable with a mean-field posterior
and a prior (a :class:`~torch_blue.vi.VILinear` or :class:`~torch_blue.vi.VIConv2d`
without bias, so every estimator of those layers applies), :math:`B` is a point
estimate that starts at zero. The update therefore starts at exactly zero, whatever
:math:`A` draws: the adapted network starts as the pretrained one. :math:`s` is
``alpha / rank`` (1 when ``alpha`` is not given). Only :math:`A` enters the KL term;
a few thousand random numbers per layer instead of millions.

* :class:`VILoRALinear` and :class:`VILoRAConv2d` wrap one ``nn.Linear`` or
  ``nn.Conv2d`` (``groups=1``);
* :func:`add_lora` puts them on the layers of a model that ``include``/``exclude``
  choose (the rules of :func:`~torch_blue.vi.convert_to_vimodule`), freezes everything
  else and makes the model sample once per call;
* :func:`adapter_state_dict` and :func:`load_adapter_state_dict` save and load what was
  trained, with a fingerprint of the base weights it was trained on;
* :func:`~torch_blue.vi.to_deterministic` merges the mean update into plain layers,
  :math:`W_0 + s\,B\,\mathbb E[A]`.
"""

from collections.abc import Mapping
from copy import deepcopy
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from .._compat import has_call_hooks
from ._stacked import register_stacked_layer
from .base import VIModule
from .conv import VIConv2d
from .convert import convert_to_vimodule
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .linear import VILinear
from .sampling import Stacked
from .selection import ModuleSelection, select_modules
from .utils.checks import check_int
from .utils.common_types import PriorSpec, VariationalSpec

__all__ = [
    "VILoRAConv2d",
    "VILoRALinear",
    "adapter_state_dict",
    "add_lora",
    "load_adapter_state_dict",
]

_FINGERPRINT = "base_fingerprint"


class _LowRankAdapter(VIModule):
    """The adapter shared by linear and convolution layers: ``base(x) + s B(A(x))``."""

    _base_type: ClassVar[type[nn.Module]]

    def __init__(
        self,
        base: nn.Module,
        rank: int = 8,
        alpha: Optional[float] = None,
        variational_distribution: VariationalSpec = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: PriorSpec = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        estimator: str = "reparameterization",
    ) -> None:
        name = type(self).__name__
        if type(base) is not self._base_type:
            raise TypeError(
                f"{name}: base must be an {self._base_type.__module__}."
                f"{self._base_type.__name__}, got {type(base).__name__}"
            )
        rank = check_int(name, "rank", rank)
        if alpha is None:
            scaling = 1.0
        elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0:
            scaling = float(alpha) / rank
        else:
            raise ValueError(
                f"{name}: alpha must be a positive number or None, got {alpha!r}"
            )
        super().__init__(None, return_log_probs=return_log_probs)
        self.rank = rank
        self.alpha = alpha
        self.scaling = scaling
        self.base = base
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        vikwargs = dict(
            variational_distribution=variational_distribution,
            prior=prior,
            rescale_prior=rescale_prior,
            kaiming_initialization=kaiming_initialization,
            prior_initialization=prior_initialization,
            return_log_probs=return_log_probs,
            estimator=estimator,
            **factory,
        )
        self.lora_A, self.lora_B = self._factors(base, rank, vikwargs, factory)
        nn.init.zeros_(self.lora_B.weight)
        for parameter in base.parameters():  # (only once everything was accepted)
            parameter.requires_grad_(False)

    def _factors(
        self, base: nn.Module, rank: int, vikwargs: dict, factory: dict
    ) -> tuple[VIModule, nn.Module]:
        raise NotImplementedError

    def _update(self, a_mean: Tensor) -> Tensor:
        """The weight update :math:`s B A` for a value of :math:`A`."""
        raise NotImplementedError

    def forward(self, input_: Tensor) -> Tensor:
        """The frozen layer plus the scaled low-rank update."""
        return self.base(input_) + self.scaling * self.lora_B(self.lora_A(input_))

    def _stacked_ready(self) -> bool:
        """Whether the stacked path can run this adapter (as it would its parts)."""
        parts = (self.base, self.lora_A, self.lora_B)
        if any(has_call_hooks(p) or "forward" in p.__dict__ for p in parts):
            return False
        if self.lora_A._reuse_draws:
            return False
        ready = getattr(type(self.lora_A), "_stacked_ready", None)
        return ready is None or ready(self.lora_A)

    def _stacked_forward(self, input_: Tensor, stacked: Stacked) -> Tensor:
        """:meth:`forward` for all S samples at once (the stacked path).

        The frozen layer runs once on a shared input; :math:`A` draws its S samples
        as the lanes would, and :math:`B` acts on every sample.
        """
        base = self._per_sample(self.base, input_, stacked.input_stacked)
        low = self.lora_A._stacked_forward(input_, stacked)
        return base + self.scaling * self._per_sample(self.lora_B, low, True)

    def _per_sample(self, layer: nn.Module, h: Tensor, stacked: bool) -> Tensor:
        """``layer`` on ``h``, whose dimension 0 is the sample where ``stacked``."""
        return layer(h)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}"

    def merged(self) -> nn.Module:
        """A plain copy of the base layer with the mean update added to its weight.

        It computes what this adapter computes under :class:`~torch_blue.vi.mean_weights`.
        """
        layer = deepcopy(self.base)
        with torch.no_grad():
            a_dist = self.lora_A.variational_distribution["weight"]
            a_mean = a_dist.point_estimate(
                tuple(self.lora_A.get_variational_parameters("weight"))
            )
            layer.weight.add_(self._update(a_mean).to(layer.weight.dtype))
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
        layer.train(self.training)
        return layer

    def _to_deterministic(self) -> nn.Module:
        return self.merged()

    def base_fingerprint(self) -> Tensor:
        """Numbers that identify the base weights: size, sum, sum of squares, a ramp.

        :func:`load_adapter_state_dict` compares them to refuse adapters trained on
        other base weights.
        """
        with torch.no_grad():
            values = torch.cat(
                [p.detach().double().flatten() for p in self.base.parameters()]
            )
            ramp = torch.linspace(-1.0, 1.0, values.numel(), dtype=values.dtype)
            return torch.stack(
                [
                    torch.tensor(float(values.numel()), dtype=values.dtype),
                    values.sum(),
                    values.square().sum(),
                    (values * ramp.to(values.device)).sum(),
                ]
            ).cpu()


@register_stacked_layer
class VILoRALinear(_LowRankAdapter):
    """A frozen ``nn.Linear`` with a Bayesian low-rank update (see :mod:`.adapters`).

    Computes ``base(x) + s * B(A(x))`` with ``A`` a :class:`~torch_blue.vi.VILinear`
    ``(in_features -> rank)`` without bias, a random variable, and ``B`` an
    ``nn.Linear`` ``(rank -> out_features)`` without bias, a point estimate starting
    at zero. Written for one sample like every layer, so it works wherever a
    ``VILinear`` does, with every estimator.

    Parameters
    ----------
    base : nn.Linear
        The pretrained layer. Its parameters are frozen (``requires_grad = False``)
        and it is kept as the submodule ``base``.
    rank : int, default: 8
        Rank :math:`r` of the update.
    alpha : float, optional
        The update is scaled by ``alpha / rank``; by 1 when ``None``.
    variational_distribution, prior, rescale_prior, kaiming_initialization, \
prior_initialization, return_log_probs, estimator
        As for :class:`~torch_blue.vi.VILinear`, for :math:`A`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> _ = torch.manual_seed(0)
    >>> pretrained = nn.Linear(16, 4)
    >>> adapter = vi.VILoRALinear(pretrained, rank=2)
    >>> x = torch.randn(3, 16)
    >>> out = adapter(x, samples=5)            # the update starts at zero
    >>> out.shape, torch.allclose(out, pretrained(x).expand(5, 3, 4))
    (torch.Size([5, 3, 4]), True)
    >>> [name for name, p in adapter.named_parameters() if p.requires_grad]
    ['lora_A._weight_mean', 'lora_A._weight_log_std', 'lora_B.weight']
    """

    _base_type = nn.Linear

    def _factors(
        self, base: nn.Module, rank: int, vikwargs: dict, factory: dict
    ) -> tuple[VIModule, nn.Module]:
        a = VILinear(base.in_features, rank, bias=False, **vikwargs)
        b = nn.Linear(rank, base.out_features, bias=False, **factory)
        return a, b

    def _update(self, a_mean: Tensor) -> Tensor:
        return self.scaling * (self.lora_B.weight @ a_mean)


@register_stacked_layer
class VILoRAConv2d(_LowRankAdapter):
    r"""A frozen ``nn.Conv2d`` with a Bayesian low-rank update (see :mod:`.adapters`).

    ``A`` is a :class:`~torch_blue.vi.VIConv2d` ``(in_channels -> rank)`` with the
    base's kernel size, stride, padding, dilation and padding mode and no bias; ``B``
    a 1x1 ``nn.Conv2d`` ``(rank -> out_channels)`` starting at zero. The merged
    kernel is :math:`W_0 + s \sum_r B_{o r} A_{r \cdot}`. Grouped convolutions are not
    supported. Parameters as for :class:`VILoRALinear`, with ``base`` an
    ``nn.Conv2d``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> adapter = vi.VILoRAConv2d(nn.Conv2d(3, 8, 3, padding=1), rank=2)
    >>> adapter(torch.randn(2, 3, 5, 5), samples=4).shape
    torch.Size([4, 2, 8, 5, 5])
    """

    _base_type = nn.Conv2d

    def _factors(
        self, base: nn.Module, rank: int, vikwargs: dict, factory: dict
    ) -> tuple[VIModule, nn.Module]:
        if base.groups != 1:
            raise ValueError(
                f"VILoRAConv2d: base must have groups=1, got groups={base.groups}"
            )
        a = VIConv2d(
            base.in_channels,
            rank,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            bias=False,
            padding_mode=base.padding_mode,
            **vikwargs,
        )
        b = nn.Conv2d(rank, base.out_channels, 1, bias=False, **factory)
        return a, b

    def _per_sample(self, layer: nn.Module, h: Tensor, stacked: bool) -> Tensor:
        if stacked and h.dim() == 5:  # (S, N, C, H, W): the samples join the batch
            return layer(h.flatten(0, 1)).unflatten(0, h.shape[:2])
        return layer(h)  # (N, C, H, W), or (S, C, H, W) of unbatched samples

    def _update(self, a_mean: Tensor) -> Tensor:
        return self.scaling * torch.einsum(
            "or,rikl->oikl", self.lora_B.weight[:, :, 0, 0], a_mean
        )


_ADAPTERS: dict[type[nn.Module], type[_LowRankAdapter]] = {
    nn.Linear: VILoRALinear,
    nn.Conv2d: VILoRAConv2d,
}


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: Optional[float] = None,
    *,
    include: Optional[ModuleSelection] = None,
    exclude: Optional[ModuleSelection] = None,
    variational_distribution: VariationalSpec = DEFAULT_VARIATIONAL_DISTRIBUTION,
    prior: PriorSpec = DEFAULT_PRIOR,
    return_log_probs: bool = True,
    estimator: str = "reparameterization",
) -> nn.Module:
    """Put Bayesian low-rank adapters on a pretrained model, in place.

    Every ``nn.Linear`` and ``nn.Conv2d`` (exact classes) among the modules that
    ``include`` and ``exclude`` choose (see
    :func:`~torch_blue.vi.selection.select_modules`; all of them by default) is replaced
    in its parent by a :class:`VILoRALinear` or :class:`VILoRAConv2d` around it;
    grouped convolutions (depthwise ones, say) are left alone unless ``include`` names
    them, which raises. Every other parameter of the model is frozen
    (``requires_grad = False``; set it back on parts you want to train too, e.g. a new
    head; :func:`~torch_blue.vi.to_deterministic` gives merged layers that train and
    keeps the other flags), and the containers become
    Bayesian containers as in :func:`~torch_blue.vi.convert_to_vimodule`, so the
    model draws its adapters' samples once per call and returns a
    :class:`~torch_blue.vi.VIReturn` whose log-probabilities cover the adapters only.
    A layer used in several places gets one adapter.

    Parameters
    ----------
    model : nn.Module
        The pretrained model.
    rank, alpha
        Rank of each update and its scale ``alpha / rank`` (1 when ``alpha`` is None).
    include, exclude : name pattern, nn.Module class, predicate or list of these
        Which parts get adapters.
    variational_distribution, prior, return_log_probs, estimator
        For the random factor :math:`A` of every adapter.

    Returns
    -------
    nn.Module
        ``model`` itself; a new adapter when ``model`` is itself a chosen layer.

    Raises
    ------
    ValueError
        When an ``include``/``exclude`` entry matches nothing, or no ``nn.Linear`` or
        ``nn.Conv2d`` is chosen. The model is then left as it was, as it is when an
        adapter cannot be built (a grouped convolution named by ``include``, an
        estimator the factor does not take).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> vi.add_lora(model, rank=2, include="2")
    VISequential(
      (0): Linear(in_features=8, out_features=16, bias=True)
      (1): ReLU()
      (2): VILoRALinear(
        rank=2, scaling=1
        (base): Linear(in_features=16, out_features=3, bias=True)
        (lora_A): VILinear(in_features=16, out_features=2, bias=False, ...)
        (lora_B): Linear(in_features=2, out_features=3, bias=False)
      )
    )
    >>> sum(p.numel() for p in model.parameters() if p.requires_grad)  # 2 * 16 * 2 + 3 * 2
    70
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"add_lora: model must be an nn.Module, got {type(model).__name__}")
    selection = select_modules(model, include, exclude, fn="add_lora")
    options = dict(
        rank=rank,
        alpha=alpha,
        variational_distribution=variational_distribution,
        prior=prior,
        return_log_probs=return_log_probs,
        estimator=estimator,
    )
    if type(model) in _ADAPTERS and model in selection:
        return _ADAPTERS[type(model)](model, **options)
    places = [
        (parent, name, child)
        for parent in model.modules()
        if not isinstance(parent, _LowRankAdapter)
        for name, child in parent._modules.items()
        if type(child) in _ADAPTERS
        and child in selection
        and (getattr(child, "groups", 1) == 1 or id(child) in selection.direct)
    ]
    if not places:
        raise ValueError(
            f"add_lora: include/exclude choose no nn.Linear or nn.Conv2d (groups=1) "
            f"in {type(model).__name__}"
        )
    # Build every adapter before changing the model, so that an error leaves it as
    # it was (the adapters freeze their base layers only once built).
    flags = [(p, p.requires_grad) for p in model.parameters()]
    adapters: dict[int, _LowRankAdapter] = {}
    try:
        for _, _, child in places:
            if id(child) not in adapters:
                adapters[id(child)] = _ADAPTERS[type(child)](child, **options)
    except Exception:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        raise
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parent, name, child in places:
        parent._modules[name] = adapters[id(child)]
    return convert_to_vimodule(
        model,
        include=lambda _, module: isinstance(module, _LowRankAdapter),
        return_log_probs=return_log_probs,
    )


def _adapters(model: nn.Module) -> dict[str, _LowRankAdapter]:
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _LowRankAdapter)
    }


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What fine-tuning changed: the trainable parameters and the adapters' buffers.

    Entries have the names of ``model.state_dict()``. Each adapter adds an entry
    ``"<path>.base_fingerprint"`` that identifies the base weights it was trained on
    (:meth:`VILoRALinear.base_fingerprint`), so that the adapters are not loaded onto
    other weights by mistake. The base weights themselves are not stored.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> model = vi.add_lora(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
    ...                     rank=2)
    >>> sorted(vi.adapter_state_dict(model))[:4]  # doctest: +NORMALIZE_WHITESPACE
    ['0.base_fingerprint', '0.lora_A._weight_log_std', '0.lora_A._weight_mean',
     '0.lora_B.weight']
    >>> sum(v.numel() for v in vi.adapter_state_dict(model).values())  # the base: 195
    142
    """
    state = {
        name: parameter.detach()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    for path, adapter in _adapters(model).items():
        for name, buffer in adapter.named_buffers():
            if not name.startswith("base."):
                state[_key(path, name)] = buffer.detach()
        state[_key(path, _FINGERPRINT)] = adapter.base_fingerprint()
    return state


def load_adapter_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load what :func:`adapter_state_dict` saved into a model with the same adapters.

    Build the model as for training (the pretrained weights, then :func:`add_lora`
    with the same arguments), then load. Every trainable entry of ``model`` must be in
    ``state`` and every entry of ``state`` in ``model``.

    Raises
    ------
    ValueError
        When an adapter's base weights differ from those it was trained on (by their
        fingerprint), or entries are missing or unexpected (they are named).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> def build():
    ...     torch.manual_seed(0)   # the same pretrained weights
    ...     net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    ...     return vi.add_lora(net, rank=2)
    >>> trained = build()
    >>> with torch.no_grad():
    ...     _ = trained[2].lora_B.weight.fill_(0.5)
    >>> restored = build()
    >>> vi.load_adapter_state_dict(restored, vi.adapter_state_dict(trained))
    >>> torch.equal(restored[2].lora_B.weight, trained[2].lora_B.weight)
    True
    """
    adapters = _adapters(model)
    fingerprints = {}
    entries = {}
    for key, value in state.items():
        path, _, leaf = key.rpartition(".")
        if leaf == _FINGERPRINT:
            fingerprints[path] = value
        else:
            entries[key] = value
    for path, value in fingerprints.items():
        if path not in adapters:
            raise ValueError(
                f"load_adapter_state_dict: state has adapter {path!r}, but "
                f"{type(model).__name__} has no adapter there (it has {sorted(adapters)})"
            )
        expected = adapters[path].base_fingerprint()
        if value.shape != expected.shape or not torch.allclose(
            value.to(expected), expected, rtol=1e-9, atol=1e-12
        ):
            raise ValueError(
                f"load_adapter_state_dict: the base weights of adapter {path!r} differ "
                "from those the adapters were trained on"
            )
    wanted = set(adapter_state_dict(model)) - {_key(p, _FINGERPRINT) for p in adapters}
    present = model.state_dict()
    missing = sorted(wanted - set(entries))
    unexpected = sorted(set(entries) - set(present))
    if missing or unexpected:
        raise ValueError(
            f"load_adapter_state_dict: state does not fit {type(model).__name__}: "
            f"missing {missing}, unexpected {unexpected}"
        )
    shapes = [
        f"{key}: {tuple(value.shape)} in state, {tuple(present[key].shape)} in the model"
        for key, value in entries.items()
        if value.shape != present[key].shape
    ]
    if shapes:  # (checked before anything is loaded)
        raise ValueError(
            "load_adapter_state_dict: entries of other shapes (another rank?): "
            + "; ".join(shapes)
        )
    model.load_state_dict(entries, strict=False)
