r"""``VIEmbedding``: the Bayesian twin of ``torch.nn.Embedding``.

The embedding table ``weight`` is a random variable. Three ways to propagate its
randomness (the layer's ``estimator``):

``"reparameterization"`` (default)
    Draw the whole table once per sample and look the tokens up in it: every
    occurrence of a token in a sample sees the same vector. The log-densities of the
    drawn table are recorded (the Monte Carlo KL term).
``"local_reparameterization"``
    Draw only the looked-up rows, ``mean[token] + std[token] * noise``, with
    independent noise *per occurrence*: two occurrences of one token in a sample get
    different vectors. Each occurrence has the same distribution as under weight
    sampling, but occurrences are no longer correlated within a sample. The cost is
    that of the lookup, not of the table (``S * tokens * dim`` normals instead of
    ``S * num_embeddings * dim``); the closed-form KL divergence of the table is
    recorded. With ``return_log_probs=False`` (prediction) a Normal layer uses this
    path under ``"reparameterization"`` too when it is exact: one token per example
    (inputs ``(batch,)``); sequences keep drawing the table.
``"flipout"``
    One table perturbation per sample, with random signs per occurrence and feature
    (the embedding analogue of Wen et al. 2018). It draws the whole table, so it is
    no cheaper than weight sampling; it exists so that ``model.estimator =
    "flipout"`` works on models containing embeddings.
``"shared_flipout"``
    One table perturbation for all samples, signs per sample, occurrence and feature
    (see :mod:`torch_blue.vi.estimators`).
"""

import math
from numbers import Integral
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from typing_extensions import Unpack

from .base import VIModule
from .estimators import (
    EstimatorLayer,
    check_estimator,
    expected_log_probs,
    random_signs,
    scaled_noise,
)
from .sampling import current_state, mean_weights_enabled
from .utils.checks import check_int
from .utils.common_types import VIkwargs, check_vi_kwargs
from .utils.errors import ShapeError
from .utils.init import fixed_

__all__ = ["VIEmbedding"]


def _check_padding_idx(owner: str, padding_idx: Any, rows: int) -> Optional[int]:
    """``None`` or a row index in ``[-rows, rows)``, made non-negative."""
    if padding_idx is None:
        return None
    if (
        isinstance(padding_idx, bool)
        or not isinstance(padding_idx, Integral)
        or not -rows <= padding_idx < rows
    ):
        raise ValueError(
            f"{owner}: padding_idx must be an int in [-{rows}, {rows}) (within "
            f"num_embeddings), got {padding_idx!r}"
        )
    return int(padding_idx) % rows


def _check_norm(owner: str, max_norm: Any, norm_type: Any) -> tuple[Optional[float], float]:
    """``max_norm`` (``None`` or positive) and ``norm_type`` as floats."""
    if max_norm is not None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
            raise TypeError(f"{owner}: max_norm must be a number, got {max_norm!r}")
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"{owner}: max_norm must be positive, got {max_norm!r}")
        max_norm = float(max_norm)
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)):
        raise TypeError(f"{owner}: norm_type must be a number, got {norm_type!r}")
    return max_norm, float(norm_type)


class VIEmbedding(VIModule, EstimatorLayer):
    r"""Bayesian embedding table, the twin of :class:`torch.nn.Embedding`.

    Arguments and shapes are those of :class:`torch.nn.Embedding`; the remaining
    keyword arguments are the VIkwargs of :class:`~torch_blue.vi.VIModule` and the
    gradient ``estimator`` (see :mod:`torch_blue.vi.embedding`). The table
    ``weight`` of shape ``(num_embeddings, embedding_dim)`` is a random variable,
    initialised like the other layers (means uniform with bound
    :math:`1/\sqrt{\mathrm{embedding\_dim}}`, not ``torch.nn``'s standard normal).

    Parameters
    ----------
    num_embeddings : int
        Size of the vocabulary.
    embedding_dim : int
        Size of each embedding vector.
    padding_idx : int, optional
        The padding row is deterministic: it always reads as its variational mean
        (zero at initialisation, as in ``torch.nn``), draws no noise, gets no
        gradient and is left out of the recorded log-densities and of the
        closed-form KL term of the fast estimators. Its variational parameters stay in
        the state dict so that checkpoints map to ``nn.Embedding`` by name. (The KL
        of :class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss` is computed from all
        parameters and still includes the row.)
    max_norm : float, optional
        Looked-up vectors with a larger ``norm_type``-norm are rescaled to norm
        ``max_norm``. ``torch.nn`` rescales the stored weight rows in place; a sampled
        table cannot be changed in place, so the rescaling is applied functionally to
        the looked-up vectors (same outputs, the variational parameters are never
        modified, and gradients flow through the rescaling).
    norm_type : float, default: 2.0
        The p of the p-norm for ``max_norm``.
    scale_grad_by_freq : bool, default: False
        Scale gradients by the inverse frequency of the tokens in the mini-batch.
    sparse : bool, default: False
        Must be ``False``: a sampled table receives dense gradients.
    _weight : Tensor, optional
        Initial variational mean of the table (the padding row is taken as given).
    _freeze : bool, default: False
        Do not train the table's variational parameters.
    estimator : str, default: "reparameterization"
        ``"reparameterization"``, ``"local_reparameterization"``, ``"flipout"`` or
        ``"shared_flipout"``.

    Shape
    -----
    - Input: integer tensor ``(*)`` of token indices.
    - Output: ``(S, *, embedding_dim)`` as the outermost module with ``samples=S``;
      ``(*, embedding_dim)`` per sample inside a model.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.embedding import VIEmbedding
    >>> embed = VIEmbedding(10, 3, padding_idx=0)
    >>> tokens = torch.tensor([[1, 2, 0], [4, 0, 0]])
    >>> out = embed(tokens, samples=4)
    >>> out.shape
    torch.Size([4, 2, 3, 3])
    >>> bool((out[:, tokens == 0] == 0).all())
    True
    """

    _torch_twin = nn.Embedding
    _twin_arguments = (
        "num_embeddings",
        "embedding_dim",
        "padding_idx",
        "max_norm",
        "norm_type",
        "scale_grad_by_freq",
    )
    __constants__: ClassVar[list[str]] = [*_twin_arguments, "sparse"]

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Optional[Tensor] = None,
        _freeze: bool = False,
        *,
        estimator: str = "reparameterization",
        **vikwargs: Unpack[VIkwargs],
    ) -> None:
        name = type(self).__name__
        num_embeddings = check_int(name, "num_embeddings", num_embeddings)
        embedding_dim = check_int(name, "embedding_dim", embedding_dim)
        padding_idx = _check_padding_idx(name, padding_idx, num_embeddings)
        max_norm, norm_type = _check_norm(name, max_norm, norm_type)
        if sparse:
            raise ValueError(
                f"{name}: sparse=True is not supported: every sample draws new values "
                "for the table's variational parameters, whose gradients are dense"
            )
        if _weight is not None and tuple(_weight.shape) != (num_embeddings, embedding_dim):
            raise ShapeError(
                f"{name}: _weight must have shape ({num_embeddings}, {embedding_dim}) "
                f"(num_embeddings, embedding_dim), got {tuple(_weight.shape)}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = False
        super().__init__(
            variable_shapes={"weight": (num_embeddings, embedding_dim)},
            **check_vi_kwargs(name, vikwargs),
        )
        self._estimator = check_estimator(self, estimator)
        if _weight is not None:
            primary = self.variational_distribution["weight"].primary_parameter
            fixed_(getattr(self, self.variational_parameter_name("weight", primary)),
                   _weight.detach())  # fmt: skip
        if _freeze:
            for parameter in self.get_variational_parameters("weight"):
                parameter.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Tensor,
        freeze: bool = True,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        **vikwargs: Any,
    ) -> "VIEmbedding":
        """Build a layer whose variational mean is the 2-d tensor ``embeddings``.

        As :meth:`torch.nn.Embedding.from_pretrained`; ``freeze`` keeps all
        variational parameters of the table (mean and spread) fixed. ``vikwargs``
        (including ``device`` and ``dtype``) go to the constructor; device and dtype
        default to those of ``embeddings``.

        Examples
        --------
        >>> import torch
        >>> from torch_blue.vi.embedding import VIEmbedding
        >>> table = torch.randn(5, 3)
        >>> embed = VIEmbedding.from_pretrained(table, freeze=False)
        >>> torch.equal(embed._weight_mean, table)
        True
        """
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            raise ShapeError(
                f"{cls.__name__}.from_pretrained: embeddings must be a 2-d tensor, got "
                f"{getattr(embeddings, 'shape', type(embeddings).__name__)}"
            )
        vikwargs.setdefault("device", embeddings.device)
        vikwargs.setdefault("dtype", embeddings.dtype)
        rows, dim = embeddings.shape
        return cls(
            rows,
            dim,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
            _weight=embeddings,
            _freeze=freeze,
            **vikwargs,
        )

    @classmethod
    def _from_torch(cls, module: nn.Embedding, **vikwargs: Any) -> "VIEmbedding":
        if module.sparse:
            raise ValueError(
                f"{cls.__name__}: cannot convert an nn.Embedding with sparse=True "
                "(sampled tables receive dense gradients); set sparse=False or use "
                "ban_convert(nn.Embedding)"
            )
        return super()._from_torch(module, **vikwargs)

    def reset_variational_parameters(self) -> None:
        """Re-initialise the variational parameters; the padding row's mean is zero."""
        super().reset_variational_parameters()
        if self.padding_idx is not None:
            primary = self.variational_distribution["weight"].primary_parameter
            with torch.no_grad():
                getattr(self, self.variational_parameter_name("weight", primary))[
                    self.padding_idx
                ].zero_()

    # ------------------------------------------------------------------ forward
    def _lookup(self, input_: Tensor, table: Tensor) -> Tensor:
        try:
            return F.embedding(
                input_, table, self.padding_idx, None, 2.0, self.scale_grad_by_freq
            )
        except IndexError as error:
            raise IndexError(
                f"{type(self).__name__}(num_embeddings={self.num_embeddings}): token "
                f"indices must lie in [0, {self.num_embeddings}) ({error})"
            ) from error

    def _sample_weight(self) -> Tensor:
        """Draw the table; the padding row reads as its mean and is not scored."""
        if self.padding_idx is None or mean_weights_enabled():
            return self.weight
        dist = self.variational_distribution["weight"]
        parameters = tuple(self.get_variational_parameters("weight"))
        p = self.padding_idx
        keep = torch.ones(
            self.num_embeddings, 1, dtype=torch.bool, device=parameters[0].device
        )
        keep[p] = False
        state = current_state()
        record = state.record if state is not None else self._return_log_probs
        if record:
            # The padding row is drawn with the table (keeping the distribution's fast
            # sample_and_log_prob), but from detached parameters, and its share of the
            # log-densities is taken out again: it neither counts nor gets gradients.
            # (Every variational parameter has the table's shape.)
            detached = tuple(torch.where(keep, t, t.detach()) for t in parameters)
            sample, log_q = dist.sample_and_log_prob(detached)
            prior = self.prior["weight"]
            hyper = tuple(
                torch.where(keep, t, t.detach())
                for t in self._prior_hyperparameters("weight")
            )
            log_p = prior.prior_log_prob_sum(sample, hyper)
            row = sample[p]
            log_q = (
                log_q - dist.variational_log_prob(row, tuple(t[p] for t in detached)).sum()
            )
            log_p = log_p - prior.prior_log_prob(row, tuple(t[p] for t in hyper)).sum()
            self._record_log_probs("weight", torch.stack([log_p, log_q]))
        else:
            sample = dist.sample(parameters)
        return torch.where(keep, sample, dist.point_estimate(parameters))

    def _expected_log_probs(self, mean: Tensor, log_std: Tensor) -> Tensor:
        r"""``(2,)``: :math:`(\mathbb E_q \log p, \mathbb E_q \log q)` without padding."""
        if self.padding_idx is not None:
            keep = torch.arange(self.num_embeddings, device=mean.device) != self.padding_idx
            mean, log_std = mean[keep], log_std[keep]
        return expected_log_probs(self, "weight", (mean, log_std))

    def _local_noise_is_exact(self, x: Tensor) -> bool:
        # One token per example meets each row at most once; a sequence may repeat
        # a token, and its occurrences share one draw of the table.
        return x.dim() <= 1

    def _local_noise_is_cheaper(self, x: Tensor) -> bool:
        # Looked-up rows against the whole table.
        return x.numel() <= self.num_embeddings

    def _fast_preactivations(self, op: Any, x: Tensor) -> Optional[Tensor]:
        """Looked-up vectors drawn without drawing the table, or ``None``.

        ``op`` is unused: the lookup is the layer's own.
        """
        decided = self._fast_estimator(x)
        if decided is None:
            return None
        estimator, record = decided
        mean, log_std = self.get_variational_parameters("weight")
        if record:
            self._record_log_probs("weight", self._expected_log_probs(mean, log_std))
        rows = self._lookup(x, mean)
        if estimator == "local_reparameterization":
            noise = self._lookup(x, torch.exp(log_std)) * torch.randn_like(rows)
        else:  # flipout: one table perturbation, signs per occurrence and feature
            delta = scaled_noise(log_std, record and estimator == "shared_flipout")
            noise = self._lookup(x, delta) * random_signs(rows.shape, rows)
        if self.padding_idx is not None:
            noise = noise.masked_fill((x == self.padding_idx).unsqueeze(-1), 0.0)
        return rows + noise

    def _renorm(self, rows: Tensor) -> Tensor:
        """Rescale vectors whose norm exceeds ``max_norm`` (``torch.nn``'s formula)."""
        norm = torch.linalg.vector_norm(rows, ord=self.norm_type, dim=-1, keepdim=True)
        # torch.nn's CPU kernel computes the scale in double precision (its CUDA kernel
        # in the accumulation type); follow it, for equal outputs.
        precise = norm.double() if norm.device.type == "cpu" else norm
        scale = (self.max_norm / (precise + 1e-7)).to(rows.dtype)
        return torch.where(norm > self.max_norm, rows * scale, rows)

    def forward(self, input_: Tensor) -> Tensor:
        """Look the tokens up in one sample of the table."""
        if not isinstance(input_, Tensor) or input_.dtype not in (torch.long, torch.int):
            got = input_.dtype if isinstance(input_, Tensor) else type(input_).__name__
            raise TypeError(
                f"{type(self).__name__}(num_embeddings={self.num_embeddings}): expected "
                f"a tensor of token indices of dtype torch.long or torch.int, got {got}"
            )
        rows = self._fast_preactivations(None, input_)
        if rows is None:
            rows = self._lookup(input_, self._sample_weight())
        if self.max_norm is not None:
            rows = self._renorm(rows)
        return rows

    def extra_repr(self) -> str:
        """Summarise the layer for ``print(model)``."""
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2.0:
            text += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            text += ", scale_grad_by_freq=True"
        return text + self._weight_distribution_repr()
