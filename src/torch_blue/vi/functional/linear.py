"""Dense products of the layers, as pure functions on tensors."""

from typing import Optional

from torch import Tensor
from torch.nn import functional as F  # noqa: N812

__all__ = ["flat_linear"]


def flat_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``F.linear`` on ``x`` flattened to ``(-1, in_features)``, reshaped back.

    The same values; the difference is speed under ``vmap`` with a weight per sample.
    There ``F.linear`` on an input with more than one leading dimension that cannot
    be flattened as a view (e.g. a transposed sequence) broadcasts the weight over
    the first one: a copy of the weight and a small matrix product per position.
    Flattening copies the input once at most.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x, w = torch.randn(5, 3, 4).transpose(0, 1), torch.randn(2, 4)
    >>> from torch_blue.vi.functional import flat_linear
    >>> # (equal up to the order of the float summation)
    >>> torch.allclose(flat_linear(x, w, None), torch.nn.functional.linear(x, w))
    True
    """
    if x.dim() <= 2:
        return F.linear(x, weight, bias)
    out = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], out.shape[-1])
