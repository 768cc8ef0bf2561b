"""Mean-weight deployment, re-exported: :class:`mean_weights`, :func:`to_deterministic`.

:class:`mean_weights` lives with the sampling state it switches
(:mod:`torch_blue.vi.sampling`), :func:`to_deterministic` with the other conversions
(:mod:`torch_blue.vi.convert`).
"""

from .convert import to_deterministic
from .sampling import mean_weights, mean_weights_enabled

__all__ = ["mean_weights", "mean_weights_enabled", "to_deterministic"]
