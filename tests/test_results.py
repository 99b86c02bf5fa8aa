"""The committed run records in results/: complete, self-consistent and readable by the lab."""

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest

from lab import records, runs
from lab.config import read_config
from lab.presets import PRESETS
from lab.study import STUDY

RESULTS = Path(__file__).resolve().parents[1] / "results"
ROOTS = sorted(path for path in RESULTS.iterdir() if path.is_dir())


def test_results_exist() -> None:
    assert ROOTS, "results/ holds no run records"


@pytest.mark.parametrize("root", ROOTS, ids=lambda path: path.name)
def test_every_record_is_a_finished_run(root: Path) -> None:
    table = records.load_runs(root)
    assert not table.empty
    for row in table.itertuples():
        assert row.status == "finished", f"{row.path}: {row.status} {row.error}"
        run = Path(row.path)
        config = read_config(run)
        metrics = pd.read_csv(run / "metrics.csv")
        assert list(metrics["epoch"]) == list(range(1, config.epochs + 1)), run
        assert row.epochs_done == config.epochs
        assert row.best_val_top1 == pytest.approx(metrics["val_top1"].max())
        per_class = pd.read_csv(run / "per_class.csv")
        assert len(per_class) == row.num_classes == (config.classes or 200)
        assert (per_class["count"] == 50).all()  # the official val set: 50 images a class
        assert 100 * per_class["correct"].sum() / 50 / len(per_class) == pytest.approx(
            row.test_top1
        )


@pytest.mark.parametrize(
    "predictions",
    sorted(RESULTS.glob("*/*/predictions.csv")),
    ids=lambda path: f"{path.parent.parent.name}/{path.parent.name}",
)
def test_predictions_rescore_to_the_recorded_test_accuracies(predictions: Path) -> None:
    # predictions.csv is what anyone can rescore against val_annotations.txt: a row for every
    # test image, its true label and the prediction the summary's test top-1 counts.
    table = runs.read_table(predictions)  # the lab's checked reader: columns, cut rows
    summary = runs.read_json(predictions.parent / "summary.json")
    assert len(table) == table["file"].nunique() == 50 * summary["num_classes"]
    top1 = 100 * (table["pred"] == table["label"]).mean()
    assert top1 == pytest.approx(summary["test_top1"], abs=1e-3)
    hits = [
        str(label) in top5.split() for label, top5 in table[["label", "top5"]].itertuples(False)
    ]
    assert 100 * sum(hits) / len(hits) == pytest.approx(summary["test_top5"], abs=1e-3)


@pytest.fixture(scope="module")
def cpu_column() -> pd.DataFrame:
    """The records of the README's `cpu` column, read once for the tests below."""
    return records.load_runs(RESULTS / "cpu")


def test_the_cpu_column_has_a_rescorable_record_for_every_model_of_the_preset(
    cpu_column: pd.DataFrame,
) -> None:
    assert sorted(cpu_column["model"]) == sorted(PRESETS["cpu"]["models"])
    missing = [
        path for path in cpu_column["path"] if not (Path(path) / "predictions.csv").is_file()
    ]
    assert missing == []


@pytest.mark.parametrize("model", [m for m, row in STUDY.items() if row])
def test_the_cpu_column_beats_the_study_row(model: str, cpu_column: pd.DataFrame) -> None:
    (test_top1,) = cpu_column.loc[cpu_column["model"] == model, "test_top1"]
    assert test_top1 > STUDY[model][2]


def test_no_record_holds_a_path_of_the_machine_that_made_it() -> None:
    configs = sorted(RESULTS.glob("*/*/config.json"))
    assert len(configs) == sum(len(records.run_dirs(root)) for root in ROOTS)
    absolute = [
        f"{path.relative_to(RESULTS)}: {key} {value!r}"
        for path in configs
        for key, value in runs.read_json(path).items()
        if isinstance(value, str) and Path(value).expanduser().is_absolute()
    ]
    assert absolute == []


@pytest.mark.parametrize(
    "root", [r for r in ROOTS if (r / "transfer.csv").exists()], ids=lambda path: path.name
)
def test_transfer_table_matches_its_runs(root: Path) -> None:
    table = pd.read_csv(root / "transfer.csv")
    assert set(table["mode"]) == {"head", "whole", "scratch"}
    for row in table.itertuples():
        summary = runs.read_json(root / f"transfer-{row.mode}-{row.per_class}" / "summary.json")
        assert row.test_top1 == pytest.approx(summary["test_top1"])
        assert row.gap == pytest.approx(summary["train_top1"] - summary["test_top1"])


# The GPU machine's image has torch, torchvision, numpy, pandas, tqdm and matplotlib, not these.
NOT_ON_THE_GPU_IMAGE = ("captum", "streamlit", "plotly", "papermill", "nbformat", "ipykernel")


def test_gpu_script_runs_stops_at_its_deadline_and_returns_the_records(
    tiny_archive: Path, tmp_path: Path
) -> None:
    # scripts/gpu.sh on the CPU, with the packages the GPU image lacks made unimportable (a
    # sitecustomize on PYTHONPATH): a short run and a benchmark with time to spare, then, with a
    # short deadline, a run stopped at it and a run that must not start; the records and the
    # benchmark's table come back in OUT.
    out, site = tmp_path / "out", tmp_path / "site"
    out.mkdir()
    site.mkdir()
    block = f"import sys\nsys.modules.update(dict.fromkeys({NOT_ON_THE_GPU_IMAGE!r}))\n"
    (site / "sitecustomize.py").write_text(block)
    cheap = "--model baseline --batch-size 32 --lr 0.05 --train-eval-size 64"
    env = {**os.environ, "OUT": str(out), "DEVICE": "cpu", "LAB_DATA_DIR": str(tmp_path / "d")}
    env.update(MIN_LEFT="5", RUNS_ROOT=str(tmp_path / "runs"), PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    blocked = subprocess.run(
        [sys.executable, "-c", "import captum"], env=env, capture_output=True, text=True
    )
    assert "ModuleNotFoundError" in blocked.stderr, "the blocking itself must work"

    def gpu_sh(seconds: int, *plan: str) -> None:
        command = ["bash", RESULTS.parent / "scripts" / "gpu.sh", tiny_archive, str(seconds), *plan]
        subprocess.run(command, env=env, cwd=tmp_path, check=True, timeout=seconds + 120)

    bench = "bench --variants plain --models resnet20_cifar --batch-size 16 --steps 2 --device cpu"
    started = time.monotonic()
    gpu_sh(600, f"{cheap} --epochs 1 --name short", bench)  # done long before the deadline
    # The deadline: half as long as that took (the script's start, a whole run, a benchmark and
    # the export), so the stopped run is under way when it comes however busy the cores are.
    seconds = max(15, round((time.monotonic() - started) / 2))
    never = f"{cheap} --epochs 1 --name never"
    gpu_sh(seconds, f"{cheap} --epochs 10000 --name stopped", never)
    log = (out / "log.txt").read_text()
    assert "=== not started, out of time: " + never in log
    assert "plain" in (out / "benchmark.txt").read_text()
    with tarfile.open(out / "records.tgz") as archive:
        archive.extractall(tmp_path / "back", filter="data")
    back = records.load_runs(tmp_path / "back" / "records").set_index("run")
    # only finished records come back (they go into results/); the log says why the other not
    assert list(back.index) == ["short"]
    assert back.loc["short", "status"] == "finished" and back.loc["short", "epochs_done"] == 1
    assert "not exported: stopped: failed (KeyboardInterrupt" in log
