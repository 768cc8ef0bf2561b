"""Precision of log-probabilities: at least float32, whatever the weights' dtype.

A log-probability is a sum over every weight of a variable (and over variables): in
float16 the sum of 1,000 terms of a few nats already nears its limit, 65504, and a
pruned weight alone adds 1000 nats. Weights stored in float16 or bfloat16 are
therefore scored in float32, and the log-probs a model returns are float32.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["HALF_DTYPES", "computes_in_float16", "log_prob_dtype", "widened"]

#: The floating dtypes whose log-probabilities are computed in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def widened(tensors: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``tensors`` with float16 and bfloat16 ones cast to float32 (differentiably).

    Examples
    --------
    >>> import torch
    >>> [t.dtype for t in widened([torch.ones(1, dtype=torch.half), torch.ones(1)])]
    [torch.float32, torch.float32]
    """
    return tuple(t.float() if t.dtype in HALF_DTYPES else t for t in tensors)


def log_prob_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of log-probabilities for weights of ``dtype``: at least float32.

    Examples
    --------
    >>> import torch
    >>> log_prob_dtype(torch.bfloat16), log_prob_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in HALF_DTYPES else dtype


def computes_in_float16(x: Tensor) -> bool:
    """Whether operations on ``x`` run in float16 (its dtype, or autocast's here).

    Examples
    --------
    >>> import torch
    >>> computes_in_float16(torch.ones(1, dtype=torch.half))
    True
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     computes_in_float16(torch.ones(1))
    False
    """
    if x.dtype == torch.float16:
        return True
    device = x.device.type
    return torch.is_autocast_enabled(device) and (
        torch.get_autocast_dtype(device) == torch.float16
    )
