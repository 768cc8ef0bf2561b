"""Tests of scripts/benchmarks/benchmark.py (a quick run of the MLP, peers absent)."""

import pytest

from ..conftest import loaded_script


@pytest.fixture(scope="module")
def benchmark():
    with loaded_script("benchmarks/benchmark") as module:
        yield module


def test_quick_mlp_run(benchmark, tmp_path, capsys):
    output = tmp_path / "bench.md"
    status = benchmark.main(
        [
            "--quick",
            "--tasks",
            "mlp",
            "--modes",
            "plain,torch_blue,torch_blue-local_reparameterization,"
            "hand-written-local_reparameterization",
            "--peers-dir",
            str(tmp_path / "no-peers"),
            "--output",
            str(output),
            "--plot",
            str(tmp_path / "ratios.png"),
        ]
    )
    out = capsys.readouterr().out
    assert (tmp_path / "ratios.png").stat().st_size > 0
    assert status == 0
    assert "Machine:" in out and "Command:" in out
    assert "| task | mode | median ms/step | ratio to plain |" in out
    for mode in (
        "plain",
        "torch_blue",
        "torch_blue-local_reparameterization",
        "hand-written-local_reparameterization",
    ):
        assert f"| mlp | {mode} |" in out
    assert "## torch_blue against hand-written steps" in out
    assert "| mlp | local_reparameterization |" in out
    assert "| mlp | plain | " in out and "| 1.00x |" in out
    assert "worker failed" not in out
    assert output.read_text() == out


def test_hand_written_section_pairs_estimators_per_round(benchmark):
    def results(*ms):
        return [None if m is None else {"ms": m, "peak_mib": 1.0} for m in ms]

    runs = {
        ("mlp", "plain"): results(10.0, 20.0, 10.0),
        ("mlp", "torch_blue-flipout"): results(30.0, 40.0, None),
        ("mlp", "hand-written-flipout"): results(20.0, 50.0, 20.0),
        ("mlp", "torch_blue"): results(30.0, 30.0, 30.0),  # no hand-written twin
    }
    summary = benchmark.summarise(runs, 3)
    text = benchmark.hand_written_section(runs, summary, ["mlp"])
    # torch_blue/hand-written 1.5, 0.8, none: median 1.15; hand-written/plain 2, 2.5, 2;
    # torch_blue/plain 3, 2, none
    assert "| mlp | flipout | 1.15x | 1.50 / 0.80 / - | 2.00x | 2.50x |" in text
    assert "| mlp | reparameterization |" not in text
    assert benchmark.hand_written_section(runs, summary, ["lenet5"]) is None


def test_dense_local_reparameterization_leaves_the_convolutions_sampled(benchmark):
    from torch_blue import vi

    model = benchmark.build_torch_blue("lenet5", benchmark.DENSE_LOCAL)
    estimators = {
        type(m).__name__: m.estimator
        for m in model.modules()
        if isinstance(m, (vi.VILinear, vi.VIConv2d))
    }
    assert estimators == {
        "VIConv2d": "reparameterization",
        "VILinear": "local_reparameterization",
    }
    assert benchmark.MODES_BY_NAME["torch_blue-dense_local_reparameterization"].tasks == (
        "lenet5",
    )


def test_missing_peers_are_skipped_with_a_note(benchmark, tmp_path):
    folders = benchmark.locate_peers(tmp_path, None, None)
    modes = [benchmark.MODES_BY_NAME[m] for m in ("plain", "upstream", "blitz")]
    available, notes = benchmark.split_available(modes, folders)
    assert [m.name for m in available] == ["plain"]
    assert len(notes) == 2
    assert any("upstream" in note and "torch_blue_1.1" in note for note in notes)


def test_unknown_mode_is_rejected(benchmark):
    with pytest.raises(SystemExit):
        benchmark.main(["--modes", "no-such-mode"])


def test_plot_from_a_saved_report(benchmark, tmp_path):
    report = tmp_path / "bench.md"
    report.write_text(
        "| task | mode | median ms/step | ratio to plain | ratios per round | peak MiB |\n"
        "|---|---|---|---|---|---|\n"
        "| mlp | plain | 20.70 | 1.00x | 1.00 / 1.00 | 34.2 |\n"
        "| mlp | torch_blue | 76.01 | 3.93x | 3.99 / 2.95 | 157.4 |\n"
        "| mlp | upstream | - | - | - | - |\n"
    )
    assert benchmark.read_training_ratios(report.read_text()) == {
        ("mlp", "plain"): 1.0,
        ("mlp", "torch_blue"): 3.93,
    }
    plot = tmp_path / "ratios.png"
    assert benchmark.main(["--plot-from", str(report), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0


def test_quick_small_and_latency_run(benchmark, tmp_path, capsys):
    status = benchmark.main(
        [
            "--quick",
            "--tasks",
            "small,latency",
            "--modes",
            "plain,torch_blue,hand-written-reparameterization,"
            "hand-written-local_reparameterization",
            "--peers-dir",
            str(tmp_path / "no-peers"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and "worker failed" not in out
    assert "| small | torch_blue |" in out and "| small | reparameterization |" in out
    for batch in benchmark.LATENCY_BATCHES:
        for samples in benchmark.LATENCY_SAMPLES:
            assert f"| {batch} | {samples} | torch_blue |" in out
            assert f"| {batch} | {samples} | hand-written-local_reparameterization |" in out
    # hand-written prediction does not train: no hand-written reparameterisation row
    assert "| 1 | 1 | hand-written-reparameterization |" not in out
    targets = out.split("## Targets for small networks")[1].split("\n\n")[1]
    lines = targets.splitlines()
    kinds = ("- met:", "- MISSED:", "- not measured:")
    assert lines and all(line.startswith(kinds) for line in lines)
    measured = [line for line in lines if "hand-written" in line]
    assert measured and all(line.startswith(("- met:", "- MISSED:")) for line in measured)
    assert any("its hand-written step" in line for line in measured)
    assert any("the hand-written prediction" in line for line in measured)
    # no peer ran: the comparisons with them are not measured
    assert all(line.startswith("- not") for line in lines if "faster than" in line)


def test_targets_compare_per_round_with_the_fastest_peer(benchmark):
    def results(*ms):
        return [None if m is None else {"ms": m, "peak_mib": 1.0} for m in ms]

    runs = {
        ("small", "plain"): results(1.0, 1.0),
        ("small", "torch_blue"): results(3.0, 3.0),
        ("small", "hand-written-reparameterization"): results(2.0, 2.5),
        # the fastest peer changes between rounds: 5.0 then 4.0
        ("small", "upstream"): results(6.0, 4.0),
        ("small", "blitz"): results(5.0, 40.0),
        ("latency B=64 S=10", "torch_blue"): results(1.0, 1.0),
        ("latency B=64 S=10", "upstream"): results(2.5, 1.5),
        ("latency B=64 S=10", "hand-written-local_reparameterization"): results(1.0, 0.5),
    }
    text = benchmark.targets_section(runs, ["small", "latency"])
    # 3.0/2.0 = 1.5 and 3.0/2.5 = 1.2: median 1.35
    assert "- MISSED: small, reparameterization: 1.35x its hand-written step" in text
    # 5.0/3.0 and 4.0/3.0: median 1.5
    assert "- met: small, reparameterization: 1.50x faster than the fastest peer" in text
    assert "- MISSED: stretch, small, reparameterization: 3.00x plain" in text
    # 1.0/1.0 and 1.0/0.5: median 1.5
    assert "- MISSED: latency B=64 S=10: 1.50x the hand-written prediction" in text
    # 2.5 and 1.5: median 2.0
    assert "- met: latency B=64 S=10: 2.00x faster than upstream" in text
    assert "- not measured: latency B=1 S=10" in text
