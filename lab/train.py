"""Train one model on Tiny ImageNet and write its run record: the whole run in one file.

Defaults are the study's recipe (SGD, momentum 0.9, lr 0.1, batch 256, weight decay 1e-4,
5 epochs, mean-subtracted inputs); better recipes are options. Runs the same under
`torchrun --nproc_per_node=N` (DDP, one run record written by rank 0).
"""

import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from lab import data, runs
from lab.models import (
    build_model,
    classifier_name,
    count_macs,
    count_params,
    freeze_backbone,
    model_names,
    param_groups,
    train_mode,
)

SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTS = ("none", "flip", "crop_flip")
NORMALIZE = ("pixel", "channel")


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    """One experiment: every knob of a training run, with the study's values as defaults."""

    model: str = "resnet20"  # a name from the model registry (`lab models`)
    epochs: int = 5  # the study trained 5 epochs
    batch_size: int = 256  # global batch, split across DDP processes
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 penalty through SGD
    schedule: str = "constant"  # constant | step (x0.1 at 50% and 75%) | cosine | onecycle
    warmup_epochs: float = 0.0  # linear warmup from 0 (onecycle: 30% of the run when 0)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    augment: str = "flip"  # none | flip | crop_flip (4 px pad, random crop, flip)
    min_size: int = 64  # progressive resizing: first epochs at this side, 64 = off
    ramp_start: float = 0.25  # fraction of the epochs after which the side starts to grow
    ramp_end: float = 0.75  # fraction of the epochs from which training is at 64 px
    ema: float = 0.0  # decay per step of an average of the weights, evaluated instead; 0 = off
    tta_flip: bool = False  # evaluate each image and its mirror, averaging the logits
    no_decay_norm_bias: bool = False  # no weight decay on norm weights and biases
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    normalize: str = "pixel"  # pixel = subtract the mean image (the study) | channel
    pretrained: bool = False  # inception only: start from ImageNet weights
    weights: str = ""  # inception only: local weights file ("" = torch hub cache)
    input_size: int = 64  # inception only: upsample inputs inside the model to this size
    freeze_backbone: bool = False  # train the classifier only
    init_from: str = ""  # run folder or checkpoint to start from; its classifier is replaced
    backbone_lr: float = 0.0  # lr of everything but the classifier, 0 = same as lr
    classes: int = 0  # K classes of wnids.txt from first_class on, 0 = all
    first_class: int = 0  # index in wnids.txt of the first class used (transfer: 100 = 2nd half)
    per_class: int = 0  # train images a class, 0 = all (val and test stay whole)
    seed: int = 0  # model init, data order and augmentation
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU and GPU
    amp: bool = True  # bfloat16 autocast on CUDA and on CPUs with native bf16 (else fp32)
    compile: bool = False  # torch.compile the model
    data: str = ""  # archive or folder; "" = $TINY_IMAGENET, else download
    cache_dir: str = ""  # decoded-array cache; "" = $LAB_DATA_DIR/cache
    runs_root: str = "runs"  # where run folders go
    name: str = ""  # run folder name; "" = time-model
    preset: str = ""  # label of the preset this run came from
    train_eval_size: int = 10000  # train images evaluated at the end (a fixed sample)
    quiet: bool = False  # no progress bars
    resume: bool = False  # continue the run folder `name` from its last checkpoint


def check_config(config: Config) -> None:
    """Raise ValueError with one clear message for a config that cannot run."""
    choices = {"schedule": SCHEDULES, "augment": AUGMENTS, "normalize": NORMALIZE}
    problems = [
        f"{key} must be one of {', '.join(allowed)}, not {getattr(config, key)!r}"
        for key, allowed in choices.items()
        if getattr(config, key) not in allowed
    ]
    if config.model not in model_names():
        problems.append(f"unknown model {config.model!r}; choose from {', '.join(model_names())}")
    positive = ("epochs", "batch_size", "lr", "input_size", "min_size")
    problems += [f"{key} must be positive" for key in positive if getattr(config, key) <= 0]
    non_negative = (
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "label_smoothing",
        "grad_clip",
        "backbone_lr",
        "classes",
        "first_class",
        "per_class",
        "train_eval_size",
    )
    problems += [f"{key} must not be negative" for key in non_negative if getattr(config, key) < 0]
    if not (config.device in ("auto", "cpu") or config.device.startswith("cuda")):
        problems.append(f"device must be auto, cpu or cuda[:N], not {config.device!r}")
    if config.min_size > data.SIZE:
        problems.append(f"min_size must be at most {data.SIZE}")
    if not 0 <= config.ramp_start <= config.ramp_end <= 1:
        problems.append("ramp_start and ramp_end must be fractions with ramp_start <= ramp_end")
    if not 0 <= config.ema < 1:
        problems.append("ema must be in [0, 1)")
    if config.first_class and not config.classes:
        problems.append("first_class needs classes (how many classes from first_class on)")
    if config.resume and not config.name:
        problems.append("resume needs the run's name")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))


# ----------------------------------------------------------------------------- setup
def resolve_device(name: str) -> torch.device:
    """The device: `auto` = CUDA when present; `cuda` = the GPU of this process's local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # under torchrun each rank takes its own GPU
        name = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def model_options(config: Config) -> dict:
    """The model options a config sets away from their defaults (only inception takes them)."""
    defaults = Config()
    keys = ("pretrained", "weights", "input_size")
    return {k: getattr(config, k) for k in keys if getattr(config, k) != getattr(defaults, k)}


def load_backbone(model: nn.Module, source: Path) -> None:
    """Start from another run's weights (its folder or checkpoint file), all but the classifier."""
    path = source / "checkpoint.pt" if source.is_dir() else source
    if not path.is_file():
        raise ValueError(f"{path}: no checkpoint to start from")
    state = torch.load(path, map_location="cpu", weights_only=False)
    head = classifier_name(model) + "."
    kept = {k: v for k, v in state.get("model", state).items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights of another architecture ({error})") from error
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights of another architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at an optimizer step: linear warmup, then the schedule."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        return 1 - progress
    return 1.0


def git_commit() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (Linux's /proc/cpuinfo; elsewhere no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields_ = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields_ = {k.strip(): v.strip() for k, v in fields_.items()}
    flags = fields_.get("flags") or fields_.get("Features") or ""
    return fields_.get("model name", platform.machine()), set(flags.split())


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 math is native here: CUDA, or a CPU with AVX512-BF16, AMX or Arm BF16.

    Without it CPU autocast emulates bf16 and runs slower than fp32, so the lab stays in fp32.
    """
    if device.type == "cuda":
        return True
    return bool(cpu_info()[1] & {"avx512_bf16", "amx_bf16", "bf16"})


def precision(device: torch.device, amp: bool) -> str:
    """The precision a run computes in: bf16 (autocast) or fp32."""
    return "bf16" if amp and native_bf16(device) else "fp32"


def device_label(device: torch.device) -> str:
    """A human label for the device, e.g. `NVIDIA H200` or `AMD EPYC (2 threads)`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_info()[0]} ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- evaluation
def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast where bf16 is native (see native_bf16); fp32 elsewhere."""
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled and native_bf16(device))


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
    batch_size: int = 512,
    amp: bool = True,
    tta_flip: bool = False,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 NHWC images, in order; with tta_flip, averaged with
    the logits of the mirrored images."""
    model.eval()
    device = mean.device
    labels = torch.zeros(len(images), dtype=torch.long)
    outputs = []
    for x, _ in data.batches(images, labels, batch_size, mean=mean, scale=scale):
        with autocast(device, amp):
            logits = model(x).float()
            if tta_flip:
                logits = (logits + model(x.flip(3)).float()) / 2
        outputs.append(logits.cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (percent) of logits against labels."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "top1": 100 * hits[:, 0].float().mean().item(),
        "top5": 100 * hits.any(dim=1).float().mean().item(),
    }


def test_tables(logits: torch.Tensor, split: data.Split) -> dict[str, pd.DataFrame | np.ndarray]:
    """Per-class accuracy, confusion matrix and per-image predictions for a labeled split."""
    labels = torch.from_numpy(np.asarray(split.labels))
    probs = logits.softmax(dim=1)
    confidence, pred = probs.max(dim=1)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    num_classes = len(split.wnids)
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes).numpy()
    count, correct = confusion.sum(axis=1), np.diag(confusion)
    per_class = pd.DataFrame(
        {
            "label": range(num_classes),
            "wnid": split.wnids,
            "name": split.names,
            "count": count,
            "correct": correct,
            "top1": 100 * correct / np.maximum(count, 1),
        }
    )
    predictions = pd.DataFrame(
        {
            "index": range(len(labels)),
            "file": split.files,
            "label": labels.numpy(),
            "pred": pred.numpy(),
            "confidence": confidence.numpy().round(4),
            "top5": [" ".join(map(str, row)) for row in top5.tolist()],
        }
    )
    return {"per_class": per_class, "confusion": confusion, "predictions": predictions}


def run_classes(config: Config, cache: Path) -> list[str] | None:
    """The wnids a run uses: `classes` of them from `first_class` on, or None for all."""
    if not config.classes:
        return None
    wnids = data.load_split("val", cache_dir=cache).wnids
    if config.first_class + config.classes > len(wnids):
        raise ValueError(
            f"classes {config.first_class}..{config.first_class + config.classes - 1} asked "
            f"for, but the data set has {len(wnids)} classes"
        )
    return wnids[config.first_class : config.first_class + config.classes]


def load_data(config: Config, device: torch.device) -> dict:
    """The run's splits as uint8 tensors on the device, plus the normalization tensors."""
    cache = data.prepare(
        config.data or None,
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
        progress=not config.quiet,
    )
    classes = run_classes(config, cache)
    splits = {
        name: data.load_split(
            name,
            cache_dir=cache,
            classes=classes,
            per_class=(config.per_class or None) if name == "train" else None,
        )
        # The challenge format names one of all the classes per image: subsets skip it.
        for name in (data.SPLITS if not config.classes else ("train", "val", "test"))
    }
    mean, scale = data.normalizer(data.load_stats(cache), config.normalize, device=device)
    tensors = {
        name: (
            torch.from_numpy(np.ascontiguousarray(s.images)).to(device),
            torch.from_numpy(np.asarray(s.labels, dtype=np.int64)).to(device),
        )
        for name, s in splits.items()
    }
    return {"splits": splits, "tensors": tensors, "mean": mean, "scale": scale}


def train_size(epoch: int, config: Config) -> int:
    """Side of the training images in an epoch: min_size until ramp_start of the run, growing
    linearly (in steps of 8 px) to 64 px at ramp_end, as FFCV's progressive resizing does."""
    start, end = config.ramp_start * config.epochs, config.ramp_end * config.epochs
    progress = min(1.0, max(0.0, (epoch - start) / max(1.0, end - start)))  # at epoch's end
    size = config.min_size + progress * (data.SIZE - config.min_size)
    return min(data.SIZE, int(size) // 8 * 8) if config.min_size < data.SIZE else data.SIZE


def train_sample(num_images: int, size: int, seed: int) -> torch.Tensor:
    """A fixed sample of train indices, evaluated at the end instead of the running average."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def split_accuracies(model: nn.Module, config: Config, batch: dict) -> tuple[dict, torch.Tensor]:
    """Top-1 and top-5 on train (a fixed sample), val and test, and the test logits."""
    mean, scale, (images, labels) = batch["mean"], batch["scale"], batch["tensors"]["train"]
    sample = train_sample(len(images), config.train_eval_size, config.seed).to(images.device)
    evaluated = {
        "train": (images[sample], labels[sample]),
        "val": batch["tensors"]["val"],
        "test": batch["tensors"]["test"],
    }
    results = {}
    for name, (x, y) in evaluated.items():
        logits = predict(model, x, mean, scale, amp=config.amp, tta_flip=config.tta_flip)
        scores = accuracy(logits, y.cpu())
        results.update({f"{name}_top1": scores["top1"], f"{name}_top5": scores["top5"]})
    return results, logits


def final_evaluation(model: nn.Module, config: Config, batch: dict, run_dir: Path) -> dict:
    """Evaluate every labeled split; write per-class, confusion and prediction files."""
    results, test_logits = split_accuracies(model, config, batch)
    tables = test_tables(test_logits, batch["splits"]["test"])
    runs.write_csv(run_dir / "per_class.csv", tables["per_class"])
    runs.write_npy(run_dir / "confusion.npy", tables["confusion"])
    runs.write_csv(run_dir / "predictions.csv", tables["predictions"])
    if "challenge" in batch["splits"]:
        challenge = batch["splits"]["challenge"]
        images = batch["tensors"]["challenge"][0]
        logits = predict(
            model, images, batch["mean"], batch["scale"], amp=config.amp, tta_flip=config.tta_flip
        )
        wnids = [challenge.wnids[i] for i in logits.argmax(dim=1).tolist()]
        lines = "".join(f"{f} {w}\n" for f, w in zip(challenge.files, wnids, strict=True))
        runs.write_text(run_dir / "challenge.txt", lines)
    return results


# ----------------------------------------------------------------------------- training
def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    ema: AveragedModel | None,
    config: Config,
    batch: dict,
    epoch: int,
    rank: int,
    world: int,
) -> dict:
    """One pass over this process's share of `train`; returns loss, top-1, size and images/s."""
    device = batch["mean"].device
    images, labels = batch["tensors"]["train"]
    # The order is seeded by epoch, the same on every rank, so each rank takes a disjoint share
    # and a resumed run sees exactly the batches an uninterrupted one would have.
    generator = torch.Generator(device).manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator, device=device)[rank::world]
    local_batch = max(1, config.batch_size // world)
    steps = len(order) // local_batch
    size = train_size(epoch, config)
    stream = data.batches(
        images[order],
        labels[order],
        local_batch,
        mean=batch["mean"],
        scale=batch["scale"],
        augment=config.augment,
        generator=generator,
        drop_last=True,
        size=size,
    )
    train_mode(model, config.freeze_backbone)
    # Sums stay on the device and the image count in Python: nothing in the loop makes the CPU
    # wait for the GPU, except the progress bar's loss every 20 steps when it is shown.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    bar = tqdm(
        stream,
        total=steps,
        desc=f"epoch {epoch}/{config.epochs}",
        leave=False,
        mininterval=2.0,  # a few updates an epoch: executed notebooks keep every one
        disable=config.quiet or rank != 0,
    )
    for step, (x, y) in enumerate(bar):
        with autocast(device, config.amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)  # DDP and compile wrappers list the same tensors
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if not bar.disable and step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    if world > 1:
        dist.all_reduce(totals)
    loss_total, correct_total, count = totals.tolist()  # waits for the GPU: the time is real
    seconds = time.perf_counter() - start
    count = max(1.0, count)
    return {
        "train_loss": loss_total / count,
        "train_top1": 100 * correct_total / count,
        "train_size": size,
        "epoch_time_s": seconds,
        "images_per_s": count / seconds,
    }


def run_folder(config: Config) -> Path:
    """The run's folder: the given name, or time and model."""
    name = config.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model}"
    return Path(config.runs_root) / name


def fit(config: Config) -> Path:
    """Train as configured, writing the run record as it goes; returns the run folder."""
    check_config(config)
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(config.device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    run_dir = run_folder(config)
    if world > 1:  # every rank must agree on a time-stamped name
        names = [run_dir]
        dist.broadcast_object_list(names, src=0)
        run_dir = names[0]
    if config.resume and not runs.has_checkpoint(run_dir):
        raise ValueError(f"{run_dir / 'checkpoint.pt'}: no checkpoint to resume from")
    if rank == 0 and not config.resume and (run_dir / "summary.json").exists():
        raise ValueError(f"{run_dir}: a run of that name exists; resume it or choose another name")
    if rank == 0:
        config_record = {**asdict(config), "name": run_dir.name, "resume": False}
        runs.write_json(run_dir / "config.json", config_record)
        runs.update_summary(
            run_dir,
            status="running",
            error=None,
            model=config.model,
            preset=config.preset,
            epochs=config.epochs,
        )
    try:
        return _fit(config, run_dir, device, rank, world)
    except BaseException as error:
        if rank == 0:
            message = f"{type(error).__name__}: {error}"
            runs.update_summary(run_dir, status="failed", error=message)
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(config: Config, run_dir: Path, device: torch.device, rank: int, world: int) -> Path:
    """The body of `fit`, once the run folder exists and failures are recorded."""
    started = time.time()
    if rank == 0:  # decode once, before the other ranks read the cache
        batch = load_data(config, device)
    if world > 1:
        dist.barrier()
    if rank != 0:
        batch = load_data(config, device)
    num_classes = len(batch["splits"]["train"].wnids)

    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=num_classes, **model_options(config))
    if config.init_from:
        load_backbone(model, Path(config.init_from))
    if config.freeze_backbone:
        freeze_backbone(model)
    params, macs = count_params(model), count_macs(model, input_size=64)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    groups = param_groups(
        model, config.lr, config.backbone_lr or None, config.weight_decay, config.no_decay_norm_bias
    )
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    steps_per_epoch = (
        len(batch["tensors"]["train"][0]) // world // max(1, config.batch_size // world)
    )
    total_steps = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs or (0.3 * config.epochs if config.schedule == "onecycle" else 0)
    warmup_steps = round(warmup * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, config.schedule)
    )
    ema = None
    if config.ema:  # BatchNorm statistics are averaged too (use_buffers)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    evaluated = ema.module if ema is not None else model  # what val, test and the checkpoint see

    first_epoch, elapsed = 1, 0.0
    if config.resume:
        # On the CPU: the RNG states must stay CPU tensors; the rest moves to the model's device.
        state = runs.load_checkpoint(run_dir, "cpu", fallback=True)
        model.load_state_dict(state["raw_model"] if ema is not None else state["model"])
        if ema is not None:
            ema.module.load_state_dict(state["model"])
            ema.n_averaged.fill_(state["ema_updates"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        first_epoch, elapsed = state["epoch"] + 1, state["elapsed_s"]

    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)

    if rank == 0:
        runs.update_summary(
            run_dir,
            params=params,
            macs=macs,
            device=device_label(device),
            precision=precision(device, config.amp),
            world_size=world,
            torch=torch.__version__,
            git_commit=git_commit(),
            num_classes=num_classes,
            started=pd.Timestamp.fromtimestamp(started).isoformat(timespec="seconds"),
        )
        if config.resume:  # rows of epochs after the checkpoint were never finished: drop them
            metrics_path = run_dir / "metrics.csv"
            if metrics_path.exists():
                table = runs.read_table(metrics_path)
                runs.write_csv(metrics_path, table[table["epoch"] < first_epoch])

    for epoch in range(first_epoch, config.epochs + 1):
        lr = optimizer.param_groups[-1]["lr"]
        row = {"epoch": epoch}
        row.update(
            train_one_epoch(
                train_model, optimizer, scheduler, ema, config, batch, epoch, rank, world
            )
        )
        elapsed += row["epoch_time_s"]
        if rank == 0:
            images, labels = batch["tensors"]["val"]
            mean, scale = batch["mean"], batch["scale"]
            logits = predict(
                evaluated, images, mean, scale, amp=config.amp, tta_flip=config.tta_flip
            )
            val = accuracy(logits, labels.cpu())
            row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], lr=lr)
            metrics = runs.append_metrics(run_dir, row)
            best = metrics.loc[metrics["val_top1"].idxmax()]
            runs.save_checkpoint(
                run_dir,
                {
                    "model": evaluated.state_dict(),  # the weights that evaluate and explain use
                    "raw_model": model.state_dict() if ema is not None else None,
                    "ema_updates": int(ema.n_averaged) if ema is not None else 0,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "elapsed_s": elapsed,
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "num_classes": num_classes,
                    "config": asdict(config),
                },
            )
            runs.update_summary(
                run_dir,
                epochs_done=epoch,
                best_val_top1=float(best["val_top1"]),
                best_epoch=int(best["epoch"]),
                train_time_s=elapsed,
                images_per_s=float(metrics["images_per_s"].mean()),
            )
            if not config.quiet:
                print(
                    f"epoch {epoch:3d}  train_loss {row['train_loss']:.3f}  "
                    f"train_top1 {row['train_top1']:5.2f}  val_top1 {row['val_top1']:5.2f}  "
                    f"val_top5 {row['val_top5']:5.2f}  {row['images_per_s']:7.0f} img/s"
                )
        if world > 1:
            dist.barrier()

    if rank == 0:
        results = final_evaluation(evaluated, config, batch, run_dir)
        runs.update_summary(
            run_dir, **results, status="finished", error=None, wall_time_s=time.time() - started
        )
    if world > 1:  # the other ranks return once the record is complete
        dist.barrier()
    return run_dir


# ----------------------------------------------------------------------------- re-evaluation
def load_checkpoint_model(
    run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Config]:
    """The model of a run's last checkpoint, in eval mode, and the run's config."""
    run_dir = Path(run_dir)
    config = config_from_dict(runs.read_json(run_dir / "config.json"))
    state = runs.load_checkpoint(run_dir, device)
    # The trained weights replace any pretrained ones, so no weights file is needed here.
    options = {k: v for k, v in model_options(config).items() if k not in ("pretrained", "weights")}
    model = build_model(config.model, num_classes=state["num_classes"], **options)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


def config_from_dict(values: dict) -> Config:
    """A Config from a dict such as config.json, ignoring keys this version does not know."""
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known})


def evaluate_run(run_dir: Path, device: str = "auto") -> dict[str, float]:
    """Recompute a run's final accuracies from its checkpoint (they must match summary.json)."""
    model, config = load_checkpoint_model(run_dir, resolve_device(device))
    config.quiet = True
    return split_accuracies(model, config, load_data(config, resolve_device(device)))[0]
