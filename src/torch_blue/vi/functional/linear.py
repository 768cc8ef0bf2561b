"""Dense products of the layers, as pure functions on tensors."""

from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

__all__ = ["flat_linear", "stacked_linear"]


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


def stacked_linear(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], input_stacked: bool = True
) -> Tensor:
    """``F.linear`` with one weight set per sample, as one batched product.

    Parameters
    ----------
    x : Tensor
        ``(S, *, in_features)``, or with ``input_stacked=False`` ``(*, in_features)``
        shared by all samples.
    weight : Tensor
        ``(S, out_features, in_features)``.
    bias : Tensor, optional
        ``(S, out_features)``.
    input_stacked : bool, default: True
        Whether ``x`` carries the samples as its dimension 0.

    Returns
    -------
    Tensor
        ``(S, *, out_features)``: sample ``s`` is ``F.linear(x[s], weight[s],
        bias[s])`` (or of the shared ``x``).

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x, w, b = torch.randn(5, 3), torch.randn(2, 4, 3), torch.randn(2, 4)
    >>> y = stacked_linear(x, w, b, input_stacked=False)
    >>> y.shape
    torch.Size([2, 5, 4])
    >>> torch.allclose(y[1], torch.nn.functional.linear(x, w[1], b[1]))
    True
    """
    samples, out_features, in_features = weight.shape
    if not input_stacked:
        # One product of the shared rows with all S weight sets, (*, S * out).
        stacked_bias = None if bias is None else bias.reshape(-1)
        out = flat_linear(x, weight.reshape(-1, in_features), stacked_bias)
        return out.unflatten(-1, (samples, out_features)).movedim(-2, 0)
    rows = x.reshape(samples, -1, in_features)
    if bias is None:
        out = torch.bmm(rows, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], out_features)
