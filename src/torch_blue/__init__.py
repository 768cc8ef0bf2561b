"""torch_blue: Bayesian neural networks for PyTorch, trained with variational inference."""

__version__ = "1.1.0"

__all__ = ["__version__"]
