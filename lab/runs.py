"""Run records: one folder a run, every file written atomically, and readers that never crash."""

import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from lab.errors import LabError

# torch is imported where a checkpoint is read or written: `lab runs` and `lab export` start
# seconds sooner without it.

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


# checkpoint.pt is the newest; checkpoint.prev.pt the one it replaced, kept until the next is safe
CHECKPOINTS = ("checkpoint.pt", "checkpoint.prev.pt")


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write checkpoint.pt atomically; the checkpoint it replaces stays as checkpoint.prev.pt."""
    import torch

    newest, previous = (Path(run_dir) / name for name in CHECKPOINTS)

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the new bytes are on disk before the old file steps aside
        if newest.exists():
            os.replace(newest, previous)

    return atomic_write(newest, write)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint.pt or a checkpoint.prev.pt."""
    return any((Path(run_dir) / name).exists() for name in CHECKPOINTS)


class RefusedFile(LabError):
    """A checkpoint that would run code on loading: never loaded, nor silently replaced."""


def read_weights(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load of tensors and plain values only: a file whose pickle would run code or build
    other objects is refused, never run. LabError naming the file when refused or damaged."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # damaged bytes raise anything from EOFError to RuntimeError
        text = str(error).strip()
        if refused := re.search(r"GLOBAL ([\w.]+)", text):
            raise RefusedFile(
                f"{path}: refused: loading it would call {refused[1]}; a checkpoint holds only "
                "tensors and plain values (was it made by this lab?)"
            ) from None
        reason = text.splitlines()[0][:120] if text else ""
        raise LabError(f"{path}: damaged checkpoint ({type(error).__name__}: {reason})") from error


def _read_checkpoint(path: Path, map_location: Any) -> dict:
    """read_weights of one checkpoint file, checked to be this lab's."""
    state = read_weights(path, map_location)
    if not isinstance(state, dict) or not {"model", "epoch", "num_classes"} <= set(state):
        raise LabError(f"{path}: not a checkpoint of this lab (no model, epoch or num_classes)")
    return state


def load_checkpoint(run_dir: Path, map_location: Any = "cpu", fallback: bool = False) -> dict:
    """A run's checkpoint.pt as save_checkpoint wrote it; ValueError naming the file if damaged.

    With `fallback` (resuming), the newest checkpoint that loads: when checkpoint.pt is damaged
    or missing, checkpoint.prev.pt takes its place, and one line on stderr says so. A refused
    file (RefusedFile) stops the load: it was put there, not damaged, and is left for a look.
    """
    newest, previous = (Path(run_dir) / name for name in CHECKPOINTS)
    problems = []
    for path in (newest, previous) if fallback else (newest,):
        if not path.exists():
            continue
        try:
            state = _read_checkpoint(path, map_location)
        except RefusedFile:
            raise
        except ValueError as error:
            problems.append(str(error))
            continue
        if path == previous:
            os.replace(previous, newest)  # the one that loads becomes the newest again
            why = problems[0] if problems else f"{newest}: missing"
            print(f"{why}; resuming from {previous.name}", file=sys.stderr)
        return state
    raise LabError("; ".join(problems) or f"{newest}: no checkpoint in this run folder")


def read_json(path: Path) -> dict:
    """Read a JSON object, with an error that names the file."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise LabError(f"{path}: unreadable JSON ({error})") from error
    if not isinstance(obj, dict):
        raise LabError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def run_status(run_dir: Path) -> str | None:
    """The status in a run folder's summary.json, or None when it has none or it is unreadable."""
    try:
        return read_json(Path(run_dir) / "summary.json").get("status")
    except ValueError:
        return None


# The lock file of a run folder: one process at a time trains in it (or clears it); it holds
# that process's PID and host. Kept after the run: deleting it would let two processes lock
# two different files of one name.
LOCK = ".lock"


def lock_run(run_dir: Path) -> IO[str]:
    """Hold the run folder for this process until the returned file is closed (or the process
    dies, kill -9 too); LabError naming the process that holds it already."""
    path = Path(run_dir) / LOCK
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+")  # noqa: SIM115 (closed by the caller, to release the lock)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise LabError(
                f"{run_dir}: in use by {holder}; wait for it to end or stop it"
            ) from None
        try:  # the folder may have been cleared since the open: then lock the new file
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    lock.truncate(0)
    lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock


def resume_or_clear(run_dir: Path) -> str:
    """What an existing run folder allows: "finished", "resume" (it has a checkpoint) or "new".
    A folder that another process holds (lock_run) is neither: LabError naming the process."""
    run_dir = Path(run_dir)
    if run_status(run_dir) == "finished":
        return "finished"
    if not run_dir.exists():
        return "new"
    with lock_run(run_dir):
        if has_checkpoint(run_dir):
            return "resume"
        shutil.rmtree(run_dir)  # failed before its first epoch: nothing to keep
    return "new"


def _edit_summary(run_dir: Path, edit: Callable[[dict], None]) -> dict:
    """Read summary.json, edit it and write it back, one process at a time (DDP ranks, a sweep
    and the notebook it runs), stamping the update time."""
    path = Path(run_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The folder is locked, not the file: summary.json is replaced by a rename at each write.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        summary = read_json(path) if path.exists() else {}
        edit(summary)
        summary["updated"] = pd.Timestamp.now().isoformat(timespec="seconds")
        write_json(path, summary)
    finally:
        os.close(folder)
    return summary


def update_summary(run_dir: Path, **fields: Any) -> dict:
    """Merge fields into the run's summary.json and stamp the update time."""
    return _edit_summary(run_dir, lambda summary: summary.update(fields))


def record_failure(run_dir: Path, error: str) -> dict:
    """Mark the run failed with `error`, unless its failure is recorded already: under DDP the
    first rank to fail says why; the others fail because it did."""

    def fail(summary: dict) -> None:
        if summary.get("status") != "failed":
            summary.update(status="failed", error=error)

    return _edit_summary(run_dir, fail)


def append_metrics(run_dir: Path, row: dict) -> pd.DataFrame:
    """Add one epoch's row to metrics.csv, replacing a row of the same epoch if there is one."""
    path = Path(run_dir) / "metrics.csv"
    table = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if len(table):
        table = table[table["epoch"] != row["epoch"]]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    write_csv(path, table)
    return table


# The CSV files of a record: (numeric columns, text columns) every row must fill.
TABLES = {
    "metrics.csv": (("epoch", "train_loss", "train_top1", "val_loss", "val_top1"), ()),
    "per_class.csv": (("label", "count", "correct", "top1"), ("wnid", "name")),
    "predictions.csv": (("index", "label", "pred", "confidence"), ("file", "top5")),
}


def read_table(path: Path) -> pd.DataFrame:
    """One of a record's TABLES, checked: ValueError naming the file and the first bad row when
    it is garbled or truncated (a missing column, an empty cell, text where a number goes)."""
    path = Path(path)
    numeric, text = TABLES[path.name]
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:  # pandas' parser and decoding errors are ValueErrors
        raise LabError(f"{path}: unreadable CSV ({str(error).strip()[:120]})") from error
    missing = [column for column in (*numeric, *text) if column not in table]
    if missing:
        raise LabError(f"{path}: no column {', '.join(missing)}")
    numbers = table[list(numeric)].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1) | table[list(text)].isna().any(axis=1)
    if "top5" in table:  # a last row cut inside its top-5 list is shorter than the others
        sizes = table["top5"].astype(str).str.split().str.len()
        bad |= sizes != sizes.max()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise LabError(f"{path}: line {row + 2} is garbled or cut short")
    return table


def _read_optional(path: Path, read: Callable[[Path], Any]) -> Any:
    return read(path) if path.exists() else None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise LabError(f"{path}: unreadable array ({error})") from error


def load_run(path: Path) -> dict:
    """Read one run folder: config, summary, metrics and the optional per-test-image tables.

    Raises ValueError naming the first file that is unreadable, garbled or cut short."""
    path = Path(path)
    if not path.is_dir():
        raise LabError(f"{path}: no such run folder")
    return {
        "path": path,
        "config": read_json(path / "config.json"),
        "summary": read_json(path / "summary.json"),
        "metrics": _read_optional(path / "metrics.csv", read_table),
        "per_class": _read_optional(path / "per_class.csv", read_table),
        "confusion": _read_optional(path / "confusion.npy", _read_npy),
        "predictions": _read_optional(path / "predictions.csv", read_table),
    }


def record_problem(path: Path, summary: dict) -> str | None:
    """Why a run's small tables cannot be used, or None: metrics.csv once an epoch is done and
    per_class.csv once finished must exist and read cleanly (predictions.csv is checked where
    it is read: it is large, and exported records leave it out)."""
    needed = {
        "metrics.csv": bool(summary.get("epochs_done")),
        "per_class.csv": summary.get("status") == "finished",
    }
    for name, required in needed.items():
        if not (path / name).exists():
            if required:
                return f"{path / name}: missing"
            continue
        try:
            read_table(path / name)
        except ValueError as error:
            return str(error)
    return None


def run_row(path: Path) -> dict:
    """One table row for a run; a broken record gives status "broken" and the reason."""
    try:
        config = read_json(path / "config.json")
        summary = read_json(path / "summary.json")
    except ValueError as error:
        return {"run": path.name, "path": str(path), "status": "broken", "error": str(error)}
    row = {"run": path.name, "path": str(path), "error": None, **summary}
    if row.get("status") not in STATUSES:
        row.update(status="broken", error=f"{path / 'summary.json'}: no valid status")
    elif problem := record_problem(path, summary):
        row.update(status="broken", error=problem)
    row.update({f"cfg_{key}": value for key, value in config.items()})
    return row


# The files of a record small enough to commit (results/): no checkpoints, no confusion matrix;
# predictions.csv (about 0.5 MB, a row a test image) lets anyone rescore a committed record
# against the archive's val_annotations.txt.
RECORD_FILES = ("config.json", "summary.json", "metrics.csv", "per_class.csv", "predictions.csv")


def portable_config(config: dict) -> dict:
    """A config.json without the paths of the machine that made it: an absolute path keeps only
    its last part (the runs root, archive, cache, weights or run started from)."""
    return {
        key: Path(value).expanduser().name
        if isinstance(value, str) and Path(value).expanduser().is_absolute()
        else value
        for key, value in config.items()
    }


def not_finished(row: dict) -> str | None:
    """Why a load_runs row is no finished record to export ("run: status (error)"), or None."""
    if row["status"] == "finished":
        return None
    error = row.get("error")
    return f"{row['run']}: {row['status']}" + (f" ({error})" if isinstance(error, str) else "")


def export_run(run_dir: Path, dest: Path) -> list[Path]:
    """Replace dest/<run name>/ whole with one finished run's small record files."""
    run_dir, dest = Path(run_dir), Path(dest)
    if why := not_finished(run_row(run_dir)):
        raise LabError(f"not exported: {why}; only finished runs are exported")
    target = dest / run_dir.name
    if target.resolve() == run_dir.resolve():  # the swap would delete the run itself
        raise LabError(f"{dest}: the runs root itself; export into another folder")
    dest.mkdir(parents=True, exist_ok=True)
    # Built in a hidden folder of dest (the same file system; no run folder to load_runs), then
    # swapped in by two renames: a crash leaves the old record or the new one, never a mix (the
    # old one in .export-*/old when it falls between the two).
    work = Path(tempfile.mkdtemp(dir=dest, prefix=".export-"))
    new, old = work / run_dir.name, work / "old"
    names = [name for name in RECORD_FILES if (run_dir / name).exists()]
    try:
        new.mkdir()
        config = portable_config(read_json(run_dir / "config.json"))
        (new / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        for name in names:
            if name != "config.json":
                shutil.copyfile(run_dir / name, new / name)
        if target.exists():  # a rename cannot replace a folder that holds files: step it aside
            os.rename(target, old)
        os.rename(new, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.rename(old, target)
        shutil.rmtree(work)
        raise
    shutil.rmtree(work)
    return [target / name for name in names]


def copy_file(source: Path, dest: Path) -> Path:
    """Copy a file atomically."""
    return atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))
