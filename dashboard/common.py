"""What the dashboard pages share: the runs root, cached readers of run records, data and models."""

from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from lab import data, explain, records, runs
from lab.config import Config, read_config
from lab.predict import Predictor, load_predictor, top_classes

ACCURACIES = ("train_top1", "train_top5", "val_top1", "val_top5", "test_top1", "test_top5")
# the summary.json fields the pages compute with or sort by, by the type they must have
NUMBERS = (*ACCURACIES, "epochs_done", "epochs", "best_val_top1", "best_epoch", "params", "macs")
NUMBERS += ("wall_time_s", "images_per_s")
TEXTS = ("model", "preset")


def runs_root() -> Path:
    """The runs root chosen in the sidebar."""
    return Path(st.session_state["runs_root"]).expanduser()


def stamp(*paths: Path) -> tuple:
    """Cheap change marker for cache keys: modification times (0 for a missing file)."""
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


def root_stamp(root: Path) -> tuple:
    """Change marker of a runs root: the run folders and their summary.json times."""
    return tuple((p.name, *stamp(p / "summary.json")) for p in records.run_dirs(root))


def missing(value) -> bool:
    """Whether a table cell is empty (None or NaN; a list or dict is a value)."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def summary_problem(row: dict) -> str | None:
    """Why a run's summary.json fields cannot be shown (a number or name of the wrong type), or
    None; a missing field is fine (a run that has not got there yet)."""
    for key in NUMBERS:
        value = row.get(key)
        if not (missing(value) or isinstance(value, Real) and not isinstance(value, bool)):
            return f"{Path(row['path']) / 'summary.json'}: {key} is {value!r}, not a number"
    for key in TEXTS:
        if not (missing(row.get(key)) or isinstance(row[key], str)):
            return f"{Path(row['path']) / 'summary.json'}: {key} is {row[key]!r}, not a name"
    return None


def config_problem(folder: Path) -> str | None:
    """Why a run's config.json is no lab run's (no model, a field of the wrong type), or None;
    a missing field takes its default, as every lab command reads an older run."""
    path = folder / "config.json"
    try:
        if "model" not in runs.read_json(path):
            return f"{path}: no model (not a lab run's config)"
        read_config(folder)
    except ValueError as error:  # a field of the wrong type: parse() names the field
        return f"{path}: {error}"
    return None


def checked(row: dict) -> dict:
    """A load_runs row, or, when its fields cannot be shown, a broken row that says why (and
    holds none of them, so that every column keeps one type)."""
    if row["status"] == "broken":
        return row
    problem = summary_problem(row) or config_problem(Path(row["path"]))
    if problem is None:
        return row
    return {"run": row["run"], "path": row["path"], "status": "broken", "error": problem}


@st.cache_data(show_spinner=False, max_entries=8)
def _runs_table(root: str, version: tuple) -> pd.DataFrame:
    table = records.load_runs(Path(root))
    # a foreign or hand-edited folder is one broken row, which every page passes over
    rows = [checked(row) for row in table.to_dict("records")]
    table = pd.DataFrame(rows, columns=table.columns).infer_objects()
    for column in ("model", "preset", *NUMBERS):
        if column not in table:
            table[column] = np.nan
    table = records.study_columns(table)
    table["progress"] = table["epochs_done"].fillna(0) / table["epochs"].where(table["epochs"] > 0)
    return table


def runs_table(root: Path | None = None) -> pd.DataFrame:
    """load_runs plus the study's numbers beside each model; refreshed when a summary changes."""
    root = root or runs_root()
    return _runs_table(str(root), root_stamp(root))


@st.cache_data(show_spinner=False, max_entries=64)
def _run_record(path: str, version: tuple) -> dict:
    return runs.load_run(Path(path))


def run_record(path: str) -> dict:
    """runs.load_run, cached until the run's files change; raises ValueError for a broken run."""
    folder = Path(path)
    files = ("summary.json", "metrics.csv", "per_class.csv", "confusion.npy", "predictions.csv")
    return _run_record(path, stamp(*(folder / f for f in files)))


@st.cache_resource(show_spinner="Loading the model", max_entries=8)
def _run_predictor(path: str, version: tuple) -> Predictor:
    return load_predictor(path)


def run_predictor(path: str) -> Predictor:
    """A run's checkpoint model with its normalization and class names (lab.predict), shared
    across sessions and pages, reloaded when the checkpoint changes."""
    return _run_predictor(path, checkpoint_version(path))


@st.cache_resource(show_spinner="Reading the data cache", max_entries=16)
def split_of(source: str, cache_dir: str, classes: int, first_class: int, split: str) -> data.Split:
    """A memory-mapped split as a run saw it (shared: no copy of the arrays)."""
    # classes 0 = all, else `classes` classes from `first_class` on
    cache = data.prepare(source or None, cache_dir or None, progress=False)
    return data.load_split(split, cache_dir=cache, classes=classes, first_class=first_class)


def whole(value) -> int:
    """A count of the runs table that may be missing (NaN or None: not there yet) as 0."""
    return 0 if value is None or pd.isna(value) else int(value)


def run_config(path: str) -> Config:
    """A run's config.json as lab commands read it: missing fields take their defaults."""
    return read_config(Path(path))


def run_split(config: Config, split: str = "test") -> data.Split:
    """The split a run was evaluated on."""
    return split_of(config.data, config.cache_dir, config.classes, config.first_class, split)


def checkpoint_version(path: str) -> tuple:
    """Cache key part that changes when a run's checkpoint is rewritten."""
    return stamp(Path(path) / "checkpoint.pt")


@st.cache_data(show_spinner=False, max_entries=256)
def top5(path: str, version: tuple, index: int) -> pd.DataFrame:
    """lab.predict.top_classes of one test image; version = checkpoint_version(path)."""
    images = np.asarray(run_split(run_config(path)).images[index : index + 1])
    return top_classes(run_predictor(path), images)[0]


@st.cache_data(show_spinner=False, max_entries=512)
def attribution(path: str, version: tuple, index: int, method: str, target: int) -> np.ndarray:
    """lab.explain.attribute map of one test image; version = checkpoint_version(path)."""
    predictor = run_predictor(path)
    images = np.asarray(run_split(run_config(path)).images[index : index + 1])
    x = explain.inputs(images, predictor.mean, predictor.scale)
    return explain.attribute(predictor.model, x, target, method)[0].numpy()


@st.cache_data(show_spinner="Explaining the picture", max_entries=128)
def picture_maps(
    path: str, version: tuple, image: np.ndarray, methods: list[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """lab.explain.explain_picture of an uploaded picture; version = checkpoint_version(path)."""
    return explain.explain_picture(run_predictor(path), image, methods)


def picture_row(image: np.ndarray, caption: str, top: pd.DataFrame, key: str, maps: int) -> list:
    """One row: the picture enlarged, a run's top-5 as bars, and `maps` columns for its maps."""
    columns = st.columns([1.2, 1.6] + [1.0] * maps)
    columns[0].image(upscale(image), caption=caption)
    columns[1].dataframe(
        top[["name", "probability"]],
        hide_index=True,
        key=key,
        column_config={
            "probability": st.column_config.ProgressColumn(
                min_value=0.0, max_value=1.0, format="%.3f"
            )
        },
    )
    return columns[2:]


def upscale(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Nearest-neighbour enlargement, so 64x64 images stay crisp on screen."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def empty_root(root: Path) -> None:
    """What to run to fill an empty runs root."""
    st.info(
        f"No runs under `{root}` yet. Train a few, for example:\n\n"
        f"```\nlab sweep --preset quick --runs-root {root}\n"
        f"lab train --model resnet20 --epochs 5 --runs-root {root}\n```\n\n"
        "or point the sidebar's runs root at a folder of run records."
    )


def compare_selection(table: pd.DataFrame) -> list[str]:
    """Runs picked on the overview page that still exist."""
    return [r for r in st.session_state.get("compare", []) if r in set(table["run"])]


def checkpoint_runs(need: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs table and, by run name, its readable runs with a checkpoint; the page stops
    with a line saying what `need`s one when there is none."""
    table = runs_table()
    if table.empty:
        empty_root(runs_root())
        st.stop()
    usable = table[
        (table["status"] != "broken") & table["path"].map(lambda p: runs.has_checkpoint(Path(p)))
    ].set_index("run")
    if usable.empty:
        st.info(f"{need} a run with a checkpoint (one finished epoch).")
        st.stop()
    return table, usable
