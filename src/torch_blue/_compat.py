"""The one place where torch_blue touches private PyTorch API, with fallbacks."""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import torch
from torch.nn.modules import module as nn_module
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


def function_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ...) is running here."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return True if active is None else bool(active())


def has_call_hooks(module: torch.nn.Module) -> bool:
    """Whether ``module`` has forward or backward hooks (or pre-hooks) of its own."""
    return bool(
        getattr(module, "_forward_hooks", None)
        or getattr(module, "_forward_pre_hooks", None)
        or getattr(module, "_backward_hooks", None)
        or getattr(module, "_backward_pre_hooks", None)
    )


def global_call_hooks() -> bool:
    """Whether forward or backward hooks are registered for every module."""
    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    return any(getattr(nn_module, name, None) for name in names)
