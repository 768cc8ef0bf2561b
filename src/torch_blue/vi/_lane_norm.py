"""Batch norms in the lanes of a sampled forward (a lane rule of the engine).

``F.batch_norm`` in training mode updates the running statistics in place, which
``torch.vmap`` forbids for per-lane inputs. :func:`batch_norm_in_lanes` normalises
every lane with its own batch statistics and updates the running statistics once,
after the sampled forward, from the lanes' average. :class:`~torch_blue.vi.VIBatchNorm1d`
calls it directly; the lane rule registered here gives the plain ``nn.BatchNorm``
layers inside a model the same forward while the model's sampled forward runs.
"""

from contextlib import AbstractContextManager
from functools import partial
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from torch.nn.modules.batchnorm import _BatchNorm

from .sampling import current_state, lane_forwards, register_lane_rule

__all__ = ["batch_norm_in_lanes", "lane_safe_batch_norms"]


def batch_norm_in_lanes(
    module: torch.nn.Module,
    input_: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
) -> Tensor:
    """Train-mode batch norm that works inside the sample lanes.

    ``F.batch_norm`` updates the running statistics in place, which vmap forbids for
    per-lane inputs. Instead every lane is normalised with its own batch statistics,
    and ``module``'s running statistics (``running_mean``, ``running_var``,
    ``num_batches_tracked``, ``momentum``, ``eps`` as in ``torch.nn``) are updated once
    after the call from the lanes' average (:meth:`SamplingState.defer
    <torch_blue.vi.sampling.SamplingState.defer>`), or at once outside a sampled
    forward. Used by plain ``nn.BatchNorm`` layers inside a model and by
    :class:`~torch_blue.vi.VIBatchNorm1d`.

    Examples
    --------
    >>> import torch
    >>> norm = torch.nn.BatchNorm1d(3)
    >>> batch_norm_in_lanes(norm, torch.randn(8, 3), None, None).shape
    torch.Size([8, 3])
    >>> int(norm.num_batches_tracked)
    1
    """
    output = F.batch_norm(input_, None, None, weight, bias, True, 0.0, module.eps)
    if module.track_running_stats:
        dims = [0, *range(2, input_.dim())]
        var, mean = torch.var_mean(input_.detach(), dim=dims, correction=1)
        stats = torch.stack([mean, var])
        state = current_state()
        if state is None:
            _update_running_stats(module, stats.unsqueeze(0))
        else:
            state.defer(partial(_update_running_stats, module), stats)
    return output


def _lane_safe_batch_norm(self: _BatchNorm, input_: Tensor) -> Tensor:
    """Forward given to plain ``nn.BatchNorm`` layers while a model containing them runs.

    Inside a sampled forward of this thread, a training norm tracking running
    statistics normalises lane-safely; everywhere else (other threads, eval mode) the
    class's own forward runs.
    """
    if current_state() is None or not (self.training and self.track_running_stats):
        return type(self).forward(self, input_)
    self._check_input_dim(input_)
    return batch_norm_in_lanes(self, input_, self.weight, self.bias)


def _update_running_stats(module: torch.nn.Module, lane_stats: Tensor) -> None:
    """Momentum update of ``module`` from ``(S, 2, C)`` per-lane (mean, variance)."""
    mean, var = lane_stats.mean(dim=0)
    with torch.no_grad():
        module.num_batches_tracked.add_(1)
        if module.momentum is None:  # cumulative moving average
            factor = 1.0 / float(module.num_batches_tracked)
        else:
            factor = module.momentum
        module.running_mean.mul_(1 - factor).add_(
            mean.to(module.running_mean), alpha=factor
        )
        module.running_var.mul_(1 - factor).add_(var.to(module.running_var), alpha=factor)


def lane_safe_batch_norms(module: torch.nn.Module) -> AbstractContextManager:
    """Give the plain batch norms inside ``module`` a lane-safe forward.

    The lane rule ``"batch_norm"`` of the engine (see
    :func:`~torch_blue.vi.sampling.lane_forwards`).
    """
    return lane_forwards(module, _is_batch_norm, _lane_safe_batch_norm)


def _is_batch_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, _BatchNorm)


register_lane_rule("batch_norm", lane_safe_batch_norms)
