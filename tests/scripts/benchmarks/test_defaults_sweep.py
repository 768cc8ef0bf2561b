"""Tests of scripts/benchmarks/defaults_sweep.py (the sweep behind the defaults)."""

import json
import math
import re

import pytest
import torch

from torch_blue import vi

from ..conftest import loaded_script, run_main


@pytest.fixture(scope="module")
def sweep():
    with loaded_script("benchmarks/defaults_sweep") as module:
        yield module


def test_quick_run_prints_the_table_and_writes_the_json(sweep, tmp_path, capsys):
    configs = ["twin", "defaults", "init-1.0", "sum-loss-sgd"]
    path = tmp_path / "sweep.json"
    args = ["--quick", "--configs", ",".join(configs), "--output", str(path)]
    assert run_main(sweep, args) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: python scripts/benchmarks/defaults_sweep.py --quick")
    assert "the numbers mean nothing" in out
    assert "| config | epochs | accuracy % | NLL | ECE | conf-acc |" in out
    rows = re.findall(r"^\| ([\w.-]+) \| (\d+) \| ", out, re.M)
    assert rows == [(c, e) for c in configs for e in ("1", "2")]
    assert re.search(
        r"^\| twin \| 2 \| [0-9.]+ \| [0-9.]+ \| .* \| n/a \| 0/1 \|$", out, re.M
    )
    report = json.loads(path.read_text())
    assert report["quick"] is True
    assert len(report["results"]) == len(configs) * 2  # configs x evals, 1 seed
    assert {r["config"] for r in report["results"]} == set(configs)
    defaults = next(r for r in report["results"] if r["config"] == "defaults")
    assert len(defaults["posterior_std"]) == 3  # one per layer


def test_validation_split_is_cut_from_the_training_part_only(sweep):
    data = sweep._tutorial_digits()
    split = sweep.validation_split(seed=1)
    assert (len(split.x_train), len(split.x_val)) == (1347 - 270, 270)  # ceil(0.2 n)

    def rows(x):
        return {tuple(r) for r in x.flatten(1).tolist()}

    train, val, test = rows(split.x_train), rows(split.x_val), rows(data.x_test)
    assert train | val == rows(data.x_train) and not train & val
    assert not (train | val) & test
    counts = split.y_val.bincount(minlength=10).float() / data.y_train.bincount().float()
    assert torch.allclose(counts, torch.full((10,), 0.2), atol=0.02)  # stratified
    quick = sweep.validation_split(seed=1, limit=256)
    assert len(quick.x_train) == 256 and torch.equal(quick.x_val, split.x_val)
    assert not torch.equal(sweep.validation_split(seed=2).x_val, split.x_val)


def test_defaults_config_passes_no_arguments_to_the_layers(sweep):
    def distributions(config):
        model = sweep.build_model(sweep.CONFIGS[config], (1, 8, 8))
        layers = [m for m in model.modules() if isinstance(m, vi.VILinear)]
        assert [(m.in_features, m.out_features) for m in layers] == [
            (64, 100),
            (100, 100),
            (100, 10),
        ]
        return [(repr(m.variational_distribution), repr(m.prior)) for m in layers]

    fresh = vi.VILinear(64, 100)
    expected = (repr(fresh.variational_distribution), repr(fresh.prior))
    assert distributions("defaults") == [expected] * 3
    assert distributions("init-1.0")[0] != expected
    he = distributions("prior-he")
    assert [h[1].count("std=0.141421") for h in he] == [0, 2, 2]  # sqrt(2 / 100)
    twin = sweep.build_model(sweep.CONFIGS["twin"], (1, 8, 8))
    assert not any(isinstance(m, vi.VIModule) for m in twin.modules())


def test_unknown_config_is_an_argparse_error(sweep, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(["--configs", "defaults,no-such-config"])
    assert "no-such-config" in capsys.readouterr().err


def test_scoring_leaves_training_alone_and_divergence_is_reported(sweep):
    split = sweep.validation_split(seed=0, limit=128)
    both = sweep.run_config("defaults", 0, split, [1, 2], 2, 1e-3)
    last = sweep.run_config("defaults", 0, split, [2], 2, 1e-3)
    assert both[1] == last[0]
    # (SGD on the full-data loss diverges in the first epoch from the 0.1 start)
    split = sweep.validation_split(0)
    gone = sweep.run_config("sum-loss-sgd", 0, split, [1, 2], 2, 1e-3, start_std=0.1)
    assert [(r["diverged"], r["epochs"]) for r in gone] == [(True, 1), (True, 2)]
    table = sweep.markdown_table(sweep.summarise(gone))
    assert "| sum-loss-sgd | 2 | NaN | NaN | NaN | NaN | n/a | 1/1 |" in table


def test_every_config_trains_and_is_scored(sweep):
    split = sweep.validation_split(seed=0, limit=64)
    for name in sweep.CONFIGS:
        (result,) = sweep.run_config(name, 0, split, [1], 2, 1e-3)
        assert not result["diverged"] and 0 <= result["accuracy"] <= 1, name
        assert len(result["posterior_std"]) == (0 if "twin" in name else 3), name


def test_logit_scale_config_learns_a_temperature_with_the_weights(sweep, capsys):
    model = sweep.build_model(sweep.CONFIGS["logit-scale"], (1, 8, 8))
    scale = model[-1]
    assert isinstance(scale, sweep.LogitScale)
    assert scale.log_tau in set(model.parameters())  # (a plain Adam trains it)
    x = torch.randn(3, 1, 8, 8)
    outputs = []
    for tau in (1.0, 2.0):
        scale.log_tau.data.fill_(math.log(tau))
        torch.manual_seed(0)
        outputs.append(model(x, samples=2).as_subclass(torch.Tensor))
    torch.testing.assert_close(outputs[1], 2 * outputs[0])
    assert run_main(sweep, ["--quick", "--configs", "logit-scale"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| logit-scale \| 2 \| .*; tau [0-9.]+ \| 0/1 \|$", out, re.M)


def test_start_std_applies_only_where_a_config_sets_no_start(sweep):
    def log_stds(config, start_std):
        model = sweep.build_model(sweep.CONFIGS[config], (1, 8, 8), start_std)
        return [m._weight_log_std[0, 0].item() for m in model.modules()
                if isinstance(m, vi.VILinear)]  # fmt: skip

    bounds = [1 / math.sqrt(f) + 1e-5 for f in (64, 100, 100)]
    expected = [math.log(0.1 * b) for b in bounds]
    assert log_stds("defaults", 0.1) == pytest.approx(expected)
    assert log_stds("prior-3", 0.1) == pytest.approx(expected)
    assert log_stds("init-1.0", 0.1) == pytest.approx([math.log(b) for b in bounds])
    assert log_stds("defaults", None) == pytest.approx([math.log(0.03 * b) for b in bounds])


@pytest.mark.parametrize("value", ["0", "-0.1", "nan"])
def test_start_std_must_be_positive(sweep, value, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(["--start-std", value])
    assert "--start-std must be positive" in capsys.readouterr().err
