"""The tutorial is PyTorch's Quickstart with a handful of lines changed, and it runs."""

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "scripts" / "pytorch_tutorial.py"
SKELETON = ROOT / "tests" / "data" / "quickstart_skeleton.py"
BEGIN, END = "# --- The PyTorch Quickstart", "# --- End of the Quickstart"


def quickstart_section(path: Path) -> list[str]:
    """The lines between the two markers, both included."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(BEGIN))
    stop = next(i for i, line in enumerate(lines) if line.startswith(END))
    return lines[start : stop + 1]


def changed_lines(old: list[str], new: list[str]) -> int:
    """Lines added, removed or rewritten; a rewritten block counts its longer side."""
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return sum(
        max(i2 - i1, j2 - j1)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    )


def test_changed_lines_counts_rewrites_once_and_insertions():
    assert changed_lines(["a", "b", "c"], ["a", "B", "c"]) == 1
    assert changed_lines(["a", "c"], ["a", "b", "c"]) == 1
    assert changed_lines(["a", "b", "c"], ["a", "c"]) == 1
    assert changed_lines(["a", "b"], ["x", "y", "z"]) == 3


def test_the_tutorial_changes_at_most_15_lines_of_the_quickstart():
    skeleton, tutorial = quickstart_section(SKELETON), quickstart_section(TUTORIAL)
    assert len(skeleton) > 60  # the whole Quickstart, not a stub
    diff = "\n".join(difflib.unified_diff(skeleton, tutorial, lineterm=""))
    assert changed_lines(skeleton, tutorial) <= 15, diff
    # What changes is the Bayesian swap, not the Quickstart's structure.
    for name in ("def train(dataloader, model, loss_fn, optimizer):", "def test("):
        assert any(line.startswith(name) for line in tutorial)
    assert "vi.VILinear(" in "\n".join(tutorial)


def test_the_tutorial_has_at_most_200_lines():
    assert len(TUTORIAL.read_text().splitlines()) <= 200


def test_the_tutorial_trains_on_the_digits_and_prints_sane_metrics(tmp_path):
    # No Fashion-MNIST in --data-dir: the tutorial says how to install it and falls
    # back to the digits (and to photo crops as out-of-distribution images).
    result = subprocess.run(
        [sys.executable, str(TUTORIAL), "--data-dir", str(tmp_path), "--epochs", "2",
         "--model-path", str(tmp_path / "model.pth")],
        capture_output=True, text=True, check=True, timeout=300, cwd=tmp_path,
        # one thread: the test workers already use both cores
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert "sudo apt-get install dataset-fashion-mnist" in result.stderr
    assert "Falling back to scikit-learn's 8x8 digits" in result.stderr
    out = result.stdout
    assert "Data: digits, 1347 training and 450 test images" in out
    assert "Done!" in out and (tmp_path / "model.pth").is_file()
    assert re.search(r'Predicted: "\d", Actual: "\d"', out)
    metrics = {
        name: float(value)
        for name, value in re.findall(r"Test (accuracy|NLL|ECE): +([\d.]+)", out)
    }
    assert metrics["accuracy"] > 0.6
    assert 0 < metrics["NLL"] < 1.5
    assert 0 <= metrics["ECE"] < 0.3
    test_mi = float(re.search(r"test images: mean ([\d.]+)", out).group(1))
    ood_line = re.search(r"Mutual information, 5 photo crops .*distribution\): (.*)", out)
    ood_mi = [float(value) for value in ood_line.group(1).split(", ")]
    assert len(ood_mi) == 5 and all(value >= 0 for value in ood_mi)
    assert test_mi >= 0


def test_the_skeleton_is_plain_pytorch():
    text = SKELETON.read_text()
    assert "torch_blue import datasets" in text and "vi." not in text
    compile(text, str(SKELETON), "exec")
