"""Seeds and error bars: sweeps over seeds, runs that differ only by seed grouped with mean and
standard deviation in `lab runs`, `lab figures` and the dashboard; the sweep's quiet kernels."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lab import records, runs
from lab.cli import main
from lab.figures import make_figures, seeds_figure
from lab.sweep import run_line, seed_configs, sweep
from lab.train import Config, fit

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def seeded(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root: one recipe under seeds 0, 1 and 2, and a run of another lr."""
    root = tmp_path_factory.mktemp("seeded")
    config = replace(tiny_config, runs_root=str(root))
    for seed in (0, 1, 2):
        fit(replace(config, seed=seed, name=f"tiny-baseline-s{seed}"))
    fit(replace(config, lr=0.01, name="other-lr"))
    return root


def test_seed_groups_average_only_over_the_seed() -> None:
    rows = [
        {"run": f"a-s{seed}", "status": "finished", "model": "m", "test_top1": top1}
        | {"cfg_model": "m", "cfg_lr": 0.1, "cfg_seed": seed, "cfg_name": f"a-s{seed}"}
        | {"cfg_runs_root": f"/somewhere/{seed}", "cfg_quiet": seed == 1}
        for seed, top1 in ((0, 50.0), (1, 54.0), (2, 58.0))
    ]
    rows.append(rows[0] | {"run": "b", "cfg_lr": 0.01, "test_top1": 10.0})
    rows.append(rows[0] | {"run": "c", "status": "failed", "test_top1": np.nan})
    rows.append(rows[0] | {"run": "d", "cfg_lr": np.nan, "test_top1": 20.0})  # an older record
    groups = records.seed_groups(pd.DataFrame(rows)).set_index("group")
    assert list(groups.index) == ["a", "b", "d"]
    assert groups.loc["a", "runs"] == 3 and groups.loc["a", "seeds"] == "0 1 2"
    assert groups.loc["a", "test_top1"] == pytest.approx(54.0)
    assert groups.loc["a", "test_top1_std"] == pytest.approx(4.0)  # sample std over seeds
    assert groups.loc["b", "runs"] == 1 and np.isnan(groups.loc["b", "test_top1_std"])
    table = records.seed_table(groups.reset_index())
    assert list(table["group"]) == ["a"] and table.loc[0, "test_top1"] == "54.00 ± 4.00"
    assert records.seed_groups(records.load_runs(Path("/no/such/root"))).empty


def test_seeds_of_one_budget_group_whatever_epochs_each_planned() -> None:
    rows = [
        {"run": f"a-s{seed}", "status": "finished", "model": "m", "test_top1": 50.0 + seed}
        | {"cfg_model": "m", "cfg_seed": seed, "cfg_minutes": minutes, "cfg_epochs": epochs}
        for seed, minutes, epochs in ((0, 10.0, 7), (1, 10.0, 8), (2, 0.0, 7), (3, 0.0, 8))
    ]
    groups = records.seed_groups(pd.DataFrame(rows))
    assert sorted(groups["seeds"]) == ["0 1", "2", "3"]  # epochs count only without a budget


def test_a_sweep_over_seeds_names_a_run_a_seed() -> None:
    configs = seed_configs("quick", ["baseline", "resnet20"], {}, [0, 1, 2])
    assert [c.name for c in configs.values()] == [
        f"quick-{model}-s{seed}" for model in ("baseline", "resnet20") for seed in (0, 1, 2)
    ]
    assert [c.seed for c in configs.values()] == [0, 1, 2, 0, 1, 2]
    (one,) = seed_configs("quick", ["baseline"], {}, [7]).values()
    assert (one.name, one.seed) == ("quick-baseline", 7)  # one seed: the usual name
    with pytest.raises(ValueError, match="not both"):
        seed_configs("quick", ["baseline"], {"seed": 3}, [0, 1])
    with pytest.raises(ValueError, match="given twice"):
        seed_configs("quick", ["baseline"], {}, [0, 0])
    assert main(["sweep", "--preset", "quick", "--seeds", "0,x"]) == 2


def test_each_seed_is_its_own_run_of_the_sweep(tiny_archive, tiny_cache, tmp_path: Path) -> None:
    overrides = {"data": str(tiny_archive), "cache_dir": str(tiny_cache), "epochs": 1}
    table = sweep(
        "quick",
        ["baseline"],
        tmp_path,
        overrides,
        kernel_name="no-such-kernel",  # fails at once: the records say what would have run
        progress=False,
        seeds=[0, 1],
    )
    assert table["run"].tolist() == ["quick-baseline-s0", "quick-baseline-s1", "compare"]
    assert table["seed"].tolist()[:2] == [0, 1]
    for seed in (0, 1):
        config = json.loads((tmp_path / f"quick-baseline-s{seed}" / "config.json").read_text())
        assert (config["seed"], config["name"]) == (seed, f"quick-baseline-s{seed}")


def test_runs_and_figures_show_mean_and_std(seeded: Path, tmp_path: Path, capsys) -> None:
    summaries = [runs.read_json(seeded / f"tiny-baseline-s{s}" / "summary.json") for s in (0, 1, 2)]
    test = np.array([summary["test_top1"] for summary in summaries])
    assert main(["runs", str(seeded)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tiny-baseline "))
    assert f"{test.mean():.2f} ± {test.std(ddof=1):.2f}" in line and "0 1 2" in line
    assert "other-lr" not in out.split("differ only by seed")[1]
    written = {path.name for path in make_figures(seeded, tmp_path)}
    assert "seeds.png" in written


def test_the_overview_shows_the_seed_groups(seeded: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAB_RUNS_ROOT", str(seeded))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, at.exception
    table = next(frame.value for frame in at.dataframe if "seeds" in frame.value)
    assert table["group"].tolist() == ["tiny-baseline"]
    assert "±" in table["test_top1"].iloc[0]


def test_the_sweep_says_one_line_a_notebook() -> None:
    finished = {"run": "quick-baseline-s1", "status": "finished", "test_top1": 61.6}
    assert run_line(finished | {"sweep_time_s": 78.4}) == (
        "quick-baseline-s1: finished in 78 s  test top-1 61.60%"
    )
    failed = {"run": "compare", "status": "failed", "error": "ValueError: no finished runs"}
    assert run_line(failed | {"sweep_time_s": 3.0}) == (
        "compare: failed in 3 s  ValueError: no finished runs"
    )


def test_the_seeds_figure_draws_one_std_error_bars() -> None:
    groups = pd.DataFrame(
        [
            {"group": "a", "runs": 3, "train_top1": 70, "val_top1": 60, "test_top1": 58}
            | {"train_top1_std": 1.0, "val_top1_std": 2.0, "test_top1_std": 3.0},
            {"group": "b", "runs": 1, "train_top1": 50, "val_top1": 40, "test_top1": 38}
            | {"train_top1_std": np.nan, "val_top1_std": np.nan, "test_top1_std": np.nan},
        ]
    )
    (ax,) = seeds_figure(groups).axes
    bars = [container for container in ax.containers if hasattr(container, "errorbar")]
    assert [len(container) for container in bars] == [1, 1, 1]  # group "a" only
    for container, std in zip(bars, (1.0, 2.0, 3.0), strict=True):
        (segments,) = container.errorbar.lines[2]
        (bottom, top) = segments.get_segments()[0][:, 1]
        assert top - bottom == pytest.approx(2 * std)
    with pytest.raises(ValueError, match="lab sweep --seeds"):
        seeds_figure(groups[groups["group"] == "b"])
