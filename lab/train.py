"""Train one model on Tiny ImageNet and write its run record: the whole run in one file.

Read top to bottom: the schedules and the time budget's plan, one training step and epoch, then
`fit`: setup (device, run folder, data, model, optimizer, the epochs a budget in minutes plans),
the epoch loop with its checkpoint, and the final evaluation.
Defaults are the study's recipe (SGD, momentum 0.9, lr 0.1, batch 256, weight decay 1e-4,
5 epochs, mean-subtracted inputs); better recipes are options (lab/config.py). Runs the same
under `torchrun --nproc_per_node=N` (DDP: one run record, written by rank 0; a failure by
the rank that failed).
"""

import copy
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from lab import data, runs
from lab.config import (
    Config,
    check_config,
    config_record,
    experiment_changes,
    model_kwargs,
    read_config,
)
from lab.data import RunData, load_data
from lab.device import autocast, device_label, keep_freed_memory, precision, resolve_device
from lab.errors import LabError
from lab.evaluate import accuracy, final_evaluation, run_logits
from lab.models import (
    build_model,
    classifier_name,
    count_macs,
    count_params,
    freeze_backbone,
    param_groups,
    train_mode,
    zero_init_residual,
)


# ----------------------------------------------------------------------------- schedules
def epoch_plan(num_images: int, batch_size: int, world: int) -> tuple[int, int]:
    """(steps, local batch) of an epoch, the same on every DDP rank (and for the scheduler)."""
    # Unequal steps would leave one rank waiting forever in an all-reduce the others never reach.
    local_batch = max(1, batch_size // world)
    return num_images // (local_batch * world), local_batch


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


def warmup_epochs(config: Config) -> float:
    """Epochs of linear warmup: as configured (at most half the run), or 30% of it for onecycle."""
    if not config.warmup_epochs:
        return 0.3 * config.epochs if config.schedule == "onecycle" else 0.0
    # at most half the run: a --minutes budget on a slow CPU can plan 2 epochs, and 2 epochs of
    # warmup would end the run at the peak lr without annealing
    return min(config.warmup_epochs, 0.5 * config.epochs)


def train_size(epoch: int, config: Config) -> int:
    """Side of the training images in an epoch: min_size until ramp_start of the run, growing
    linearly (in steps of 8 px) to 64 px at ramp_end, as FFCV's progressive resizing does."""
    start, end = config.ramp_start * config.epochs, config.ramp_end * config.epochs
    progress = min(1.0, max(0.0, (epoch - start) / max(1.0, end - start)))  # at epoch's end
    size = config.min_size + progress * (data.SIZE - config.min_size)
    return min(data.SIZE, int(size) // 8 * 8) if config.min_size < data.SIZE else data.SIZE


def train_sides(config: Config) -> range:
    """Every side train_size can give, whatever the epochs."""
    return range(config.min_size, data.SIZE + 1, 8)


def lr_multiplier(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """The run's learning-rate multiplier at each optimizer step (its scheduler's lambda)."""
    total = config.epochs * steps_per_epoch
    warmup = round(warmup_epochs(config) * steps_per_epoch)
    return lambda step: lr_factor(step, total, warmup, config.schedule)


def lr_scheduler(
    optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's scheduler: stepped after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config, steps_per_epoch))


def follow_schedule(
    scheduler: torch.optim.lr_scheduler.LambdaLR, config: Config, steps_per_epoch: int
) -> None:
    """Switch a running scheduler to `config`'s schedule (a budget planned again), the lr of
    its next step included."""
    factor = lr_multiplier(config, steps_per_epoch)
    groups = scheduler.optimizer.param_groups
    scheduler.lr_lambdas = [factor] * len(groups)
    for group, base_lr in zip(groups, scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * factor(scheduler.last_epoch)


def schedule(config: Config, steps_per_epoch: int) -> pd.DataFrame:
    """The run step by step, as `fit` follows it: each optimizer step's epoch, learning rate
    (of the classifier: backbone_lr scales the rest alike) and training image side."""
    factor = lr_multiplier(config, steps_per_epoch)
    steps = range(config.epochs * steps_per_epoch)
    epochs = [step // steps_per_epoch + 1 for step in steps]
    return pd.DataFrame(
        {
            "step": steps,
            "epoch": epochs,
            "lr": [config.lr * factor(step) for step in steps],
            "side": [train_size(epoch, config) for epoch in epochs],
        }
    )


# ----------------------------------------------------------------------------- time budget
def schedule_seconds(config: Config, epoch_seconds: Mapping[int, float], done: int = 0) -> float:
    """Training seconds of the run's schedule after its first `done` epochs, given the seconds
    an epoch takes at each side."""
    epochs = range(done + 1, config.epochs + 1)
    return sum(epoch_seconds[train_size(epoch, config)] for epoch in epochs)


def plan_epochs(
    minutes: float,
    epoch_seconds: Mapping[int, float],
    config: Config,
    done: int = 0,
    elapsed: float = 0.0,
) -> int:
    """The most epochs (at least 1, and at least the `done` ones, which took `elapsed` seconds)
    whose whole schedule, its sides and so its time, trains in `minutes`, given the seconds an
    epoch takes at each side."""
    budget = 60 * minutes - elapsed
    low = max(1, done)
    high = max(low, done + int(budget / min(epoch_seconds.values())))  # no epoch is cheaper
    # Bisection: more epochs take longer, as each epoch's side can only shrink with them (and
    # a smaller side is no slower). `low` fits, unless it is the 1 epoch every run has or the
    # epochs done already.
    while low < high:
        middle = (low + high + 1) // 2
        if schedule_seconds(replace(config, epochs=middle), epoch_seconds, done) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def replan_epochs(
    minutes: float, measured: Mapping[int, float], metrics: pd.DataFrame, config: Config
) -> int:
    """The plan made again from the epochs trained (metrics.csv's rows): each side trained at
    its epochs' mean time, every other at its measured time scaled as the last epoch ran
    against its side's measurement; at least one epoch past those trained, and past the run's
    first half no longer than keeps the next epoch's side from shrinking."""
    # A few steps a side misjudge a CPU's epochs: plans trained in 0.80x to 1.10x their minutes,
    # a fifth of the budget unused or a tenth past it.
    trained = metrics.groupby("train_size")["epoch_time_s"].mean()
    last = metrics.iloc[-1]
    scale = last["epoch_time_s"] / measured[int(last["train_size"])]
    seconds = {side: float(trained.get(side, scale * s)) for side, s in measured.items()}
    done, elapsed = int(last["epoch"]), float(metrics["epoch_time_s"].sum())
    # A plan cut to the epochs trained would end the run with its lr mid-schedule (a resnet20
    # ended at 19.9% test so, its 5-epoch schedule stopped after 4): the lr ends in one more.
    planned = max(done + 1, plan_epochs(minutes, seconds, config, done, elapsed))
    # Past the run's first half a longer plan grows only as far as keeps the next epoch's side
    # at least the last one's (a resnet18_s2 went from 56 px back to 48 at its 21st of 27
    # epochs). Not at all would waste the budget: a resnet18_s2 whose 32 px epochs slowed
    # 1.5x planned 17 epochs after its 9th and, kept to them, trained 39 of its 60 minutes.
    side = int(last["train_size"])
    while (
        2 * done > config.epochs
        and planned > config.epochs
        and train_size(done + 1, replace(config, epochs=planned)) < side
    ):
        planned -= 1
    return planned


# ----------------------------------------------------------------------------- one step, one epoch
def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: AveragedModel | None,
    config: Config,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch, as every run (and benchmarks/train.py) takes it: forward
    under autocast, (label-smoothed) loss, backward, clipping, SGD, the lr schedule and the
    weight average. Returns the loss and the logits."""
    if not config.channels_last:
        x = x.contiguous()  # the loader's batches are channels_last
    with autocast(x.device, config.amp):
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
    return loss.detach(), logits.detach()


def time_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: AveragedModel | None,
    config: Config,
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    warmup: int,
) -> tuple[float, float]:
    """Seconds a train_step takes on `stream`'s batches, their making included, over `steps`
    steps after `warmup` untimed ones (first calls allocate and pick kernels), and the share
    of that time spent waiting for batches."""
    device = next(model.parameters()).device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    wait = total = 0.0
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        x, y = next(stream)
        sync()
        fetched = time.perf_counter()
        train_step(model, optimizer, scheduler, ema, config, x, y)
        sync()
        if step >= warmup:
            wait += fetched - start
            total += time.perf_counter() - start
    return total / steps, wait / total


def train_batches(
    run_data: RunData,
    config: Config,
    order: torch.Tensor,
    local_batch: int,
    generator: torch.Generator,
    size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The train images at `order` in batches, augmented and resized as the config says."""
    images, labels = run_data.images["train"][order], run_data.labels["train"][order]
    return data.batches(
        images,
        labels,
        local_batch,
        mean=run_data.mean,
        scale=run_data.scale,
        augment=config.augment,
        generator=generator,
        size=size,
        crop_scale=config.crop_scale,
    )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: AveragedModel | None,
    config: Config,
    run_data: RunData,
    epoch: int,
    rank: int,
    world: int,
) -> dict:
    """One pass over this process's share of `train`; returns loss, top-1, size and images/s."""
    device = run_data.mean.device
    images = run_data.images["train"]
    steps, local_batch = epoch_plan(len(images), config.batch_size, world)
    # The order is seeded by epoch, the same on every rank, so each rank takes a disjoint share
    # and a resumed run sees exactly the batches an uninterrupted one would have. The images
    # past the last whole global batch sit this epoch out (another order includes them).
    generator = torch.Generator(device).manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator, device=device)
    order = order[: steps * local_batch * world][rank::world]
    size = train_size(epoch, config)
    stream = train_batches(run_data, config, order, local_batch, generator, size)
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
        loss, logits = train_step(model, optimizer, scheduler, ema, config, x, y)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if not bar.disable and step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    if world > 1:
        dist.all_reduce(totals)
    loss_total, correct_total, count = totals.tolist()  # waits for the GPU: the time is real
    seconds = time.perf_counter() - start
    return {
        "train_loss": loss_total / count,
        "train_top1": 100 * correct_total / count,
        "train_size": size,
        "epoch_time_s": seconds,
        "images_per_s": count / seconds,
    }


# ----------------------------------------------------------------------------- setup helpers
def run_folder(config: Config) -> Path:
    """The run's folder: the given name, or time and model."""
    name = config.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model}"
    return Path(config.runs_root) / name


def load_backbone(model: nn.Module, source: Path) -> None:
    """Start from another run's weights (its folder or checkpoint file), all but the classifier."""
    path = source / "checkpoint.pt" if source.is_dir() else source
    if not path.is_file():
        raise LabError(f"{path}: no checkpoint to start from")
    state = runs.read_weights(path)
    head = classifier_name(model) + "."
    kept = {k: v for k, v in state.get("model", state).items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as error:
        raise LabError(f"{path}: weights of another architecture ({error})") from error
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise LabError(
            f"{path}: weights of another architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.SGD:
    """SGD with momentum over the model's parameter groups (backbone lr, no decay on norms)."""
    groups = param_groups(
        model, config.lr, config.backbone_lr or None, config.weight_decay, config.no_decay_norm_bias
    )
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def weight_average(model: nn.Module, config: Config) -> AveragedModel | None:
    """The weight average config.ema asks for, BatchNorm statistics averaged too, or None."""
    if not config.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)


def measure_step_seconds(
    model: nn.Module,
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: AveragedModel | None,
    config: Config,
    run_data: RunData,
    world: int,
    steps: int = 5,
    warmup: int = 2,
) -> dict[int, float]:
    """Seconds a training step takes at each side the schedule can use (the median of `steps`,
    the sides taking turns), timed on the run's own model, optimizer and weight average, then
    restored with the random state: the run trains as if unmeasured."""
    saved = copy.deepcopy([model.state_dict(), optimizer.state_dict(), ema and ema.state_dict()])
    rng_cpu = torch.get_rng_state()
    device = run_data.mean.device
    rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    images = run_data.images["train"]
    steps_per_epoch, local_batch = epoch_plan(len(images), config.batch_size, world)
    scheduler = lr_scheduler(optimizer, config, steps_per_epoch)  # the run's needs the plan
    train_mode(model, config.freeze_backbone)
    pick = torch.arange((warmup + steps) * local_batch, device=device) % len(images)
    streams = {}
    for side in train_sides(config):
        generator = torch.Generator(device).manual_seed(config.seed)
        streams[side] = train_batches(run_data, config, pick, local_batch, generator, side)
        for _ in range(warmup):  # first calls at a side allocate and pick kernels
            train_step(train_model, optimizer, scheduler, ema, config, *next(streams[side]))
    # The sides take turns, a step each: a 2-core VM's speed swings within seconds, and timed
    # one side after another a swing became one side's speed (a resnet18_s2 measured 48 px as
    # faster than 32, 824 against 753 img/s, trained 16 epochs at 32 px in a plan of 34, then
    # 48 px at 532 img/s, and its plan fell to 21: 1 epoch at 48 px, none at 40 or 56).
    times: dict[int, list[float]] = {side: [] for side in streams}
    for _ in range(steps):
        for side, stream in streams.items():
            timed, _ = time_steps(train_model, optimizer, scheduler, ema, config, stream, 1, 0)
            times[side].append(timed)
    seconds = {side: statistics.median(side_times) for side, side_times in times.items()}
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])  # the lr and momentum of the run's first step
    if ema is not None:
        ema.load_state_dict(saved[2])
    torch.set_rng_state(rng_cpu)
    if rng_cuda is not None:
        torch.cuda.set_rng_state(rng_cuda, device)
    return seconds


def write_config(config: Config, run_dir: Path) -> None:
    """The run's config.json."""
    runs.write_json(run_dir / "config.json", config_record(config) | {"name": run_dir.name})


def check_resume(config: Config, run_dir: Path) -> Config:
    """Refuse to resume a run as another experiment than its record's (as `lab train --resume`
    does): LabError naming each field that differs. Returns the recorded config."""
    try:
        recorded = read_config(run_dir)
    except (OSError, ValueError) as error:
        raise LabError(f"{run_dir / 'config.json'}: no record to resume ({error})") from error
    changed = experiment_changes(recorded, config)
    if changed:
        raise LabError(
            f"{run_dir}: a resume cannot change the experiment ({'; '.join(changed)}); "
            "start a new run instead, e.g. with --init-from"
        )
    return recorded


def start_record(config: Config, run_dir: Path) -> tuple[IO[str], Config]:
    """Rank 0's start: hold the run folder (runs.lock_run), refuse a start that would overwrite
    a record or resume another experiment, and write the config and status "running". Returns
    the lock and the config to run: a resume's has the recorded epochs (a budget's plan)."""
    if config.resume and not runs.has_checkpoint(run_dir):  # before the lock makes the folder
        raise LabError(f"{run_dir / 'checkpoint.pt'}: no checkpoint to resume from")
    lock = runs.lock_run(run_dir)
    try:
        if config.resume:
            config = replace(config, epochs=check_resume(config, run_dir).epochs)
        elif (run_dir / "summary.json").exists():
            raise LabError(
                f"{run_dir}: a run of that name exists; resume it or choose another name"
            )
        write_config(config, run_dir)
        runs.update_summary(
            run_dir,
            status="running",
            error=None,
            model=config.model,
            preset=config.preset,
            epochs=config.epochs,
        )
    except BaseException:
        lock.close()
        raise
    return lock, config


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


# ----------------------------------------------------------------------------- the run
def fit(config: Config) -> Path:
    """Train as configured, writing the run record as it goes; returns the run folder."""
    check_config(config)
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(config.device)
    keep_freed_memory()  # before the plan measures the speed it will train at
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    run_dir, refusal, lock = run_folder(config), None, None
    try:
        if rank == 0:
            try:
                lock, config = start_record(config, run_dir)
            except (LabError, OSError) as error:  # told to every rank, which would wait for it
                refusal = str(error)
        if world > 1:  # rank 0 decides for all: the same (time-stamped) folder, the same
            # refusal, the same (resumed) epochs
            decision = [run_dir, refusal, config]
            dist.broadcast_object_list(decision, src=0)
            run_dir, refusal, config = decision
        if refusal:  # nothing of this process is recorded: the folder may be another's
            raise LabError(refusal)
        try:
            return _fit(config, run_dir, device, rank, world)
        except BaseException as error:
            # every rank records its own failure: one that failed cannot count on the others
            # to reach a collective and hear of it
            message = f"{type(error).__name__}: {error}"
            runs.record_failure(run_dir, f"rank {rank}: {message}" if world > 1 else message)
            raise
    finally:
        if lock is not None:
            lock.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(config: Config, run_dir: Path, device: torch.device, rank: int, world: int) -> Path:
    """The body of `fit`, once the run folder exists and failures are recorded."""
    # ---- data and checkpoint: rank 0 decodes once and picks the checkpoint to resume from (its
    # fallback to checkpoint.prev.pt renames files), before the other ranks read either. On the
    # CPU: the RNG states must stay CPU tensors; the rest moves to the model's device.
    started = time.time()
    if rank == 0:
        run_data = load_data(config, device)
        state = runs.load_checkpoint(run_dir, "cpu", fallback=True) if config.resume else None
    if world > 1:
        dist.barrier()
    if rank != 0:
        run_data = load_data(config, device)
        state = runs.load_checkpoint(run_dir, "cpu") if config.resume else None
    train_images = len(run_data.images["train"])
    steps_per_epoch, local_batch = epoch_plan(train_images, config.batch_size, world)
    if steps_per_epoch == 0:
        raise LabError(
            f"batch_size {config.batch_size} is more than the "
            f"{train_images} train images: no whole batch to train on"
        )

    # ---- model, optimizer and weight average
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=run_data.num_classes, **model_kwargs(config))
    if config.zero_init_residual:
        zero_init_residual(model, config.model)
    if config.init_from:
        load_backbone(model, Path(config.init_from))
    if config.freeze_backbone:
        freeze_backbone(model)
    params, macs = count_params(model), count_macs(model, input_size=64)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, config)
    ema = weight_average(model, config)
    evaluated = ema.module if ema is not None else model  # what val, test and the checkpoint see
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)

    # ---- a time budget: the most epochs that train in it at the speeds measured at each side
    # (rank 0's, for all), made again as the epochs run (replan_epochs; when: the loop below).
    # A resume keeps its plan (start_record took the recorded epochs) and its measured speeds.
    epoch_seconds: dict[int, float] = {}  # an epoch's seconds at each side, as measured
    if config.minutes and state is None:
        step_seconds = measure_step_seconds(
            model, train_model, optimizer, ema, config, run_data, world
        )
        epoch_seconds = {side: steps_per_epoch * s for side, s in step_seconds.items()}
        plan = [plan_epochs(config.minutes, epoch_seconds, config)]
        if world > 1:
            dist.broadcast_object_list(plan, src=0)
        config = replace(config, epochs=plan[0])
        if rank == 0:
            write_config(config, run_dir)
            speeds = {
                f"img_per_s_{side}px": local_batch * world / s for side, s in step_seconds.items()
            }
            runs.update_summary(
                run_dir,
                epochs=config.epochs,
                planned_epochs=config.epochs,
                planned_train_minutes=schedule_seconds(config, epoch_seconds) / 60,
                **speeds,
            )
    scheduler = lr_scheduler(optimizer, config, steps_per_epoch)

    # ---- resume: weights, optimizer, schedule and random state of the last finished epoch
    # elapsed: training seconds; wall_before: wall seconds of the earlier processes' kept epochs
    first_epoch, elapsed, wall_before = 1, 0.0, 0.0
    if state is not None:
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
        wall_before = state.get("wall_s", 0.0)  # checkpoints written before wall_s was kept lack it
        if config.minutes and rank == 0:  # the plan's measured speeds, as summary.json holds them
            summary = runs.read_json(run_dir / "summary.json")
            speeds = {side: summary.get(f"img_per_s_{side}px") for side in train_sides(config)}
            if all(speeds.values()):
                images = steps_per_epoch * local_batch * world
                epoch_seconds = {side: images / speed for side, speed in speeds.items()}

    if rank == 0:
        if first_epoch == 1:  # a resumed run keeps the start of its first process
            runs.update_summary(
                run_dir, started=pd.Timestamp.fromtimestamp(started).isoformat(timespec="seconds")
            )
        runs.update_summary(
            run_dir,
            params=params,
            macs=macs,
            device=device_label(device),
            precision=precision(device, config.amp),
            world_size=world,
            torch=torch.__version__,
            git_commit=git_commit(),
            num_classes=run_data.num_classes,
        )
        if config.resume:  # rows of epochs after the checkpoint were never finished: drop them
            metrics_path = run_dir / "metrics.csv"
            if metrics_path.exists():
                table = runs.read_table(metrics_path)
                runs.write_csv(metrics_path, table[table["epoch"] < first_epoch])

    # ---- the loop: train an epoch, evaluate val, append the metrics row, save the checkpoint
    # and, in a budget, plan again after the first two epochs at each side (a run's first epoch
    # is often its slowest) and after every epoch of the run's first half (a VM's epochs can
    # drift 2x at one side: planned after epoch 2 alone, inception used 73% of its budget);
    # later only after a side's first two epochs, and a longer plan never takes the side back
    # down (replan_epochs). The plan's last epoch is never planned again: its lr has ended.
    epoch, previous_side, epochs_at_side = first_epoch, None, 0
    while epoch <= config.epochs:
        lr = optimizer.param_groups[-1]["lr"]
        row = {"epoch": epoch, "run_epochs": config.epochs}  # the plan this epoch trained in
        row |= train_one_epoch(
            train_model, optimizer, scheduler, ema, config, run_data, epoch, rank, world
        )
        elapsed += row["epoch_time_s"]
        if rank == 0:
            logits = run_logits(evaluated, config, run_data, run_data.images["val"])
            val = accuracy(logits, run_data.labels["val"].cpu())
            row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], lr=lr)
            metrics = runs.append_metrics(run_dir, row)
        epochs_at_side = epochs_at_side + 1 if row["train_size"] == previous_side else 1
        again = epochs_at_side <= 2 or 2 * epoch <= config.epochs
        if config.minutes and epoch < config.epochs and again:
            plan = [config.epochs]
            if rank == 0 and epoch_seconds:
                plan = [replan_epochs(config.minutes, epoch_seconds, metrics, config)]
            if world > 1:
                dist.broadcast_object_list(plan, src=0)
            if plan[0] != config.epochs:
                config = replace(config, epochs=plan[0])
                follow_schedule(scheduler, config, steps_per_epoch)
                if rank == 0:
                    write_config(config, run_dir)
                    runs.update_summary(run_dir, epochs=config.epochs)
        previous_side = row["train_size"]
        if rank == 0:
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
                    "wall_s": wall_before + time.time() - started,
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "num_classes": run_data.num_classes,
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
        epoch += 1

    # ---- final evaluation: train sample, val, test; per-class, confusion and prediction files
    if rank == 0:
        results = final_evaluation(evaluated, config, run_data, run_dir)
        runs.update_summary(
            run_dir,
            **results,
            status="finished",
            error=None,
            wall_time_s=wall_before + time.time() - started,
        )
    if world > 1:  # the other ranks return once the record is complete
        dist.barrier()
    return run_dir
