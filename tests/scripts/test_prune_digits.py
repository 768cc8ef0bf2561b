"""Tests of scripts/prune_digits.py (pruning a Bayesian MLP on the digits)."""

import pytest
import torch

from .conftest import loaded_script

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def script():
    with loaded_script("prune_digits") as module:
        yield module


TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "512",
    "--samples",
    "1",
    "--eval-samples",
    "2",
    "--warmup-epochs",
    "1",
    "--no-progress",
    "--threads",
    "1",
]


def test_tiny_run_prints_and_writes_the_tables(script, tmp_path, capsys):
    out = tmp_path / "pruning.md"
    threads = torch.get_num_threads()
    try:
        status = script.main([*TINY, "--levels", "0,90", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert status == 0
    assert "1347 training and 450 test images" in printed
    assert "| 0% | 17610 / 17610 |" in printed
    assert "| 90% | 1761 / 17610 |" in printed
    assert "KL divergence per layer, 90% pruned" in printed
    assert "| **total** | 17610 | 1761 | 90.0% |" in printed
    written = out.read_text(encoding="utf-8")
    assert "| 90% | 1761 / 17610 |" in written
    assert "Command: `python scripts/prune_digits.py --epochs 1" in written


def test_validation_split_comes_from_the_training_split(script):
    test = script.load_split(validation=False)
    validation = script.load_split(validation=True)
    assert (len(test.y_train), len(test.y_eval)) == (1347, 450)
    assert (len(validation.y_train), len(validation.y_eval)) == (1077, 270)
    assert validation.eval_name == "validation"
    assert 0.0 <= float(test.x_train.min()) and float(test.x_train.max()) <= 1.0
    # every validation image is a training image of the test setup
    train_rows = {tuple(row.tolist()) for row in test.x_train}
    assert all(tuple(row.tolist()) in train_rows for row in validation.x_eval)


def test_pruned_copies_leave_the_model_alone(script):
    split = script.load_split(validation=True)
    model = script.build_model(0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = script.prune_and_evaluate(model, split, (0.0, 95.0), samples=2, seed=0)
    assert [r.pruned for r in results] == [0, round(0.95 * 17610)]
    assert results[1].kl < results[0].kl
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "argv",
    [
        ["--levels", "0,100"],
        ["--levels", "ninety"],
        ["--epochs", "0"],
        ["--lr", "-1"],
        ["--warmup-epochs", "-1"],
    ],
)
def test_invalid_arguments_exit(script, argv, capsys):
    with pytest.raises(SystemExit) as info:
        script.parse_args(argv)
    assert info.value.code == 2
