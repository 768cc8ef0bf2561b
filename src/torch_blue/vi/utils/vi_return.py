"""``VIReturn``: a model output that carries the log-probabilities of its weights."""

from typing import Any, Optional

import torch
from torch import Tensor

from ..._compat import disable_torch_function_subclass

__all__ = ["VIReturn"]


class VIReturn(Tensor):
    r"""Output of an autosampled forward: samples plus the weights' log-probabilities.

    A ``VIReturn`` is a :class:`torch.Tensor` of shape ``(S, *output_shape)`` whose
    leading dimension indexes the S weight samples. Its attribute ``log_probs`` has
    shape ``(S, 2)``: column 0 is :math:`\log p(w_s)` under the prior, column 1 is
    :math:`\log q(w_s)` under the variational distribution, summed over all weights of
    the model. It is ``None`` when the model has ``return_log_probs = False``.

    **What operations keep.** An operation whose result has exactly the shape of a
    ``VIReturn`` argument (activations, dropout, ``+``, ``.to()``, ``.clone()``,
    ``.detach()``) returns a ``VIReturn`` with the same ``log_probs`` (``.detach()``
    detaches them too, so a kept output holds no graph); everything else
    (reductions, indexing, reshapes) returns a plain :class:`~torch.Tensor`. Results
    are never guessed: use :meth:`from_tensor` to re-attach log-probs to a sliced
    output on purpose. When two arguments carry different ``log_probs`` the result is a
    plain tensor.

    Parameters
    ----------
    data : Tensor
        The sampled outputs, leading dimension S. The autograd graph is kept.
    log_probs : Tensor or None
        Log-probabilities of shape ``(S, 2)``.

    Examples
    --------
    >>> import torch
    >>> out = VIReturn(torch.zeros(4, 3), torch.zeros(4, 2))
    >>> out.relu().log_probs.shape
    torch.Size([4, 2])
    >>> type(out.mean(0)).__name__
    'Tensor'
    """

    log_probs: Optional[Tensor] = None

    @staticmethod
    def __new__(cls, data: Tensor, log_probs: Optional[Tensor] = None) -> "VIReturn":  # noqa: D102
        if not isinstance(data, Tensor):
            data = torch.as_tensor(data)
        with disable_torch_function_subclass():
            instance = data.as_subclass(cls)
        return instance

    def __init__(self, data: Tensor, log_probs: Optional[Tensor] = None) -> None:
        super().__init__()
        if log_probs is not None:
            _check_log_probs(self, log_probs)
        self.log_probs = log_probs

    @staticmethod
    def from_tensor(input_: Tensor, log_probs: Optional[Tensor]) -> "VIReturn":
        """Return ``input_`` as a ``VIReturn`` carrying ``log_probs`` (no copy).

        Examples
        --------
        >>> import torch
        >>> VIReturn.from_tensor(torch.ones(2, 5), torch.zeros(2, 2)).log_probs.shape
        torch.Size([2, 2])
        """
        return VIReturn(input_, log_probs)

    def as_plain(self) -> Tensor:
        """Return the samples as a plain :class:`~torch.Tensor` (no copy)."""
        with disable_torch_function_subclass():
            return self.as_subclass(Tensor)

    # The three methods upstream defines explicitly; all go through the same policy.
    def clone(self, *args: Any, **kwargs: Any) -> "VIReturn":
        """Copy the data; the copy carries the same ``log_probs``."""
        return super().clone(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> "VIReturn":
        """Move or cast the data; ``log_probs`` move along (their dtype is kept)."""
        result = super().to(*args, **kwargs)
        if isinstance(result, VIReturn) and result.log_probs is not None:
            result.log_probs = result.log_probs.to(device=result.device)
        return result

    def new_empty(self, size: tuple[int, ...], **kwargs: Any) -> "VIReturn":
        """Return an uninitialised ``VIReturn`` of ``size`` without log-probs."""
        with disable_torch_function_subclass():
            plain = Tensor.new_empty(self, size, **kwargs)
        return VIReturn(plain, None)

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        data = repr(self.as_plain())
        lp = "None" if self.log_probs is None else f"<shape {tuple(self.log_probs.shape)}>"
        return f"VIReturn({data}, log_probs={lp})"

    def __reduce_ex__(self, protocol: int) -> tuple:
        return (_rebuild_vireturn, (self.as_plain().detach().clone(), self.log_probs))

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None
    ) -> Any:
        kwargs = kwargs or {}
        with disable_torch_function_subclass():
            result = func(*args, **kwargs)
        if not isinstance(result, Tensor) or func in _NO_WRAP:
            return result
        carriers = [a for a in _flat(args, kwargs) if isinstance(a, VIReturn)]
        if result is not None and carriers:
            shapes = [c.shape for c in carriers]
            if result.shape in shapes:
                first = carriers[0].log_probs
                if all(c.log_probs is first for c in carriers):
                    if type(result) is not VIReturn:
                        result = result.as_subclass(VIReturn)
                    if func in _DETACHING and first is not None:
                        first = first.detach()  # off the graph, like the samples
                    result.log_probs = first
                    return result
        if isinstance(result, VIReturn):
            result = result.as_subclass(Tensor)
        return result


# Attribute getters (``._base``, ``.grad``, ``.data``, ...) return what they hold.
_NO_WRAP = torch.overrides.get_default_nowrap_functions()
# Their results carry detached log-probs.
_DETACHING = frozenset({Tensor.detach, Tensor.detach_, torch.detach, torch.detach_})


def _flat(args: tuple, kwargs: dict) -> list:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            out.extend(a)
        else:
            out.append(a)
    return out


def _check_log_probs(data: Tensor, log_probs: Tensor) -> None:
    if not isinstance(log_probs, Tensor):
        raise TypeError(
            f"VIReturn: log_probs must be a Tensor or None, got {type(log_probs).__name__}"
        )
    if log_probs.dim() != 2 or log_probs.shape[1] != 2:
        raise ValueError(
            f"VIReturn: log_probs must have shape (S, 2), got {tuple(log_probs.shape)}"
        )
    if data.dim() == 0 or data.shape[0] != log_probs.shape[0]:
        raise ValueError(
            f"VIReturn: data of shape {tuple(data.shape)} needs a leading sample "
            f"dimension of size {log_probs.shape[0]} to match log_probs"
        )


def _rebuild_vireturn(data: Tensor, log_probs: Optional[Tensor]) -> VIReturn:
    return VIReturn(data, log_probs)
