"""Evaluation, shared by the trainer, `lab evaluate`, lab.predict and the dashboard: logits,
accuracies, the final per-class and prediction tables, and a checkpoint's model."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from lab import data, runs
from lab.config import Config, model_kwargs, read_config
from lab.data import SCORED_SPLITS, RunData, load_data
from lab.device import autocast, resolve_device
from lab.models import build_model


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
    batch_size: int = 512,
    amp: bool = True,
    tta_flip: bool = False,
    size: int = data.SIZE,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 NHWC images, in order, resized to size x size; with
    tta_flip, averaged with the logits of the mirrored images."""
    model.eval()
    device = mean.device
    labels = torch.zeros(len(images), dtype=torch.long)
    outputs = []
    for x, _ in data.batches(images, labels, batch_size, mean=mean, scale=scale, size=size):
        with autocast(device, amp):
            logits = model(x).float()
            if tta_flip:
                logits = (logits + model(x.flip(3)).float()) / 2
        outputs.append(logits.cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)


def config_logits(
    model: nn.Module,
    config: Config,
    images: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """predict_logits() in the run's precision, flip averaging and test side: the one path of every
    prediction (evaluation, challenge.txt, `lab predict`, figures, the dashboard), so all agree."""
    return predict_logits(
        model,
        images,
        mean,
        scale,
        amp=config.amp,
        tta_flip=config.tta_flip,
        size=config.test_size,
    )


def run_logits(
    model: nn.Module, config: Config, run: RunData, images: torch.Tensor
) -> torch.Tensor:
    """config_logits() with the run's normalization."""
    return config_logits(model, config, images, run.mean, run.scale)


def top_labels(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The k likeliest labels per row, best first; the first is the prediction everywhere:
    argmax may break a tie (common in bf16 logits) the other way than top-k's first."""
    return logits.topk(min(k, logits.shape[1]), dim=1).indices


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (percent) of logits against labels."""
    hits = top_labels(logits) == labels[:, None]
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "top1": 100 * hits[:, 0].float().mean().item(),
        "top5": 100 * hits.any(dim=1).float().mean().item(),
    }


def train_sample(num_images: int, size: int, seed: int) -> torch.Tensor:
    """A fixed sample of train indices, evaluated at the end instead of the running average."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def split_scores(
    model: nn.Module, config: Config, run: RunData
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Top-1 and top-5 on train (a fixed sample), val and test, and the logits of each split."""
    sample = train_sample(len(run.images["train"]), config.train_eval_size, config.seed)
    sample = sample.to(run.images["train"].device)
    scores, logits = {}, {}
    for name in SCORED_SPLITS:
        images, labels = run.images[name], run.labels[name]
        if name == "train":
            images, labels = images[sample], labels[sample]
        logits[name] = run_logits(model, config, run, images)
        top = accuracy(logits[name], labels.cpu())
        scores.update({f"{name}_top1": top["top1"], f"{name}_top5": top["top5"]})
    return scores, logits


def prediction_tables(logits: torch.Tensor, split: data.Split) -> dict:
    """Per-class accuracy, confusion matrix and per-image predictions for a labeled split."""
    labels = torch.from_numpy(np.asarray(split.labels))
    top5 = top_labels(logits)
    pred = top5[:, 0]  # as in accuracy(), so the tables agree with the summary's top-1
    confidence = logits.softmax(dim=1).gather(1, pred[:, None])[:, 0]
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


def final_evaluation(model: nn.Module, config: Config, run: RunData, run_dir: Path) -> dict:
    """Evaluate every labeled split; write per-class, confusion, prediction and challenge files."""
    scores, logits = split_scores(model, config, run)
    tables = prediction_tables(logits["test"], run.splits["test"])
    runs.write_csv(run_dir / "per_class.csv", tables["per_class"])
    runs.write_npy(run_dir / "confusion.npy", tables["confusion"])
    runs.write_csv(run_dir / "predictions.csv", tables["predictions"])
    if "challenge" in run.splits:
        challenge = run.splits["challenge"]
        logits = run_logits(model, config, run, run.images["challenge"])
        wnids = [challenge.wnids[i] for i in top_labels(logits, 1)[:, 0].tolist()]
        lines = "".join(f"{f} {w}\n" for f, w in zip(challenge.files, wnids, strict=True))
        runs.write_text(run_dir / "challenge.txt", lines)
    return scores


def load_checkpoint_model(
    run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Config]:
    """The model of a run's last checkpoint, in eval mode, and the run's config."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = runs.load_checkpoint(run_dir, device)
    # The trained weights replace any pretrained ones, so no weights file is needed here.
    options = {k: v for k, v in model_kwargs(config).items() if k not in ("pretrained", "weights")}
    model = build_model(config.model, num_classes=state["num_classes"], **options)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


def reestimate_bn(model: nn.Module, config: Config, run: RunData, count: int) -> None:
    """Recompute the BatchNorm statistics on `count` unaugmented train images at the test side
    (FixRes): those of training describe crops at the training side, not test images."""
    sample = train_sample(len(run.images["train"]), count, config.seed + 1)
    images = run.images["train"][sample.to(run.images["train"].device)]
    labels = torch.zeros(len(images), dtype=torch.long)
    stream = data.batches(
        images, labels, 256, mean=run.mean, scale=run.scale, size=config.test_size
    )
    with torch.no_grad(), autocast(run.mean.device, config.amp):
        update_bn(stream, model)  # the average of the batches' statistics, no momentum


def evaluate_run(
    run_dir: Path, device: str = "auto", test_size: int = 0, bn_images: int = 0
) -> dict[str, float]:
    """Recompute a run's final accuracies from its checkpoint (they must match summary.json),
    or, with test_size or bn_images, those it gets at another test side or with BN statistics
    re-estimated there (reestimate_bn)."""
    model, config = load_checkpoint_model(run_dir, resolve_device(device))
    config.quiet = True
    config.test_size = test_size or config.test_size
    run = load_data(config, resolve_device(device))
    if bn_images:
        reestimate_bn(model, config, run, bn_images)
    return split_scores(model, config, run)[0]
