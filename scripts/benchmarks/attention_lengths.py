"""Sampled attention against sequence length: torch_blue's core and torch's weights path.

With sampled weights and no attention weights asked for (what the transformer layers
do), :class:`~torch_blue.vi.VIMultiheadAttention` runs its own attention core: batched
matrix products for few positions on a CPU, otherwise one fused
``scaled_dot_product_attention`` call for all samples. Before, it took torch's
``F.multi_head_attention_forward`` path that computes the attention weights of every
sample (the only path of it with ``vmap`` batching rules), as upstream torch_blue
still does.

This script times one training step (forward, backward, Adam) of a 2-layer
``VITransformerEncoder`` (d_model 64, 4 heads, feed-forward 128, batch 32, S = 10,
mean of squares as the loss) for each sequence length, three ways interleaved step
by step in one process (the most stable comparison on a shared machine):

* ``plain``: ``nn.TransformerEncoder`` (dropout 0) on the S·B stacked batch;
* ``weights path``: torch_blue with the attention forced through torch's weights path
  (``need_weights=True``, the weights dropped);
* ``core``: torch_blue as it is.

It prints the median time of each as a ratio to ``plain``, the core's time relative
to the weights path, and the bytes autograd saved for the backward pass in the two
torch_blue forms (``torch.autograd.graph.saved_tensors_hooks``; a tensor saved by
two nodes counts twice).

Usage::

    python scripts/benchmarks/attention_lengths.py                  # lengths 16 to 256
    python scripts/benchmarks/attention_lengths.py --lengths 32,128 --steps 10
    python scripts/benchmarks/attention_lengths.py --quick          # seconds (for tests)
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from torch_blue.vi import VITransformerEncoder, VITransformerEncoderLayer
from torch_blue.vi.attention import VIMultiheadAttention

D_MODEL, HEADS, FEEDFORWARD, LAYERS, BATCH = 64, 4, 128, 2, 32
FORMS = ("plain", "weights path", "core")


@contextmanager
def weights_path() -> Iterator[None]:
    """Force every ``VIMultiheadAttention`` call through torch's weights path."""
    forward = VIMultiheadAttention.forward

    def through_weights(
        self: VIMultiheadAttention,
        *args: Any,
        need_weights: bool = True,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        output, weights = forward(self, *args, need_weights=True, **kwargs)
        return output, weights if need_weights else None

    VIMultiheadAttention.forward = through_weights  # type: ignore[method-assign]
    try:
        yield
    finally:
        VIMultiheadAttention.forward = forward  # type: ignore[method-assign]


def saved_bytes(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``run()`` and the bytes of the tensors autograd saved during it."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = run()
    return output, total


def training_steps(
    length: int, samples: int, d_model: int, heads: int, seed: int
) -> dict[str, Callable[[], int]]:
    """One training-step closure per form; each returns the bytes saved (0: plain)."""
    torch.manual_seed(seed)
    x = torch.randn(BATCH, length, d_model)
    bayesian = VITransformerEncoder(
        VITransformerEncoderLayer(d_model, heads, FEEDFORWARD), LAYERS
    )
    plain = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(
            d_model, heads, FEEDFORWARD, dropout=0.0, batch_first=True
        ),
        LAYERS,
        enable_nested_tensor=False,
    )
    stacked = x.repeat(samples, 1, 1)
    optimizers = {
        "plain": torch.optim.Adam(plain.parameters(), lr=1e-3),
        "bayesian": torch.optim.Adam(bayesian.parameters(), lr=1e-3),
    }

    def plain_step() -> int:
        optimizers["plain"].zero_grad(set_to_none=True)
        plain(stacked).pow(2).mean().backward()
        optimizers["plain"].step()
        return 0

    def bayesian_step() -> int:
        optimizers["bayesian"].zero_grad(set_to_none=True)
        output, saved = saved_bytes(lambda: bayesian(x, samples=samples))
        output.pow(2).mean().backward()
        optimizers["bayesian"].step()
        return saved

    def weights_step() -> int:
        with weights_path():
            return bayesian_step()

    return {"plain": plain_step, "weights path": weights_step, "core": bayesian_step}


def measure(
    length: int,
    samples: int,
    steps: int,
    warmup: int,
    d_model: int = D_MODEL,
    heads: int = HEADS,
    seed: int = 0,
) -> dict[str, tuple[float, int]]:
    """Median seconds per step and bytes saved of each form, interleaved step by step."""
    closures = training_steps(length, samples, d_model, heads, seed)
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    saved: dict[str, int] = {}
    for step in range(warmup + steps):
        for form in FORMS:
            start = time.perf_counter()
            saved[form] = closures[form]()
            if step >= warmup:
                times[form].append(time.perf_counter() - start)
    return {form: (statistics.median(times[form]), saved[form]) for form in FORMS}


def table(results: dict[int, dict[str, tuple[float, int]]]) -> str:
    """Markdown table of the ratios to ``plain`` and the saved activations."""
    lines = [
        "| length | weights path / plain | core / plain | core / weights path "
        "| saved MiB, weights path | saved MiB, core |",
        "|---|---|---|---|---|---|",
    ]
    for length, found in results.items():
        plain, weights, core = (found[form][0] for form in FORMS)
        lines.append(
            f"| {length} | {weights / plain:.2f}x | {core / plain:.2f}x "
            f"| {core / weights:.2f} | {found['weights path'][1] / 2**20:.1f} "
            f"| {found['core'][1] / 2**20:.1f} |"
        )
    return "\n".join(lines)


def positive_lengths(text: str) -> list[int]:
    """``"16,32"`` -> ``[16, 32]``; every length must be a positive integer."""
    try:
        lengths = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"lengths must be integers, got {text!r}"
        ) from None
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"lengths must be positive, got {text!r}")
    return lengths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison and print the table; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lengths", type=positive_lengths, default=[16, 32, 64, 96, 128, 256]
    )
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per form")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="lengths 8 and 96, d_model 16, 1 step"
    )
    args = parser.parse_args(argv)
    if min(args.samples, args.steps, args.threads) < 1 or args.warmup < 0:
        parser.error("samples, steps and threads must be >= 1, warmup >= 0")
    d_model = D_MODEL
    if args.quick:
        args.lengths, args.steps, args.warmup, d_model = [8, 96], 1, 0, 16
    torch.set_num_threads(args.threads)
    results = {
        length: measure(
            length, args.samples, args.steps, args.warmup, d_model, seed=args.seed
        )
        for length in tqdm(args.lengths, desc="lengths", file=sys.stderr)
    }
    print(
        f"# Sampled attention against sequence length\n\n"
        f"torch {torch.__version__}, {args.threads} threads, S = {args.samples}, "
        f"batch {BATCH}, d_model {d_model}, {HEADS} heads, {LAYERS} layers; median of "
        f"{args.steps} interleaved steps after {args.warmup} warm-up\n\n"
        f"{table(results)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
