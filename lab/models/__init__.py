"""Model registry: build_model by name, parameter and MAC counts, optimizer parameter groups."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lab.errors import LabError
from lab.models.alexnet import alexnet_reduced
from lab.models.baseline import baseline
from lab.models.inception import inception
from lab.models.resnet import (
    resnet18,
    resnet18_cpu,
    resnet18_s2,
    resnet20,
    resnet20_cifar,
    zero_residual_bns,
)
from lab.models.squeezenet import squeezenet
from lab.models.vgg import vgg_reduced


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nn.Module]  # builder(num_classes, **options) -> model for 64x64x3
    provenance: str  # one line: where the architecture comes from


MODELS: dict[str, ModelEntry] = {
    "baseline": ModelEntry(
        baseline, "ours: CS231n-style 3x[conv-BN-ReLU-pool] + 2 FC (the study gives no layout)"
    ),
    "alexnet_reduced": ModelEntry(alexnet_reduced, "the study's Table 2 reduced AlexNet"),
    "vgg_reduced": ModelEntry(
        vgg_reduced, "ours: VGG-11 (Simonyan & Zisserman 2014) pattern, half width, 4 stages, BN"
    ),
    "inception": ModelEntry(
        inception, "torchvision GoogLeNet (Szegedy et al. 2014), scratch or IMAGENET1K_V1 transfer"
    ),
    "resnet20": ModelEntry(
        resnet20, "the study's figure: 7x7/2 stem + 3x2 bottleneck blocks (He et al. 2015)"
    ),
    "resnet20_cifar": ModelEntry(
        resnet20_cifar, "He et al. 2015 CIFAR ResNet-20 (16/32/64, 3 blocks a stage, option A)"
    ),
    "squeezenet": ModelEntry(
        squeezenet, "SqueezeNet 1.1 (Iandola et al. 2016), no pool after the stem for 64x64, BN"
    ),
    "resnet18": ModelEntry(
        resnet18, "torchvision ResNet-18 (He et al. 2015) with a 3x3 stride-1 stem, no max pool"
    ),
    "resnet18_cpu": ModelEntry(
        resnet18_cpu, "torchvision ResNet-18 with its ImageNet stem (7x7/2, max pool): for CPUs"
    ),
    "resnet18_s2": ModelEntry(
        resnet18_s2, "ours: ResNet-18 pattern, quarter width, 3x3/2 stem, no pool: 32 px stage 1"
    ),
}

# weight decay is not applied to these layers' weights when no_decay_norm_bias is set
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def model_names() -> list[str]:
    """Registered model names, in registry order."""
    return list(MODELS)


def model_options(name: str) -> list[str]:
    """Keyword options a model's builder takes besides num_classes."""
    params = inspect.signature(MODELS[name].builder).parameters
    return [p for p in params if p != "num_classes"]


def build_model(name: str, num_classes: int = 200, **options) -> nn.Module:
    """Build a registered model for 64x64x3 inputs with num_classes outputs."""
    if name not in MODELS:
        raise LabError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise LabError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r};"
            f" valid options: {', '.join(valid) or 'none'}"
        )
    if num_classes < 1:
        raise LabError(f"num_classes must be at least 1, got {num_classes}")
    return MODELS[name].builder(num_classes, **options)


def zero_init_residual(model: nn.Module, name: str) -> None:
    """Start each residual block of `model` (registry name `name`) as its shortcut."""
    if not zero_residual_bns(model):
        raise LabError(f"zero_init_residual: {name} has no residual blocks")


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int = 64) -> int:
    """Multiply-accumulates of one forward pass on one input_size x input_size RGB image."""
    # Counted by hooks on the layers that multiply-add (the registry's models have no others):
    # torch's FlopCounterMode imports torch._dynamo on first use, 2 s at the start of every run.
    macs = 0

    def count(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            macs += output.numel() * kernel * layer.in_channels // layer.groups
        else:
            macs += output.numel() * layer.in_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    p = next(model.parameters())
    x = torch.zeros(1, 3, input_size, input_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return macs


def model_table(input_size: int = 64) -> list[dict]:
    """One row per registered model (defaults, 200 classes): name, params, macs, provenance."""
    rows = []
    for name, entry in MODELS.items():
        model = entry.builder()
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "macs": count_macs(model, input_size),
                "provenance": entry.provenance,
            }
        )
    return rows


def classifier_name(model: nn.Module) -> str:
    """The name of the classifier: the last nn.Linear in model.modules()."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise LabError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Make only the classifier trainable (transfer learning, head only)."""
    head = classifier_name(model)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(head + ".")
    return model


def train_mode(model: nn.Module, frozen_backbone: bool = False) -> nn.Module:
    """model.train(), but a frozen backbone's norm layers keep their learned statistics."""
    model.train()
    if frozen_backbone:  # the head is one nn.Linear, so every norm layer is in the backbone
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.eval()
    return model


def param_groups(
    model: nn.Module,
    lr: float,
    backbone_lr: float | None,
    weight_decay: float,
    no_decay_norm_bias: bool,
) -> list[dict]:
    """Optimizer groups: classifier (last nn.Linear) at lr, the rest at backbone_lr or lr.

    With no_decay_norm_bias, norm-layer weights and all biases get weight_decay 0. Frozen
    parameters are left out; empty groups are dropped. Each group carries a "name".
    """
    if backbone_lr is not None and backbone_lr < 0:
        raise LabError(f"backbone_lr must be >= 0 (0 or None = same as lr), got {backbone_lr}")
    head = {id(p) for p in model.get_submodule(classifier_name(model)).parameters()}
    no_decay = set()
    if no_decay_norm_bias:
        for m in model.modules():
            for pname, p in m.named_parameters(recurse=False):
                if pname == "bias" or isinstance(m, NORM_LAYERS):
                    no_decay.add(id(p))
    groups: dict[str, dict] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head else "backbone"
        decay = id(p) not in no_decay
        name = part if decay else f"{part}_no_decay"
        group = groups.setdefault(
            name,
            {
                "name": name,
                "params": [],
                "lr": lr if part == "head" else (backbone_lr or lr),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(p)
    return list(groups.values())
