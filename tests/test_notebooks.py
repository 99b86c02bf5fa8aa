"""The notebooks: structure, each executed through papermill with injected parameters on tiny data
(compare.ipynb by the sweep's test, tests/test_sweep.py), and nbval (`pytest --nbval-lax`)
running them with their own defaults in a subprocess, the data a tiny archive given through
$TINY_IMAGENET."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from conftest import images_shown, write_archive
from papermill.exceptions import PapermillExecutionError

from lab import runs, sweep
from lab.sweep import NOTEBOOKS, default_kernel

pytestmark = pytest.mark.timeout(300)

# What each notebook takes: lab.sweep passes train's and compare's, the README documents them.
PARAMETERS = {
    "data": ("data", "cache_dir", "classes", "samples", "seed"),
    "train": ("preset", "model", "run_name", "resume", "overrides"),
    "compare": ("runs_root", "out_dir"),
    "saliency": ("runs_root", "run_dirs", "images", "correct", "wrong", "methods"),
}


def tiny_train(tiny_archive: Path, tiny_cache: Path, runs_root: Path, **overrides) -> dict:
    """train.ipynb parameters for a run of seconds on the tiny archive."""
    return {
        "model": "baseline",
        "overrides": {
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
            "data": str(tiny_archive),
            "cache_dir": str(tiny_cache),
            "runs_root": str(runs_root),
            "quiet": True,
            **overrides,
        },
    }


def execute(name: str, output: Path, **parameters) -> nbformat.NotebookNode:
    """Run a notebook the way the sweep does and return the executed copy."""
    papermill.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb",
        output,
        parameters=parameters,
        kernel_name=default_kernel(),
        cwd=NOTEBOOKS,
        progress_bar=False,
    )
    return nbformat.read(output, as_version=4)


@pytest.fixture(scope="module")
def trained(tiny_archive: Path, tiny_cache: Path, tmp_path_factory) -> Path:
    """A runs root holding one finished run made by train.ipynb (its copy saved in the run)."""
    root = tmp_path_factory.mktemp("nb_runs")
    (root / "nb-run").mkdir()
    params = tiny_train(tiny_archive, tiny_cache, root, min_size=32, ramp_end=0.5)
    execute("train", root / "nb-run" / "train.ipynb", run_name="nb-run", **params)
    return root


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_notebook_structure(name: str) -> None:
    """Valid nbformat 4, python3 kernel, outputs cleared, one parameters cell declaring exactly
    the notebook's parameters."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    assert book.metadata.kernelspec.name == "python3"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = papermill.inspect_notebook(NOTEBOOKS / f"{name}.ipynb")
    assert sorted(declared) == sorted(PARAMETERS[name])


def test_train_notebook_writes_the_run(trained: Path) -> None:
    run_dir = trained / "nb-run"
    for name in ("config.json", "metrics.csv", "per_class.csv", "predictions.csv", "train.ipynb"):
        assert (run_dir / name).exists(), name
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "finished" and summary["model"] == "baseline"
    config = runs.read_json(run_dir / "config.json")
    # the injected overrides replace the notebook's own (10 classes, 4 epochs, onecycle)
    assert (config["epochs"], config["min_size"], config["classes"]) == (1, 32, 0)
    assert (config["schedule"], config["name"]) == ("constant", "nb-run")
    book = nbformat.read(run_dir / "train.ipynb", as_version=4)
    # schedules, augmented batch, learning curves and mistakes
    assert images_shown(book) == 4
    shown = "".join(out.get("text", "") for c in book.cells for out in c.get("outputs", []))
    assert "baseline: " in shown and " parameters" in shown  # the network's size is printed


def test_data_notebook(tiny_archive: Path, tiny_cache: Path, tmp_path: Path) -> None:
    book = execute(
        "data",
        tmp_path / "data.ipynb",
        data=str(tiny_archive),
        cache_dir=str(tiny_cache),
        classes=3,
    )
    assert images_shown(book) == 3  # samples, mean image, class balance
    table = next(c for c in book.cells if "split_summary" in c.source).outputs[0]
    assert "grayscale" in table["data"]["text/plain"]


def test_saliency_notebook(trained: Path, tmp_path: Path) -> None:
    book = execute(
        "saliency",
        tmp_path / "saliency.ipynb",
        runs_root=str(trained),
        correct=1,
        wrong=1,
        methods=["saliency", "gradcam"],
    )
    assert images_shown(book) == 1


def test_bad_train_parameters_fail_clearly(
    tiny_archive: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    # One bad value shows that the notebook's parameters reach make_config and its error stops
    # the notebook before any run folder; make_config's every error is tested in test_sweep.
    params = tiny_train(tiny_archive, tiny_cache, tmp_path, epoch=1)
    with pytest.raises(PapermillExecutionError, match="unknown Config field 'epoch'"):
        execute("train", tmp_path / "train.ipynb", **params)
    assert not list(tmp_path.glob("*/summary.json"))


def test_unknown_parameter_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) run_root; it takes runs_root"):
        sweep.execute("compare", tmp_path / "compare.ipynb", {"run_root": "x"}, default_kernel())
    assert not list(tmp_path.iterdir())


def test_nbval(tmp_path: Path) -> None:
    """`pytest --nbval-lax` runs the notebooks as a reader would, with their own defaults, on a
    copy under tmp_path (so `../runs` and `../figures` land there) and a tiny 10-class archive
    as $TINY_IMAGENET (train.ipynb's defaults take 10 classes)."""
    archive = write_archive(tmp_path / "archive", classes=10, train_per_class=20, val_per_class=4)
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    order = ("data", "train", "compare", "saliency")  # compare and saliency read train's run
    env = {**os.environ, "TINY_IMAGENET": str(archive), "LAB_DATA_DIR": str(tmp_path / "data")}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",
        "-p",
        "no:cacheprovider",
        "-n",  # in one process, in `order`: pyproject's -n auto would spread them over workers
        "0",
        "-q",
        *(str(tmp_path / "notebooks" / f"{name}.ipynb") for name in order),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    finished = [runs.read_json(p) for p in (tmp_path / "runs").glob("*/summary.json")]
    assert [s["status"] for s in finished] == ["finished"]
    assert finished[0]["num_classes"] == 10 and finished[0]["epochs_done"] == 4
    assert (tmp_path / "figures" / "accuracy.png").exists()
