"""Upstream's home of the conversion functions, now in :mod:`torch_blue.vi.convert`."""

from ..convert import ban_convert, convert_norms, convert_to_vimodule

__all__ = ["ban_convert", "convert_norms", "convert_to_vimodule"]
