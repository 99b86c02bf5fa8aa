"""Presets, the one config path (make_config), and papermill sweeps on tiny data."""

import os
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import nbformat
import pytest
from conftest import images_shown
from jupyter_client.kernelspec import KernelSpecManager

import lab.sweep
from lab import records, runs
from lab.config import Config, check_reuse, make_config
from lab.models import model_names
from lab.presets import PRESETS
from lab.study import STUDY_MODELS
from lab.sweep import (
    NOTEBOOKS,
    compare_is_current,
    default_kernel,
    seed_configs,
    sweep,
)
from lab.transfer import fit_once


def preset_config(preset: str, model: str, **values: object) -> Config:
    """make_config for a preset's model."""
    return make_config({"preset": preset, "model": model, **values})


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_model_has_a_valid_config(preset: str) -> None:
    spec = PRESETS[preset]
    assert set(spec["per_model"]) <= set(spec["models"]) <= set(model_names())
    for model in spec["models"]:
        config = preset_config(preset, model)
        assert (config.model, config.preset) == (model, preset)


def test_presets_cover_the_study() -> None:
    # written out: the presets are built from STUDY_MODELS, so comparing with it proves nothing
    six = ["baseline", "alexnet_reduced", "vgg_reduced", "inception", "resnet20", "squeezenet"]
    assert six == STUDY_MODELS  # the study's table, in its order
    assert PRESETS["quick"]["models"] == PRESETS["paper"]["models"] == six
    assert PRESETS["best"]["models"] == [*six, "resnet18"]
    paper = preset_config("paper", "resnet20")
    assert (paper.lr, paper.batch_size, paper.momentum, paper.weight_decay, paper.epochs) == (
        0.1,
        256,
        0.9,
        1e-4,
        5,
    )
    assert paper.classes == 0 and paper.per_class == 0  # all 200 classes, all images
    quick = preset_config("quick", "baseline")
    assert quick.device == "cpu" and 0 < quick.classes <= 20
    # the CPU presets in minutes (the epochs planned from them), the study's in epochs
    assert paper.minutes == 0
    quick_minutes = [preset_config("quick", model).minutes for model in six]
    assert all(quick_minutes) and 11 <= sum(quick_minutes) <= 13, quick_minutes
    assert all(preset_config("cpu", model).minutes > 0 for model in PRESETS["cpu"]["models"])


def test_best_inception_is_pretrained_only_with_weights() -> None:
    assert not preset_config("best", "inception").pretrained
    tuned = preset_config("best", "inception", weights="/some/googlenet.pth")
    assert tuned.pretrained and tuned.weights == "/some/googlenet.pth"


def test_given_values_win_over_the_preset() -> None:
    config = preset_config("quick", "squeezenet", epochs="1", name="x")
    assert (config.epochs, config.name) == (1, "x")
    assert (config.lr, config.batch_size) == (0.05, 64)  # quick's, for squeezenet


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "nope"}, "unknown model 'nope'"),
        ({"preset": "fast"}, "unknown preset 'fast'"),
        ({"epochs": 2.5}, "epochs must be of type int"),
        ({"quiet": "ture"}, "quiet must be of type bool, not 'ture'"),
        ({"augment": "rotate"}, "augment must be one of"),
        ({"lr": -0.1}, "lr must be positive"),
        ({"flag": True}, "unknown Config field 'flag'"),
    ],
)
def test_bad_values_fail_clearly(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config({"model": "baseline", **params})


def test_default_kernel_runs_this_interpreter() -> None:
    import sys

    argv0 = KernelSpecManager().get_kernel_spec(default_kernel()).argv[0]
    # jupyter_client launches a bare "python"/"python3" as sys.executable
    assert argv0 in ("python", "python3", f"python3.{sys.version_info[1]}", sys.executable)


def tiny(tiny_archive: Path, tiny_cache: Path, **extra) -> dict:
    """Overrides that make any preset a run of seconds on the tiny archive."""
    return {
        "data": str(tiny_archive),
        "cache_dir": str(tiny_cache),
        "classes": 0,
        "per_class": 0,
        "minutes": 0.0,  # no budget: the epochs below
        "epochs": 1,
        "batch_size": 32,
        "device": "cpu",
        "quiet": True,
        **extra,
    }


def test_unknown_model_fails_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        sweep("quick", ["baseline", "nope"], runs_root=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_a_sweep_names_its_own_runs(tmp_path: Path) -> None:
    # one name for every model would make the second model skip the first one's finished run
    with pytest.raises(ValueError, match="name cannot be set"):
        sweep("quick", ["baseline", "resnet20"], tmp_path, {"name": "x"}, progress=False)
    assert not list(tmp_path.iterdir())
    assert preset_config("quick", "resnet20").name == "quick-resnet20"


def test_notebook_that_cannot_start_is_recorded(tiny_archive: Path, tiny_cache: Path, tmp_path):
    overrides = tiny(tiny_archive, tiny_cache)
    table = sweep(
        "quick", ["baseline"], tmp_path, overrides, kernel_name="no-such-kernel", progress=False
    )
    assert table["status"].tolist() == ["failed", "failed"]  # the run, then compare
    record = records.load_runs(tmp_path).set_index("run").loc["quick-baseline"]
    assert record["status"] == "failed" and "NoSuchKernel" in record["error"]
    assert record["cfg_epochs"] == 1
    # a failed run without a checkpoint starts afresh: nothing of the old folder is left
    (tmp_path / "quick-baseline" / "stale.txt").write_text("from the failed try")
    sweep("quick", ["baseline"], tmp_path, overrides, kernel_name="no-such-kernel", progress=False)
    assert not (tmp_path / "quick-baseline" / "stale.txt").exists()


@pytest.mark.timeout(400)
def test_sweep_records_failures_goes_on_and_skips_finished(
    tiny_archive: Path, tiny_cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    # an interrupted squeezenet run whose checkpoint is broken: the sweep resumes it, fit fails
    broken = tmp_path / "quick-squeezenet"
    overrides = tiny(tiny_archive, tiny_cache)
    wanted = seed_configs("quick", ["squeezenet"], {**overrides, "runs_root": str(tmp_path)})
    runs.write_json(broken / "config.json", asdict(wanted["squeezenet", None]))
    runs.write_json(broken / "summary.json", {"status": "running", "model": "squeezenet"})
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    first = sweep("quick", ["squeezenet", "baseline"], tmp_path, overrides, progress=False)
    assert first.set_index("run")["status"].to_dict() == {
        "quick-squeezenet": "failed",
        "quick-baseline": "finished",
        "compare": "finished",
    }
    failed = runs.read_json(broken / "summary.json")
    assert failed["status"] == "failed" and failed["error"]
    assert (broken / "train.ipynb").exists()  # the executed notebook: the debugging record
    assert (tmp_path / "quick-baseline" / "train.ipynb").exists()
    figures = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert figures == ["accuracy.png", "curves.png", "minutes.png", "saliency.png"]  # compare.ipynb
    assert images_shown(nbformat.read(tmp_path / "compare.ipynb", as_version=4)) == 3
    finished = runs.read_json(tmp_path / "quick-baseline" / "summary.json")
    assert first.set_index("run").loc["quick-baseline", "test_top1"] == finished["test_top1"]

    # called again: the finished run is skipped, untouched, and so is compare: nothing is new
    second = sweep("quick", ["baseline"], tmp_path, overrides, progress=False)
    assert second["status"].tolist() == ["skipped", "skipped"]
    assert runs.read_json(tmp_path / "quick-baseline" / "summary.json") == finished
    assert compare_is_current(tmp_path)
    # a run that changed after it (e.g. trained by `lab train`), or a compare that failed: rerun
    summary = tmp_path / "quick-baseline" / "summary.json"
    os.utime(summary, (time.time() + 5, time.time() + 5))
    assert not compare_is_current(tmp_path)
    os.utime(summary, (time.time() - 60, time.time() - 60))
    book = nbformat.read(tmp_path / "compare.ipynb", as_version=4)
    book.metadata.papermill["exception"] = True
    nbformat.write(book, tmp_path / "compare.ipynb")
    assert not compare_is_current(tmp_path)
    # the kernels' warning that their TCP ports are unencrypted stays in the kernels
    assert "without encryption" not in capfd.readouterr().err


def record_of(config: Config, status: str = "finished") -> Path:
    """A run folder of `config` as the sweep finds it: finished, or interrupted (a checkpoint)."""
    run_dir = Path(config.runs_root) / config.name
    runs.write_json(run_dir / "config.json", asdict(config))
    runs.write_json(run_dir / "summary.json", {"status": status, "test_top1": 50.0})
    if status == "running":
        (run_dir / "checkpoint.pt").write_bytes(b"an interrupted run's")
    return run_dir


@pytest.mark.parametrize("status", ["finished", "running"])
@pytest.mark.parametrize(
    ("changes", "seeds", "differs"),
    [
        ({"epochs": "10"}, [4], "epochs 2 recorded, 10 given"),  # --set epochs=10 after epochs=2
        ({}, [3], "seed 4 recorded, 3 given"),  # --seeds 3 after --seeds 4
        ({"lr": "0.3"}, [4], "lr 0.05 recorded, 0.3 given"),
    ],
)
def test_a_run_of_another_experiment_is_refused_before_any_run(
    tmp_path: Path, status: str, changes: dict, seeds: list[int], differs: str
) -> None:
    recipe = {"minutes": 0.0, "epochs": 2, "lr": 0.05}
    made = seed_configs("quick", ["baseline"], {**recipe, "runs_root": str(tmp_path)}, [4])
    run_dir = record_of(made["baseline", 4], status)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=re.escape(f"{run_dir} is another experiment ({differs})")):
        sweep(
            "quick",
            ["squeezenet", "baseline"],  # the refused run comes second: nothing starts
            tmp_path,
            {**recipe, **changes, "device": "cpu"},
            kernel_name="no-such-kernel",
            progress=False,
            seeds=seeds,
        )
    assert sorted(tmp_path.rglob("*")) == before
    # the same experiment is reused, however it goes on (device, data, cache, quiet)
    same = seed_configs("quick", ["baseline"], {**recipe, "device": "cuda", "quiet": True}, [4])
    check_reuse([replace(same["baseline", 4], runs_root=str(tmp_path))])


def test_transfer_reuses_only_a_finished_run_of_its_experiment(tiny_config: Config, tmp_path):
    config = replace(tiny_config, runs_root=str(tmp_path), name="transfer-head-8", per_class=8)
    run_dir = record_of(replace(config, per_class=16))
    with pytest.raises(ValueError, match="per_class 16 recorded, 8 given"):
        fit_once(config)
    record_of(config)
    summary = runs.read_json(run_dir / "summary.json")
    assert fit_once(replace(config, quiet=False)) == run_dir  # skipped, not trained again
    assert runs.read_json(run_dir / "summary.json") == summary


@pytest.mark.timeout(300)
def test_a_notebook_failing_after_fit_keeps_its_finished_run(
    tiny_archive: Path, tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # train.ipynb with a last cell that fails, as a figure of the finished run can (and no
    # compare.ipynb: its failure, in seconds, is not this test's)
    books = tmp_path / "notebooks"
    books.mkdir()
    book = nbformat.read(NOTEBOOKS / "train.ipynb", as_version=4)
    book.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("no figure")'))
    nbformat.write(book, books / "train.ipynb")
    monkeypatch.setattr(lab.sweep, "NOTEBOOKS", books)
    root, results = tmp_path / "runs", tmp_path / "results"
    overrides = tiny(tiny_archive, tiny_cache)
    first = sweep("quick", ["baseline"], root, overrides, progress=False, export=results)
    assert first["status"].tolist() == ["finished", "failed"]
    row = first.set_index("run").loc["quick-baseline"]
    assert row["status"] == "finished" and row["test_top1"] >= 0
    assert row["error"] == "train.ipynb failed after fit: RuntimeError: no figure"
    summary = runs.read_json(root / "quick-baseline" / "summary.json")
    assert summary["status"] == "finished" and summary["error"] is None
    assert runs.read_json(results / "quick-baseline" / "summary.json") == summary
    second = sweep("quick", ["baseline"], root, overrides, progress=False)
    assert second.set_index("run").loc["quick-baseline", "status"] == "skipped"
    assert runs.read_json(root / "quick-baseline" / "summary.json") == summary
