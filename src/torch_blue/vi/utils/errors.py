"""The exceptions torch_blue raises, re-exported from :mod:`torch_blue.errors`.

The classes are defined there; this module keeps the older import path working and
gives the same class objects, so ``isinstance`` and ``except`` behave the same.
"""

from ...errors import *  # noqa: F403
from ...errors import __all__  # noqa: F401
