"""Training throughput per model, and the share of step time spent waiting for data.

    python benchmarks/train.py                        # every model: fp32 against bf16
    python benchmarks/train.py --variants all         # plain, +channels_last, +bf16, +compile
    python benchmarks/train.py --sizes 32,48,64       # progressive resizing's image sides
    python benchmarks/train.py --sizes 32,40,48,56,64 --preset cpu  # + each run's minutes

bf16 runs where it is native (CUDA, or a CPU with AVX512-BF16, AMX or Arm BF16; see
`lab.device.native_bf16`): elsewhere the bf16 variants run in fp32 and the header says so.

Batches come from the lab's own loader (`lab.data.batches`, crop+flip augmentation on the
device) over uint8 images: the real train split with --data, random pixels otherwise (speed
does not depend on content). Prints img/s, data-wait share and the ratio to the first variant.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from lab import data
from lab.config import make_config
from lab.device import autocast, device_label, precision, resolve_device
from lab.models import build_model, model_names
from lab.train import train_size

VARIANTS = {  # name: (channels_last, bf16 autocast, torch.compile)
    "plain": (False, False, False),
    "channels_last": (True, False, False),
    "channels_last+bf16": (True, True, False),
    "channels_last+bf16+compile": (True, True, True),
}


def measure(
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    steps: int,
    channels_last: bool,
    amp: bool,
    compile: bool,
    size: int = 64,
) -> dict:
    """Time `steps` SGD steps after a warmup; returns img/s and the data-wait share."""
    device = images.device
    mean = torch.full((1, 3, 1, 1), 120.0, device=device)
    scale = torch.full((1, 3, 1, 1), 64.0, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name).to(device, memory_format=memory_format).train()
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator(device).manual_seed(0)
    stream = data.batches(
        images,
        labels,
        batch_size,
        mean=mean,
        scale=scale,
        shuffle=True,
        augment="crop_flip",
        generator=generator,
        drop_last=True,
        size=size,
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = 3 if not compile else 10
    wait = total = 0.0
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        x, y = next(stream)
        if not channels_last:
            x = x.contiguous()
        sync()
        fetched = time.perf_counter()
        with autocast(device, amp):
            loss = F.cross_entropy(step_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if i >= warmup:
            wait += fetched - start
            total += time.perf_counter() - start
    return {"img/s": steps * batch_size / total, "data wait %": 100 * wait / total}


def estimated_minutes(model: str, preset: str, speeds: dict[int, float]) -> float:
    """Training minutes of `model`'s run under `preset`: each epoch's images at its side's speed."""
    config = make_config({"model": model, "preset": preset})
    images = (config.per_class or 450) * (config.classes or 200)  # 450 train images a class
    sides = [train_size(epoch, config) for epoch in range(1, config.epochs + 1)]
    return sum(images / speeds[side] for side in sides) / 60  # KeyError: a side not measured


def main() -> None:
    """Parse options, run every model and variant, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(m for m in model_names()))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--variants",
        default="channels_last,channels_last+bf16",
        help=f"comma-separated from {', '.join(VARIANTS)}, or all",
    )
    parser.add_argument("--sizes", default="64", help="comma-separated training image sides")
    parser.add_argument("--data", default="", help="use the real train split of this archive")
    parser.add_argument(
        "--preset", default="", help="also estimate each model's training minutes under it"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    count = args.batch_size * (args.steps + 10)
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
        f"{args.batch_size}, {args.steps} timed steps, torch {torch.__version__}"
    )
    print(f"{'model':<16}{'variant':<28}{'px':>4}{'img/s':>9}{'data wait %':>13}{'x first':>9}")
    estimates = {}
    for name in args.models.split(","):
        first, speeds = None, {}
        for size in map(int, args.sizes.split(",")):
            for variant in variants:
                result = measure(
                    name, images, labels, args.batch_size, args.steps, *VARIANTS[variant], size
                )
                first = first or result["img/s"]
                speeds[size] = result["img/s"]  # the last variant's: the one a run would use
                print(
                    f"{name:<16}{variant:<28}{size:>4}{result['img/s']:>9.0f}"
                    f"{result['data wait %']:>13.1f}{result['img/s'] / first:>9.2f}",
                    flush=True,
                )
        if args.preset:
            estimates[name] = estimated_minutes(name, args.preset, speeds)
    for name, minutes in estimates.items():
        print(f"{name:<16}{minutes:>6.1f} training minutes estimated under --preset {args.preset}")


if __name__ == "__main__":
    main()
