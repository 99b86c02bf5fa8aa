"""Dashboard speed with many runs: page times with 50 run records, first load and cached.

    python benchmarks/dashboard.py --run runs/<a finished run>     # copies of that run
    python benchmarks/dashboard.py --run RUN --runs 200 --repeats 5

Copies one real run folder N times into a temporary runs root (varied model, status and
accuracies; no checkpoints), then times headless AppTest runs: the overview's first load
(cold caches), its cached reruns, a rerun after one summary.json changed (a live
run), and the other table pages cached. Prints seconds and the ratio to the cached overview.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from lab.models import model_names
from lab.records import load_runs

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
FILES = ("config.json", "metrics.csv", "per_class.csv", "confusion.npy", "predictions.csv")


def make_runs(source: Path, root: Path, count: int, seed: int = 0) -> None:
    """`count` copies of a run folder with varied model, status and accuracies."""
    rng = np.random.default_rng(seed)
    summary = json.loads((source / "summary.json").read_text())
    models = model_names()
    for i in range(count):
        run = root / f"run-{i:03d}"
        run.mkdir(parents=True)
        for name in FILES:
            if (source / name).exists():
                shutil.copy(source / name, run / name)
        copy = dict(summary, model=models[i % len(models)])
        for key in ("train_top1", "val_top1", "test_top1", "train_top5", "val_top5", "test_top5"):
            if key in copy:
                copy[key] = float(np.clip(copy[key] + rng.normal(0, 5), 0, 100))
        if i % 10 == 9:
            copy.update(status="running", epochs_done=1)
        elif i % 25 == 24:
            copy.update(status="failed", error="RuntimeError: out of memory")
        (run / "summary.json").write_text(json.dumps(copy))


def timed(at: AppTest) -> float:
    """Seconds for one run of the app's current page; fails loudly on an exception."""
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"the page raised: {at.exception[0].value}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: first in runs/)")
    parser.add_argument("--runs", type=int, default=50, help="run records to make")
    parser.add_argument("--repeats", type=int, default=5, help="cached reruns to time")
    args = parser.parse_args()
    if args.run is None:
        table = load_runs(Path("runs"))
        finished = table[table["status"] == "finished"] if len(table) else table
        if finished.empty:
            raise SystemExit("no finished run under runs/: pass --run, or run `lab train` first")
        args.run = Path(finished["path"].iloc[0])

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_runs(args.run, root, args.runs)
        os.environ["LAB_RUNS_ROOT"] = str(root)
        at = AppTest.from_file(str(APP), default_timeout=600)
        rows = [("overview, first load (cold caches)", timed(at))]
        cached = [timed(at) for _ in range(args.repeats)]
        rows.append(("overview, cached rerun (median)", statistics.median(cached)))
        changed = []
        for i in range(args.repeats):
            summary = root / f"run-{i % args.runs:03d}" / "summary.json"
            summary.write_text(summary.read_text())  # a live run wrote its summary
            changed.append(timed(at))
        rows.append(("overview, after a summary.json changed (median)", statistics.median(changed)))
        for page in ("pages_curves.py", "pages_classes.py"):
            at.switch_page(page)
            timed(at)
            seconds = statistics.median(timed(at) for _ in range(args.repeats))
            rows.append((f"{page[6:-3]}, cached rerun (median)", seconds))

    base = rows[1][1]
    print(f"{args.runs} run records copied from {args.run}")
    print(f"{'case':52s} {'seconds':>8s} {'x cached':>9s}")
    for name, seconds in rows:
        print(f"{name:52s} {seconds:8.3f} {seconds / base:9.2f}")


if __name__ == "__main__":
    main()
