"""``PostInitCallMeta``, kept for code written against upstream torch_blue 1.1."""

from abc import ABCMeta
from typing import Any

__all__ = ["PostInitCallMeta"]


class PostInitCallMeta(ABCMeta):
    """Metaclass that calls ``__post_init__()`` once ``__init__`` has returned.

    torch_blue itself does not need it (its modules decide everything at call time);
    it is exported so that user classes written for upstream keep working.

    Examples
    --------
    >>> class Checked(metaclass=PostInitCallMeta):
    ...     def __init__(self):
    ...         self.ready = False
    ...     def __post_init__(self):
    ...         self.ready = True
    >>> Checked().ready
    True
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        instance = super().__call__(*args, **kwargs)
        post_init = getattr(instance, "__post_init__", None)
        if post_init is not None:
            post_init()
        return instance
