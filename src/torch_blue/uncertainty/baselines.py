"""Non-Bayesian baselines that return samples ``(S, ...)``: MC dropout and ensembles.

A Bayesian model is best judged against the two usual ways of getting uncertainty
out of an ordinary network: Monte-Carlo dropout (Gal & Ghahramani, 2016), which
keeps dropout on at prediction time and treats each pass as a sample, and deep
ensembles (Lakshminarayanan et al., 2017), which train several networks from
different initialisations and treat each member as a sample. Both wrappers here
return their passes stacked along a leading sample dimension, so every summary,
metric and plot of :mod:`torch_blue.uncertainty` scores them exactly like the
output of a Bayesian model.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..errors import ShapeError, UncertaintyInputError
from ._validation import _check_positive_int

__all__ = ["MCDropout", "DeepEnsemble"]

# The dropout modules that MCDropout switches on (and their subclasses).
_DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


# Layers that drop out inside their own forward (attention weights) or that skip
# their dropout modules in eval mode (torch's fused inference kernels): MCDropout
# sets their own training flag too (not their children's).
_INNER_DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


def _switched_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose own training flag MCDropout sets during a call."""
    kinds = _DROPOUT_TYPES + _INNER_DROPOUT_TYPES
    return [m for m in model.modules() if isinstance(m, kinds)]


class MCDropout(nn.Module):
    """Monte-Carlo dropout: several forward passes with the dropout layers active.

    Each pass runs ``model`` with its dropout modules (:class:`~torch.nn.Dropout`,
    ``Dropout1d/2d/3d``, :class:`~torch.nn.AlphaDropout` and
    :class:`~torch.nn.FeatureAlphaDropout`, subclasses included) in training mode
    and every other module in the mode it is in, so a model in eval mode keeps
    using the running statistics of its batch norms. torch's attention and
    transformer layers (:class:`~torch.nn.MultiheadAttention`,
    :class:`~torch.nn.TransformerEncoder`, ``TransformerEncoderLayer`` and
    ``TransformerDecoderLayer``) get their own flag set too, not their children's:
    attention drops out inside its ``forward``, and in eval mode torch's fused
    inference kernels skip the dropout modules. Every switched module gets its
    flag back after the call, also when the model raises. Dropout applied through
    :func:`torch.nn.functional.dropout` inside another layer's ``forward`` follows
    that layer's flag and is not switched on.

    ``model`` is a registered submodule: ``.to()``, ``.eval()`` and
    ``state_dict()`` of the wrapper reach it. The usual setup is
    ``MCDropout(model).eval()``.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it must contain at least one dropout module.
    samples : int, default: 10
        Number of forward passes :math:`S` when :meth:`forward` is given none.
    batched : bool, default: True
        Run all passes as one forward on the input repeated ``samples`` times along
        the batch dimension (each row draws its own dropout mask). This needs a
        model that treats the rows of a batch independently and keeps the batch
        dimension first in its output. With ``False`` the passes run one after
        another, which also suits models that mix the rows of a batch or inputs
        too large to repeat.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.uncertainty import (
    ...     MCDropout, accuracy, mutual_information, negative_log_likelihood)
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5),
    ...                     nn.Linear(16, 3))
    >>> mc = MCDropout(net, samples=20).eval()
    >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    >>> with torch.no_grad():
    ...     logits = mc(x)                       # (S, B, C) = (20, 8, 3)
    >>> logits.shape
    torch.Size([20, 8, 3])
    >>> net.training, net[2].training           # dropout is off again afterwards
    (False, False)
    >>> nll = negative_log_likelihood(logits, y, input_type="logits")
    >>> acc = accuracy(logits, y, input_type="logits")
    >>> mutual_information(logits, "logits").shape
    torch.Size([8])
    >>> bool(nll > 0) and 0 <= acc.item() <= 1
    True
    """

    def __init__(self, model: nn.Module, samples: int = 10, *, batched: bool = True):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"MCDropout: model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if not _dropout_modules(model):
            raise UncertaintyInputError(
                f"MCDropout: model (a {type(model).__name__}) has no dropout module; "
                f"MC dropout needs dropout layers (nn.Dropout, nn.Dropout1d/2d/3d, "
                f"nn.AlphaDropout or nn.FeatureAlphaDropout)"
            )
        if not isinstance(batched, bool):
            raise TypeError(f"MCDropout: batched must be True or False, got {batched!r}")
        self.model = model
        self.samples = _check_positive_int(samples, "MCDropout", "samples")
        self.batched = batched

    def extra_repr(self) -> str:
        """The number of samples and the batching mode, for ``repr``."""
        return f"samples={self.samples}, batched={self.batched}"

    def forward(self, x: Tensor, samples: Optional[int] = None) -> Tensor:
        """``samples`` forward passes of the model with its dropout layers active.

        Parameters
        ----------
        x : Tensor
            The input, with the batch dimension first when ``batched``.
        samples : int, optional
            Number of passes :math:`S`; the wrapper's ``samples`` when ``None``.

        Returns
        -------
        Tensor
            The passes stacked along a new leading dimension, shape
            ``(S, *model(x).shape)``.
        """
        n = self.samples if samples is None else samples
        n = _check_positive_int(n, "MCDropout", "samples")
        if not isinstance(x, Tensor):
            raise TypeError(f"MCDropout: x must be a Tensor, got {type(x).__name__}")
        if self.batched and x.dim() == 0:
            raise ShapeError(
                "MCDropout: x must have a batch dimension with batched=True, got a "
                "0-dim tensor; add one with x.unsqueeze(0) or pass batched=False"
            )
        switched = _switched_modules(self.model)
        flags = [m.training for m in switched]
        # An in-place dropout on the input would overwrite the caller's tensor.
        fresh = any(getattr(m, "inplace", False) for m in _dropout_modules(self.model))
        try:
            for m in switched:
                m.training = True
            if self.batched:
                return self._batched(x, n)
            passes = (self.model(x.clone() if fresh else x) for _ in range(n))
            return torch.stack([self._output(out) for out in passes])
        finally:
            for m, flag in zip(switched, flags):
                m.training = flag

    def _batched(self, x: Tensor, n: int) -> Tensor:
        rows = x.shape[0]
        repeated = x.unsqueeze(0).expand(n, *x.shape).reshape(n * rows, *x.shape[1:])
        out = self._output(self.model(repeated))
        if out.dim() == 0 or out.shape[0] != n * rows:
            raise ShapeError(
                f"MCDropout: with batched=True the model got {n * rows} rows "
                f"(samples={n} times a batch of {rows}) and must return them first, "
                f"but returned shape {tuple(out.shape)}; pass batched=False for a "
                f"model that does not keep the batch dimension"
            )
        return out.unflatten(0, (n, rows))

    @staticmethod
    def _output(out: Any) -> Tensor:
        if not isinstance(out, Tensor):
            raise TypeError(
                f"MCDropout: the model must return a Tensor, got {type(out).__name__}"
            )
        return out


class DeepEnsemble(nn.Module):
    r"""A deep ensemble: the outputs of independently trained members, stacked.

    Each member is a sample of the predictive distribution; train them separately
    (from different random initialisations, as Lakshminarayanan et al., 2017) and
    wrap them for prediction. The members are kept in an
    :class:`~torch.nn.ModuleList`, ``members``, so ``.to()``, ``.eval()`` and
    ``state_dict()`` reach all of them.

    Parameters
    ----------
    models : Sequence of torch.nn.Module
        The :math:`K \geq 1` members, in order; every member must return a tensor
        of the same shape.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.uncertainty import (
    ...     DeepEnsemble, expected_calibration_error, negative_log_likelihood)
    >>> _ = torch.manual_seed(0)
    >>> ensemble = DeepEnsemble([nn.Linear(4, 3) for _ in range(5)]).eval()
    >>> len(ensemble)
    5
    >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    >>> with torch.no_grad():
    ...     logits = ensemble(x)                 # (K, B, C) = (5, 8, 3)
    >>> logits.shape
    torch.Size([5, 8, 3])
    >>> torch.equal(logits[2], ensemble.members[2](x))
    True
    >>> nll = negative_log_likelihood(logits, y, input_type="logits")
    >>> ece = expected_calibration_error(logits, y, input_type="logits")
    >>> bool(nll > 0) and 0 <= ece.item() <= 1
    True
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(_members(models))

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Every member's output for the same arguments.

        Parameters
        ----------
        *args, **kwargs
            Passed to each member unchanged.

        Returns
        -------
        Tensor
            The members' outputs stacked in order, shape ``(K, *member_output)``.
        """
        outputs = []
        for index, member in enumerate(self.members):
            out = member(*args, **kwargs)
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"DeepEnsemble: member {index} must return a Tensor, got "
                    f"{type(out).__name__}"
                )
            if outputs and out.shape != outputs[0].shape:
                raise ShapeError(
                    f"DeepEnsemble: member {index} returned shape {tuple(out.shape)}, "
                    f"but member 0 returned shape {tuple(outputs[0].shape)}; all "
                    f"members must return outputs of the same shape"
                )
            outputs.append(out)
        return torch.stack(outputs)


def _members(models: object) -> list[nn.Module]:
    """The members of ``models`` after checking that each is a module."""
    if isinstance(models, nn.Module) and not isinstance(models, nn.ModuleList):
        raise TypeError(
            f"DeepEnsemble: models must be a sequence of torch.nn.Module, got a single "
            f"{type(models).__name__}; wrap it in a list"
        )
    if isinstance(models, (Tensor, str, bytes)) or not isinstance(models, Iterable):
        raise TypeError(
            f"DeepEnsemble: models must be a sequence of torch.nn.Module, got "
            f"{type(models).__name__}"
        )
    members = list(models)
    if not members:
        raise UncertaintyInputError(
            "DeepEnsemble: models must hold at least one torch.nn.Module, got an "
            "empty sequence"
        )
    for index, member in enumerate(members):
        if not isinstance(member, nn.Module):
            raise TypeError(
                f"DeepEnsemble: models[{index}] must be a torch.nn.Module, got "
                f"{type(member).__name__}"
            )
    return members
