"""Run records: one folder a run, every file written atomically, and readers that never crash."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

STATUSES = ("running", "finished", "failed", "broken")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through `write(tmp)` to a temporary name beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; records are for reading
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    """Write a CSV atomically, without the index."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def write_npy(path: Path, array: np.ndarray) -> Path:
    """Write a .npy array atomically."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, save)


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save atomically, so a kill mid-write never leaves a checkpoint that looks whole."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: Path) -> dict:
    """Read a JSON object, with an error that names the file."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable JSON ({error})") from error
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def run_status(run_dir: Path) -> str | None:
    """The status in a run folder's summary.json, or None when it has none or it is unreadable."""
    try:
        return read_json(Path(run_dir) / "summary.json").get("status")
    except ValueError:
        return None


def resume_or_clear(run_dir: Path) -> str:
    """What an existing run folder allows: "finished", "resume" (it has a checkpoint) or "new"."""
    run_dir = Path(run_dir)
    if run_status(run_dir) == "finished":
        return "finished"
    if (run_dir / "checkpoint.pt").exists():
        return "resume"
    if run_dir.exists():  # failed before its first epoch: nothing to keep
        shutil.rmtree(run_dir)
    return "new"


def update_summary(run_dir: Path, **fields: Any) -> dict:
    """Merge fields into the run's summary.json and stamp the update time."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path) if path.exists() else {}
    summary.update(fields, updated=pd.Timestamp.now().isoformat(timespec="seconds"))
    write_json(path, summary)
    return summary


def append_metrics(run_dir: Path, row: dict) -> pd.DataFrame:
    """Add one epoch's row to metrics.csv, replacing a row of the same epoch if there is one."""
    path = Path(run_dir) / "metrics.csv"
    table = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if len(table):
        table = table[table["epoch"] != row["epoch"]]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    write_csv(path, table)
    return table


def _read_optional(path: Path, read: Callable[[Path], Any]) -> Any:
    return read(path) if path.exists() else None


def load_run(path: Path) -> dict:
    """Read one run folder: config, summary, metrics and the optional per-test-image tables."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such run folder")
    return {
        "path": path,
        "config": read_json(path / "config.json"),
        "summary": read_json(path / "summary.json"),
        "metrics": _read_optional(path / "metrics.csv", pd.read_csv),
        "per_class": _read_optional(path / "per_class.csv", pd.read_csv),
        "confusion": _read_optional(path / "confusion.npy", np.load),
        "predictions": _read_optional(path / "predictions.csv", pd.read_csv),
    }


def _run_row(path: Path) -> dict:
    """One table row for a run; a broken record gives status "broken" and the reason."""
    try:
        config = read_json(path / "config.json")
        summary = read_json(path / "summary.json")
    except ValueError as error:
        return {"run": path.name, "path": str(path), "status": "broken", "error": str(error)}
    row = {"run": path.name, "path": str(path), "error": None, **summary}
    if row.get("status") not in STATUSES:
        row.update(status="broken", error=f"{path / 'summary.json'}: no valid status")
    row.update({f"cfg_{key}": value for key, value in config.items()})
    return row


def run_dirs(root: Path) -> list[Path]:
    """The run folders under a runs root: those holding a config.json or summary.json."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and ((p / "config.json").exists() or (p / "summary.json").exists())
    )


def load_runs(root: Path) -> pd.DataFrame:
    """A table of every run under `root`, one row each; broken runs are listed, not raised."""
    rows = [_run_row(path) for path in run_dirs(root)]
    return pd.DataFrame(rows, columns=None if rows else ["run", "path", "status", "error"])


# The files of a record small enough to commit (results/): no checkpoints or per-image tables.
RECORD_FILES = ("config.json", "summary.json", "metrics.csv", "per_class.csv")


def export_run(run_dir: Path, dest: Path) -> list[Path]:
    """Copy one run's small record files into dest/<run name>/."""
    run_dir = Path(run_dir)
    return [
        copy_file(run_dir / name, Path(dest) / run_dir.name / name)
        for name in RECORD_FILES
        if (run_dir / name).exists()
    ]


def export_runs(root: Path, dest: Path) -> list[Path]:
    """Copy every run's small record files, and the root's own tables, from `root` to `dest`."""
    root, dest = Path(root), Path(dest)
    written = [path for run_dir in run_dirs(root) for path in export_run(run_dir, dest)]
    written += [copy_file(table, dest / table.name) for table in sorted(root.glob("*.csv"))]
    return written


def copy_file(source: Path, dest: Path) -> Path:
    """Copy a file atomically."""
    return atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))
