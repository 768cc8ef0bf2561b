"""Tests of scripts/benchmarks/out_of_the_box.py (library defaults against the twin)."""

import json
import re
from dataclasses import replace

import pytest
import torch

from torch_blue import vi

from ..conftest import loaded_script, run_main


@pytest.fixture(scope="module")
def ootb():
    with loaded_script("benchmarks/out_of_the_box") as module:
        yield module


def test_quick_pipeline_writes_table_checks_json_and_figure(ootb, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["--quick", "--rows", "digits-mlp,sine-1d", "--methods", "twin,defaults"]
    args += ["--seeds", "2"]  # mean ± standard error
    assert run_main(ootb, [*args, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: python scripts/benchmarks/out_of_the_box.py --quick")
    assert "the numbers mean nothing" in out
    assert "| row | budget | method | accuracy % | NLL | ECE |" in out
    assert "| row | budget | method | RMSE | log-lik |" in out
    assert re.search(r"^\| digits-mlp \| x3 \| defaults \| [0-9.]+ ± [0-9.]+ \|", out, re.M)
    verdicts = re.findall(r"^- (\S+) x(\d) defaults: \w+: .* (met|MISSED)$", out, re.M)
    assert {(row, budget) for row, budget, _ in verdicts} == {
        ("digits-mlp", "1"),
        ("digits-mlp", "3"),
        ("sine-1d", "1"),
        ("sine-1d", "3"),
    }
    assert len(verdicts) == 2 * 3 + 2 * 2  # accuracy, NLL, ECE; RMSE, log-likelihood
    report = json.loads((tmp_path / "out_of_the_box.json").read_text())
    assert report["quick"] is True
    assert len(report["results"]) == 2 * 2 * 2 * 2  # rows x methods x budgets x seeds
    assert {r["method"] for r in report["results"]} == {"twin", "defaults"}
    assert len(report["checks"]) == len(verdicts)
    assert all(isinstance(c["met"], bool) for c in report["checks"])
    png = tmp_path / "out_of_the_box.png"
    assert png.is_file() and png.stat().st_size > 0


def _verdicts(checks):
    return {c.description.split(": ")[-1]: c.met for c in checks}


def test_classification_targets_against_the_twin(ootb):
    twin = {"accuracy": 0.90, "nll": 0.30, "ece": 0.010, "ood_auroc": 0.80}
    equal = ootb.target_checks("r", "classification", dict(twin), twin)
    # Equal NLL is met; OOD needs +0.10 over the twin's max-softmax AUROC.
    assert _verdicts(equal) == {
        "accuracy": True,
        "nll": True,
        "ece": True,
        "ood_auroc": False,
    }
    ours = {"accuracy": 0.8955, "nll": 0.3001, "ece": 0.019, "ood_auroc": 0.91}
    assert _verdicts(ootb.target_checks("r", "classification", ours, twin)) == {
        "accuracy": True,
        "nll": False,
        "ece": True,
        "ood_auroc": True,
    }
    ours = {"accuracy": 0.894, "nll": 0.29, "ece": 0.021}  # no OOD set: no OOD check
    assert _verdicts(ootb.target_checks("r", "classification", ours, twin)) == {
        "accuracy": False,
        "nll": True,
        "ece": False,
    }
    twin_ece = {**twin, "ece": 0.05}  # the ECE bound is max(0.02, twin's)
    ours = {"accuracy": 0.9, "nll": 0.3, "ece": 0.049}
    assert _verdicts(ootb.target_checks("r", "classification", ours, twin_ece))["ece"]


def test_regression_targets_against_the_twin(ootb):
    twin = {"rmse": 4.0, "log_likelihood": -2.5}
    ours = {"rmse": 4.19, "log_likelihood": -2.5}
    assert _verdicts(ootb.target_checks("r", "regression", ours, twin)) == {
        "rmse": True,
        "log_likelihood": True,
    }
    ours = {"rmse": 4.21, "log_likelihood": -2.51}
    checks = ootb.target_checks("r", "regression", ours, twin)
    assert _verdicts(checks) == {"rmse": False, "log_likelihood": False}
    assert checks[0].line().endswith("MISSED")


def test_checks_only_for_torch_blue_methods(ootb):
    summary = [
        {"row": "boston", "budget": 1, "method": m, "rmse": 3.0, "log_likelihood": -2.5}
        for m in ("twin", "defaults", "flipout", "fixed-noise", "ivon", "bayesian-torch")
    ]
    labels = {c.description.split(":")[0] for c in ootb.all_checks(summary)}
    assert labels == {"boston x1 defaults", "boston x1 flipout"}


@pytest.mark.parametrize(
    ("row", "in_shape", "fresh"),
    [
        ("digits-mlp", (1, 8, 8), vi.VILinear(2, 3)),
        ("mnist1d-cnn", (1, 40), vi.VIConv1d(1, 2, 3)),
    ],
)
def test_defaults_network_has_no_distribution_arguments(ootb, row, in_shape, fresh):
    torch.manual_seed(0)
    spec = ootb.ROWS[row]
    model = ootb.build_network(spec, in_shape, bayesian=True)
    layers = [m for m in model.modules() if isinstance(m, type(fresh))]
    assert layers
    for layer in layers:
        assert repr(layer.variational_distribution) == repr(fresh.variational_distribution)
        assert repr(layer.prior) == repr(fresh.prior)
        assert layer.estimator == fresh.estimator
    twin = ootb.build_network(spec, in_shape, bayesian=False)
    x = torch.rand(5, *in_shape)
    assert model(x, samples=2).shape == (2, *twin(x).shape)


def test_unknown_names_are_rejected(ootb, capsys):
    with pytest.raises(SystemExit):
        ootb.parse_args(["--rows", "digits-mlp,no-such-row"])
    err = capsys.readouterr().err
    assert "unknown row 'no-such-row'" in err and "digits-mlp" in err
    with pytest.raises(SystemExit):
        ootb.parse_args(["--methods", "twin,dropout"])
    assert "unknown method 'dropout'" in capsys.readouterr().err


def test_fixed_noise_is_upstreams_likelihood_on_regression_rows_only(ootb, tmp_path):
    args = ["--quick", "--rows", "digits-mlp,sine-1d", "--methods", "twin,fixed-noise"]
    assert run_main(ootb, [*args, "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "out_of_the_box.json").read_text())
    rows = {(r["row"], r["method"]) for r in report["results"]}
    assert rows == {("digits-mlp", "twin"), ("sine-1d", "twin"), ("sine-1d", "fixed-noise")}


def test_first_seed_runs_the_later_seeds_of_a_table(ootb, tmp_path):
    # Seeds 1 and 2 in a run of their own equal seeds 1 and 2 of one run of three.
    def seeds(extra, out):
        args = ["--quick", "--rows", "sine-1d,diabetes", "--methods", "twin", *extra]
        assert run_main(ootb, [*args, "--no-progress", "--output-dir", str(out)]) == 0
        report = json.loads((out / "out_of_the_box.json").read_text())
        return {(r["row"], r["seed"], r["budget"]): r["rmse"] for r in report["results"]}

    whole = seeds(["--seeds", "3", "--splits", "3"], tmp_path / "whole")
    later = seeds(["--seeds", "2", "--splits", "2", "--first-seed", "1"], tmp_path / "late")
    assert sorted({seed for _, seed, _ in later}) == [1, 2]
    assert later == {key: value for key, value in whole.items() if key[1] >= 1}
    with pytest.raises(SystemExit):
        ootb.parse_args(["--first-seed", "-1"])


def test_merge_makes_one_table_of_runs_spread_over_processes(ootb, tmp_path, capsys):
    base = ["--quick", "--rows", "sine-1d", "--no-progress"]
    parts = [
        (["--methods", "twin,defaults", "--seeds", "1"], "a"),
        (["--methods", "twin,defaults", "--seeds", "1", "--first-seed", "1"], "b"),
        (["--methods", "twin,defaults", "--seeds", "2"], "whole"),
    ]
    for extra, name in parts:
        assert run_main(ootb, [*base, *extra, "--output-dir", str(tmp_path / name)]) == 0
    capsys.readouterr()
    reports = [str(tmp_path / n / "out_of_the_box.json") for n in ("a", "b")]
    out = tmp_path / "merged"
    assert run_main(ootb, ["--merge", *reports, "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--merge: 8 results from 2 reports" in printed  # 2 methods x 2 seeds x 2
    assert "--quick:" in printed and "sine-1d x3 defaults: rmse" in printed
    merged = json.loads((out / "out_of_the_box.json").read_text())
    whole = json.loads((tmp_path / "whole" / "out_of_the_box.json").read_text())

    def scores(report):  # (the training times differ between runs)
        return [
            {k: v for k, v in e.items() if "seconds" not in k} for e in report["summary"]
        ]

    assert scores(merged) == scores(whole)
    assert (out / "out_of_the_box.png").exists()
    # A report from before --validation existed scored the test sets.
    older = json.loads((tmp_path / "b" / "out_of_the_box.json").read_text())
    del older["validation"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    merge = ["--merge", reports[0], str(tmp_path / "older.json"), "--output-dir", str(out)]
    assert run_main(ootb, merge) == 0
    # Reports of different kinds, or one run twice, are refused.
    val = tmp_path / "val"
    args = [*base, "--methods", "twin", "--seeds", "1", "--validation"]
    assert run_main(ootb, [*args, "--output-dir", str(val)]) == 0
    capsys.readouterr()
    # (a candidate start equal to the library's is the library's)
    start = ootb.INITIAL_STD
    for name, extra in [("same", ["--candidate-init-std", str(start)]),
                        ("other", ["--candidate-init-std", str(start * 3)])]:  # fmt: skip
        args = [*base, "--methods", "defaults", "--seeds", "1", "--first-seed", "2", *extra]
        assert run_main(ootb, [*args, "--output-dir", str(tmp_path / name)]) == 0
    capsys.readouterr()
    same, other = (str(tmp_path / n / "out_of_the_box.json") for n in ("same", "other"))
    assert run_main(ootb, ["--merge", *reports, same, "--output-dir", str(out)]) == 0
    assert "--candidate-init-std" not in capsys.readouterr().out
    # A report of the twin alone had no torch_blue layers: it merges with any start.
    args = [*base, "--methods", "twin", "--seeds", "1", "--first-seed", "2"]
    assert run_main(ootb, [*args, "--output-dir", str(tmp_path / "t")]) == 0
    twin = str(tmp_path / "t" / "out_of_the_box.json")
    assert run_main(ootb, ["--merge", twin, other, "--output-dir", str(out)]) == 0
    assert f"--candidate-init-std {start * 3:g}" in capsys.readouterr().out
    for paths, message in [
        ([reports[0], str(val / "out_of_the_box.json")], "differ in validation"),
        ([reports[0], other], "differ in initial_std"),
        ([reports[0], reports[0]], "repeats a run"),
    ]:
        assert run_main(ootb, ["--merge", *paths, "--output-dir", str(out)]) == 2
        assert message in capsys.readouterr().err


class _PeerLayer(torch.nn.Module):
    """bayesian-torch's attribute names: a linear layer's weight, or a convolution's
    kernel (whose prior is named ``prior_weight_*``), and a bias."""

    def __init__(self, weight: str) -> None:
        super().__init__()
        self.weight_name = weight
        shapes = {"weight": (3, 4), "kernel": (2, 1, 3)}
        for name, prior, shape in (
            (weight, "weight", shapes[weight]),
            ("bias", "bias", (3,)),
        ):
            setattr(self, f"mu_{name}", torch.nn.Parameter(torch.randn(shape)))
            setattr(self, f"rho_{name}", torch.nn.Parameter(torch.randn(shape) - 2))
            self.register_buffer(f"prior_{prior}_mu", torch.full(shape, 0.3))
            self.register_buffer(f"prior_{prior}_sigma", torch.full(shape, 1.5))


def test_summed_kl_is_the_kl_of_every_weight_summed(ootb):
    torch.manual_seed(0)
    model = torch.nn.Sequential(_PeerLayer("kernel"), torch.nn.ReLU(), _PeerLayer("weight"))
    want = 0.0
    for layer in (model[0], model[2]):
        for name, prior in ((layer.weight_name, "weight"), ("bias", "bias")):
            q = torch.distributions.Normal(
                getattr(layer, f"mu_{name}"),
                torch.nn.functional.softplus(getattr(layer, f"rho_{name}")),
            )
            p = torch.distributions.Normal(
                getattr(layer, f"prior_{prior}_mu"), getattr(layer, f"prior_{prior}_sigma")
            )
            want = want + torch.distributions.kl_divergence(q, p).sum()
    got = ootb.summed_kl(model)
    torch.testing.assert_close(got, want)
    got.backward()  # differentiable in every variational parameter
    assert all(p.grad is not None for p in model.parameters())


def _rows_of(part, whole):
    """Indices in ``whole`` of each row of ``part`` (-1 if absent)."""
    matches = (part.flatten(1)[:, None] == whole.flatten(1)[None]).all(-1)
    return torch.where(matches.any(1), matches.float().argmax(1), -1)


def test_validation_data_come_from_the_training_part_only(ootb, tmp_path):
    from torch_blue import datasets

    spec = ootb.ROWS["digits-mlp"]
    (full,) = ootb.row_datasets(spec, 1, tmp_path, None)
    (held,) = ootb.row_datasets(spec, 1, tmp_path, None, validation=True)
    assert len(held.x_train) + len(held.x_test) == len(full.x_train)
    in_train = _rows_of(held.x_test, full.x_train)
    assert (in_train >= 0).all()  # every validation row is a training row ...
    torch.testing.assert_close(held.y_test, full.y_train[in_train])
    assert not set(in_train.tolist()) & set(_rows_of(held.x_train, full.x_train).tolist())
    # ... and the class shares stay (stratified)
    share = torch.bincount(held.y_test, minlength=10) / len(held.y_test)
    whole = torch.bincount(full.y_train, minlength=10) / len(full.y_train)
    assert (share - whole).abs().max() < 0.02

    spec = ootb.ROWS["boston"]
    x, y = ootb.regression_arrays("boston")
    ((train, _),) = datasets.uci_splits(len(x), 1)
    (held,) = ootb.row_datasets(spec, 1, tmp_path, None, validation=True)
    cut = round(0.8 * len(train))  # the last 20 % of the training rows score
    want = torch.as_tensor(y[train[cut:]], dtype=torch.float32).unsqueeze(-1)
    torch.testing.assert_close(held.y_test, want)
    assert len(held.x_train) == cut  # and no test row is anywhere

    sine, sine_held = ootb.sine_data(), ootb.sine_data(validation=True)
    torch.testing.assert_close(sine_held.y_train, sine.y_train)
    assert not torch.equal(sine_held.x_test, sine.x_test)


def test_validation_run_says_so(ootb, tmp_path, capsys):
    args = ["--rows", "digits-mlp", "--methods", "twin,defaults", "--validation"]
    run_main(ootb, [*args, "--quick", "--output-dir", str(tmp_path)])
    assert (
        "--validation: scored on data cut from the training parts"
        in capsys.readouterr().out
    )
    assert json.loads((tmp_path / "out_of_the_box.json").read_text())["validation"] is True


def test_candidate_initial_std_reaches_only_the_torch_blue_layers(ootb, tmp_path, capsys):
    from torch_blue.vi.distributions import MeanFieldNormal

    spec = ootb.ROWS["digits-mlp"]
    model = ootb.build_network(
        spec, (1, 8, 8), bayesian=True, variational_distribution=MeanFieldNormal(std=0.03)
    )
    layers = [m for m in model.modules() if isinstance(m, vi.VILinear)]
    assert len(layers) == 3
    assert all(
        repr(m.variational_distribution["weight"]) == repr(MeanFieldNormal(std=0.03))
        for m in layers
    )
    args = ["--rows", "digits-mlp", "--methods", "twin,defaults", "--quick"]
    run_main(ootb, [*args, "--candidate-init-std", "0.03", "--output-dir", str(tmp_path)])
    assert "--candidate-init-std 0.03: torch_blue's methods" in capsys.readouterr().out
    report = json.loads((tmp_path / "out_of_the_box.json").read_text())
    assert report["candidate_init_std"] == 0.03
    with pytest.raises(SystemExit):
        ootb.parse_args(["--candidate-init-std", "-1"])


def test_training_objective_is_the_last_epochs_mean_of_each_term(ootb, monkeypatch):
    # A stand-in trainer logs step k of epoch e as data term 10 e + k, KL term e: each
    # budget's numbers must be the mean over that epoch's steps only.
    spec = replace(ootb.ROWS["boston"], batch_size=4)
    data = ootb.Dataset("toy", torch.zeros(10, 2), torch.zeros(10), None, None)
    log = {"data_fitting": [], "prior_matching": []}
    count = {"steps": 0}

    def step(x, y):
        epoch, k = divmod(count["steps"], 3)  # 10 examples in batches of 4: 3 steps
        log["data_fitting"].append(10.0 * (epoch + 1) + k)
        log["prior_matching"].append(float(epoch + 1))
        count["steps"] += 1

    stand_in = ootb.Trainer(step, None, log)
    monkeypatch.setattr(ootb, "make_trainer", lambda *args: stand_in)
    monkeypatch.setattr(ootb, "score", lambda *args: {})
    results = ootb.run_method("defaults", spec, data, 0, {1: 1, 3: 3}, 2)
    terms = [(r["budget"], r["train_data_term"], r["train_kl_term"]) for r in results]
    assert terms == [(1, 11.0, 1.0), (3, 31.0, 3.0)]
    table = ootb.elbo_table(ootb.summarise(results))
    assert "| boston | x3 | defaults | 31.0000 | 3.0000 | 34.0000 |" in table


def test_only_torch_blue_methods_report_the_training_objective(ootb, tmp_path, capsys):
    args = ["--quick", "--rows", "sine-1d", "--methods", "twin,defaults", "--seeds", "1"]
    assert run_main(ootb, [*args, "--no-progress", "--output-dir", str(tmp_path)]) == 0
    assert (
        "| sine-1d | x3 | defaults |"
        in capsys.readouterr().out.split("training objective")[1]
    )
    report = json.loads((tmp_path / "out_of_the_box.json").read_text())
    for result in report["results"]:
        logged = {"train_data_term", "train_kl_term"} <= result.keys()
        assert logged == (result["method"] == "defaults")
        if logged:  # a KL term per example, positive: the posterior is not the prior
            assert result["train_kl_term"] > 0


def test_objective_is_summarised_only_where_every_seed_has_it(ootb):
    # Reports written before the objective was recorded merge with newer ones: a mean
    # over some of the seeds would stand beside metrics averaged over all of them.
    old = {"row": "boston", "budget": 1, "method": "defaults", "seed": 0}
    old |= {"rmse": 3.0, "log_likelihood": -2.5, "train_seconds": 1.0}
    new = {**old, "seed": 1, "train_data_term": 1.0, "train_kl_term": 2.0}
    (mixed,) = ootb.summarise([old, new])
    assert mixed["seeds"] == 2 and "train_kl_term" not in mixed
    assert ootb.elbo_table([mixed]) == ""
    (both,) = ootb.summarise([new, {**new, "seed": 2, "train_kl_term": 4.0}])
    assert both["train_kl_term"] == 3.0
