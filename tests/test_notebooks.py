"""The notebooks: structure, every one executed through papermill on tiny data, the parameter
checks, and nbval (`pytest --nbval-lax notebooks/`) run in a subprocess against tiny data."""

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from lab import runs
from lab.sweep import NOTEBOOK_PARAMETERS, NOTEBOOKS, default_kernel
from lab.train import Config

pytestmark = pytest.mark.timeout(300)


def tiny_train(tiny_archive: Path, tiny_cache: Path, runs_root: Path) -> dict:
    """train.ipynb parameters for a run of seconds on the tiny archive."""
    return {
        "model": "baseline",
        "epochs": 1,
        "batch_size": 32,
        "device": "cpu",
        "data": str(tiny_archive),
        "cache_dir": str(tiny_cache),
        "runs_root": str(runs_root),
        "quiet": True,
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


def images_shown(book: nbformat.NotebookNode) -> int:
    """How many PNG outputs the executed notebook holds."""
    return sum(
        "image/png" in out.get("data", {})
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.fixture(scope="module")
def trained(tiny_archive: Path, tiny_cache: Path, tmp_path_factory) -> Path:
    """A runs root holding one finished run made by train.ipynb (its copy saved in the run)."""
    root = tmp_path_factory.mktemp("nb_runs")
    (root / "nb-run").mkdir()
    params = tiny_train(tiny_archive, tiny_cache, root)
    execute("train", root / "nb-run" / "train.ipynb", run_name="nb-run", **params)
    return root


@pytest.mark.parametrize("name", list(NOTEBOOK_PARAMETERS))
def test_notebook_structure(name: str) -> None:
    """Valid nbformat 4, python3 kernel, outputs cleared, one parameters cell declaring exactly
    what the notebook's check cell accepts."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    assert book.metadata.kernelspec.name == "python3"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = papermill.inspect_notebook(NOTEBOOKS / f"{name}.ipynb")
    assert sorted(declared) == sorted(NOTEBOOK_PARAMETERS[name])
    # the check cell comes right after the parameters, before anything derived
    after = code[code.index(tagged[0]) + 1]
    assert f'notebook_parameters("{name}", globals())' in after.source


def test_train_parameters_cover_config() -> None:
    """train.ipynb exposes every Config field (the folder name as run_name)."""
    names = {"run_name" if f.name == "name" else f.name for f in fields(Config)}
    assert set(NOTEBOOK_PARAMETERS["train"]) == names


def test_train_notebook_writes_the_run(trained: Path) -> None:
    run_dir = trained / "nb-run"
    for name in ("config.json", "metrics.csv", "per_class.csv", "predictions.csv", "train.ipynb"):
        assert (run_dir / name).exists(), name
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "finished" and summary["model"] == "baseline"
    assert runs.read_json(run_dir / "config.json")["epochs"] == 1
    book = nbformat.read(run_dir / "train.ipynb", as_version=4)
    assert images_shown(book) == 2  # learning curves and mistakes


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


def test_compare_notebook_writes_figures(trained: Path, tmp_path: Path) -> None:
    book = execute(
        "compare",
        tmp_path / "compare.ipynb",
        runs_root=str(trained),
        out_dir=str(tmp_path / "figures"),
    )
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "accuracy.png",
        "curves.png",
        "saliency.png",
    ]
    assert images_shown(book) == 2


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


def test_unknown_model_fails_clearly(tiny_archive: Path, tiny_cache: Path, tmp_path: Path) -> None:
    params = tiny_train(tiny_archive, tiny_cache, tmp_path)
    with pytest.raises(PapermillExecutionError, match="unknown model 'nope'; choose from"):
        execute("train", tmp_path / "train.ipynb", **{**params, "model": "nope"})
    assert not list(tmp_path.glob("*/summary.json"))  # failed before any run folder


def test_unknown_parameter_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PapermillExecutionError, match=r"unknown parameter\(s\) run_root"):
        execute("compare", tmp_path / "compare.ipynb", run_root=str(tmp_path))


def test_nbval(trained: Path, tiny_archive: Path, tmp_path: Path) -> None:
    """`pytest --nbval-lax notebooks/` on tiny data: nbval cannot inject parameters, so they
    come from $LAB_NOTEBOOK_PARAMETERS, and the data from $TINY_IMAGENET / $LAB_DATA_DIR."""
    overrides = {
        "train": {
            "model": "baseline",
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
            "runs_root": str(tmp_path / "runs"),
            "quiet": True,
        },
        "compare": {"runs_root": str(trained), "out_dir": str(tmp_path / "figures")},
        "saliency": {"runs_root": str(trained), "methods": ["saliency"], "correct": 1, "wrong": 0},
    }
    env = {
        **os.environ,
        "TINY_IMAGENET": str(tiny_archive),
        "LAB_DATA_DIR": str(tmp_path / "data"),
        "LAB_NOTEBOOK_PARAMETERS": json.dumps(overrides),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",
        "-p",
        "no:cacheprovider",
        "-q",
        str(NOTEBOOKS),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1
    assert (tmp_path / "figures" / "accuracy.png").exists()
