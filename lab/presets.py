"""Named experiment presets: Config overrides shared by all models plus per-model overrides.

A CPU preset gives each model a time budget (`minutes`): the run measures its speed and plans
its epochs (lab.train.plan_epochs), and plans them again from its epochs' own times as it goes
(lab.train.replan_epochs), so the preset takes as long on any CPU, with or without native bf16
(a CPU without it runs fp32, and so fewer epochs in the same minutes).

quick:  all six study models on 10 classes (all 450 train images a class, 500 val, 500 test) on
        the CPU, about 12 training minutes in all. Measured when it was sized in epochs, on
        2 idle cores with native bf16 (train img/s: baseline 582, alexnet_reduced 87,
        vgg_reduced 331, inception 356, resnet20 295, squeezenet 310): with 8, 4, 6, 6, 6 and
        5 epochs, test top-1 baseline 61.6, alexnet_reduced 57.0, vgg_reduced 54.4, inception
        47.8, resnet20 55.8, squeezenet 52.4 (chance 10%) in 11 min 42 s of sweep (9.8 of
        them training, at those speeds). Each model's minutes are those epochs' time at those
        speeds, rounded up (11.75 in all), so such a CPU now plans about 9, 4, 7, 8, 7 and 6
        epochs. Other jobs that
        start sharing the cores after the plan's measurement lengthen the run.
paper:  the study's settings on the full data (SGD 0.9, lr 0.1, batch 256, wd 1e-4, 5 epochs,
        all 200 classes, per-pixel mean); meant for a GPU.
best:   our recipe per model, meant to beat each study row on a GPU in minutes: one-cycle lr with
        warmup, label smoothing 0.1, crop+flip, no decay on norm/bias, more epochs (not yet
        measured on a GPU). Inception is fine-tuned from ImageNet, upsampled to 128 px,
        whenever the weights can be had (see preset_values); otherwise it trains from scratch.
cpu:    our recipe on a CPU: bf16 autocast where native (fp32 elsewhere, about half the
        speed), progressive resizing (32 px for the first 40% of the epochs, growing to 64 px
        at 85%; inception trains at 64 px throughout), test-time flip averaging, and per
        model a training budget in minutes on a 2-core CPU with native bf16 (the comment
        beside each says what its record got); the baseline's 90 minutes, alexnet_reduced's
        35, vgg_reduced's 38 and resnet20's 110 (with weight decay 1e-3) are the budgets
        whose runs beat the study's rows.
"""

from typing import Any

from lab.errors import LabError
from lab.study import STUDY_MODELS

# Ours, for every model on all 200 classes: one-cycle lr after 2 warmup epochs, label smoothing,
# crop+flip, weight decay 5e-4 off norms and biases, per-channel mean; `best` and `cpu` use it.
OUR_RECIPE: dict[str, Any] = {
    "classes": 0,
    "per_class": 0,
    "epochs": 30,
    "batch_size": 256,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup_epochs": 2.0,
    "label_smoothing": 0.1,
    "augment": "crop_flip",
    "no_decay_norm_bias": True,
    "normalize": "channel",
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "models": STUDY_MODELS,
        "config": {
            "classes": 10,
            "per_class": 0,  # all 450 train images of each of the 10 classes
            "epochs": 6,  # with --set minutes=0 only: the budget plans the epochs
            "batch_size": 64,
            "lr": 0.02,  # 0.05 left baseline and resnet20 near chance at batch 64
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "augment": "flip",
            "normalize": "channel",
            "train_eval_size": 500,
            "device": "cpu",
        },
        # training minutes: the epochs each was measured with at its speed, rounded up (see
        # the module docstring)
        "per_model": {
            "baseline": {"minutes": 1.25},  # 8 epochs: 1.0 minute
            "alexnet_reduced": {"minutes": 3.5, "warmup_epochs": 0.3},  # 4 epochs: 3.4
            "vgg_reduced": {"minutes": 1.75, "lr": 0.05},  # 6 epochs: 1.4
            "inception": {"minutes": 1.75},  # 6 epochs: 1.3
            "resnet20": {"minutes": 2.0},  # 6 epochs: 1.5
            "squeezenet": {"minutes": 1.5, "lr": 0.05},  # 5 epochs: 1.2
        },
    },
    "paper": {
        "models": STUDY_MODELS,
        "config": {
            "classes": 0,
            "per_class": 0,
            "epochs": 5,
            "batch_size": 256,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "constant",
            "normalize": "pixel",
        },
        "per_model": {},
        # Applied when the weights can be had: the ImageNet GoogLeNet fine-tuned at 64x64.
        "with_weights": {"inception": {"pretrained": True}},
    },
    "best": {
        "models": [*STUDY_MODELS, "resnet18"],
        "config": OUR_RECIPE,
        "per_model": {
            "alexnet_reduced": {"lr": 0.05, "grad_clip": 5.0},
            "vgg_reduced": {"epochs": 20},
        },
        # Applied when the weights can be had: fine-tune the ImageNet GoogLeNet upsampled.
        "with_weights": {
            "inception": {
                "pretrained": True,
                "input_size": 128,
                "lr": 0.02,
                "backbone_lr": 0.005,
                "epochs": 8,
            },
        },
    },
    "cpu": {
        "models": STUDY_MODELS,
        "config": {
            **OUR_RECIPE,
            "min_size": 32,
            "ramp_start": 0.4,
            "ramp_end": 0.85,
            "tta_flip": True,
            "device": "cpu",
        },
        # Training minutes per model (2 idle cores, native bf16), from which each run plans
        # its epochs; beside each, what its record in results/cpu got, and the earlier one.
        "per_model": {
            # 53 epochs on a 2-core Xeon with AMX (43.3% test; 30 epochs, 52 minutes: 41.4)
            "baseline": {"minutes": 90.0},
            # 5 epochs on a 2-core Xeon with AMX (34.3% test; 12 epochs, 102 minutes: 46.2)
            "alexnet_reduced": {"minutes": 35.0, "lr": 0.05, "grad_clip": 5.0},
            # 16 epochs on a 2-core Xeon with AMX (43.4% test; 24 epochs, 64 minutes: 48.2)
            "vgg_reduced": {"minutes": 38.0},
            # 23 epochs, all at 64 px, on a 2-core Xeon with AMX (49.5% test in 122 minutes; 90
            # minutes, 12 epochs: 43.3; from 32 px, 30 epochs: 42.0): at 32 px its last blocks
            # see a 1x1 map
            "inception": {"minutes": 130.0, "min_size": 64},
            # 30 epochs on a 2-core Xeon with AMX (55.6% test; 5e-4, 30 epochs, 105 min: 52.6)
            "resnet20": {"minutes": 110.0, "weight_decay": 1e-3},
            # 7 epochs on a 2-core Xeon with AMX (31.8% test; 24 epochs, 64 minutes: 46.0); no
            # study row to beat, so the sweep gives it little
            "squeezenet": {"minutes": 25.0},
        },
    },
}


def imagenet_cached() -> bool:
    """Whether the ImageNet GoogLeNet weights are in the torch hub cache."""
    from lab.models.inception import hub_weights_file  # torchvision: only for inception

    return hub_weights_file().is_file()


def preset_values(preset: str, model: str, weights: bool = False) -> dict[str, Any]:
    """The Config values `preset` gives `model` ("" = none), its run named preset-model."""
    # The preset's with_weights values apply too when the weights can be had: a weights file is
    # given (`weights`) or they are in the torch hub cache. A missing cache file does not count,
    # so that a sweep never starts a download mid-run: `lab weights --download` fetches it first.
    if not preset:
        return {}
    if preset not in PRESETS:
        raise LabError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    values = {**spec["config"], **spec["per_model"].get(model, {})}
    with_weights = spec.get("with_weights", {}).get(model, {})
    if with_weights and (weights or imagenet_cached()):
        values.update(with_weights)
    return {**values, "preset": preset, "name": f"{preset}-{model}"}
