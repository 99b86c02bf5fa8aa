"""Batch runs through papermill: notebooks/train.ipynb once per model, then compare.ipynb.

Also the parameter check every notebook runs right after its parameters cell, since papermill
only warns about a parameter the notebook does not declare.
"""

import ast
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from lab import runs
from lab.presets import PRESETS, TRAIN_PARAMETERS, preset_config
from lab.train import Config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ENV_PARAMETERS = "LAB_NOTEBOOK_PARAMETERS"
NOTEBOOK_PARAMETERS: dict[str, tuple[str, ...]] = {
    "data": ("data", "cache_dir", "classes", "samples", "seed"),
    "train": TRAIN_PARAMETERS,
    "compare": ("runs_root", "out_dir"),
    "saliency": ("runs_root", "run_dirs", "images", "correct", "wrong", "methods"),
}


def injected_names(namespace: dict) -> list[str]:
    """Names assigned by papermill's injected-parameters cell, read from the kernel's history."""
    for source in reversed(namespace.get("In", [])):
        if source.startswith("# Parameters\n"):
            tree = ast.parse(source)
            return [
                t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            ]
    return []


def notebook_parameters(notebook: str, namespace: dict) -> dict[str, Any]:
    """The parameters a notebook runs with: its parameters cell, papermill's injected values,
    then the JSON object ${ENV_PARAMETERS}[notebook] (for runners that cannot inject, like nbval).

    Raises ValueError naming any parameter the notebook does not declare.
    """
    declared = NOTEBOOK_PARAMETERS[notebook]
    missing = [name for name in declared if name not in namespace]
    if missing:
        raise ValueError(f"{notebook}.ipynb: the parameters cell must define {', '.join(missing)}")
    params = {name: namespace[name] for name in declared}
    try:
        from_env = json.loads(os.environ.get(ENV_PARAMETERS) or "{}").get(notebook, {})
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"${ENV_PARAMETERS}: expected a JSON object of objects ({error})"
        ) from None
    unknown = sorted({*injected_names(namespace), *from_env} - set(declared))
    if unknown:
        raise ValueError(
            f"{notebook}.ipynb: unknown parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(declared)}"
        )
    return {**params, **from_env}


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

    partial = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        papermill.execute_notebook(
            NOTEBOOKS / f"{notebook}.ipynb",
            partial,
            parameters=parameters,
            kernel_name=kernel,
            cwd=NOTEBOOKS,
            progress_bar=False,
            # the kernel's own log (on this process's stderr) warns at every start that it runs
            # over local TCP without encryption; its errors still show
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    finally:
        if partial.exists():
            os.replace(partial, output)


def run_line(row: dict) -> str:
    """One line for a notebook the sweep ran: run, status, and its test top-1 or its error."""
    if row["status"] == "finished" and "test_top1" in row:
        outcome = f"test top-1 {row['test_top1']:.2f}%"
    else:
        outcome = row.get("error") or ""
    return f"{row['run']}: {row['status']} in {row['sweep_time_s']:.0f} s  {outcome}".rstrip()


def error_text(error: Exception) -> str:
    """One line for an exception; papermill's carries the notebook's own exception."""
    if hasattr(error, "ename"):
        return f"{error.ename}: {error.evalue}"
    return f"{type(error).__name__}: {error}"


def seed_configs(
    preset: str,
    models: list[str],
    overrides: dict,
    runs_root: Path,
    seeds: list[int] | None = None,
) -> dict[tuple[str, int | None], Config]:
    """The Config of every run of a sweep by (model, seed); seed None = the preset's own."""
    if seeds and "seed" in overrides:
        raise ValueError("give the seeds with --seeds or with --set seed=N, not both")
    if seeds and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: a seed is given twice")
    configs = {}
    for model in models:
        for seed in seeds or [None]:
            values = {**overrides, "runs_root": str(runs_root)}
            if seed is not None:
                values["seed"] = seed
            if seeds and len(seeds) > 1:  # one folder a seed
                values["name"] = f"{preset}-{model}-s{seed}"
            configs[model, seed] = preset_config(preset, model, **values)
    return configs


def sweep(
    preset: str,
    models: list[str] | None = None,
    runs_root: Path = Path("runs"),
    overrides: dict | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    export: Path | None = None,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """Train each model of a preset through train.ipynb, then run compare.ipynb.

    Runs are named `{preset}-{model}`, or `{preset}-{model}-s{seed}` with several `seeds` (each
    model is trained once a seed); finished ones are skipped, a failed or interrupted one is
    resumed from its checkpoint (or started afresh), and a failure is recorded and passed over.
    With `export`, each run's record is copied there (`runs.export_run`) as soon as it finishes.
    Returns one row per run (status finished, skipped or failed) plus one for compare.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    models = list(models or PRESETS[preset]["models"])
    overrides = dict(overrides or {})
    runs_root = Path(runs_root).resolve()  # the notebooks run with notebooks/ as cwd
    # check every config before the first run, so a typo fails in seconds, not hours
    if "name" in overrides:
        raise ValueError("a sweep names each run {preset}-{model}: name cannot be set")
    configs = seed_configs(preset, models, overrides, runs_root, seeds)
    kernel = kernel_name or default_kernel()
    rows = []
    for (model, seed), config in tqdm(
        configs.items(), desc=f"sweep {preset}", disable=not progress
    ):
        run_dir = runs_root / config.name
        action = runs.resume_or_clear(run_dir)
        row = {
            "model": model,
            "seed": config.seed,
            "run": run_dir.name,
            "status": "skipped",
            "error": None,
        }
        if action == "finished":
            rows.append({**row, **runs.read_json(run_dir / "summary.json"), "status": "skipped"})
            if progress:
                tqdm.write(f"{run_dir.name}: skipped, finished before")
            continue
        resume = action == "resume"
        if resume:  # so a failure before fit starts is told apart from the earlier one
            runs.update_summary(run_dir, status="running", error=None)
        run_dir.mkdir(parents=True, exist_ok=True)
        parameters = {
            **overrides,
            **({"seed": seed} if seed is not None else {}),
            "preset": preset,
            "model": model,
            "run_name": run_dir.name,
            "runs_root": str(runs_root),
            "resume": resume,
        }
        start = time.perf_counter()
        try:
            execute("train", run_dir / "train.ipynb", parameters, kernel)
        except Exception as error:
            # the notebook failed before fit could record it
            if runs.run_status(run_dir) != "failed":
                if not (run_dir / "config.json").exists():
                    runs.write_json(run_dir / "config.json", asdict(config))
                runs.update_summary(
                    run_dir, status="failed", error=error_text(error), model=model, preset=preset
                )
        summary = runs.read_json(run_dir / "summary.json")
        if export and summary.get("status") == "finished":
            runs.export_run(run_dir, export)
        rows.append({**row, **summary, "sweep_time_s": time.perf_counter() - start})
        if progress:  # one line a notebook
            tqdm.write(run_line(rows[-1]))
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
    if progress:
        tqdm.write(run_line(rows[-1]))
    columns = ["model", "seed", "run", "status", "sweep_time_s"]
    columns += ["train_top1", "val_top1", "test_top1"]
    return pd.DataFrame(rows).reindex(columns=[*columns, "error"])
