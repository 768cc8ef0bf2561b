r"""Gradient estimators of the Bayesian layers.

A layer with mean-field Normal weights can propagate its randomness in three ways
(all give outputs with the same distribution per example, and unbiased ELBO
gradients):

``"reparameterization"`` (default)
    Draw the weights, :math:`W_s = \mu + \sigma \odot \epsilon_s`, once per sample
    and share them across the batch; the KL term is estimated from the drawn weights.
    Works with every variational distribution and prior. When the model runs with
    ``return_log_probs = False`` (prediction), dense Normal layers on
    ``(batch, features)`` inputs sample the pre-activations instead where that draws
    clearly fewer random numbers (at least :data:`LOCAL_NOISE_MIN_SAVING` fewer over
    the samples of a call; for embeddings, a lookup of fewer tokens than the table
    has rows): the per-example predictive distribution is exactly the same.
    Convolutions, sequences and embeddings keep drawing weights, because positions of
    one example share a draw (sampling per position would change the predictive
    distribution).
``"local_reparameterization"`` (Kingma, Salimans & Welling 2015)
    Sample the pre-activations :math:`\mathcal N(x\mu^\top, x^2 (\sigma^2)^\top)`
    directly, independently per example. Much cheaper (no weight draws) and
    lower-variance gradients. For a dense layer on ``(batch, features)`` it is exact;
    on convolutions and sequences the noise is independent per position too, the
    usual approximation (Kingma et al. 2015 apply it to dense layers). Its less
    noisy gradients carry the posterior closer to the ELBO's optimum, which at
    ``heat`` 1 on networks with many more weights than examples fits the data less:
    a tighter bound, but lower test accuracy than the other two (see the docs page
    on defaults).
``"flipout"`` (Wen et al. 2018)
    Draw one weight perturbation per sample and decorrelate it across the examples
    of the batch with random sign flips: :math:`x\mu^\top + ((x \odot r)(\sigma
    \odot \epsilon)^\top) \odot s`. Lower-variance gradients at the cost of
    weight sampling. The samples of one example are independent.
``"shared_flipout"``
    Flipout as Wen et al. apply it to a minibatch, with the S samples of each example
    counted as rows of the batch: one perturbation :math:`\sigma \odot \epsilon` per
    forward call (per chunk with ``chunk_size``), shared by all S·B rows and
    decorrelated by their signs. It draws the noise of one weight set instead of S, and
    a convolution's perturbation becomes one plain convolution of the stacked batch
    instead of S grouped ones: close to the cost of local reparameterisation on dense
    layers and below it on convolutions (see the benchmarks page). Each sample is still
    distributed exactly as a weight draw and the gradients stay unbiased, but the
    samples of one example are only uncorrelated (before the first nonlinearity), not
    independent, which costs gradient variance where layers are narrow.
    ``scripts/benchmarks/flipout_sharing.py`` measures it (S = 10, batch 128, noise of
    the top layer's mean gradients): 1.014 +- 0.002 times ``"flipout"``'s on a
    784-400-400-10 MLP on Fashion-MNIST, 2.06 +- 0.09 times on a 10-50-1 regression
    network on the diabetes data (still 7 times below weight sampling's there).
    Prefer it for wide layers and convolutions. Sharing is for gradients only: with
    ``return_log_probs = False`` (prediction) every sample draws its own perturbation,
    as with ``"flipout"``, so predictive samples stay independent.

The last three draw no weights, so their layers contribute the closed-form KL
divergence: they record the expected log-densities
:math:`(\mathbb E_q \log p, \mathbb E_q \log q) = (-H[q] - \mathrm{KL}, -H[q])`,
whose difference is exactly the KL term both losses need.
"""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ._fused_linear import local_linear, preactivation_std
from .distributions import MeanFieldNormal
from .distributions._fused_normal import ScaledNoise, SharedNoise
from .distributions.base import is_constant_scalar
from .distributions.kl import has_closed_form_kl, kl_divergence
from .functional.densities import LOG_2PI
from .functional.linear import flat_linear
from .sampling import Stacked, current_state, fused_pays_off, mean_weights_enabled
from .utils.errors import UnsupportedDistributionError
from .utils.precision import widened
from .utils.use_norm_constants import norm_constants_enabled

if TYPE_CHECKING:  # pragma: no cover
    from .base import VIModule

__all__ = [
    "ESTIMATORS",
    "FLIPOUT_ESTIMATORS",
    "EstimatorLayer",
    "check_estimator",
    "expected_log_probs",
    "flat_linear",
]

ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout", "shared_flipout")
#: The estimators that perturb weights with random signs.
FLIPOUT_ESTIMATORS = ("flipout", "shared_flipout")

Op = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]

#: Fewest random numbers that sampling the pre-activations instead of the weights must
#: save in prediction (over the samples of a call) to pay for its extra operations
#: (the measurement is on the benchmarks page, "Measurements behind code paths").
LOCAL_NOISE_MIN_SAVING = 2**14


def normal_layer(module: "VIModule") -> bool:
    """Whether every random variable of ``module`` is mean-field Normal (or None)."""
    return all(
        d is None or type(d) is MeanFieldNormal
        for d in module.variational_distribution.values()
    )


def check_estimator(module: "VIModule", estimator: str) -> str:
    """Validate ``estimator`` for ``module``; return it."""
    name = type(module).__name__
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"{name}: estimator must be one of {ESTIMATORS}, got {estimator!r}"
        )
    if estimator == "reparameterization":
        return estimator
    if module.__dict__.get("_reuse_draws"):
        raise ValueError(
            f"{name}: estimator {estimator!r} draws no weights to reuse; switch "
            "reuse_draws off first (it needs estimator='reparameterization')"
        )
    if not normal_layer(module):
        kinds = sorted(
            {type(d).__name__ for d in module.variational_distribution.values() if d}
        )
        raise UnsupportedDistributionError(
            f"{name}: estimator {estimator!r} needs MeanFieldNormal variational "
            f"distributions, got {kinds}"
        )
    for variable, dist in module.variational_distribution.items():
        if dist is not None and not has_closed_form_kl(module.prior[variable], dist):
            raise UnsupportedDistributionError(
                f"{name}: estimator {estimator!r} needs a closed-form KL divergence, but "
                f"none is registered for prior {type(module.prior[variable]).__name__} "
                f"of variable {variable!r}"
            )
    return estimator


def expected_log_probs(
    module: "VIModule", variable: str, parameters: Optional[tuple[Tensor, Tensor]] = None
) -> Tensor:
    r"""``(2,)``: :math:`(\mathbb E_q \log p, \mathbb E_q \log q)` of a Normal variable.

    ``parameters`` (mean, log-std) restricts it to some elements of the variable
    (e.g. an embedding without its padding row); default: all of them.
    """
    if parameters is None:
        parameters = tuple(module.get_variational_parameters(variable))
    mean, log_std = widened(parameters)  # (sums in at least float32)
    prior = module.prior[variable]
    constants = norm_constants_enabled()
    per_element = 0.5 * (1.0 + math.log(2 * math.pi)) if constants else 0.5
    neg_entropy = -log_std.sum() - per_element * log_std.numel()
    if type(prior) is MeanFieldNormal and _constant_scalars(prior):
        # The default prior: E log p = -P log s - (|mean - m|^2 + sum(std^2)) / (2 s^2)
        # (- P/2 log 2 pi), the KL's terms without the entropy, in fewer operations.
        # (The autosampled forward runs outside torch.compile, so float() is fine.)
        m, log_s = float(prior.mean), float(prior.log_std)
        centred = mean if m == 0.0 else mean - m
        spread = torch.linalg.vector_norm(centred).square() + torch.exp(2 * log_std).sum()
        offset = log_std.numel() * (log_s + (0.5 * LOG_2PI if constants else 0.0))
        log_p = spread.mul(-0.5 * math.exp(-2 * log_s)).sub(offset)
        return torch.stack([log_p, neg_entropy])
    kl = kl_divergence(prior, module.variational_distribution[variable], (mean, log_std))
    return torch.stack([neg_entropy - kl, neg_entropy])


def _constant_scalars(prior: MeanFieldNormal) -> bool:
    return is_constant_scalar(prior.mean) and is_constant_scalar(prior.log_std)


class _NormalExpectedLogProbs(torch.autograd.Function):
    r"""Summed :func:`expected_log_probs` of Normal variables under Normal priors.

    ``apply(priors, constants, mean_1, log_std_1, mean_2, log_std_2, ...)`` with
    ``priors`` the ``(m, log s)`` floats of each variable's prior. The closed form
    :math:`\mathbb E_q \log p = -\sum ((\mu - m)^2 + \sigma^2) / (2 s^2) - P \log s`
    and :math:`\mathbb E_q \log q = -\sum \log\sigma - P/2` (each less
    :math:`\tfrac P2 \log 2\pi` with normalisation constants) in a few operations,
    and their gradients :math:`2 k (\mu - m) g_p` and :math:`2 k \sigma^2 g_p - g_q`
    (:math:`k = -1/(2 s^2)`) written out: plain autograd takes several times as many
    small operations, and on a small network those decide the time of a step. The
    stacked path uses it; inside ``vmap`` (the lanes) :func:`expected_log_probs` runs.
    """

    @staticmethod
    def forward(
        ctx: Any, priors: tuple[tuple[float, float], ...], constants: bool, *tensors: Tensor
    ) -> Tensor:
        log_p = log_q = None
        offset_p = offset_q = 0.0
        per_element = 0.5 * (1.0 + LOG_2PI) if constants else 0.5
        variances = []
        for (m, log_s), mean, log_std in zip(priors, tensors[0::2], tensors[1::2]):
            centred = (mean if m == 0.0 else mean - m).reshape(-1)
            variance = torch.exp(2 * log_std)
            variances.append(variance)
            term = (
                torch.dot(centred, centred)
                .add_(variance.sum())
                .mul_(-0.5 * math.exp(-2 * log_s))
            )
            log_p = term if log_p is None else log_p.add_(term)
            log_q = -log_std.sum() if log_q is None else log_q.sub_(log_std.sum())
            offset_p += log_std.numel() * (log_s + (0.5 * LOG_2PI if constants else 0.0))
            offset_q += log_std.numel() * per_element
        ctx.priors = priors
        ctx.save_for_backward(*tensors, *variances)
        ctx.save_for_forward(*tensors, *variances)
        return torch.stack([log_p.sub_(offset_p), log_q.sub_(offset_q)])

    @staticmethod
    def jvp(
        ctx: Any, _priors: None, _constants: None, *tangents: Optional[Tensor]
    ) -> Tensor:
        """Forward-mode derivative: the backward pass's gradients dotted with tangents."""
        saved, count = ctx.saved_tensors, len(ctx.priors)
        tensors, variances = saved[: 2 * count], saved[2 * count :]
        log_p = log_q = None
        for i, (m, log_s) in enumerate(ctx.priors):
            mean, d_mean, d_log_std = tensors[2 * i], tangents[2 * i], tangents[2 * i + 1]
            scale = -math.exp(-2 * log_s)  # 2 k
            centred = (mean if m == 0.0 else mean - m).reshape(-1)
            terms = []
            if d_mean is not None:
                terms.append(torch.dot(centred, d_mean.reshape(-1)) * scale)
            if d_log_std is not None:
                flat = d_log_std.reshape(-1)
                terms.append(torch.dot(variances[i].reshape(-1), flat) * scale)
                log_q = -flat.sum() if log_q is None else log_q - flat.sum()
            for term in terms:
                log_p = term if log_p is None else log_p + term
        zero = tensors[0].new_zeros(())
        return torch.stack(
            [zero if log_p is None else log_p, zero if log_q is None else log_q]
        )

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        saved = ctx.saved_tensors
        count = len(ctx.priors)
        tensors, variances = saved[: 2 * count], saved[2 * count :]
        grad_p, grad_q = grad.unbind()
        grads: list[Optional[Tensor]] = [None, None]
        for i, (m, log_s) in enumerate(ctx.priors):
            mean, log_std = tensors[2 * i], tensors[2 * i + 1]
            variance = torch.exp(2 * log_std) if torch.is_grad_enabled() else variances[i]
            scale = grad_p * -math.exp(-2 * log_s)  # 2 k g_p
            centred = mean if m == 0.0 else mean - m
            grads.append(centred * scale)
            grads.append(torch.addcmul(-grad_q, variance, scale))
        return tuple(grads)


def summed_expected_log_probs(
    module: "VIModule", variables: tuple[str, ...]
) -> Optional[Tensor]:
    """``(2,)``: :func:`expected_log_probs` summed over ``variables``, or ``None``.

    ``None`` unless every prior is a :class:`MeanFieldNormal` with constant scalar
    parameters (the default) and no parameter is half precision; then the sum comes
    from one fused function with a written-out backward pass.
    """
    priors, tensors = [], []
    for variable in variables:
        prior = module.prior[variable]
        if type(prior) is not MeanFieldNormal or not _constant_scalars(prior):
            return None
        mean, log_std = module.get_variational_parameters(variable)
        if mean.dtype != log_std.dtype or mean.dtype not in (torch.float32, torch.float64):
            return None
        priors.append((float(prior.mean), float(prior.log_std)))
        tensors += [mean, log_std]
    return _NormalExpectedLogProbs.apply(tuple(priors), norm_constants_enabled(), *tensors)


def local_reparameterization(
    op: Op,
    x: Tensor,
    weight: tuple[Tensor, Tensor],
    bias: Optional[tuple[Tensor, Tensor]],
    spatial_dims: int = 0,
    stacked: Optional[Stacked] = None,
) -> Tensor:
    """Sample pre-activations of ``op`` (linear or convolution) with Normal weights.

    ``op`` acts on the last ``1 + spatial_dims`` dimensions of ``x`` (features, or
    channels and positions). On the stacked path (``stacked``, outside ``vmap``) an
    input shared by the samples gets noise with a leading sample dimension.
    """
    lanes = None if stacked is None else stacked.input_lanes()
    rows = math.prod(x.shape[:-1])  # examples (and positions) of one sample
    if stacked is not None and stacked.input_stacked:
        rows //= stacked.samples
    if (
        op is flat_linear
        and not torch.is_autocast_enabled(x.device.type)  # (its casting rules apply)
        and x.dtype != torch.float16  # (the plain path widens float16)
        # (the fused function saves passes over the inputs and the outputs)
        and fused_pays_off(rows * sum(weight[0].shape))
    ):
        return local_linear(x, weight, bias, lanes)
    mean = op(x, weight[0], None if bias is None else bias[0])
    std = preactivation_std(op, x, weight[1], bias, spatial_dims)
    return torch.addcmul(mean, std, standard_normal(mean, lanes))


def flipout(
    op: Op,
    x: Tensor,
    weight: tuple[Tensor, Tensor],
    bias: Optional[tuple[Tensor, Tensor]],
    spatial_dims: int,
    shared: bool = False,
    lane_op: Optional[Op] = None,
    stacked: Optional[Stacked] = None,
) -> Tensor:
    """Flipout pre-activations of ``op``.

    One weight perturbation per sample, or with ``shared`` one for all samples.
    ``lane_op`` (the same values as ``op``) applies the perturbations when they
    differ between the samples: a convolution's loop over the ``vmap`` lanes (see
    :mod:`torch_blue.vi._lane_conv`), or on the stacked path (``stacked``) a product
    with one weight set per sample. There the perturbations and the signs carry the
    sample dimension explicitly.
    """
    b_mean, b_log_std = bias if bias is not None else (None, None)
    perturb = lane_op if lane_op is not None and not shared else op
    mean = op(x, weight[0], b_mean)
    lanes = None if stacked is None else stacked.samples
    delta_w = scaled_noise(weight[1], shared, lanes)
    delta_b = None if b_log_std is None else scaled_noise(b_log_std, shared, lanes)
    trailing = (1,) * spatial_dims
    in_shape = x.shape[: x.dim() - spatial_dims]
    out_shape = mean.shape[: mean.dim() - spatial_dims]
    if stacked is not None:
        in_shape, out_shape = stacked.per_sample(in_shape), stacked.per_sample(out_shape)
    in_signs = random_signs((*in_shape, *trailing), x, lanes)
    out_signs = random_signs((*out_shape, *trailing), mean, lanes)
    return mean + perturb(x * in_signs, delta_w, delta_b) * out_signs


def standard_normal(like: Tensor, lanes: Optional[int] = None) -> Tensor:
    """Standard normal noise shaped like ``like``, or ``(lanes, *like.shape)``.

    Inside the sampled forward each ``vmap`` lane draws its own; on the stacked path
    ``lanes`` asks for all S at once, which draws the same numbers.
    """
    if lanes is None:
        return torch.randn_like(like)
    return torch.randn((lanes, *like.shape), dtype=like.dtype, device=like.device)


def scaled_noise(
    log_std: Tensor, shared: bool = False, lanes: Optional[int] = None
) -> Tensor:
    """A zero-mean Normal draw with standard deviation ``exp(log_std)``.

    Inside the sampled forward every lane draws its own, or with ``shared`` one draw
    serves all lanes (see :class:`SharedNoise`). ``lanes=S`` (the stacked path) draws
    all S at once, ``(S, *log_std.shape)``, unless ``shared``.
    """
    if shared:
        return torch.exp(log_std) * SharedNoise.apply(log_std.detach())
    noise = standard_normal(log_std, lanes)
    if fused_pays_off(log_std.numel()):
        return ScaledNoise.apply(log_std, noise)
    return torch.exp(log_std) * noise


def random_signs(
    shape: tuple[int, ...], like: Tensor, lanes: Optional[int] = None
) -> Tensor:
    """Independent random signs (+1 or -1, equally likely) of ``like``'s dtype.

    Draws 64 signs per call of the random number generator: full-range 64-bit
    integers, read byte by byte through a table of each byte's eight bits as signs.
    On a CPU that is much cheaper than one ``randint(0, 2)`` per sign, which cost
    Flipout more than its normal draws (the benchmarks page has the measurement);
    below 16,384 signs the single draws are used: fewer operations matter more there.
    Inside ``vmap(randomness="different")`` every lane draws its own; ``lanes=S``
    (the stacked path) draws S sets of ``shape`` at once, the same numbers.
    """
    count = math.prod(shape)
    lead = () if lanes is None else (lanes,)
    if count < 2**14:  # few signs: fewer operations beat fewer random numbers
        bits = torch.randint(0, 2, (*lead, *shape), device=like.device, dtype=like.dtype)
        return 2 * bits - 1
    words = torch.randint(
        -(2**63),
        2**63 - 1,
        (*lead, (count + 63) // 64),
        dtype=torch.int64,
        device=like.device,
    )
    table = _sign_table(like.device, like.dtype)
    # (embedding rather than index_select: vmap batches it without copying the table)
    signs = F.embedding(words.view(torch.uint8).int(), table).view(*lead, -1)
    return signs[..., :count].view(*lead, *shape)


_SIGN_TABLES: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _sign_table(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(256, 8)``: the bits of every byte as signs (bit set: +1)."""
    key = (device, dtype)
    table = _SIGN_TABLES.get(key)
    if table is None:
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        table = (2 * bits - 1).to(device=device, dtype=dtype)
        _SIGN_TABLES[key] = table
    return table


class EstimatorLayer:
    """Mix-in for ``VIModule`` layers computing an affine ``op(x, weight, bias)``.

    Used by linear maps and convolutions with random ``weight`` and ``bias``.
    The layer calls :meth:`_fast_preactivations` first; ``None`` means "draw the
    weights" (the reparameterisation estimator while log-probs are recorded).
    """

    _estimator: str = "reparameterization"
    _spatial_dims: int = 0

    def _check_estimator(self, estimator: str) -> str:
        """Validate ``estimator`` for this layer; layers supporting fewer override."""
        return check_estimator(self, estimator)

    def _local_noise_is_exact(self, x: Tensor) -> bool:
        """Whether sampling pre-activations for input ``x`` equals sampling weights.

        Per example, independent noise per pre-activation has the distribution of a
        shared weight draw only when every weight meets the example once: a dense
        layer on ``(batch, features)``, not positions of a sequence or an image
        (which share one draw). Prediction switches to local reparameterisation only
        then.
        """
        return self._spatial_dims == 0 and x.dim() <= 2

    def _local_noise_is_cheaper(self, x: Tensor) -> bool:
        """Whether sampling the pre-activations for ``x`` is cheaper than the weights.

        Per sample, a dense layer draws ``rows * out`` numbers for its pre-activations
        against ``out * in`` for its weights, but the pre-activations take about ten
        more small operations (their variance, overflow-safe). Prediction samples them
        where that saves at least :data:`LOCAL_NOISE_MIN_SAVING` random numbers over
        the samples of the call; both give the same predictive distribution where
        local noise is exact.
        """
        state = current_state()
        lanes = state.lanes if state is not None else 1
        out_features, *fan_in = self._weight_mean.shape
        saved = math.prod(fan_in) - math.prod(x.shape[:-1])
        return lanes * out_features * saved >= LOCAL_NOISE_MIN_SAVING

    def _fast_estimator(self, x: Tensor) -> Optional[tuple[str, bool]]:
        """The estimator that skips drawing the weights for input ``x``, or ``None``.

        Returns it with whether log-probs are recorded. ``None``: draw the weights
        (mean-weight mode, or the reparameterisation estimator while recording,
        reusing draws, or where local noise would not be exact).
        """
        if mean_weights_enabled():
            return None  # the layer reads the point estimates
        state = current_state()
        record = state.record if state is not None else self._return_log_probs
        estimator = self._estimator
        if estimator == "reparameterization":
            if (
                record
                or self._reuse_draws
                or not normal_layer(self)
                or not self._local_noise_is_exact(x)
                or not self._local_noise_is_cheaper(x)
            ):
                return None
            estimator = "local_reparameterization"
        return estimator, record

    def _weight_distribution_repr(self) -> str:
        """The end of ``extra_repr``: a non-default estimator, the weight's q and p."""
        text = ""
        if self._estimator != "reparameterization":
            text += f", estimator={self._estimator!r}"
        return text + (
            f", variational_distribution={self.variational_distribution['weight']}, "
            f"prior={self.prior['weight']}"
        )

    def _fast_preactivations(
        self,
        op: Op,
        x: Tensor,
        lane_op: Optional[Op] = None,
        stacked: Optional[Stacked] = None,
    ) -> Optional[Tensor]:
        """Pre-activations without drawn weights, or ``None`` to draw them.

        ``lane_op`` (optional, the same values as ``op``) is the faster form of
        ``op`` for weights that differ between the samples (Flipout's
        perturbations); on the stacked path (``stacked``) it takes weights with a
        leading sample dimension.
        """
        one_sample = x[0] if stacked is not None and stacked.input_stacked else x
        decided = self._fast_estimator(one_sample)
        if decided is None:
            return None
        estimator, record = decided
        weight = tuple(self.get_variational_parameters("weight"))
        bias = None
        if self.variational_distribution["bias"] is not None:
            bias = tuple(self.get_variational_parameters("bias"))
        if record:
            variables = tuple(
                v
                for v in ("weight", "bias")
                if self.variational_distribution[v] is not None
            )
            fused = None
            if stacked is not None:  # (outside vmap: the fused function has no rule)
                fused = summed_expected_log_probs(self, variables)
            if fused is not None:  # one entry for the layer's variables together
                current_state().add(self, variables, fused)
            else:
                for variable in variables:
                    self._record_log_probs(variable, expected_log_probs(self, variable))
        if estimator == "local_reparameterization":
            return local_reparameterization(
                op, x, weight, bias, self._spatial_dims, stacked
            )
        shared = record and estimator == "shared_flipout"
        return flipout(op, x, weight, bias, self._spatial_dims, shared, lane_op, stacked)
