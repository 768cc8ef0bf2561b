"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["probs"].shape == (64, 10)
    model = namespace["BayesianBilinear"](2, 3, 4)
    import torch

    assert model(torch.randn(5, 2), torch.randn(5, 3), samples=2).shape == (2, 5, 4)
