"""lab export: finished runs only, each destination folder replaced whole, no machine paths."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from lab import records, runs
from lab.config import EXPERIMENT_FIELDS, Config, read_config
from lab.train import fit


@pytest.fixture(scope="module")
def finished(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run named "run"."""
    root = tmp_path_factory.mktemp("export_runs")
    return fit(replace(tiny_config, runs_root=str(root), name="run"))


def test_only_finished_runs_are_exported_and_never_over_a_finished_record(
    finished: Path, tiny_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "results"
    records.export_runs(finished.parent, dest)
    exported = runs.read_json(dest / "run" / "summary.json")
    assert exported == runs.read_json(finished / "summary.json")
    # another root: a failed run of the same name (its data missing) and a running one
    other = tmp_path / "other"
    with pytest.raises(Exception, match="missing"):
        fit(replace(tiny_config, runs_root=str(other), name="run", data=str(other / "missing.zip")))
    shutil.copytree(finished, other / "going")
    runs.update_summary(other / "going", status="running")
    capsys.readouterr()
    assert records.export_runs(other, dest) == []
    lines = sorted(capsys.readouterr().err.strip().splitlines())
    assert lines[0] == "not exported: going: running"
    assert lines[1].startswith("not exported: run: failed (") and "missing" in lines[1]
    assert len(lines) == 2
    assert runs.read_json(dest / "run" / "summary.json") == exported
    assert sorted(path.name for path in dest.iterdir()) == ["run"]
    with pytest.raises(ValueError, match="not exported: run: failed"):
        runs.export_run(other / "run", dest)
    with pytest.raises(ValueError, match="the runs root itself"):
        records.export_runs(finished.parent, finished.parent)
    assert runs.has_checkpoint(finished)


def test_an_export_replaces_the_folder_whole_or_not_at_all(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run"
    runs.export_run(finished, tmp_path)
    (target / "metrics.csv").write_text("an older record's\n")
    (target / "notes.txt").write_text("a file the record no longer has\n")
    before = {path.name: path.read_bytes() for path in target.iterdir()}

    def unchanged() -> None:
        assert {path.name: path.read_bytes() for path in target.iterdir()} == before
        assert list(tmp_path.iterdir()) == [target]  # no half-built folder left

    copyfile, rename, copies = shutil.copyfile, os.rename, []

    def copy_until_full(source: Path, dest: Path) -> None:  # the disk fills during the copy
        copies.append(dest)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        copyfile(source, dest)

    def refuse_new(source: str, dest: str) -> None:  # after the old folder stepped aside
        if Path(dest) == target and Path(source).name == "run":
            raise OSError(5, "Input/output error")
        rename(source, dest)

    for module, name, fault, message in (
        (shutil, "copyfile", copy_until_full, "No space"),
        (os, "rename", refuse_new, "Input/output"),
    ):
        monkeypatch.setattr(module, name, fault)
        with pytest.raises(OSError, match=message):
            runs.export_run(finished, tmp_path)
        unchanged()
        monkeypatch.undo()

    written = runs.export_run(finished, tmp_path)
    assert sorted(path.name for path in written) == sorted(runs.RECORD_FILES)
    assert sorted(path.name for path in target.iterdir()) == sorted(runs.RECORD_FILES)
    assert (target / "metrics.csv").read_bytes() == (finished / "metrics.csv").read_bytes()
    assert list(tmp_path.iterdir()) == [target]


def test_an_exported_config_holds_no_path_of_the_machine(finished: Path, tmp_path: Path) -> None:
    runs.export_run(finished, tmp_path)
    source = runs.read_json(finished / "config.json")
    assert Path(source["data"]).is_absolute() and "runs_root" not in source  # the parent is it
    record = runs.read_json(tmp_path / "run" / "config.json")
    paths = [key for key, value in record.items() if isinstance(value, str) and "/" in value]
    assert paths == []
    assert record["data"] == Path(source["data"]).name
    assert record["cache_dir"] == Path(source["cache_dir"]).name
    experiment = [
        {name: getattr(read_config(run), name) for name in EXPERIMENT_FIELDS}
        for run in (finished, tmp_path / "run")
    ]
    assert experiment[0] == experiment[1]
    started_from = {"init_from": "/home/me/runs/pretrain", "weights": "~/googlenet.pth"}
    assert runs.portable_config({**started_from, "model": "x", "epochs": 2}) == {
        "init_from": "pretrain",
        "weights": "googlenet.pth",
        "model": "x",
        "epochs": 2,
    }
