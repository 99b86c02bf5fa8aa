"""Batch runs through papermill: notebooks/train.ipynb once per model, then compare.ipynb."""

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from lab import runs
from lab.config import make_config
from lab.presets import PRESETS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def default_kernel() -> str:
    """A Jupyter kernel that runs this interpreter, installed into this environment if need be."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    # jupyter_client starts a spec whose command is a bare "python"/"python3" with sys.executable
    major, minor = sys.version_info[:2]
    ours = {"python", f"python{major}", f"python{major}.{minor}", sys.executable}
    specs = KernelSpecManager()
    for name in ("python3", "tiny-imagenet-lab"):
        try:
            if specs.get_kernel_spec(name).argv[0] in ours:
                return name
        except NoSuchKernel:
            pass
    from ipykernel.kernelspec import install

    install(
        kernel_name="tiny-imagenet-lab",
        display_name="Python (tiny-imagenet-lab)",
        prefix=sys.prefix,
    )
    return "tiny-imagenet-lab"


def execute(notebook: str, output: Path, parameters: dict, kernel: str) -> None:
    """Run notebooks/<notebook>.ipynb with papermill into `output` (kept even when it fails)."""
    import papermill

    # papermill only warns about a parameter the notebook does not declare: refuse it instead
    declared = papermill.inspect_notebook(NOTEBOOKS / f"{notebook}.ipynb")
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"{notebook}.ipynb: unknown parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(declared)}"
        )
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        papermill.execute_notebook(
            NOTEBOOKS / f"{notebook}.ipynb",
            partial,
            parameters=parameters,
            kernel_name=kernel,
            cwd=NOTEBOOKS,
            progress_bar=False,
        )
    finally:
        if partial.exists():
            os.replace(partial, output)


def error_text(error: Exception) -> str:
    """One line for an exception; papermill's carries the notebook's own exception."""
    if hasattr(error, "ename"):
        return f"{error.ename}: {error.evalue}"
    return f"{type(error).__name__}: {error}"


def sweep(
    preset: str,
    models: list[str] | None = None,
    runs_root: Path = Path("runs"),
    overrides: dict | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    export: Path | None = None,
) -> pd.DataFrame:
    """Train each model of a preset through train.ipynb, then run compare.ipynb.

    Runs are named `{preset}-{model}`; finished ones are skipped, a failed or interrupted one is
    resumed from its checkpoint (or started afresh), and a failure is recorded and passed over.
    With `export`, each run's record is copied there (`runs.export_run`) as soon as it finishes.
    Returns one row per model (status finished, skipped or failed) plus one for compare.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    models = list(models or PRESETS[preset]["models"])
    overrides = dict(overrides or {})
    runs_root = Path(runs_root).resolve()  # the notebooks run with notebooks/ as cwd
    # check every config before the first run, so a typo fails in seconds, not hours
    if "name" in overrides:
        raise ValueError("a sweep names each run {preset}-{model}: name cannot be set")
    overrides["runs_root"] = str(runs_root)
    configs = {
        model: make_config({**overrides, "preset": preset, "model": model}) for model in models
    }
    kernel = kernel_name or default_kernel()
    rows = []
    for model in tqdm(models, desc=f"sweep {preset}", disable=not progress):
        run_dir = runs_root / configs[model].name
        action = runs.resume_or_clear(run_dir)
        row = {"model": model, "run": run_dir.name, "status": "skipped", "error": None}
        if action == "finished":
            rows.append({**row, **runs.read_json(run_dir / "summary.json"), "status": "skipped"})
            continue
        resume = action == "resume"
        if resume:  # so a failure before fit starts is told apart from the earlier one
            runs.update_summary(run_dir, status="running", error=None)
        run_dir.mkdir(parents=True, exist_ok=True)
        parameters = {
            "preset": preset,
            "model": model,
            "run_name": run_dir.name,
            "resume": resume,
            # parsed: the notebook gets 0.3, not the "0.3" of --set lr=0.3
            "overrides": {name: getattr(configs[model], name) for name in overrides},
        }
        start = time.perf_counter()
        try:
            execute("train", run_dir / "train.ipynb", parameters, kernel)
        except Exception as error:
            # the notebook failed before fit could record it
            if runs.run_status(run_dir) != "failed":
                if not (run_dir / "config.json").exists():
                    runs.write_json(run_dir / "config.json", asdict(configs[model]))
                runs.update_summary(
                    run_dir, status="failed", error=error_text(error), model=model, preset=preset
                )
        summary = runs.read_json(run_dir / "summary.json")
        if export and summary.get("status") == "finished":
            runs.export_run(run_dir, export)
        rows.append({**row, **summary, "sweep_time_s": time.perf_counter() - start})
    row = {"model": None, "run": "compare", "status": "finished", "error": None}
    start = time.perf_counter()
    try:
        execute(
            "compare",
            runs_root / "compare.ipynb",
            {"runs_root": str(runs_root), "out_dir": str(runs_root / "figures")},
            kernel,
        )
    except Exception as error:
        row.update(status="failed", error=error_text(error))
    rows.append({**row, "sweep_time_s": time.perf_counter() - start})
    columns = ["model", "run", "status", "sweep_time_s", "train_top1", "val_top1", "test_top1"]
    return pd.DataFrame(rows).reindex(columns=[*columns, "error"])
