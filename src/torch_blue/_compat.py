"""The one place where torch_blue touches private PyTorch API, with fallbacks."""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import torch
from torch.utils import _pytree


def disable_torch_function_subclass() -> AbstractContextManager:
    """Context in which Tensor subclasses' ``__torch_function__`` is not called.

    Used by :class:`~torch_blue.vi.VIReturn` to run an operation on the plain data.
    """
    ctx = getattr(torch._C, "DisableTorchFunctionSubclass", None)
    return ctx() if ctx is not None else nullcontext()


def standard_gamma(concentration: torch.Tensor) -> torch.Tensor:
    """Gamma(concentration, 1) samples that also work under ``torch.vmap``.

    ``torch.distributions.Gamma.sample`` fills an empty tensor in place, which
    ``vmap(randomness="different")`` refuses; the functional kernel does not.
    """
    return torch._standard_gamma(concentration)


def tree_flatten(
    tree: object, is_leaf: Optional[Callable[[object], bool]] = None
) -> tuple[list, object]:
    """Flatten nested tuples/lists/dicts into leaves and a spec.

    ``is_leaf`` marks objects to keep whole (not flattened further).
    """
    return _pytree.tree_flatten(tree, is_leaf=is_leaf)


def tree_unflatten(leaves: list, spec: object) -> object:
    """Inverse of :func:`tree_flatten`."""
    return _pytree.tree_unflatten(leaves, spec)


def is_batched(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is batched by a ``torch.vmap`` running now.

    Used by the sampling engine to refuse outputs that must not depend on the
    sample. Without the private check, every tensor counts as unbatched.
    """
    check = getattr(torch._C._functorch, "is_batchedtensor", None)
    return bool(check(tensor)) if check is not None else False
