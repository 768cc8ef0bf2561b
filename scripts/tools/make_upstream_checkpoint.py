"""Write the upstream-checkpoint fixture used by ``tests/vi/test_upstream_checkpoint.py``.

Needs upstream torch_blue 1.1 importable *instead of* this project, e.g.::

    pip download torch-blue==1.1.0 --no-deps -d /tmp/up && cd /tmp/up && unzip -q *.whl
    PYTHONPATH=/tmp/up python scripts/tools/make_upstream_checkpoint.py tests/data

It saves the state dicts of a small MLP and a small CNN built with upstream's classes
(``upstream_1.1_mlp.pt``, ``upstream_1.1_cnn.pt``).
"""

import sys
from pathlib import Path

import torch
from torch import nn


def main(out_dir: str) -> int:
    """Build the upstream models with a fixed seed and save their state dicts."""
    import torch_blue
    from torch_blue import vi

    if getattr(torch_blue, "__version__", None) != "1.1.0" or "/tmp" not in vi.__file__:
        print("run this with upstream torch_blue 1.1.0 on PYTHONPATH", file=sys.stderr)
    torch.manual_seed(0)
    mlp = vi.VISequential(vi.VILinear(4, 8), nn.ReLU(), vi.VILinear(8, 3, bias=False))
    cnn = vi.VISequential(
        vi.VIConv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), vi.VILinear(2 * 5 * 5, 3)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(mlp.state_dict(), out / "upstream_1.1_mlp.pt")
    torch.save(cnn.state_dict(), out / "upstream_1.1_cnn.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/data"))
