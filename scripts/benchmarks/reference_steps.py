r"""Hand-written Bayesian training steps: what each estimator costs without a library.

``scripts/benchmarks/benchmark.py`` times these next to torch_blue (modes
``hand-written-*``) to separate what an estimator costs in itself from what a library
adds on top. Each is the straightforward code a person would write for one network
and one estimator in plain PyTorch, with the usual batching tricks and nothing more:

* raw parameter tensors (weight and bias means and log standard deviations), a
  :math:`\mathcal N(0, 1)` prior, the loss :math:`N \cdot` mean cross-entropy over the
  S·B rows plus the KL term (what ``vi.KullbackLeiblerLoss`` computes, up to
  constants);
* the first layer sees the same input in every sample, so its sample-independent
  part is computed once for the B inputs; later layers run on all S·B rows;
* dense layers keep activations as ``(S, B, features)``, convolutions as
  ``(B, S·C, H, W)``, so that S weight sets are one grouped convolution.

The estimators:

``"reparameterization"``
    Draw S weight sets :math:`W_s = \mu + \sigma \odot \epsilon_s`; the first layer
    is one product of the B inputs with the S stacked weight sets, later layers one
    batched product (``baddbmm``) or grouped convolution. The KL term is estimated
    from the draws, with :math:`\log q` from the noise.
``"local_reparameterization"`` (Kingma, Salimans & Welling 2015)
    Sample the pre-activations :math:`m + \sqrt{v} \odot \epsilon` with
    :math:`m = x\mu^\top + \mu_b`, :math:`v = x^2 (\sigma^2)^\top + \sigma_b^2`; the
    first layer's :math:`m` and :math:`v` are computed once for the B inputs and
    only the noise is drawn per sample. Closed-form KL. (On convolutions this is the
    usual per-position approximation, as torch_blue's estimator.)
``"flipout"`` (Wen et al. 2018)
    :math:`x\mu^\top + \mu_b + ((x \odot r)(\sigma \odot \epsilon_s)^\top + \sigma_b
    \odot \epsilon_{b,s}) \odot s` with one perturbation per sample and random
    signs :math:`r, s` per example and sample (per channel on convolutions) from
    ``torch.randint``; the first layer's mean product is computed once. Closed-form
    KL.

Examples
--------
>>> import torch
>>> from reference_steps import ReferenceNetwork
>>> spec = [("flatten",), ("linear", 4, 3), ("relu",), ("linear", 3, 2)]
>>> net = ReferenceNetwork(spec, "local_reparameterization")
>>> net(torch.randn(5, 1, 2, 2), samples=6).shape
torch.Size([6, 5, 2])
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["ESTIMATORS", "INITIAL_LOG_STD", "ReferenceNetwork", "reference_loss"]

ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout")
#: Initial log standard deviation of every weight and bias.
INITIAL_LOG_STD = -5.0


class ReferenceNetwork(nn.Module):
    """A network of Bayesian dense and convolution layers trained with one estimator.

    Parameters
    ----------
    spec : sequence of tuple
        Layers as ``scripts/benchmarks/benchmark.py``'s ``layer_spec`` gives them:
        ``("linear", in, out)``, ``("conv", in, out, kernel, padding)``, ``("relu",)``,
        ``("pool",)`` (2x2 max pooling) or ``("flatten",)``; convolutions come before
        the flatten, dense layers after it.
    estimator : {"reparameterization", "local_reparameterization", "flipout"}
        The gradient estimator.

    Raises
    ------
    ValueError
        For an unknown estimator or layer kind.
    """

    def __init__(self, spec: Sequence[tuple], estimator: str) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"ReferenceNetwork: estimator must be one of {ESTIMATORS}, "
                f"got {estimator!r}"
            )
        self.spec = list(spec)
        self.estimator = estimator
        self.weight_mean = nn.ParameterList()
        self.weight_log_std = nn.ParameterList()
        self.bias_mean = nn.ParameterList()
        self.bias_log_std = nn.ParameterList()
        for kind, *args in self.spec:
            if kind == "linear":
                shape = (args[1], args[0])
            elif kind == "conv":
                shape = (args[1], args[0], args[2], args[2])
            elif kind in ("relu", "pool", "flatten"):
                continue
            else:
                raise ValueError(f"ReferenceNetwork: unknown layer kind {kind!r}")
            bound = 1 / math.sqrt(math.prod(shape[1:]))
            self.weight_mean.append(
                nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            )
            self.weight_log_std.append(nn.Parameter(torch.full(shape, INITIAL_LOG_STD)))
            self.bias_mean.append(
                nn.Parameter(torch.empty(shape[0]).uniform_(-bound, bound))
            )
            self.bias_log_std.append(nn.Parameter(torch.full((shape[0],), INITIAL_LOG_STD)))

    def forward(
        self, x: Tensor, samples: int, with_kl: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Outputs ``(samples, B, out)`` for inputs ``x`` of shape ``(B, ...)``, and KL.

        The KL term is the closed form for local reparameterisation and Flipout and
        the estimate from the drawn weights (averaged over the samples) otherwise.
        Without ``with_kl`` (prediction) the closed forms are not computed and the
        KL is 0.
        """
        h, shared, layer = x, True, 0  # shared: h has no sample dimension yet
        kl = x.new_zeros(())
        for kind, *args in self.spec:
            if kind == "relu":
                h = F.relu(h)
            elif kind == "pool":
                h = F.max_pool2d(h, 2)
            elif kind == "flatten":
                if shared:
                    h = h.flatten(1)
                else:  # (B, S*C, H, W) -> (S, B, C*H*W)
                    h = h.reshape(h.shape[0], samples, -1).transpose(0, 1)
            else:
                parameters = (
                    self.weight_mean[layer],
                    self.weight_log_std[layer],
                    self.bias_mean[layer],
                    self.bias_log_std[layer],
                )
                padding = args[3] if kind == "conv" else 0
                h, layer_kl = self._affine(
                    kind, h, shared, samples, parameters, padding, with_kl
                )
                kl = kl + layer_kl
                shared, layer = False, layer + 1
        return h, kl

    def _affine(
        self,
        kind: str,
        h: Tensor,
        shared: bool,
        samples: int,
        parameters: tuple[Tensor, Tensor, Tensor, Tensor],
        padding: int,
        with_kl: bool = True,
    ) -> tuple[Tensor, Tensor]:
        mu, log_std, b_mu, b_log_std = parameters
        if self.estimator == "reparameterization":
            return _sampled(kind, h, shared, samples, parameters, padding)
        kl = h.new_zeros(())
        if with_kl:
            kl = sum(_normal_kl(m, s) for m, s in ((mu, log_std), (b_mu, b_log_std)))
        if self.estimator == "local_reparameterization":
            return _local(kind, h, shared, samples, parameters, padding), kl
        return _flipout(kind, h, shared, samples, parameters, padding), kl


def _normal_kl(mean: Tensor, log_std: Tensor) -> Tensor:
    """KL(N(mean, exp(log_std)^2) || N(0, 1)), summed over the elements."""
    return (0.5 * (torch.exp(2 * log_std) + mean * mean - 1) - log_std).sum()


def _normal(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Standard normal noise of ``like``'s dtype and device."""
    return torch.randn(shape, dtype=like.dtype, device=like.device)


def _conv(h: Tensor, weight: Tensor, bias: Tensor, padding: int, groups: int = 1) -> Tensor:
    return F.conv2d(h, weight, bias, padding=padding, groups=groups)


def _sampled(
    kind: str,
    h: Tensor,
    shared: bool,
    samples: int,
    parameters: tuple[Tensor, Tensor, Tensor, Tensor],
    padding: int,
) -> tuple[Tensor, Tensor]:
    """Weight sampling: S weight sets, their layer outputs and the KL estimate."""
    mu, log_std, b_mu, b_log_std = parameters
    eps, b_eps = _normal((samples, *mu.shape), mu), _normal((samples, *b_mu.shape), mu)
    weight = mu + torch.exp(log_std) * eps
    bias = b_mu + torch.exp(b_log_std) * b_eps
    # log q - log p per weight: -eps^2/2 - log sigma + w^2/2 (the 2 pi terms cancel)
    kl = (
        0.5 * (weight.square().sum() - eps.square().sum()) - samples * log_std.sum()
        + 0.5 * (bias.square().sum() - b_eps.square().sum()) - samples * b_log_std.sum()
    ) / samples  # fmt: skip
    out = mu.shape[0]
    if kind == "linear":
        if shared:  # one product of the B inputs with the S stacked weight sets
            y = F.linear(h, weight.reshape(samples * out, -1), bias.reshape(-1))
            return y.view(-1, samples, out).transpose(0, 1), kl
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)), kl
    groups = 1 if shared else samples
    y = _conv(h, weight.flatten(0, 1), bias.reshape(-1), padding, groups)
    return y, kl


def _local(
    kind: str,
    h: Tensor,
    shared: bool,
    samples: int,
    parameters: tuple[Tensor, Tensor, Tensor, Tensor],
    padding: int,
) -> Tensor:
    """Local reparameterisation: sampled pre-activations."""
    mu, log_std, b_mu, b_log_std = parameters
    var, b_var = torch.exp(2 * log_std), torch.exp(2 * b_log_std)
    if kind == "linear":
        mean, variance = F.linear(h, mu, b_mu), F.linear(h * h, var, b_var)
        if shared:
            return mean + variance.sqrt() * _normal((samples, *mean.shape), h)
        return mean + variance.sqrt() * torch.randn_like(mean)
    batch = h.shape[0]
    if not shared:  # (B, S*C, H, W) -> (B*S, C, H, W): the same convolution for all
        h = h.reshape(batch * samples, -1, *h.shape[2:])
    mean, variance = _conv(h, mu, b_mu, padding), _conv(h * h, var, b_var, padding)
    if shared:
        mean, variance = mean.unsqueeze(1), variance.unsqueeze(1)
        noise = _normal((batch, samples, *mean.shape[2:]), h)
    else:
        mean = mean.view(batch, samples, *mean.shape[1:])
        variance = variance.view_as(mean)
        noise = torch.randn_like(mean)
    return (mean + variance.sqrt() * noise).flatten(1, 2)


def _signs(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Random signs (+1 or -1, equally likely) of ``like``'s dtype and device."""
    return torch.randint(0, 2, shape, dtype=like.dtype, device=like.device) * 2 - 1


def _flipout(
    kind: str,
    h: Tensor,
    shared: bool,
    samples: int,
    parameters: tuple[Tensor, Tensor, Tensor, Tensor],
    padding: int,
) -> Tensor:
    """Flipout: the mean output plus a sign-flipped perturbation per sample."""
    mu, log_std, b_mu, b_log_std = parameters
    delta = torch.exp(log_std) * _normal((samples, *mu.shape), mu)
    b_delta = torch.exp(b_log_std) * _normal((samples, *b_mu.shape), mu)
    out = mu.shape[0]
    if kind == "linear":
        mean = F.linear(h, mu, b_mu)  # (B, out) or (S, B, out)
        batch = h.shape[-2]
        x = h * _signs((samples, batch, h.shape[-1]), h)  # (S, B, in)
        perturbation = torch.baddbmm(b_delta.unsqueeze(1), x, delta.transpose(1, 2))
        return mean + perturbation * _signs((samples, batch, out), h)
    batch, channels = h.shape[0], mu.shape[1]
    in_signs = _signs((batch, samples, channels, 1, 1), h)
    if shared:
        mean = _conv(h, mu, b_mu, padding).unsqueeze(1)  # (B, 1, out, H, W)
        x = h.unsqueeze(1) * in_signs
    else:
        lanes = h.reshape(batch * samples, channels, *h.shape[2:])
        mean = _conv(lanes, mu, b_mu, padding)
        mean = mean.view(batch, samples, *mean.shape[1:])
        x = h.view(batch, samples, channels, *h.shape[2:]) * in_signs
    x = x.flatten(1, 2)  # (B, S*C, H, W)
    perturbation = _conv(x, delta.flatten(0, 1), b_delta.reshape(-1), padding, samples)
    perturbation = perturbation.view(batch, samples, out, *perturbation.shape[2:])
    return (mean + perturbation * _signs((batch, samples, out, 1, 1), h)).flatten(1, 2)


def reference_loss(
    network: ReferenceNetwork, x: Tensor, y: Tensor, samples: int, dataset_size: int
) -> Tensor:
    """The training loss: ``dataset_size`` times the mean cross-entropy, plus KL.

    Parameters
    ----------
    network : ReferenceNetwork
        The network.
    x, y : Tensor
        A minibatch: inputs ``(B, ...)`` and class labels ``(B,)``.
    samples : int
        S, the number of samples.
    dataset_size : int
        N, the number of training examples.
    """
    logits, kl = network(x, samples)
    rows = logits.reshape(-1, logits.shape[-1])
    return dataset_size * F.cross_entropy(rows, y.repeat(samples)) + kl
