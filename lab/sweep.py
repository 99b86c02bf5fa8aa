"""Batch runs through papermill: notebooks/train.ipynb once per model, then compare.ipynb."""

import os
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from lab import records, runs
from lab.config import Config, check_reuse, config_record, make_config
from lab.errors import LabError
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
        raise LabError(
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
            # the kernel's own log (on this process's stderr) warns at every start that it runs
            # over local TCP without encryption; its errors still show
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    finally:
        if partial.exists():
            os.replace(partial, output)


def run_line(row: dict) -> str:
    """One line for a notebook the sweep ran: run, status, its test top-1 and its error."""
    outcome = row.get("error") or ""
    if row["status"] == "finished" and "test_top1" in row:
        outcome = f"test top-1 {row['test_top1']:.2f}%  {outcome}"
    return f"{row['run']}: {row['status']} in {row['sweep_time_s']:.0f} s  {outcome}".rstrip()


def error_text(error: Exception) -> str:
    """One line for an exception; papermill's carries the notebook's own exception."""
    if hasattr(error, "ename"):
        return f"{error.ename}: {error.evalue}"
    return f"{type(error).__name__}: {error}"


def fit_finished(run_dir: Path) -> bool:
    """Whether a run's summary is fit's last word: finished, with its test top-1."""
    try:
        summary = runs.read_json(run_dir / "summary.json")
    except ValueError:
        return False
    return summary.get("status") == "finished" and "test_top1" in summary


def compare_is_current(runs_root: Path) -> bool:
    """Whether compare.ipynb ran without error after every run's summary last changed."""
    import nbformat

    book = runs_root / "compare.ipynb"
    if not book.exists():
        return False
    if nbformat.read(book, as_version=4).metadata.get("papermill", {}).get("exception"):
        return False
    changed = [path.stat().st_mtime for path in runs_root.glob("*/summary.json")]
    return max(changed, default=0.0) < book.stat().st_mtime


def seed_configs(
    preset: str, models: list[str], overrides: dict, seeds: list[int] | None = None
) -> dict[tuple[str, int | None], Config]:
    """The Config of every run of a sweep by (model, seed); seed None = the preset's own."""
    if seeds and "seed" in overrides:
        raise LabError("give the seeds with --seeds or with --set seed=N, not both")
    if seeds and len(set(seeds)) != len(seeds):
        raise LabError(f"seeds {seeds}: a seed is given twice")
    configs = {}
    for model in models:
        for seed in seeds or [None]:
            values = {**overrides, "preset": preset, "model": model}
            if seed is not None:
                values["seed"] = seed
            if seeds and len(seeds) > 1:  # one folder a seed
                values["name"] = f"{preset}-{model}-s{seed}"
            configs[model, seed] = make_config(values)
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
    A folder to skip or resume that holds another experiment (its config.json) is refused
    before any run starts. A run whose notebook fails after fit finished stays finished.
    With `export`, each run's record is copied there (`runs.export_run`) as soon as it finishes.
    Returns one row per run (status finished, skipped or failed) plus one for compare, which is
    skipped too when no run is new since it last ran cleanly.
    """
    if preset not in PRESETS:
        raise LabError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    models = list(models or PRESETS[preset]["models"])
    overrides = dict(overrides or {})
    runs_root = Path(runs_root).resolve()  # the notebooks run with notebooks/ as cwd
    # check every config before the first run, so a typo fails in seconds, not hours
    if "name" in overrides:
        raise LabError("a sweep names each run {preset}-{model}: name cannot be set")
    overrides["runs_root"] = str(runs_root)
    configs = seed_configs(preset, models, overrides, seeds)
    check_reuse(configs.values())
    kernel = kernel_name or default_kernel()
    rows = []
    for (model, _), config in tqdm(configs.items(), desc=f"sweep {preset}", disable=not progress):
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
            "preset": preset,
            "model": model,
            "run_name": run_dir.name,
            "resume": resume,
            # parsed: the notebook gets 0.3, not the "0.3" of --set lr=0.3
            "overrides": {name: getattr(config, name) for name in [*overrides, "seed"]},
        }
        start = time.perf_counter()
        notebook_error = None
        try:
            execute("train", run_dir / "train.ipynb", parameters, kernel)
        except Exception as error:
            notebook_error = error_text(error)
            # the notebook failed before fit could record it; if fit finished and a later cell
            # (a figure) failed, the record is whole: it stays finished (skipped next time,
            # exported), and the error shows in this sweep's row
            if runs.run_status(run_dir) != "failed" and not fit_finished(run_dir):
                if not (run_dir / "config.json").exists():
                    runs.write_json(run_dir / "config.json", config_record(config))
                runs.update_summary(
                    run_dir, status="failed", error=notebook_error, model=model, preset=preset
                )
        summary = runs.read_json(run_dir / "summary.json")
        if export and summary.get("status") == "finished":
            try:
                runs.export_run(run_dir, export)
            except LabError as error:  # a damaged table: said, and the sweep goes on
                print(error, file=sys.stderr)
        rows.append({**row, **summary, "sweep_time_s": time.perf_counter() - start})
        if summary.get("status") == "finished" and notebook_error:
            rows[-1]["error"] = f"train.ipynb failed after fit: {notebook_error}"
        if progress:  # one line a notebook
            tqdm.write(run_line(rows[-1]))
    row = {"model": None, "run": "compare", "status": "finished", "error": None}
    start = time.perf_counter()
    if compare_is_current(runs_root):  # no run trained or failed since it last ran cleanly
        row["status"] = "skipped"
    else:
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
    return records.run_table(pd.DataFrame(rows), ["seed", "sweep_time_s"])
