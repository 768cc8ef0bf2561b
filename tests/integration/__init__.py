"""Cross-cutting tests: compile, autocast, CUDA, checkpoints and distributed training.

Each runs the whole library through one of PyTorch's machineries, so it lives here
rather than next to one module's unit tests.
"""
