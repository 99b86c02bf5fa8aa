"""Questions across run records: the runs table and its columns, seed groups, the study beside
each run, each model's best run, test predictions, mistakes and confusions, and export.

lab.runs writes and reads one run folder; every consumer (the CLI, the sweep, the notebooks, the
figures and the dashboard) asks these. lab.data (torch) is imported inside the functions that
need it: `lab runs` and `lab export` read records without torch.
"""

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lab import runs
from lab.config import EXPERIMENT_FIELDS, FIELDS
from lab.errors import LabError
from lab.presets import PRESETS
from lab.study import STUDY

# The columns of a runs table as the CLI, the sweep and compare.ipynb show it.
RUN_COLUMNS = (
    "run",
    "model",
    "preset",
    "status",
    "epochs_done",
    "train_top1",
    "val_top1",
    "test_top1",
    "best_val_top1",
    "train_time_s",
    "wall_time_s",
    "error",
)


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
    rows = [runs.run_row(path) for path in run_dirs(root)]
    return pd.DataFrame(rows, columns=None if rows else ["run", "path", "status", "error"])


def run_table(table: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The RUN_COLUMNS of a runs table, with its `extra` columns before the error."""
    return table.reindex(columns=[*RUN_COLUMNS[:-1], *extra, RUN_COLUMNS[-1]])


def broken_runs(table: pd.DataFrame) -> list[str]:
    """One line per broken run of a load_runs table: its name and why it cannot be used."""
    return [f"{row.run}: {row.error}" for row in table[table["status"] == "broken"].itertuples()]


def minutes_to(run_dir: Path, val_top1: float) -> float:
    """Training minutes (epoch times summed) until the run's val top-1 first reached `val_top1`
    (%), from its metrics.csv; NaN when it never did or has no metrics yet."""
    if not (Path(run_dir) / "metrics.csv").exists():
        return float("nan")
    metrics = runs.read_table(Path(run_dir) / "metrics.csv")
    reached = (metrics["val_top1"] >= val_top1).to_numpy()
    if not reached.any():
        return float("nan")
    return float(metrics["epoch_time_s"].to_numpy()[: reached.argmax() + 1].sum() / 60)


def minutes_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Val top-1 against training minutes (epoch times summed) of each run of a load_runs
    table with metrics, one row per epoch: run, model, epoch, minutes, val_top1."""
    curves = []
    for row in table.itertuples():
        path = Path(row.path) / "metrics.csv"
        if not path.exists():
            continue
        metrics = runs.read_table(path)
        curves.append(
            pd.DataFrame(
                {
                    "run": row.run,
                    "model": row.model,
                    "epoch": metrics["epoch"],
                    "minutes": metrics["epoch_time_s"].cumsum() / 60,
                    "val_top1": metrics["val_top1"],
                }
            )
        )
    columns = ["run", "model", "epoch", "minutes", "val_top1"]
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=columns)


# Config fields that do not make two runs different experiments: the seed, and how and where a
# run went on and was recorded (lab.config's field kinds); fields of older records count.
NOT_THE_EXPERIMENT = ("seed", *(name for name in FIELDS if name not in EXPERIMENT_FIELDS))
SEED_METRICS = ("train_top1", "val_top1", "test_top1", "test_top5", "best_val_top1")


def seed_groups(table: pd.DataFrame) -> pd.DataFrame:
    """Finished runs of a load_runs table grouped when they differ only by seed, one row a
    group: its runs and seeds, and per metric the mean and (`<metric>_std`) the sample standard
    deviation over seeds (NaN for a group of one run)."""
    finished = table[table["status"] == "finished"] if len(table) else table
    keys = [
        column
        for column in finished
        if column.startswith("cfg_") and column.removeprefix("cfg_") not in NOT_THE_EXPERIMENT
    ]
    keys += [column for column in ("model", "preset") if column in finished]  # as summarized
    rows = []
    if not finished.empty:
        # as text, so that a field missing from older records (NaN) matches itself; a budget
        # in minutes, not the epochs each seed planned for it, is the experiment
        shown = finished[keys].map(str)
        if "cfg_minutes" in finished and "cfg_epochs" in shown:
            budgeted = pd.to_numeric(finished["cfg_minutes"], errors="coerce").fillna(0) > 0
            shown.loc[budgeted, "cfg_epochs"] = ""
        experiment = shown.agg("|".join, axis=1)
        for _, group in finished.groupby(experiment, sort=False):
            first = group.iloc[0]
            seeds = group.get("cfg_seed", pd.Series(dtype=object))
            row = {
                "group": re.sub(r"-s\d+$", "", str(first["run"])),  # as lab sweep --seeds names
                "model": first.get("model"),
                "preset": first.get("preset"),
                "runs": len(group),
                "seeds": " ".join(str(seed if pd.isna(seed) else int(seed)) for seed in seeds),
                "run_names": " ".join(group["run"]),
            }
            for metric in (m for m in SEED_METRICS if m in group):
                values = pd.to_numeric(group[metric], errors="coerce")
                row.update({metric: values.mean(), f"{metric}_std": values.std()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["group", "model", "preset", "runs"])


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    """ "mean ± std" as text, or the mean alone when there is no spread to show (one run)."""
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def seed_table(groups: pd.DataFrame) -> pd.DataFrame:
    """The seed_groups of more than one run, each metric as "mean ± std" text, for showing."""
    several = groups[groups["runs"] > 1] if len(groups) else groups
    shown = several.reindex(columns=["group", "model", "preset", "runs", "seeds"])
    for metric in (m for m in SEED_METRICS if m in several):
        pairs = zip(several[metric], several[f"{metric}_std"], strict=True)
        shown[metric] = [mean_std(mean, std) for mean, std in pairs]
    return shown.reset_index(drop=True)


def export_runs(root: Path, dest: Path) -> list[Path]:
    """Export every finished run under `root` (export_run), and the root's own tables, to
    `dest`; any other run is left out, with one line on stderr that says why."""
    root, dest = Path(root), Path(dest)
    written = []
    for row in load_runs(root).to_dict("records"):
        if why := runs.not_finished(row):
            print(f"not exported: {why}", file=sys.stderr)
        else:
            written += runs.export_run(Path(row["path"]), dest)
    written += [runs.copy_file(table, dest / table.name) for table in sorted(root.glob("*.csv"))]
    return written


def as_roots(runs_roots: str | Path | Sequence[str | Path]) -> list[Path]:
    """A runs root, or several, as a list of paths."""
    return [Path(runs_roots)] if isinstance(runs_roots, str | Path) else list(map(Path, runs_roots))


def finished_runs(runs_roots: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The finished runs under a runs root or several (a run is named ROOT/RUN where two roots
    hold its name); ValueError when there is none."""
    roots = as_roots(runs_roots)
    table = pd.concat([load_runs(root).assign(root=root.name) for root in roots])
    finished = table[table["status"] == "finished"].reset_index(drop=True)
    if finished.empty:
        where = ", ".join(map(str, roots))
        raise LabError(f"{where}: no finished runs (try `lab sweep --preset quick`)")
    repeated = finished["run"].duplicated(keep=False)
    finished.loc[repeated, "run"] = finished["root"] + "/" + finished["run"]
    return finished.drop(columns="root")


def best_runs(table: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The finished run with the best final val top-1 (chosen on val, never test) of each
    group of `by` (each model by default), sorted by `by`."""
    finished = table[table["status"] == "finished"]
    best = finished.sort_values("val_top1", ascending=False, kind="stable")
    return best.drop_duplicates(list(by)).sort_values(list(by)).reset_index(drop=True)


def study_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each model's best run beside the study's train/val/test top-1, and the gap (ours - study)."""
    from lab.data import SCORED_SPLITS

    best = best_runs(table).set_index("model")
    rows = []
    for model in [*STUDY, *(m for m in best.index if m not in STUDY)]:
        ours = best.loc[model] if model in best.index else None
        study = STUDY.get(model)
        row = {"model": model, "run": None if ours is None else ours["run"]}
        for i, split in enumerate(SCORED_SPLITS):
            mine = np.nan if ours is None else float(ours[f"{split}_top1"])
            theirs = np.nan if study is None else study[i]
            row.update(
                {f"{split}_top1": mine, f"study_{split}": theirs, f"gap_{split}": mine - theirs}
            )
        rows.append(row)
    return pd.DataFrame(rows)


def study_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A runs table with the study's top-1 of each run's model (`study_<split>_top1`, NaN for a
    model the study has no numbers of) and the test gap (`gap_test_top1`, ours - study)."""
    from lab.data import SCORED_SPLITS

    study = table["model"].map(lambda m: STUDY.get(m) if isinstance(m, str) else None)
    table = table.assign(
        **{
            f"study_{split}_top1": study.map(lambda s, i=i: s[i] if s else np.nan)
            for i, split in enumerate(SCORED_SPLITS)
        }
    )
    return table.assign(gap_test_top1=table["test_top1"] - table["study_test_top1"])


def preset_table(table: pd.DataFrame) -> pd.DataFrame:
    """Test top-1 of each model's best-val finished run under each preset (models x presets)."""
    table = table.assign(preset=table["preset"].replace("", None).fillna("none"))
    best = best_runs(table, by=("model", "preset"))
    scores = best.pivot(index="model", columns="preset", values="test_top1")
    models = [m for m in STUDY if m in scores.index] + sorted(set(scores.index) - set(STUDY))
    known = [p for p in PRESETS if p in scores.columns]
    return scores.loc[models, known + sorted(set(scores.columns) - set(known))]


def split_table(summary: dict) -> pd.DataFrame:
    """A run's final top-1 and top-5 (%) per split."""
    from lab.data import SCORED_SPLITS

    return pd.DataFrame(
        {k: [summary.get(f"{s}_{k}") for s in SCORED_SPLITS] for k in ("top1", "top5")},
        index=list(SCORED_SPLITS),
    )


def class_names(run_dir: str | Path) -> list[str]:
    """A run's class names by label, from its per_class.csv."""
    return runs.read_table(Path(run_dir) / "per_class.csv").sort_values("label")["name"].tolist()


def load_predictions(run_dir: str | Path, files: Sequence[str] | None = None) -> pd.DataFrame:
    """A run's test predictions with true and predicted class names; only `files`, in order,
    when given (test file names, e.g. val_12.JPEG, are the same whatever a run's classes)."""
    predictions = runs.read_table(Path(run_dir) / "predictions.csv")
    names = np.array(class_names(run_dir))
    predictions["true"] = names[predictions["label"]]
    predictions["predicted"] = names[predictions["pred"]]
    if files is None:
        return predictions
    missing = sorted(set(files) - set(predictions["file"]))
    if missing:
        raise LabError(f"{run_dir}: no test prediction for {missing} (not in its classes?)")
    return predictions.set_index("file").loc[list(files)].reset_index()


def load_test_images(run_dir: str | Path, files: Sequence[str]) -> np.ndarray:
    """uint8 test images (N, 64, 64, 3) by file name, from the data the run was trained on."""
    from lab import data

    config = runs.read_json(Path(run_dir) / "config.json")
    test = data.load_split(
        "test", source=config["data"] or None, cache_dir=config["cache_dir"] or None
    )
    position = {name: i for i, name in enumerate(test.files)}
    return np.stack([np.asarray(test.images[position[name]]) for name in files])


def pick_runs(runs_root: str | Path, run_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """The given run folders (checked), or else the best run of each model under runs_root."""
    chosen = [Path(p) for p in run_dirs]
    if not chosen:
        chosen = [Path(p) for p in best_runs(finished_runs(runs_root))["path"]]
    for path in chosen:
        if not (path / "checkpoint.pt").exists() or not (path / "predictions.csv").exists():
            raise LabError(f"{path}: not a finished run folder (no checkpoint.pt or predictions)")
    return chosen


def mistakes(predictions: pd.DataFrame) -> pd.DataFrame:
    """The wrong rows of a predictions table, most confident first (ties in table order)."""
    wrong = predictions[predictions["label"] != predictions["pred"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable")


def pick_images(run_dir: str | Path, correct: int = 2, wrong: int = 2) -> list[str]:
    """Test files: the run's most confident right and most confident wrong predictions."""
    predictions = runs.read_table(Path(run_dir) / "predictions.csv")
    right = predictions[predictions["label"] == predictions["pred"]]
    right = right.sort_values("confidence", ascending=False, kind="stable")
    return [*right["file"].head(correct), *mistakes(predictions)["file"].head(wrong)]


def predictions_table(run_dirs: Sequence[str | Path], files: Sequence[str]) -> pd.DataFrame:
    """For chosen test images: file, true class and each run's predicted class."""
    tables = [load_predictions(run_dir, files) for run_dir in run_dirs]
    table = tables[0][["file", "true"]].copy()
    for run_dir, predictions in zip(run_dirs, tables, strict=True):
        table[Path(run_dir).name] = predictions["predicted"].to_numpy()
    return table


def confused_pairs(confusion: np.ndarray, names: list[str], top: int) -> pd.DataFrame:
    """The largest off-diagonal cells: true class, predicted class, count, share of the true."""
    off = confusion.astype(float).copy()
    np.fill_diagonal(off, 0)
    cells = np.argsort(off, axis=None)[::-1][:top]
    rows, cols = np.unravel_index(cells, off.shape)
    totals = confusion.sum(1)
    return pd.DataFrame(
        {
            "true": rows,
            "predicted": cols,
            "true name": [names[r] for r in rows],
            "predicted name": [names[c] for c in cols],
            "count": off[rows, cols].astype(int),
            "% of true": 100 * off[rows, cols] / np.maximum(totals[rows], 1),
        }
    )[lambda t: t["count"] > 0]


def confusion_order(confusion: np.ndarray) -> np.ndarray:
    """Class order that puts often-confused classes side by side (spectral ordering)."""
    off = confusion.astype(float)
    np.fill_diagonal(off, 0)
    weights = off + off.T
    laplacian = np.diag(weights.sum(1)) - weights
    # the Fiedler vector: the smoothest non-constant ordering over the confusion graph
    return np.argsort(np.linalg.eigh(laplacian)[1][:, 1])


# The config fields that choose a run's test split: the data, its cache and the classes.
TEST_SPLIT_FIELDS = ("data", "cache_dir", "classes", "first_class")


def same_test_split(table: pd.DataFrame, run: str) -> pd.DataFrame:
    """The other runs of a runs table indexed by run that were evaluated on `run`'s test split."""
    keys = [f"cfg_{name}" for name in TEST_SPLIT_FIELDS if f"cfg_{name}" in table]
    matches = (table[keys].astype(str) == table.loc[run, keys].astype(str)).all(axis=1)
    return table[matches & (table.index != run)]
