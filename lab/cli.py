"""The `lab` command: data, weights, models, train, evaluate, predict, runs, sweep and figures."""

import argparse
import json
import os
import sys
from pathlib import Path

from lab import records, runs
from lab.errors import LabError


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per Config field (`--batch-size 128`, `--no-channels-last`, ...)."""
    from lab.config import FIELDS
    from lab.presets import PRESETS

    for name, field in FIELDS.items():
        if name == "resume":  # --resume RUN names the run folder instead
            continue
        # Only options given on the command line reach the namespace, so that they, and only
        # they, override a preset's values; make_config parses and checks the strings.
        options = {
            "default": argparse.SUPPRESS,
            "help": f"{field.metadata['help']} (default: {field.default!r})".replace("%", "%%"),
        }
        flag = "--" + name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        elif name == "preset":
            parser.add_argument(flag, choices=list(PRESETS), **options)
        else:
            parser.add_argument(flag, metavar=name.upper(), **options)


def given_fields(args: argparse.Namespace) -> dict:
    """The Config fields given on the command line, as parsed by argparse."""
    from lab.config import FIELDS

    return {
        name: getattr(args, name) for name in FIELDS if name != "resume" and hasattr(args, name)
    }


def print_table(rows: list[dict]) -> None:
    """Print rows of dicts as a fixed-column text table."""
    if not rows:
        return
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cmd_data(args: argparse.Namespace) -> None:
    """Build the cache (prepare) or describe it (info)."""
    from lab import data

    source, cache_dir = args.data or None, Path(args.cache_dir) if args.cache_dir else None
    if args.action == "prepare":
        print(data.prepare(source, cache_dir=cache_dir))
    print(data.data_info(source=source, cache_dir=cache_dir))


def cmd_weights(args: argparse.Namespace) -> None:
    """Say whether the ImageNet GoogLeNet weights are cached; fetch them with --download."""
    from lab.models.inception import download_weights, weights_status

    if args.download:
        download_weights()
    print(weights_status())


def cmd_models(args: argparse.Namespace) -> None:
    """Print every registered model with its size and provenance."""
    from lab.models import model_table

    rows = model_table(args.input_size)
    print_table(
        [
            {
                "model": r["name"],
                "params": f"{r['params']:,}",
                "MMACs": f"{r['macs'] / 1e6:,.1f}",
                "provenance": r["provenance"],
            }
            for r in rows
        ]
    )


def cmd_train(args: argparse.Namespace) -> None:
    """Train one model (or resume a run) and print where its record is."""
    from lab.config import make_config, resume_config
    from lab.train import fit

    if args.resume:
        config = resume_config(Path(args.resume), given_fields(args))
    else:
        config = make_config(given_fields(args))
    run_dir = fit(config)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun, rank 0 reports
        return
    summary = runs.read_json(run_dir / "summary.json")
    replanned = (
        f", {summary['epochs']} as its epochs ran"
        if config.minutes and summary["epochs"] != summary["planned_epochs"]
        else ""
    )
    planned = (
        f" ({summary['planned_epochs']} epochs planned to {summary['planned_train_minutes']:.3g}"
        f" of a {config.minutes:g}-minute budget{replanned})"
        if config.minutes
        else ""
    )
    print(
        f"{run_dir}: train {summary['train_top1']:.2f}  val {summary['val_top1']:.2f}  "
        f"test {summary['test_top1']:.2f}  (top-1 %), trained "
        f"{summary['train_time_s'] / 60:.3g} minutes{planned}"
    )


def cmd_transfer(args: argparse.Namespace) -> None:
    """Pretrain on K classes, fine-tune on the next K: head only, whole network, from scratch."""
    from lab.config import make_config
    from lab.transfer import transfer_experiment

    config = make_config(given_fields(args))
    sizes = tuple(int(n) for n in args.sizes.split(","))
    table = transfer_experiment(config, config.classes or 100, sizes, args.pretrain_epochs)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Recompute a run's accuracies from its checkpoint and compare them with its summary."""
    from lab.evaluate import evaluate_run

    recomputed = evaluate_run(
        Path(args.run), device=args.device, test_size=args.test_size, bn_images=args.bn_images
    )
    if args.test_size or args.bn_images:  # not the run's evaluation: nothing to compare with
        side = f"at {args.test_size} px" if args.test_size else "at the run's side"
        column = side + (f", BN on {args.bn_images} images" if args.bn_images else "")
        print_table([{"metric": k, column: f"{v:.2f}"} for k, v in recomputed.items()])
        return 0
    summary = runs.read_json(Path(args.run) / "summary.json")
    rows = [
        {"metric": k, "recomputed": f"{v:.2f}", "summary": f"{summary.get(k, float('nan')):.2f}"}
        for k, v in recomputed.items()
    ]
    print_table(rows)
    mismatched = [k for k, v in recomputed.items() if abs(v - summary.get(k, float("inf"))) > 0.01]
    if mismatched:
        print(f"mismatch with summary.json: {', '.join(mismatched)}", file=sys.stderr)
        return 1
    return 0


def cmd_runs(args: argparse.Namespace) -> None:
    """Print a table of the runs under a root."""
    table = records.load_runs(Path(args.root))
    if table.empty:
        print(f"no runs under {args.root}: try `lab sweep --preset quick` or `lab train`")
        return
    extra = {}
    if args.to is not None:  # training minutes to a val top-1; broken records have none
        extra[f"min_to_{args.to:g}"] = [
            None if row.status == "broken" else records.minutes_to(Path(row.path), args.to)
            for row in table.itertuples()
        ]
    shown = records.run_table(table.assign(**extra), list(extra))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep=""))
    seeds = records.seed_table(records.seed_groups(table))
    if len(seeds):
        print("\nRuns that differ only by seed: mean ± std over the seeds (%)")
        print(seeds.to_string(index=False))


def assignments(pairs: list[str]) -> dict[str, str]:
    """FIELD=VALUE strings of `--set` as a dict (make_config parses and checks the values)."""
    values = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not key or not equals:
            raise LabError(f"--set {pair}: expected FIELD=VALUE, e.g. --set classes=20")
        values[key.replace("-", "_")] = value
    return values


def parse_seeds(text: str) -> list[int] | None:
    """Seeds from "0,1,2" (None for "")."""
    try:
        return [int(seed) for seed in text.split(",")] if text else None
    except ValueError:
        raise LabError(f"--seeds {text}: expected whole numbers separated by commas") from None


def cmd_export(args: argparse.Namespace) -> None:
    """Copy the runs' small record files (no checkpoints) to a folder that can be committed."""
    written = records.export_runs(Path(args.runs_root), Path(args.dest))
    print(f"{len(written)} files written under {args.dest}")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run train.ipynb once per model of a preset through papermill, then compare.ipynb."""
    from lab.sweep import sweep

    models = args.models.split(",") if args.models else None
    overrides = assignments(args.set)
    if args.data:
        overrides["data"] = args.data
    export = Path(args.export) if args.export else None
    seeds = parse_seeds(args.seeds)
    table = sweep(args.preset, models, Path(args.runs_root), overrides, export=export, seeds=seeds)
    print(table.to_string(index=False))
    return int((table["status"] == "failed").any())


def cmd_figures(args: argparse.Namespace) -> None:
    """Regenerate the figures from one runs root, or from several together."""
    from lab.figures import make_figures

    for root in args.runs_roots:
        for line in records.broken_runs(records.load_runs(Path(root))):
            print(f"left out: {line}", file=sys.stderr)
    for path in make_figures(args.runs_roots, Path(args.out)):
        print(path)


def cmd_predict(args: argparse.Namespace) -> int:
    """A run's top-5 classes for each image file; an unreadable file is named and passed over."""
    from lab.predict import load_predictor, read_image, top_classes

    predictor = load_predictor(Path(args.run))
    results, failed = [], 0
    for path in args.images:
        try:
            table = top_classes(predictor, read_image(path)[None])[0]
        except ValueError as error:
            print(f"lab predict: error: {error}", file=sys.stderr)
            results.append({"image": path, "error": str(error)})
            failed += 1
            continue
        results.append({"image": path, "top5": table.to_dict("records")})
        if not args.json:
            print(path)
            for rank, row in enumerate(table.itertuples(), 1):
                print(f"  {rank}. {row.probability:6.1%}  {row.name} ({row.label})")
    if args.json:
        print(json.dumps(results, indent=2))
    return int(failed > 0)


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `lab` command."""
    from lab.config import RESUME_FIELDS
    from lab.presets import PRESETS

    main_parser = argparse.ArgumentParser(prog="lab", description=__doc__)
    sub = main_parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="get, decode and describe Tiny ImageNet")
    p.add_argument(
        "action",
        choices=["prepare", "info"],
        help="prepare: download (if needed) and decode into the cache; info: describe both",
    )
    p.add_argument("--data", default="", help="archive or folder (default: $TINY_IMAGENET)")
    p.add_argument("--cache-dir", default="", help="cache folder (default: $LAB_DATA_DIR/cache)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("weights", help="whether the ImageNet GoogLeNet weights are cached")
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch them into the torch hub cache ($TORCH_HOME) if missing, hash checked",
    )
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument(
        "--input-size", type=int, default=64, help="image side the MACs are counted at (pixels)"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train one model; every config field is an option")
    add_config_options(p)
    p.add_argument(
        "--resume",
        metavar="RUN",
        default="",
        help="continue this run folder from its last checkpoint with its own config; only "
        + ", ".join("--" + name.replace("_", "-") for name in RESUME_FIELDS)
        + " may change",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("transfer", help="pretrain on K classes, fine-tune on the next K")
    add_config_options(p)
    p.add_argument(
        "--sizes",
        default="50,100,450",
        help="train images a class to fine-tune with (450 = all: the other 50 are val)",
    )
    p.add_argument("--pretrain-epochs", type=int, default=0, help="0 = --epochs")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("evaluate", help="recompute a run's accuracies from its checkpoint")
    p.add_argument("run", help="run folder with a checkpoint.pt and summary.json")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument(
        "--test-size",
        type=int,
        default=0,
        help="accuracies at this test side (upsampled past 64), not compared; 0 = the run's",
    )
    p.add_argument(
        "--bn-images",
        type=int,
        default=0,
        help="first re-estimate the BatchNorm statistics on this many train images at the "
        "test side, not compared",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="a run's top-5 classes for your own JPEG or PNG images")
    p.add_argument("run", help="run folder with a checkpoint.pt")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files, any size")
    p.add_argument("--json", action="store_true", help="one JSON list for machines")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("runs", help="a table of runs")
    p.add_argument("root", nargs="?", default="runs", help="runs root folder (default: runs)")
    p.add_argument(
        "--to", type=float, metavar="PCT", help="also the training minutes to this val top-1 (%%)"
    )
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("export", help="copy run records without checkpoints (for results/)")
    p.add_argument("runs_root", metavar="RUNS_ROOT", help="folder of run folders to copy from")
    p.add_argument("dest", metavar="DEST", help="folder to write the records to, e.g. results/")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="run a preset's notebooks for several models")
    p.add_argument(
        "--preset", choices=list(PRESETS), required=True, help="the models and values to run"
    )
    p.add_argument("--models", default="", help="comma-separated (default: the preset's)")
    p.add_argument("--runs-root", default="runs", help="where the run folders go (default: runs)")
    p.add_argument("--data", default="", help="archive or folder (default: $TINY_IMAGENET)")
    p.add_argument("--export", default="", help="copy each finished run's record here")
    p.add_argument(
        "--seeds",
        default="",
        help="comma-separated, e.g. 0,1,2: each model once a seed, run names end in -s{seed}",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field for every model, e.g. --set classes=20",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("figures", help="regenerate the figures from run records")
    p.add_argument(
        "runs_roots", nargs="+", metavar="RUNS_ROOT", help="folders of run folders, drawn together"
    )
    p.add_argument("--out", default="figures", help="folder for the PNGs (default: figures)")
    p.set_defaults(func=cmd_figures)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; the lab's own errors and OS errors on the user's files
    print one line and exit 2; any other exception is a bug and keeps its traceback."""
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (LabError, OSError) as error:  # OSError: a path that is missing, a file, unwritable
        print(f"lab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
