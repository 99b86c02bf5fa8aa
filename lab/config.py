"""The experiment config: every knob of a training run, its help text, and the one way to set it.

`make_config` is that way: the command line (`lab train --lr 0.05`, `lab sweep --set lr=0.05`),
the presets and the notebooks all pass it field values, as strings or JSON values, and get a
checked `Config` or one LabError naming the bad field. `read_config` reads a run's record,
`reuse_problem` says whether a run folder holds the same experiment.
"""

import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import runs
from lab.errors import LabError
from lab.presets import preset_values

SCHEDULES = ("constant", "step", "cosine", "onecycle")
# What a field is to the experiment (a knob's `kind`): "experiment" fields set what is computed;
# "how" fields say where and how a run goes on (the one thing a resume may change: epochs set
# the schedule, so a longer run is a new run, --init-from); "record" fields name the record.
KINDS = ("experiment", "how", "record")
MIN_SIDE = 32  # the smallest training side (min_size)
# A run name is one folder under the runs root: never a path, "..", or a hidden name.
RUN_NAME = re.compile(r"[\w][\w.,+=@-]{0,99}")


def knob(default: Any, help: str, kind: str = "experiment") -> Any:
    """A Config field with its help text (shown by `lab train --help`) and its kind (KINDS)."""
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind})


@dataclass
class Config:
    """One experiment: every knob of a training run, with the study's values as defaults."""

    model: str = knob("resnet20", "a name from the model registry (`lab models`)")
    epochs: int = knob(5, "passes over the train split (the study: 5)")
    minutes: float = knob(
        0.0, "training time budget: epochs planned from the measured speed; 0 = use epochs"
    )
    batch_size: int = knob(256, "global batch, split across DDP processes")
    lr: float = knob(0.1, "peak learning rate")
    momentum: float = knob(0.9, "SGD momentum")
    nesterov: bool = knob(False, "Nesterov momentum")
    weight_decay: float = knob(1e-4, "L2 penalty through SGD")
    schedule: str = knob("constant", "constant | step (x0.1 at 50% and 75%) | cosine | onecycle")
    warmup_epochs: float = knob(0.0, "linear warmup, at most half the run (onecycle: 30% when 0)")
    label_smoothing: float = knob(0.0, "cross-entropy label smoothing")
    augment: str = knob(
        "flip", "none | flip | crop_flip (4 px pad, random crop, flip) | rrc (random-resized crop)"
    )
    crop_scale: float = knob(0.25, "rrc: the smallest crop, as a fraction of the image's area")
    min_size: int = knob(64, "progressive resizing: first epochs at this side, 64 = off")
    ramp_start: float = knob(0.25, "fraction of the epochs after which the side starts to grow")
    ramp_end: float = knob(0.75, "fraction of the epochs from which training is at 64 px")
    ema: float = knob(0.0, "decay per step of a weight average, evaluated instead; 0 = off")
    tta_flip: bool = knob(False, "evaluate each image and its mirror, averaging the logits")
    test_size: int = knob(64, "evaluate at this side (upsampled past 64: tests larger than trains)")
    zero_init_residual: bool = knob(False, "residual models: each block's last BN starts at 0")
    no_decay_norm_bias: bool = knob(False, "no weight decay on norm weights and biases")
    grad_clip: float = knob(0.0, "max gradient norm, 0 = off")
    normalize: str = knob("pixel", "pixel = subtract the mean image (the study) | channel")
    pretrained: bool = knob(False, "inception only: start from ImageNet weights")
    weights: str = knob(
        "", "inception only: local weights file ('' = torch hub cache, downloaded there if missing)"
    )
    input_size: int = knob(64, "inception only: upsample inputs inside the model to this side")
    freeze_backbone: bool = knob(False, "train the classifier only")
    init_from: str = knob("", "run folder or checkpoint to start from; its classifier replaced")
    backbone_lr: float = knob(0.0, "lr of everything but the classifier, 0 = same as lr")
    classes: int = knob(0, "K classes of wnids.txt from first_class on, 0 = all")
    first_class: int = knob(0, "index in wnids.txt of the first class used (100 = 2nd half)")
    per_class: int = knob(0, "train images a class, 0 = all (val and test stay whole)")
    seed: int = knob(0, "model init, data order and augmentation")
    device: str = knob("auto", "auto (CUDA when present) | cpu | cuda | cuda:N", "how")
    channels_last: bool = knob(True, "NHWC memory format: faster convolutions on CPU and GPU")
    amp: bool = knob(True, "bfloat16 autocast on CUDA and on CPUs with native bf16 (else fp32)")
    compile: bool = knob(False, "torch.compile the model", "how")
    data: str = knob("", "archive or folder; '' = $TINY_IMAGENET, else download", "how")
    cache_dir: str = knob("", "decoded-array cache; '' = $LAB_DATA_DIR/cache", "how")
    runs_root: str = knob("runs", "where run folders go", "record")
    name: str = knob(
        "", "run folder name; '' = the preset's preset-model, else time-model", "record"
    )
    preset: str = knob("", "start from this preset's values (lab/presets.py); the rest override")
    train_eval_size: int = knob(10000, "train images evaluated at the end (a fixed sample)")
    quiet: bool = knob(False, "no progress bars", "how")
    resume: bool = knob(False, "continue the run folder `name` from its last checkpoint", "record")


FIELDS = {field.name: field for field in dataclasses.fields(Config)}
# What `lab train --resume RUN` (and every other resume) may change.
RESUME_FIELDS = tuple(name for name, f in FIELDS.items() if f.metadata["kind"] == "how")
# What two runs must share to be the same experiment (the seed apart, for seed groups), and what
# a resumed run must share with its record.
EXPERIMENT_FIELDS = tuple(name for name, f in FIELDS.items() if f.metadata["kind"] == "experiment")


def parse(name: str, value: Any) -> Any:
    """The value of field `name` from a string (command line) or a JSON value, type-checked."""
    if name not in FIELDS:
        raise LabError(f"unknown Config field {name!r}; the fields are {', '.join(FIELDS)}")
    kind = type(FIELDS[name].default)
    if isinstance(value, str) and kind is not str:
        with contextlib.suppress(ValueError):  # left a string: the type check names the field
            value = json.loads(value.lower() if kind is bool else value)
    # bool is an int to Python, an int is a fine float: neither is a fine int or bool
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise LabError(f"{name} must be of type {kind.__name__}, not {value!r}")
    return value


def make_config(values: Mapping[str, Any]) -> Config:
    """A checked Config from field values (strings or JSON), over the preset they name, if any."""
    given = {name: parse(name, value) for name, value in values.items()}
    model = given.get("model", FIELDS["model"].default)
    # the preset's with-weights values apply when weights are asked for or can be had
    wants_weights = bool(given.get("weights") or given.get("pretrained"))
    preset = preset_values(given.get("preset", ""), model, wants_weights)
    if "epochs" in given and "minutes" not in given:  # epochs given override a preset's budget
        preset.pop("minutes", None)
    config = Config(**{name: parse(name, value) for name, value in preset.items()} | given)
    check_config(config)
    return config


def read_config(run_dir: Path) -> Config:
    """The Config of a run's config.json; fields this version does not know are passed over."""
    record = json.loads((Path(run_dir) / "config.json").read_text())
    return Config(**{name: parse(name, value) for name, value in record.items() if name in FIELDS})


def config_record(config: Config) -> dict:
    """A run's config.json: every field but runs_root (the folder's parent is its root, and a
    record keeps no path of the machine that made it), as a new run's."""
    record = dataclasses.asdict(config) | {"resume": False}
    del record["runs_root"]
    return record


def experiment_changes(recorded: Config, config: Config) -> list[str]:
    """Each EXPERIMENT_FIELDS field in which `config` differs from a run's recorded config."""
    # A time budget plans the epochs: the record holds the plan, the given config a fallback.
    planned = recorded.minutes > 0 and recorded.minutes == config.minutes
    return [
        f"{name} {getattr(recorded, name)!r} recorded, {getattr(config, name)!r} given"
        for name in EXPERIMENT_FIELDS
        if getattr(config, name) != getattr(recorded, name) and not (planned and name == "epochs")
    ]


def reuse_problem(run_dir: Path, config: Config) -> str | None:
    """How the experiment recorded in a run folder that would be reused (finished, so skipped,
    or resumed from its checkpoint) differs from `config`, or None."""
    if runs.run_status(run_dir) != "finished" and not runs.has_checkpoint(run_dir):
        return None  # started afresh
    try:
        recorded = read_config(run_dir)
    except (OSError, ValueError) as error:
        return f"{run_dir}: unreadable config.json ({error})"
    changed = experiment_changes(recorded, config)
    return f"{run_dir} is another experiment ({'; '.join(changed)})" if changed else None


def check_reuse(configs: Iterable[Config]) -> None:
    """Refuse, in one LabError line, runs whose folder holds another experiment: a finished one
    would be reported as this config's result, a resumed one would mix the two."""
    problems = [
        problem
        for config in configs
        if (problem := reuse_problem(Path(config.runs_root) / config.name, config))
    ]
    if problems:
        raise LabError("; ".join(problems) + ": move the folder away or choose another runs root")


def resume_config(run_dir: Path, changes: Mapping[str, Any]) -> Config:
    """The Config that continues a run: its record, with only RESUME_FIELDS changed."""
    fixed = sorted(set(changes) - set(RESUME_FIELDS))
    if fixed:
        raise LabError(
            f"{', '.join(fixed)} cannot change on resume (only {', '.join(RESUME_FIELDS)} can); "
            "start a new run instead, e.g. with --init-from"
        )
    config = dataclasses.replace(
        read_config(run_dir),
        **{name: parse(name, value) for name, value in changes.items()},
        runs_root=str(Path(run_dir).parent),
        name=Path(run_dir).name,
        resume=True,
    )
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Raise LabError with one clear message for a config that cannot run, naming each field."""
    # imported here, not above: they import torch, which `lab runs`, `lab export` and `--help`
    # do without
    from lab import data
    from lab.models import model_names

    choices = {"schedule": SCHEDULES, "augment": data.AUGMENTS, "normalize": data.NORMALIZE}
    problems = [
        f"{key} must be one of {', '.join(allowed)}, not {getattr(config, key)!r}"
        for key, allowed in choices.items()
        if getattr(config, key) not in allowed
    ]
    if config.model not in model_names():
        problems.append(f"unknown model {config.model!r}; choose from {', '.join(model_names())}")
    floats = [name for name, field in FIELDS.items() if isinstance(field.default, float)]
    problems += [
        f"{key} must be a finite number, not {getattr(config, key)}"
        for key in floats
        if not math.isfinite(getattr(config, key))
    ]
    positive = ("epochs", "batch_size", "lr", "input_size", "train_eval_size", "test_size")
    problems += [f"{key} must be positive" for key in positive if getattr(config, key) <= 0]
    non_negative = (
        "weight_decay",
        "minutes",
        "warmup_epochs",
        "grad_clip",
        "backbone_lr",
        "classes",
        "first_class",
        "per_class",
    )
    problems += [f"{key} must not be negative" for key in non_negative if getattr(config, key) < 0]
    fractions = ("momentum", "label_smoothing", "ema")
    problems += [
        f"{key} must be in [0, 1), not {getattr(config, key)}"
        for key in fractions
        if not 0 <= getattr(config, key) < 1
    ]
    if not 0 < config.crop_scale <= 1:
        problems.append(f"crop_scale must be in (0, 1], not {config.crop_scale}")
    if not (config.device in ("auto", "cpu") or config.device.startswith("cuda")):
        problems.append(f"device must be auto, cpu or cuda[:N], not {config.device!r}")
    # the side grows in 8 px steps, and every model is tested down to 32 px
    if config.min_size not in range(MIN_SIDE, data.SIZE + 1, 8):
        problems.append(
            f"min_size must be a multiple of 8 from {MIN_SIDE} to {data.SIZE},"
            f" not {config.min_size}"
        )
    if not 0 <= config.ramp_start <= config.ramp_end <= 1:
        problems.append("ramp_start and ramp_end must be fractions with ramp_start <= ramp_end")
    if config.name and not RUN_NAME.fullmatch(config.name):
        problems.append(
            f"name must be one folder name (letters, digits and . , + = @ _ -, not starting with"
            f" a dot or dash), not {config.name!r}"
        )
    if config.first_class and not config.classes:
        problems.append("first_class needs classes (how many classes from first_class on)")
    if config.resume and not config.name:
        problems.append("resume needs the run's name")
    if problems:
        raise LabError("bad config: " + "; ".join(problems))


def model_kwargs(config: Config) -> dict:
    """The model options a config sets away from their defaults (only inception takes them)."""
    keys = ("pretrained", "weights", "input_size")
    return {k: getattr(config, k) for k in keys if getattr(config, k) != FIELDS[k].default}
