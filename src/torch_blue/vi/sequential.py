"""Containers: ``VISequential`` and ``VIResidualConnection``."""

from collections import OrderedDict
from typing import Any, overload

from torch import Tensor
from torch.nn import Module, Sequential

from .base import VIModule
from .utils.errors import ShapeError

__all__ = ["VISequential", "VIResidualConnection"]


class VISequential(VIModule, Sequential):
    """``torch.nn.Sequential`` for Bayesian models: VI layers and plain modules mixed.

    As the outermost module it adds the sample dimension once for the whole chain;
    plain modules inside (``nn.ReLU``, ``nn.Flatten``, ...) see one sample at a time,
    so they need no change.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.vi import VILinear, VISequential
    >>> model = VISequential(VILinear(4, 8), nn.ReLU(), nn.Flatten(0), VILinear(16, 2))
    >>> model(torch.randn(2, 4), samples=3).shape
    torch.Size([3, 2])
    """

    @overload
    def __init__(self, *args: Module) -> None: ...

    @overload
    def __init__(self, arg: "OrderedDict[str, Module]") -> None: ...

    def __init__(self, *args: Any) -> None:
        VIModule.__init__(self)
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            items = list(args[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(args)]
        flags = set()
        for key, module in items:
            if not isinstance(module, Module):
                raise TypeError(
                    f"{type(self).__name__}: entry {key!r} is a {type(module).__name__}, "
                    "not an nn.Module"
                )
            self.add_module(key, module)
            flags.update(
                m._return_log_probs for m in module.modules() if isinstance(m, VIModule)
            )
        if len(flags) > 1:
            raise ValueError(
                f"{type(self).__name__}: its modules disagree on return_log_probs; set it "
                "once on the container instead"
            )
        self._return_log_probs = flags.pop() if flags else True

    _torch_twin = Sequential
    # Conversion turns the children first and keeps them: the container is a shell.
    _convert_children_first = True

    @classmethod
    def _from_torch(cls, module: Module, **vikwargs: Any) -> "VISequential":
        # Every entry, a module used twice included (named_children drops repeats).
        return cls(OrderedDict(module._modules))

    def _stacks_children(self) -> bool:
        # Dense stacks run batched, without vmap, where that gives the same results
        # (see torch_blue.vi._stacked); a subclass with its own forward does not.
        return type(self).forward is VISequential.forward

    def forward(self, input_: Any) -> Any:
        """Pass the input through the modules in order."""
        for module in self:
            input_ = module(input_)
        return input_


class VIResidualConnection(VISequential):
    """A ``VISequential`` whose input is added to its output: ``f(x) + x``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.vi import VILinear, VIResidualConnection
    >>> block = VIResidualConnection(VILinear(4, 4), nn.Tanh())
    >>> block(torch.randn(2, 4), samples=3).shape
    torch.Size([3, 2, 4])
    """

    def forward(self, input_: Tensor) -> Tensor:
        """Return ``f(input_) + input_``."""
        output = input_
        for module in self:
            output = module(output)
        if output.shape != input_.shape:
            raise ShapeError(
                f"{type(self).__name__}: the output shape {tuple(output.shape)} must equal "
                f"the input shape {tuple(input_.shape)} to add them"
            )
        return output + input_
