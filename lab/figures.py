"""Figures of the data and of run records, for the notebooks and `lab figures`.

Every figure is a matplotlib `Figure` built without pyplot (rendered by Agg, no window, no global
state): a notebook shows the one a cell returns, `make_figures` writes PNGs atomically. The
tables they draw come from lab.records.
"""

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lab import data, runs
from lab.data import SCORED_SPLITS
from lab.errors import LabError
from lab.records import (
    as_roots,
    best_runs,
    finished_runs,
    load_predictions,
    load_test_images,
    minutes_curves,
    mistakes,
    pick_images,
    preset_table,
    seed_groups,
    study_table,
)
from lab.study import STUDY

SALIENCY_METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")
SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


# ----------------------------------------------------------------------------- data
def samples_figure(split: data.Split, count: int = 16, seed: int = 0) -> Figure:
    """A grid of random images of a split, titled with their class names."""
    if count < 1:
        raise LabError(f"samples must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(split.labels), min(count, len(split.labels)), replace=False))
    cols = min(8, len(chosen))
    rows = -(-len(chosen) // cols)
    fig = Figure(figsize=(1.6 * cols, 1.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, chosen, strict=False):
        ax.imshow(split.images[index])
        label = split.labels[index]
        ax.set_title(split.names[label] if label >= 0 else split.files[index], fontsize=7)
    return fig


def mean_image_figure(stats: dict[str, np.ndarray]) -> Figure:
    """The train mean image (what the study's per-pixel mean subtraction removes), per channel."""
    mean = stats["mean_image"]
    fig = Figure(figsize=(10, 2.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(mean.clip(0, 255).astype(np.uint8))
    axes[0].set_title("mean image")
    for ax, channel, name in zip(axes[1:], range(3), "RGB", strict=True):
        shown = ax.imshow(mean[..., channel], cmap="gray")
        ax.set_title(
            f"{name}: mean {stats['mean_channel'][channel]:.1f}, "
            f"std {stats['std_channel'][channel]:.1f}",
            fontsize=8,
        )
        fig.colorbar(shown, ax=ax, shrink=0.8)
    for ax in axes:
        ax.axis("off")
    return fig


def class_balance_figure(splits: dict[str, data.Split]) -> Figure:
    """Images per class in each labeled split (sorted), to see how balanced the classes are."""
    labeled = {name: s for name, s in splits.items() if len(s.labels) and s.labels.min() >= 0}
    fig = Figure(figsize=(4 * len(labeled), 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labeled), squeeze=False)).ravel()
    for ax, (name, split) in zip(axes, labeled.items(), strict=True):
        counts = np.sort(np.bincount(split.labels, minlength=len(split.wnids)))
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set(
            title=f"{name}: {counts.min()}-{counts.max()} a class",
            xlabel="class (sorted)",
            ylabel="images",
        )
    return fig


# ----------------------------------------------------------------------------- figures
def accuracy_figure(table: pd.DataFrame) -> Figure:
    """Grouped bars per model: our best run's train/val/test top-1 beside the study's (hatched)."""
    rows = study_table(table)
    fig = Figure(figsize=(max(6.0, 1.5 * len(rows)), 4), layout="constrained")
    ax = fig.subplots()
    x, width = np.arange(len(rows)), 0.13
    for i, split in enumerate(SCORED_SPLITS):
        offset = (2 * i - 2.5) * width
        ax.bar(
            x + offset,
            rows[f"{split}_top1"],
            width,
            color=SPLIT_COLOURS[split],
            label=f"ours {split}",
        )
        ax.bar(
            x + offset + width,
            rows[f"study_{split}"],
            width,
            color=SPLIT_COLOURS[split],
            alpha=0.35,
            hatch="//",
            label=f"study {split}",
        )
    ax.set_xticks(x, rows["model"], rotation=20)
    ax.set(ylabel="top-1 accuracy (%)", ylim=(0, 100))
    counts = best_runs(table).get("num_classes", pd.Series(dtype=float)).dropna().astype(int)
    ours = "/".join(map(str, sorted(set(counts)))) or "?"
    ax.set_title(f"Best run per model (solid, {ours} classes) and the study (hatched, 200 classes)")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def seeds_figure(groups: pd.DataFrame) -> Figure:
    """Train/val/test top-1 of each group of runs that differ only by seed (seed_groups):
    bars at the mean over seeds, error bars of one standard deviation."""
    groups = groups[groups["runs"] > 1].reset_index(drop=True)
    if groups.empty:
        raise LabError("no runs that differ only by seed (try `lab sweep --seeds 0,1,2`)")
    fig = Figure(figsize=(max(6.0, 1.5 * len(groups)), 4), layout="constrained")
    ax = fig.subplots()
    x, width = np.arange(len(groups)), 0.27
    for i, split in enumerate(SCORED_SPLITS):
        ax.bar(
            x + (i - 1) * width,
            groups[f"{split}_top1"],
            width,
            yerr=groups[f"{split}_top1_std"],
            capsize=3,
            color=SPLIT_COLOURS[split],
            label=split,
        )
    labels = [f"{row.group}\n{row.runs} seeds" for row in groups.itertuples()]
    ax.set_xticks(x, labels, rotation=20, fontsize="small")
    ax.set(ylabel="top-1 accuracy (%)", ylim=(0, 100), xlim=(-1, len(groups)))
    ax.set_title("Mean over seeds; error bars: one standard deviation")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def schedule_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """A run's learning rate and training image side at each optimizer step (lab.train.schedule),
    epoch boundaries in grey."""
    fig = Figure(figsize=(11, 3), layout="constrained")
    lr_ax, side_ax = fig.subplots(1, 2)
    lr_ax.plot(table["step"], table["lr"])
    lr_ax.set(xlabel="optimizer step", ylabel="learning rate", title=title or "learning rate")
    side_ax.plot(table["step"], table["side"])
    side_ax.set(xlabel="optimizer step", ylabel="image side (px)", title="image size")
    starts = table["step"][table["epoch"].diff() > 0]  # the first step of every later epoch
    for ax in (lr_ax, side_ax):
        for step in starts:
            ax.axvline(step, color="0.85", lw=0.8)
    return fig


def curves_figure(run_dirs: Sequence[str | Path]) -> Figure:
    """Learning curves of runs: train loss; val top-1 (solid) and train top-1 (dotted) by epoch."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.csv"
        if not path.exists():
            continue
        metrics = pd.read_csv(path)
        (line,) = loss_ax.plot(metrics["epoch"], metrics["train_loss"], marker=".")
        colour = line.get_color()
        label = Path(run_dir).name
        acc_ax.plot(metrics["epoch"], metrics["val_top1"], marker=".", color=colour, label=label)
        acc_ax.plot(metrics["epoch"], metrics["train_top1"], ls=":", color=colour)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Val top-1 (solid), train top-1 (dotted)")
    acc_ax.legend(fontsize="small")
    return fig


def minutes_figure(table: pd.DataFrame) -> Figure:
    """Val top-1 against training minutes for every run of a table (a marker at the end: its
    test top-1), the study's test top-1 per model as dashed lines, the machines in the title."""
    curves = minutes_curves(table)
    if curves.empty:
        raise LabError("no run with per-epoch metrics to draw")
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    colours: dict[str, str] = {}
    for run, curve in curves.groupby("run", sort=False):
        (line,) = ax.plot(curve["minutes"], curve["val_top1"], marker=".", label=run)
        colours.setdefault(curve["model"].iloc[0], line.get_color())
        end = table[table["run"] == run]
        if "test_top1" in end and end["test_top1"].notna().any():
            test = end["test_top1"].iloc[0]
            ax.plot(curve["minutes"].iloc[-1], test, "*", ms=11, color=line.get_color())
    for model, colour in colours.items():
        if STUDY.get(model):
            ax.axhline(STUDY[model][2], ls="--", lw=1, color=colour)
            ax.annotate(
                f"study {model} test", (0, STUDY[model][2]), fontsize=7, color=colour, va="bottom"
            )
    recorded = table.reindex(columns=["device", "precision"]).dropna()
    machines = sorted({f"{row.device}, {row.precision}" for row in recorded.itertuples()})
    machine_lines = "\n".join(machines) or "machine not recorded"  # a line each: they are long
    ax.set(xlabel="training minutes", ylabel="top-1 (%)", ylim=(0, None))
    ax.set_title(
        "Val top-1 by training minutes (lines), test top-1 at the end (stars), study test"
        f" (dashed)\n{machine_lines}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def mistakes_figure(run_dir: str | Path, count: int = 8) -> Figure:
    """The run's most confident test mistakes, titled with true and predicted class names."""
    wrong = mistakes(load_predictions(run_dir)).head(count)
    fig = Figure(figsize=(1.8 * max(1, len(wrong)), 2.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(wrong)), squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    images = load_test_images(run_dir, wrong["file"]) if len(wrong) else []
    for ax, image, row in zip(axes, images, wrong.itertuples(), strict=False):
        ax.imshow(image)
        ax.set_title(f"true: {row.true}\npred: {row.predicted} ({row.confidence:.2f})", fontsize=7)
    return fig


def saliency_figure(
    run_dirs: Sequence[str | Path],
    files: Sequence[str],
    methods: Sequence[str] = SALIENCY_METHODS,
) -> Figure:
    """Attribution maps for the predicted class: a row per (test image, run), a column per
    method, so each image reads across models. A red title marks a wrong prediction."""
    import torch

    from lab import explain
    from lab.predict import load_predictor, top_classes

    methods = explain.check_methods(methods)
    files = list(files)
    if not files:
        raise LabError("no test images to explain")
    panels = {}  # run name -> (images, labels, predictions, class names, {method: maps})
    for run_dir in run_dirs:
        labels = load_predictions(run_dir, files)["label"].to_numpy()
        images = load_test_images(run_dir, files)
        predictor = load_predictor(run_dir)  # the checkpoint, its normalization, class names
        x = explain.inputs(images, predictor.mean, predictor.scale)
        # the prediction of the run's own evaluation (its precision, flip averaging, tie rule)
        preds = torch.tensor([int(t["label"].iloc[0]) for t in top_classes(predictor, images, 1)])
        maps = {m: explain.attribute(predictor.model, x, preds, m) for m in methods}
        panels[Path(run_dir).name] = (images, labels, preds, predictor.names, maps)
    rows = [(i, name) for i in range(len(files)) for name in panels]
    fig = Figure(figsize=(1.7 * (len(methods) + 1), 1.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(methods) + 1, squeeze=False)
    for (i, name), row_axes in zip(rows, axes, strict=True):
        images, labels, preds, names, maps = panels[name]
        label, pred = int(labels[i]), int(preds[i])
        row_axes[0].imshow(images[i])
        row_axes[0].set_title(
            f"{name}\n{files[i]}\ntrue: {names[label]}\npred: {names[pred]}",
            fontsize=6,
            color="black" if pred == label else "red",
        )
        for ax, method in zip(row_axes[1:], methods, strict=True):
            ax.imshow(explain.overlay(images[i], maps[method][i]))
            ax.set_title(method, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def transfer_figure(table: pd.DataFrame) -> Figure:
    """Test top-1 and the train-test gap against images a class, one line per transfer mode."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    accuracy_ax, gap_ax = fig.subplots(1, 2)
    for mode, rows in table.groupby("mode", sort=False):
        rows = rows.sort_values("per_class")
        accuracy_ax.plot(rows["per_class"], rows["test_top1"], marker="o", label=mode)
        gap_ax.plot(rows["per_class"], rows["gap"], marker="o", label=mode)
    for ax, label in ((accuracy_ax, "test top-1 (%)"), (gap_ax, "train - test top-1 (points)")):
        ax.set(xscale="log", xlabel="fine-tuning images a class", ylabel=label)
        sizes = sorted(table["per_class"].unique())
        ax.set_xticks(sizes, map(str, sizes))
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    accuracy_ax.legend(title="trained")
    accuracy_ax.set_title("Accuracy on the new classes")
    gap_ax.set_title("Overfitting")
    return fig


def presets_figure(table: pd.DataFrame) -> Figure:
    """Grouped bars: each model's test top-1 under each preset, and the study's on full data."""
    scores = preset_table(table)
    if "num_classes" in table and table["num_classes"].eq(200).all():  # the study's setting
        study = [STUDY[m][2] if STUDY.get(m) else np.nan for m in scores.index]
        scores.insert(0, "study", study)
    fig = Figure(figsize=(max(6.0, 1.2 * len(scores)), 3.8), layout="constrained")
    ax = fig.subplots()
    x, width = np.arange(len(scores)), 0.8 / len(scores.columns)
    for i, preset in enumerate(scores.columns):
        bars = ax.bar(x + (i - (len(scores.columns) - 1) / 2) * width, scores[preset], width)
        bars.set_label(preset)
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    ax.set_xticks(x, scores.index, rotation=20)
    ax.set(ylabel="test top-1 (%)", ylim=(0, min(100, 1.15 * np.nanmax(scores.to_numpy()))))
    ax.set_title("Each model under each preset (best-val run)")
    fig.legend(title="preset", loc="outside right upper")
    ax.grid(axis="y", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- writing
def save_figure(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG, atomically."""
    return runs.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def make_figures(runs_roots: str | Path | Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Write the accuracy, curves, minutes, saliency, presets and transfer PNGs that the
    records of one runs root, or of several together, allow."""
    table = finished_runs(runs_roots)
    top = Path(best_runs(table).sort_values("val_top1", ascending=False)["path"].iloc[0])
    figures = {
        "accuracy.png": accuracy_figure(table),
        "curves.png": curves_figure(table["path"]),
        "minutes.png": minutes_figure(table),
    }
    # records exported to results/ keep no checkpoint or predictions: no saliency from them
    if (top / "checkpoint.pt").exists() and (top / "predictions.csv").exists():
        try:
            runs.read_table(top / "predictions.csv")
            figures["saliency.png"] = saliency_figure([top], pick_images(top))
        except ValueError as error:  # a damaged checkpoint or table: the other figures still
            print(f"saliency.png left out: {error}", file=sys.stderr)
    groups = seed_groups(table)
    if (groups["runs"] > 1).any():  # e.g. lab sweep --seeds 0,1,2
        figures["seeds.png"] = seeds_figure(groups)
    if table["preset"].nunique() > 1:  # e.g. paper and best runs of the same models
        figures["presets.png"] = presets_figure(table)
    transfers = [root / "transfer.csv" for root in as_roots(runs_roots)]  # by lab transfer
    if tables := [pd.read_csv(path) for path in transfers if path.exists()]:
        figures["transfer.png"] = transfer_figure(pd.concat(tables, ignore_index=True))
    return [save_figure(fig, Path(out_dir) / name) for name, fig in figures.items()]
