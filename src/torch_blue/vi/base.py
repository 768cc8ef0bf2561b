"""``VIModule``: the base of every Bayesian layer and model."""

import warnings
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from itertools import chain
from numbers import Integral
from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.nn import Module, Parameter, init

from ._stacked import stacked_call
from .distributions import Prior, VariationalDistribution
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .estimators import EstimatorLayer
from .sampling import SamplingState, current_state, mean_weights_enabled, sampled_call
from .utils.checks import check_bool
from .utils.common_types import PriorSpec, VariationalSpec
from .utils.errors import NoVariablesError, ShapeError, UnsupportedDistributionError
from .utils.init import fixed_
from .utils.precision import HALF_DTYPES, widened
from .utils.vi_return import VIReturn

__all__ = ["TORCH_TWINS", "RandomVariable", "VIModule", "named_random_variables"]

_VariableShapes = Mapping[str, Optional[tuple[int, ...]]]

#: ``torch.nn`` class -> its ``VIModule`` twin, filled by ``VIModule._torch_twin``.
TORCH_TWINS: dict[type[Module], type["VIModule"]] = {}

#: Draws of one variable outside a sampled forward, with gradients and without
#: :meth:`VIModule.gather_log_probs`, after which a warning says that
#: their graphs are being kept.
MANUAL_DRAWS_WARNING = 1000


class VIModule(Module):
    r"""Base class of Bayesian modules trained with variational inference.

    A ``VIModule`` declares *random variables* (weights drawn from a variational
    distribution) by name and shape in ``variable_shapes``; it creates their
    variational parameters itself, as ``nn.Parameter``\ s named
    ``_{variable}_{parameter}`` (e.g. ``_weight_mean``, ``_weight_log_std``). Inside
    ``forward``, reading ``self.<variable>`` draws a fresh sample (``None`` for a
    variable declared with shape ``None``). Write ``forward`` for one sample, exactly
    as for ``torch.nn``.

    The outermost ``VIModule`` of a call takes ``samples=S`` (default 10), runs the
    forward for S weight draws at once and returns a
    :class:`~torch_blue.vi.VIReturn` with a leading sample dimension and the weights'
    log-probabilities. "Outermost" is decided at call time: a layer on its own, a
    layer inside any other ``VIModule`` and a model nested in another model all
    behave as expected.

    Parameters
    ----------
    variable_shapes : Mapping[str, tuple[int, ...] | None], optional
        Random variables and their shapes; ``None`` for a container without own
        variables.
    variational_distribution : VariationalDistribution or sequence of them
        One for all variables or one per variable (in ``variable_shapes`` order). Each
        variable gets its own copy. Default: :class:`MeanFieldNormal`.
    prior : Prior or sequence of them
        Likewise for the priors. Default: standard :class:`MeanFieldNormal`.
    rescale_prior : bool, default: False
        Scale the priors to the spread of the Kaiming initialisation
        (:meth:`Prior.kaiming_rescale`).
    kaiming_initialization : bool, default: True
        Scale initial variational scales by :math:`1/\sqrt{\mathrm{fan}_\mathrm{in}}`.
    prior_initialization : bool, default: False
        Initialise the variational parameters from the prior instead.
    return_log_probs : bool, default: True
        Record the weights' log-probabilities (needed by
        :class:`~torch_blue.vi.KullbackLeiblerLoss`). Switch off to deploy.
    device, dtype
        Factory arguments for the parameters, as in ``torch.nn``.
    convert_overwrite : bool, default: False
        Skip ``nn.Module.__init__`` (for converting an existing module in place).

    Examples
    --------
    A custom Bayesian layer, written for one sample:

    >>> import torch
    >>> from torch_blue.vi import VIModule
    >>> class BayesianProjection(VIModule):
    ...     def __init__(self, features, rank):
    ...         super().__init__(variable_shapes={"basis": (rank, features)})
    ...     def forward(self, x):
    ...         return x @ self.basis.T
    >>> out = BayesianProjection(3, 2)(torch.ones(5, 3), samples=4)
    >>> out.shape, out.log_probs.shape
    (torch.Size([4, 5, 2]), torch.Size([4, 2]))
    """

    _return_log_probs: bool = True
    _reuse_draws: bool = False

    #: The ``torch.nn`` class this layer mirrors. Setting it in a class body registers
    #: the class as that module's twin for :func:`~torch_blue.vi.convert_to_vimodule`
    #: and :func:`~torch_blue.vi.to_deterministic`. A twin names its random variables,
    #: other parameters, buffers and submodules exactly like the ``torch.nn`` module's
    #: state dict, so weights map by name.
    _torch_twin: ClassVar[Optional[type[Module]]] = None
    #: The constructor arguments a twin shares with its ``torch.nn`` module, stored
    #: under the same attribute names on both; ``"bias"`` stands for whether the
    #: layer has a bias. Both conversions (:meth:`_from_torch`, :meth:`_to_torch`)
    #: are derived from it; a layer overrides them only for what names cannot say.
    _twin_arguments: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        twin = cls.__dict__.get("_torch_twin")
        if twin is not None:
            TORCH_TWINS[twin] = cls

    @classmethod
    def _from_torch(cls, module: Module, **vikwargs: Any) -> "VIModule":
        """Build this twin with the configuration of the ``torch.nn`` ``module``.

        The variational parameters are freshly initialised; the converter copies
        weights by name afterwards when asked to.
        """
        if not cls._twin_arguments:
            raise NotImplementedError(f"{cls.__name__} cannot be built from a torch module")
        kwargs = {name: getattr(module, name) for name in cls._twin_arguments}
        if "bias" in kwargs and not isinstance(kwargs["bias"], bool):
            kwargs["bias"] = kwargs["bias"] is not None  # a parameter or None
        floating = (b for b in module.buffers(recurse=False) if b.is_floating_point())
        reference = next(chain(module.parameters(recurse=False), floating), None)
        if reference is not None:
            kwargs.update(device=reference.device, dtype=reference.dtype)
        return cls(**kwargs, **vikwargs)

    def _has_bias(self) -> bool:
        """Whether the ``torch.nn`` twin gets a bias (``"bias"`` twin argument)."""
        return self.variational_distribution.get("bias") is not None

    def _factory_kwargs(self) -> dict[str, Any]:
        """``device`` and ``dtype`` of this module's first parameter (or defaults)."""
        parameter = next(self.parameters(), None)
        if parameter is None:
            return {"device": None, "dtype": None}
        return {"device": parameter.device, "dtype": parameter.dtype}

    def _to_torch(self) -> Module:
        """Build the ``torch.nn`` twin with this layer's configuration.

        Its parameter values do not matter: :func:`~torch_blue.vi.to_deterministic`
        fills them (and the buffers) by name afterwards.
        """
        if self._torch_twin is None or not self._twin_arguments:
            raise NotImplementedError(f"{type(self).__name__} has no torch.nn twin")
        kwargs = {
            name: getattr(self, name) for name in self._twin_arguments if name != "bias"
        }
        if "bias" in self._twin_arguments and not self._has_bias():
            kwargs["bias"] = False  # passed only when off: old torch lacks some
        return self._torch_twin(**kwargs, **self._factory_kwargs())

    def _to_deterministic(self) -> Optional[Module]:
        """A plain module for :func:`~torch_blue.vi.to_deterministic`, or ``None``.

        ``None`` (the default) lets the converter derive it from the twin or the
        methods. A layer whose mean network is best written differently overrides
        this (adapters merge their mean update into the base weights).
        """
        return None

    def __init__(
        self,
        variable_shapes: Optional[_VariableShapes] = None,
        variational_distribution: VariationalSpec = DEFAULT_VARIATIONAL_DISTRIBUTION,
        prior: PriorSpec = DEFAULT_PRIOR,
        rescale_prior: bool = False,
        kaiming_initialization: bool = True,
        prior_initialization: bool = False,
        return_log_probs: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        convert_overwrite: bool = False,
    ) -> None:
        if not convert_overwrite:
            super().__init__()
        self._return_log_probs = check_bool(
            type(self).__name__, "return_log_probs", return_log_probs
        )
        # variable -> [sum of (log p, log q), draws, draws with a graph] outside a call
        self._manual_log_probs: dict[str, list] = {}
        if variable_shapes is None:
            return
        shapes = self._check_variable_shapes(variable_shapes)
        names = tuple(shapes)
        absent = tuple(name for name in names if shapes[name] is None)
        variational = self._per_variable(
            "variational_distribution",
            variational_distribution,
            names,
            VariationalDistribution,
            absent,
        )
        priors = self._per_variable("prior", prior, names, Prior, absent)
        self._check_required_parameters(variational, priors)
        self._kaiming_init = bool(kaiming_initialization)
        self._prior_init = bool(prior_initialization)
        for name in names:
            if shapes[name] is None:
                variational[name] = None
                priors[name] = None
                continue
            for parameter in variational[name].distribution_parameters:
                self.register_parameter(
                    self.variational_parameter_name(name, parameter),
                    Parameter(torch.empty(shapes[name], device=device, dtype=dtype)),
                )
        # Plain dicts (not submodules): distributions are configuration, and keeping
        # them out of the state dict keeps checkpoints compatible with upstream.
        self.variational_distribution = variational
        self.prior = priors
        if rescale_prior:
            fan_in = self._calculate_fan_in()
            for p in priors.values():
                if p is not None:
                    p.kaiming_rescale(fan_in)
        self.reset_variational_parameters()

    # ------------------------------------------------------------------ validation
    def _check_required_parameters(self, variational: dict, priors: dict) -> None:
        """Each prior finds the variational parameters it needs (``_required_...``)."""
        for name, prior in priors.items():
            missing = set(prior._required_parameters) - set(
                variational[name].distribution_parameters
            )
            if missing:
                raise UnsupportedDistributionError(
                    f"{type(self).__name__}: prior {type(prior).__name__} of "
                    f"variable {name!r} needs the variational parameters "
                    f"{sorted(missing)}, which {type(variational[name]).__name__} lacks"
                )

    def _check_variable_shapes(self, variable_shapes: Any) -> dict:
        owner = type(self).__name__
        if not isinstance(variable_shapes, Mapping):
            raise TypeError(
                f"{owner}: variable_shapes must be a mapping from names to shapes, got "
                f"{type(variable_shapes).__name__}"
            )
        shapes = {}
        for name, shape in variable_shapes.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"{owner}: random variable names must be identifiers, got {name!r}"
                )
            if hasattr(type(self), name) or name in self.__dict__:
                raise ValueError(
                    f"{owner}: random variable {name!r} would shadow an existing attribute"
                )
            if shape is not None:
                if isinstance(shape, int) or not isinstance(
                    shape, (tuple, list, torch.Size)
                ):
                    raise ShapeError(
                        f"{owner}: the shape of random variable {name!r} must be a tuple "
                        f"of positive ints or None, got {shape!r}"
                    )
                if not all(
                    isinstance(n, Integral) and not isinstance(n, bool) and n > 0
                    for n in shape
                ):
                    raise ShapeError(
                        f"{owner}: the shape of random variable {name!r} must contain "
                        f"positive ints, got {tuple(shape)!r}"
                    )
                shape = tuple(int(n) for n in shape)
            shapes[name] = shape
        return shapes

    def _per_variable(
        self,
        argument: str,
        value: Any,
        names: tuple[str, ...],
        role: type,
        absent: tuple[str, ...] = (),
    ) -> dict:
        """One copy of ``value`` (or of its entry) per variable; ``absent`` are None."""
        owner = type(self).__name__
        if isinstance(value, (tuple, list)):
            if len(value) != len(names):
                note = (
                    f" ({', '.join(map(repr, absent))} switched off here, but still one "
                    "entry each)"
                    if absent
                    else ""
                )
                raise ValueError(
                    f"{owner}: {argument} has {len(value)} entries but the module "
                    f"declares {len(names)} random variables {names}{note}; give one "
                    "for all or one each"
                )
            values = list(value)
        else:
            values = [value] * len(names)
        for name, dist in zip(names, values):
            if not isinstance(dist, role):
                raise UnsupportedDistributionError(
                    f"{owner}: {type(dist).__name__} cannot be used as {argument} "
                    f"(variable {name!r}): it is not a {role.__name__}"
                )
        # Every variable owns its copy, so rescaling one never touches another.
        return {name: deepcopy(dist) for name, dist in zip(names, values)}

    # ------------------------------------------------------------------ variables
    def named_random_variables(self) -> Iterator["RandomVariable"]:
        """Every declared random variable in this module and those inside it.

        Like ``named_parameters``: yields a :class:`RandomVariable` (``name``,
        ``path``, ``module``, ``variable``) for each variable that is not switched
        off (``None``), the module's own first.

        Examples
        --------
        >>> from torch_blue.vi import VILinear, VISequential
        >>> model = VISequential(VILinear(2, 3), VILinear(3, 1, bias=False))
        >>> [v.name for v in model.named_random_variables()]
        ['0.weight', '0.bias', '1.weight']
        """
        return named_random_variables(self)

    @property
    def random_variables(self) -> Optional[tuple[str, ...]]:
        """Names of the random variables, or ``None`` for a container."""
        variational = self.__dict__.get("variational_distribution")
        return None if variational is None else tuple(variational)

    @staticmethod
    def variational_parameter_name(variable: str, variational_parameter: str) -> str:
        """Name of a variational parameter: ``_{variable}_{variational_parameter}``.

        Examples
        --------
        >>> VIModule.variational_parameter_name("weight", "log_std")
        '_weight_log_std'
        """
        return f"_{variable}_{variational_parameter}"

    def _distribution(self, variable: str) -> Optional[VariationalDistribution]:
        variational = self.__dict__.get("variational_distribution")
        if variational is None:
            raise NoVariablesError(f"{type(self).__name__} has no random variables")
        if variable not in variational:
            raise NoVariablesError(
                f"{type(self).__name__} has no random variable {variable!r}; it has "
                f"{tuple(variational)}"
            )
        return variational[variable]

    def get_variational_parameters(self, variable: str) -> list[Tensor]:
        """The variational parameters of ``variable``, in the distribution's order."""
        dist = self._distribution(variable)
        if dist is None:
            raise NoVariablesError(
                f"{type(self).__name__}: random variable {variable!r} is None and has "
                "no parameters"
            )
        found = self._parameters  # (direct: getattr goes through two __getattr__s)
        name = self.variational_parameter_name
        names = [name(variable, p) for p in dist.distribution_parameters]
        return [found[n] if n in found else getattr(self, n) for n in names]

    def _prior_hyperparameters(self, variable: str) -> tuple[Tensor, ...]:
        prior = self.prior[variable]
        return tuple(
            getattr(self, self.variational_parameter_name(variable, p))
            for p in prior._required_parameters
        )

    def get_log_probs(self, sample: Tensor, variable: str) -> Tensor:
        """``(2,)`` tensor: summed prior and variational log-density of ``sample``."""
        dist = self._distribution(variable)
        if dist is None:
            raise NoVariablesError(
                f"{type(self).__name__}: random variable {variable!r} is None"
            )
        parameters = widened(self.get_variational_parameters(variable))
        sample = widened((sample,))[0]
        log_q = dist.variational_log_prob(sample, parameters).sum()
        log_p = (
            self.prior[variable]
            .prior_log_prob(sample, widened(self._prior_hyperparameters(variable)))
            .sum()
        )
        return torch.stack([log_p, log_q])

    def sample_variable(self, variable: str) -> Optional[Tensor]:
        """Draw ``variable`` once and record its log-probabilities.

        Inside a sampled forward the log-probabilities go to the running call;
        outside one they are kept on the module until :meth:`gather_log_probs`.
        With :attr:`reuse_draws`, accesses after the first within one sampled call
        return the first draw (and record nothing more).
        """
        dist = self._distribution(variable)
        if dist is None:
            return None
        if mean_weights_enabled():
            return dist.point_estimate(tuple(self.get_variational_parameters(variable)))
        state = current_state()
        if state is None or not self._reuse_draws:
            return self._draw(dist, variable, state)
        key = (id(self), variable)
        if key not in state.draws:
            state.draws[key] = self._draw(dist, variable, state)
        return state.draws[key]

    def _draw(
        self,
        dist: VariationalDistribution,
        variable: str,
        state: Optional[SamplingState],
    ) -> Tensor:
        """A fresh draw of ``variable``, its log-probabilities recorded if asked.

        ``state`` is the running sampled forward's (``None`` outside one).
        """
        parameters = tuple(self.get_variational_parameters(variable))
        record = state.record if state is not None else self._return_log_probs
        if not record:
            return dist.sample(parameters)
        hyperparameters = self._prior_hyperparameters(variable)
        dtype = parameters[0].dtype
        if dtype in HALF_DTYPES:
            # Half-precision weights are drawn and scored in float32: the sums over
            # a layer's weights overflow float16 (and lose most digits in bfloat16).
            parameters, hyperparameters = widened(parameters), widened(hyperparameters)
        sample, log_probs = dist.sample_and_log_probs(
            parameters, self.prior[variable], hyperparameters
        )
        self._record_log_probs(variable, log_probs)
        return sample.to(dtype) if dtype in HALF_DTYPES else sample

    def _draw_stacked(self, variable: str, samples: int) -> Optional[Tensor]:
        """``samples`` draws of ``variable`` at once, ``(S, *shape)``, recorded.

        The weight access of a layer on the stacked path
        (:class:`~torch_blue.vi.sampling.Stacked`), inside a running sampled
        forward: the same numbers as S accesses in the ``vmap`` lanes, with the
        ``(S, 2)`` log-probabilities added to the running call.
        """
        dist = self._distribution(variable)
        if dist is None:
            return None
        parameters = tuple(self.get_variational_parameters(variable))
        state = current_state()
        if not state.record:
            return dist.stacked_sample(parameters, samples)
        sample, log_probs = dist.stacked_sample_and_log_probs(
            parameters, self.prior[variable], self._prior_hyperparameters(variable), samples
        )
        state.add(self, variable, log_probs)
        return sample

    def _record_log_probs(self, variable: str, log_probs: Tensor) -> None:
        """Add ``(log p, log q)`` of one access of ``variable`` to the running call.

        Outside a sampled forward it is added to this module's running sum for
        ``variable`` (a sum and a count: a fixed number of tensors however often
        the variable is read), which :meth:`gather_log_probs` averages.
        """
        state = current_state()
        if state is not None:
            state.add(self, variable, log_probs)
            return
        record = self._manual_log_probs.get(variable)
        if record is None:
            self._manual_log_probs[variable] = [log_probs, 1, log_probs.requires_grad]
            return
        record[0] = record[0] + log_probs
        record[1] += 1
        if not log_probs.requires_grad:
            return
        record[2] = graphs = record[2] + 1  # draws with a graph
        if graphs == MANUAL_DRAWS_WARNING:
            warnings.warn(
                f"{type(self).__name__}: {graphs} draws of {variable!r} outside a "
                "sampled forward without gather_log_probs()/reset_log_probs(); each "
                "keeps its autograd graph until then. Read weights for inspection "
                "under torch.no_grad() or with return_log_probs = False.",
                stacklevel=4,
            )

    def __getattr__(self, name: str) -> Any:
        variational = self.__dict__.get("variational_distribution")
        if variational is not None and name in variational:
            return self.sample_variable(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        variational = self.__dict__.get("variational_distribution")
        if variational is not None and name in variational:
            raise AttributeError(
                f"{type(self).__name__}: {name!r} is a random variable and is drawn on "
                f"every access; set its variational parameters (e.g. "
                f"{self.variational_parameter_name(name, 'mean')!r}) instead"
            )
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ init
    def _calculate_fan_in(self) -> int:
        shapes = [
            getattr(self, self.variational_parameter_name(v, d.primary_parameter)).shape
            for v, d in self.variational_distribution.items()
            if d is not None
        ]
        if not shapes:
            raise NoVariablesError(f"{type(self).__name__}: all random variables are None")
        for shape in shapes:
            if len(shape) >= 2:
                fan_in, _ = init._calculate_fan_in_and_fan_out(
                    torch.empty(shape, device="meta")
                )
                return fan_in
        warnings.warn(
            f"{type(self).__name__}: only one-dimensional random variables, using "
            "fan_in = 1 for initialisation and prior rescaling",
            stacklevel=3,
        )
        return 1

    def reset_variational_parameters(self) -> None:
        """Re-initialise the variational parameters of this module's variables."""
        if self.random_variables is None:
            raise NoVariablesError(
                f"{type(self).__name__} has no random variables to reset"
            )
        fan_in = self._calculate_fan_in()
        for variable, dist in self.variational_distribution.items():
            if dist is not None:
                self._initialise_variable(variable, fan_in, self._kaiming_init)

    def _initialise_variable(
        self, variable: str, fan_in: int, kaiming_scaling: bool = True
    ) -> None:
        """Give ``variable`` its distribution's initial values, or the prior's.

        The distributions compute the values
        (:meth:`~torch_blue.vi.distributions.VariationalDistribution.initial_values`,
        :meth:`~torch_blue.vi.distributions.Prior.variational_values`); the module
        assigns them.
        """
        dist = self.variational_distribution[variable]
        reference = self.get_variational_parameters(variable)[0]
        values = dist.initial_values(
            tuple(reference.shape),
            fan_in,
            kaiming_scaling,
            device=reference.device,
            dtype=reference.dtype,
        )
        self._assign_variational_values(variable, values)
        if self._prior_init:
            self._assign_prior_values(variable)

    def _assign_prior_values(self, variable: str, prior: Optional[Prior] = None) -> None:
        """Put ``variable``'s variational distribution where ``prior`` (its own) is."""
        prior = self.prior[variable] if prior is None else prior
        try:
            values = prior.variational_values(
                self.variational_distribution[variable],
                tuple(self.get_variational_parameters(variable)),
            )
        except UnsupportedDistributionError as error:
            raise UnsupportedDistributionError(
                f"{error} (module {type(self).__name__}, variable {variable!r})"
            ) from error
        self._assign_variational_values(variable, values)

    def _assign_variational_values(self, variable: str, values: Sequence[Tensor]) -> None:
        """Copy ``values`` into ``variable``'s variational parameters, in order."""
        parameters = self.get_variational_parameters(variable)
        if len(values) != len(parameters):
            raise ValueError(
                f"{type(self).__name__}: variable {variable!r} has {len(parameters)} "
                f"variational parameters, got {len(values)} values"
            )
        for parameter, value in zip(parameters, values):
            fixed_(parameter, value.detach())

    # ------------------------------------------------------------------ log-probs
    @property
    def return_log_probs(self) -> bool:
        """Whether calls record and return the weights' log-probabilities.

        Setting it sets it for every ``VIModule`` inside too.
        """
        return self._return_log_probs

    @return_log_probs.setter
    def return_log_probs(self, mode: bool) -> None:
        check_bool(type(self).__name__, "return_log_probs", mode)
        for module in self.modules():
            if isinstance(module, VIModule):
                module._return_log_probs = mode

    @property
    def reuse_draws(self) -> bool:
        """Whether every access of a random variable within one call reads one draw.

        By default every access draws afresh ("every access samples"), so a layer
        applied twice in one forward uses two different weights of the same sample.
        With ``reuse_draws = True`` the first access of a variable in a sampled call
        draws it (one draw per sample, recording its log-probabilities once) and
        later accesses in the same call return that draw: a hand-written recurrent
        loop over a cell, weight tying, or a layer applied at several scales then
        share one weight per sample, as in Fortunato et al.'s Bayesian RNNs. Draws
        outside a sampled call are not reused. Setting it sets it for every
        ``VIModule`` inside too; it needs ``estimator="reparameterization"`` (the
        other estimators draw no weights).

        Examples
        --------
        >>> import torch
        >>> from torch_blue.vi import VILinear, VIModule
        >>> class Twice(VIModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.cell = VILinear(3, 3)
        ...     def forward(self, x):
        ...         return self.cell(x) - self.cell(x)
        >>> model = Twice()
        >>> bool((model(torch.ones(2, 3), samples=4) == 0).all())
        False
        >>> model.reuse_draws = True
        >>> bool((model(torch.ones(2, 3), samples=4) == 0).all())
        True
        """
        return self._reuse_draws

    @reuse_draws.setter
    def reuse_draws(self, mode: bool) -> None:
        check_bool(type(self).__name__, "reuse_draws", mode)
        modules = [m for m in self.modules() if isinstance(m, VIModule)]
        if mode:
            for module in modules:  # validate all before changing any
                estimator = module.__dict__.get("_estimator", "reparameterization")
                if estimator != "reparameterization":
                    raise ValueError(
                        f"{type(module).__name__}: reuse_draws needs "
                        f"estimator='reparameterization', got {estimator!r} (it draws "
                        "no weights to reuse)"
                    )
        for module in modules:
            module._reuse_draws = mode

    @property
    def estimator(self) -> Optional[str]:
        """Gradient estimator of this layer (see :mod:`torch_blue.vi.estimators`).

        ``None`` for modules without one (containers, custom modules). Setting it on a
        container sets it on every layer inside that supports estimators.
        """
        return self.__dict__.get("_estimator")

    @estimator.setter
    def estimator(self, estimator: str) -> None:
        layers = [m for m in self.modules() if isinstance(m, EstimatorLayer)]
        if not layers:
            raise NoVariablesError(
                f"{type(self).__name__}: no layer inside supports gradient estimators"
            )
        for layer in layers:  # validate all before changing any
            layer._check_estimator(estimator)
        for layer in layers:
            layer._estimator = estimator

    def gather_log_probs(self) -> Tensor:
        """Log-probabilities of the draws made outside a sampled forward, ``(2,)``.

        Sums over modules and variables the mean over accesses, then clears them.
        """
        total = None
        for module in self.modules():
            records = module.__dict__.get("_manual_log_probs")
            if not records:
                continue
            for value, count, _ in records.values():
                term = value if count == 1 else value / count
                total = term if total is None else total + term
            records.clear()
        if total is None:
            raise NoVariablesError(
                f"{type(self).__name__}: no random variable was drawn since the last "
                "gather_log_probs/reset_log_probs"
            )
        return total

    def reset_log_probs(self) -> None:
        """Forget the log-probabilities of draws made outside a sampled forward."""
        for module in self.modules():
            records = module.__dict__.get("_manual_log_probs")
            if records:
                records.clear()

    # ------------------------------------------------------------------ calling
    def forward(self, *input_: Optional[Tensor]) -> Tensor:
        """Compute the output for one weight sample. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        if current_state() is not None:
            if "samples" in kwargs or "chunk_size" in kwargs:
                raise TypeError(
                    f"{type(self).__name__}: samples= and chunk_size= can only be given "
                    "to the outermost module of a call"
                )
            return super().__call__(*args, **kwargs)
        samples = kwargs.pop("samples", None)
        chunk_size = kwargs.pop("chunk_size", None)
        return self._sampled(args, kwargs, samples, False, chunk_size)

    def sampled_forward(
        self,
        *input_: Optional[Tensor],
        samples: Optional[int] = None,
        sampled_input: bool = False,
        chunk_size: Optional[int] = None,
        **kwargs: Any,
    ) -> Union[VIReturn, tuple[VIReturn, ...]]:
        """Run the module for ``samples`` weight draws and return a ``VIReturn``.

        Calling the module (``model(x, samples=S)``) does this for the outermost
        module; call it directly to pass inputs that already carry the sample
        dimension (``sampled_input=True``).

        Parameters
        ----------
        *input_ : Tensor
            Positional inputs.
        samples : int, optional
            Number of weight draws S. Default: the sample count of sampled inputs,
            else 10. Given together with sampled inputs, it must match them.
        sampled_input : bool, default: False
            Whether positional tensors already have a leading sample dimension.
        chunk_size : int, optional
            Process the samples in chunks of this many to bound the memory of
            intermediate results (also accepted by ``model(x, chunk_size=...)``).
        **kwargs
            Keyword arguments, shared by all samples.
        """
        if current_state() is not None:
            raise RuntimeError(
                f"{type(self).__name__}.sampled_forward was called inside a sampled "
                "forward; call the module instead"
            )
        return self._sampled(input_, kwargs, samples, sampled_input, chunk_size)

    def _stacks_children(self) -> bool:
        """Whether calls may run the children on the stacked path (:mod:`._stacked`).

        Containers whose ``forward`` only chains their children say yes
        (:class:`VISequential`); the stacked path still checks every child.
        """
        return False

    def _sampled(
        self,
        args: tuple,
        kwargs: dict,
        samples: Optional[int],
        sampled_input: bool,
        chunk_size: Optional[int] = None,
    ) -> Any:
        if self._stacks_children():
            output = stacked_call(self, args, kwargs, samples, sampled_input, chunk_size)
            if output is not NotImplemented:
                return output
        return sampled_call(
            self,
            super().__call__,
            args,
            kwargs,
            samples,
            sampled_input,
            self._return_log_probs,
            chunk_size,
        )


class RandomVariable(NamedTuple):
    """One random variable of a model, as :func:`named_random_variables` lists it."""

    #: ``"path.variable"``: the variable's key in the deterministic twin's state dict.
    name: str
    #: The owning module's name in the model (``""`` for the model itself).
    path: str
    module: VIModule
    variable: str


def named_random_variables(model: Module) -> Iterator[RandomVariable]:
    """Every declared random variable of ``model`` (not those switched off, ``None``).

    Examples
    --------
    >>> from torch import nn
    >>> from torch_blue.vi import VILinear
    >>> model = nn.Sequential(VILinear(2, 3), nn.ReLU(), VILinear(3, 1, bias=False))
    >>> [v.name for v in named_random_variables(model)]
    ['0.weight', '0.bias', '2.weight']
    """
    for path, module in model.named_modules():
        if not isinstance(module, VIModule) or module.random_variables is None:
            continue
        for variable, dist in module.variational_distribution.items():
            if dist is not None:
                name = f"{path}.{variable}" if path else variable
                yield RandomVariable(name, path, module, variable)
