"""Training throughput per model, and the share of step time spent waiting for data.

    python benchmarks/train.py                        # every model: fp32 against bf16
    python benchmarks/train.py --variants all         # plain, +channels_last, +bf16, +compile
    python benchmarks/train.py --sizes 32,48,64       # progressive resizing's image sides
    python benchmarks/train.py --sizes 32,40,48,56,64 --preset cpu  # + each run's plan

bf16 runs where it is native (CUDA, or a CPU with AVX512-BF16, AMX or Arm BF16; see
`lab.device.native_bf16`): elsewhere the bf16 variants run in fp32 and the header says so.

Each step is the trainer's own (`lab.train.train_step`, timed by `lab.train.time_steps` as a
budgeted run times its plan): the loss, clipping, lr schedule and weight average of the config
--preset gives each model (the default Config without one), its batch size unless --batch-size
is given. Batches come from the lab's own loader (`lab.data.batches`, the config's augmentation
on the device) over uint8 images: the real train split with --data, random pixels otherwise
(speed does not depend on content); 200 classes. Prints img/s, data-wait share and the ratio to
the first variant; with --preset, the epochs each model's run would plan and their minutes.
"""

import argparse
from dataclasses import replace

import torch

from lab import data
from lab.config import Config, make_config
from lab.device import device_label, keep_freed_memory, precision, resolve_device
from lab.models import build_model, model_names
from lab.train import (
    lr_scheduler,
    make_optimizer,
    plan_epochs,
    schedule_seconds,
    time_steps,
    train_sides,
    weight_average,
)

VARIANTS = {  # name: (channels_last, bf16 autocast, torch.compile)
    "plain": (False, False, False),
    "channels_last": (True, False, False),
    "channels_last+bf16": (True, True, False),
    "channels_last+bf16+compile": (True, True, True),
}


def epoch_images(config: Config) -> int:
    """Train images an epoch of the config's run: 450 a class."""
    return (config.per_class or 450) * (config.classes or 200)


def measure(
    config: Config, images: torch.Tensor, labels: torch.Tensor, steps: int, size: int = 64
) -> dict:
    """Time `steps` of the config's training steps after a warmup; img/s and data-wait share."""
    device = images.device
    mean = torch.full((1, 3, 1, 1), 120.0, device=device)
    scale = torch.full((1, 3, 1, 1), 64.0, device=device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config.model).to(device, memory_format=memory_format).train()
    step_model = torch.compile(model) if config.compile else model
    optimizer = make_optimizer(model, config)
    scheduler = lr_scheduler(optimizer, config, epoch_images(config) // config.batch_size)
    stream = data.batches(
        images,
        labels,
        config.batch_size,
        mean=mean,
        scale=scale,
        shuffle=True,
        augment=config.augment,
        generator=torch.Generator(device).manual_seed(0),
        drop_last=True,
        size=size,
    )
    warmup = 3 if not config.compile else 10
    seconds, wait = time_steps(
        step_model,
        optimizer,
        scheduler,
        weight_average(model, config),
        config,
        stream,
        steps,
        warmup,
    )
    return {"img/s": config.batch_size / seconds, "data wait %": 100 * wait}


def estimate(config: Config, speeds: dict[int, float]) -> tuple[int, float]:
    """The epochs of the config's run (a budget's plan at these img/s per side, else its own)
    and their training minutes: each epoch's images at its side's speed."""
    epoch_seconds = {side: epoch_images(config) / speed for side, speed in speeds.items()}
    if config.minutes:
        config = replace(config, epochs=plan_epochs(config.minutes, epoch_seconds, config))
    return config.epochs, schedule_seconds(config, epoch_seconds) / 60


def main() -> None:
    """Parse options, run every model and variant, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(m for m in model_names()))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="default: the config's (the preset's, or 256)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--variants",
        default="channels_last,channels_last+bf16",
        help=f"comma-separated from {', '.join(VARIANTS)}, or all",
    )
    parser.add_argument("--sizes", default="64", help="comma-separated training image sides")
    parser.add_argument("--data", default="", help="use the real train split of this archive")
    parser.add_argument(
        "--preset",
        default="",
        help="train as its config and estimate each run's epochs and minutes",
    )
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave malloc as glibc sets it, not as a run sets it (lab.device.keep_freed_memory)",
    )
    args = parser.parse_args()
    kept = not args.glibc_default and keep_freed_memory()
    device = resolve_device(args.device)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    given = {"preset": args.preset} | ({"batch_size": args.batch_size} if args.batch_size else {})
    configs = {name: make_config({"model": name, **given}) for name in args.models.split(",")}
    sizes = [int(size) for size in args.sizes.split(",")]
    unmeasured = {side for config in configs.values() for side in train_sides(config)} - set(sizes)
    if args.preset and unmeasured:
        parser.error(f"--preset {args.preset} trains at sides not in --sizes: {sorted(unmeasured)}")
    batch_size = max(config.batch_size for config in configs.values())
    count = batch_size * (args.steps + 10)
    if args.data:
        split = data.load_split("train", source=args.data)
        images, labels = (
            torch.from_numpy(split.images[:count].copy()),
            torch.from_numpy(split.labels[:count].copy()),
        )
    else:
        images = torch.randint(0, 256, (count, 64, 64, 3), dtype=torch.uint8)
        labels = torch.randint(0, 200, (count,))
    images, labels = images.to(device), labels.to(device)
    print(
        f"{device_label(device)}, bf16 variants run in {precision(device, True)}, batch "
        f"{batch_size}, {args.steps} timed steps, torch {torch.__version__}, "
        f"{'freed memory kept' if kept else 'glibc malloc defaults'}"
    )
    print(f"{'model':<16}{'variant':<28}{'px':>4}{'img/s':>9}{'data wait %':>13}{'x first':>9}")
    estimates = {}
    for name, config in configs.items():
        first, speeds = None, {}
        for size in sizes:
            for variant in variants:
                channels_last, amp, compile = VARIANTS[variant]
                variant_config = replace(
                    config, channels_last=channels_last, amp=amp, compile=compile
                )
                result = measure(variant_config, images, labels, args.steps, size)
                first = first or result["img/s"]
                speeds[size] = result["img/s"]  # the last variant's: the one a run would use
                print(
                    f"{name:<16}{variant:<28}{size:>4}{result['img/s']:>9.0f}"
                    f"{result['data wait %']:>13.1f}{result['img/s'] / first:>9.2f}",
                    flush=True,
                )
        if args.preset:
            estimates[name] = estimate(config, speeds)
    for name, (epochs, minutes) in estimates.items():
        budget = f" (a {configs[name].minutes:g}-minute budget)" if configs[name].minutes else ""
        print(
            f"{name:<16}{epochs:>4} epochs{minutes:>7.1f} training minutes estimated under "
            f"--preset {args.preset}{budget}"
        )


if __name__ == "__main__":
    main()
