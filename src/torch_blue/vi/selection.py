"""Choosing parts of a model by name pattern, class or predicate.

:func:`~torch_blue.vi.convert_to_vimodule` and :func:`~torch_blue.vi.add_lora` take
``include`` and ``exclude`` arguments that say which parts of a model to make
Bayesian or to adapt; :func:`select_modules` turns them into the chosen modules.

Examples
--------
>>> from torch import nn
>>> from torch_blue.vi.selection import select_modules
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> chosen = select_modules(model, include=nn.Linear, exclude="0")
>>> [name for name, module in model.named_modules() if module in chosen]
['2']
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Optional, Union

from torch import nn

__all__ = ["ModuleSelection", "Selection", "select_modules"]

#: What ``include`` and ``exclude`` take: a module name with shell-style patterns, a
#: module class, a predicate ``(name, module) -> bool``, or a list mixing these.
ModuleSelection = Union[
    str,
    type[nn.Module],
    Callable[[str, nn.Module], bool],
    Sequence[Union[str, type[nn.Module], Callable[[str, nn.Module], bool]]],
]


@dataclass
class Selection:
    """The outcome of ``include``/``exclude``: which modules are chosen.

    ``chosen`` holds every module inside a subtree matched by ``include`` (the whole
    model without ``include``) and outside every subtree matched by ``exclude``;
    ``direct`` the chosen modules that an ``include`` entry names: their exact name
    or their class (``"encoder.norm"`` or ``nn.LayerNorm`` name a norm layer;
    ``"encoder.*"`` and predicates choose subtrees and name nothing).
    """

    chosen: set[int] = field(default_factory=set)
    direct: set[int] = field(default_factory=set)

    def __contains__(self, module: nn.Module) -> bool:
        return id(module) in self.chosen


def _selectors(value: Any, fn: str, argument: str) -> list:
    entries = [value] if isinstance(value, (str, type)) or callable(value) else value
    if not isinstance(entries, (list, tuple)) or not entries:
        raise TypeError(
            f"{fn}: {argument} must be a module name pattern, an nn.Module class, a "
            f"predicate (name, module) -> bool or a non-empty list of these, got {value!r}"
        )
    for entry in entries:
        if isinstance(entry, nn.Module):
            raise TypeError(
                f"{fn}: {argument} holds the module {type(entry).__name__}(...); pass "
                "its name or its class"
            )
        if isinstance(entry, type) and not issubclass(entry, nn.Module):
            raise TypeError(
                f"{fn}: {argument} holds {entry!r}, which is not an nn.Module class"
            )
        if not isinstance(entry, (str, type)) and not callable(entry):
            raise TypeError(
                f"{fn}: {argument} holds {entry!r}; expected a module name pattern, an "
                "nn.Module class or a predicate (name, module) -> bool"
            )
    return list(entries)


def _describe(selector: Any) -> str:
    if isinstance(selector, str):
        return repr(selector)
    if isinstance(selector, type):
        return f"class {selector.__name__}"
    return f"predicate {getattr(selector, '__qualname__', repr(selector))}"


def _names(selector: Any, name: str) -> bool:
    """Whether ``selector`` names this module itself: its class, or its exact name."""
    return isinstance(selector, type) or selector == name


def _matches(selector: Any, name: str, module: nn.Module) -> bool:
    if isinstance(selector, str):  # (a name may itself hold "[", "?" or "*")
        return name == selector or fnmatchcase(name, selector)
    if isinstance(selector, type):
        return isinstance(module, selector)
    return bool(selector(name, module))


def select_modules(
    model: nn.Module,
    include: Optional[ModuleSelection] = None,
    exclude: Optional[ModuleSelection] = None,
    *,
    fn: str = "select_modules",
) -> Selection:
    """Choose the modules of ``model`` that ``include`` and ``exclude`` describe.

    A module is chosen when it or one of its ancestors matches ``include`` (every
    module when ``include`` is ``None``) and neither it nor an ancestor matches
    ``exclude``: both select whole subtrees. Names are the ones of
    ``model.named_modules()`` (``""`` for ``model`` itself); a pattern matches the
    whole name with ``fnmatch`` rules, where ``*`` also crosses dots. A class matches
    its instances, subclasses included. Every entry must match at least one module.

    Raises
    ------
    TypeError
        When an entry is neither a name pattern, an ``nn.Module`` class nor callable.
    ValueError
        When an entry matches no module; the message names it and lists the names.
    """
    included = None if include is None else _selectors(include, fn, "include")
    excluded = [] if exclude is None else _selectors(exclude, fn, "exclude")
    hits = {("include", i): False for i in range(len(included or ()))}
    hits.update({("exclude", i): False for i in range(len(excluded))})
    names: list[str] = []
    selection = Selection()
    dropped: set[int] = set()

    def matched(kind: str, selectors: list, name: str, module: nn.Module) -> set[int]:
        found = set()
        for index, selector in enumerate(selectors):
            if _matches(selector, name, module):
                hits[(kind, index)] = True
                found.add(index)
        return found

    def walk(
        module: nn.Module, name: str, inside: bool, outside: bool, above: set[int]
    ) -> None:
        names.append(name)
        entries = matched("include", included, name, module) if included else set()
        inside = inside or bool(entries)
        outside = bool(matched("exclude", excluded, name, module)) or outside
        if outside:
            dropped.add(id(module))
        elif inside:
            selection.chosen.add(id(module))
            if any(_names(included[i], name) for i in entries - above):
                selection.direct.add(id(module))
        for child_name, child in module._modules.items():
            if child is not None:
                child_name = f"{name}.{child_name}" if name else child_name
                walk(child, child_name, inside, outside, entries)

    walk(model, "", included is None, False, set())
    selection.chosen -= dropped
    selection.direct -= dropped
    missing = [
        _describe((included if kind == "include" else excluded)[index]) + f" ({kind})"
        for (kind, index), hit in hits.items()
        if not hit
    ]
    if missing:
        shown = ", ".join(repr(n) for n in names[:30]) + (
            ", ..." if len(names) > 30 else ""
        )
        raise ValueError(
            f"{fn}: {', '.join(missing)} matches no module of {type(model).__name__}; "
            f"its module names are {shown}"
        )
    return selection
