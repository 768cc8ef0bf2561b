"""Switch for the normalisation constants of the log-densities."""

from collections.abc import Iterator
from contextlib import contextmanager

from .checks import check_bool

__all__ = ["use_norm_constants", "norm_constants", "norm_constants_enabled"]

# torch_blue computes true log-densities by default. Upstream torch_blue 1.1 left the
# constants out; they shift the loss by a constant and never change its gradient.
_USE_NORM_CONSTANTS = True


def norm_constants_enabled() -> bool:
    """Return whether log-densities currently include their normalisation constants."""
    return _USE_NORM_CONSTANTS


def use_norm_constants(mode: bool = True) -> None:
    """Include (``True``, the default) or drop the constants of all log-densities.

    The constants (e.g. ``-0.5 * log(2 * pi)`` per element of a Normal) do not depend
    on any parameter, so they never change a gradient, only the reported value of the
    loss. Set ``False`` for the loss values of :ref:`upstream torch_blue 1.1
    <migrating>`. Prefer the context manager :func:`norm_constants` for a temporary change.

    Parameters
    ----------
    mode : bool, default: True
        Whether to include the constants.

    Examples
    --------
    >>> from torch_blue.vi.utils import use_norm_constants
    >>> use_norm_constants(False)
    >>> use_norm_constants(True)
    """
    global _USE_NORM_CONSTANTS
    _USE_NORM_CONSTANTS = check_bool("use_norm_constants", "mode", mode)


@contextmanager
def norm_constants(mode: bool) -> Iterator[None]:
    """Temporarily include or drop the normalisation constants.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.distributions import MeanFieldNormal
    >>> from torch_blue.vi.utils import norm_constants
    >>> zero = torch.zeros(1)
    >>> with norm_constants(False):
    ...     lp = MeanFieldNormal().log_prob(zero, (zero, zero))
    >>> float(lp)
    -0.0
    """
    previous = _USE_NORM_CONSTANTS
    use_norm_constants(mode)
    try:
        yield
    finally:
        use_norm_constants(previous)
