"""Model registry: shapes, pinned sizes, trainability, checkpoints, transfer weights, groups."""

import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import GoogLeNet, GoogLeNet_Weights

from lab.errors import LabError
from lab.models import (
    MODELS,
    build_model,
    count_macs,
    count_params,
    freeze_backbone,
    model_names,
    model_table,
    param_groups,
    zero_init_residual,
)

NAMES = model_names()
HUB_NAME = Path(GoogLeNet_Weights.IMAGENET1K_V1.url).name  # googlenet-1378be20.pth


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_contract_models():
    assert NAMES == [
        "baseline",
        "alexnet_reduced",
        "vgg_reduced",
        "inception",
        "resnet20",
        "resnet20_cifar",
        "squeezenet",
        "resnet18",
        "resnet18_cpu",
        "resnet18_s2",
    ]
    assert all(MODELS[n].provenance and "\n" not in MODELS[n].provenance for n in NAMES)


def test_resnet18_s2_keeps_a_32x32_first_stage_for_resnet20s_cost():
    model = build_model("resnet18_s2").eval()
    with torch.no_grad():
        assert model.layer1(model.stem(images())).shape == (2, 32, 32, 32)
    assert count_params(model) == 2_846_440
    assert count_macs(model, input_size=64) < count_macs(build_model("resnet20"), input_size=64)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(images()).shape == (2, 200)
        model = model.to(memory_format=torch.channels_last)
        x = images().to(memory_format=torch.channels_last)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == (2, 200) and torch.isfinite(out.float()).all()


def test_inception_upsamples_inside_the_model():
    model = build_model("inception", num_classes=10, input_size=128).eval()
    seen = []
    model.net.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    with torch.no_grad():
        assert model(images()).shape == (2, 10)
    assert seen == [128]


def test_param_counts_pinned_for_the_study_layouts():
    # alexnet_reduced (3x3 convs with bias, BN = 2C, FC with bias):
    #   conv1 3*64*9+64 = 1,792 ; conv1 64*64*9+64 = 36,928 ; BN 128 ; conv2 64*128*9+128 = 73,856
    #   BN 256 ; conv3 128*256*9+256 = 295,168 ; conv3 256*256*9+256 = 590,080
    #   FC1 8*8*256*1024+1024 = 16,778,240 ; FC2 1024*1024+1024 = 1,049,600 ; out 1024*200+200
    #   = 205,000 ; total 19,031,048
    assert count_params(build_model("alexnet_reduced")) == 19_031_048
    # resnet20 (bias-free convs, BN = 2C): stem 7*7*3*64 + 128 = 9,536
    #   stage 1: block (4,096 + 36,864 + 16,384 + projection 16,384 + BN 1,280) = 75,008,
    #            block (16,384 + 36,864 + 16,384 + BN 768) = 70,400
    #   stage 2: 32,768 + 147,456 + 65,536 + 131,072 + 2,560 = 379,392 ;
    #            65,536 + 147,456 + 65,536 + 1,536 = 280,064
    #   stage 3: 131,072 + 589,824 + 262,144 + 524,288 + 5,120 = 1,512,448 ;
    #            262,144 + 589,824 + 262,144 + 3,072 = 1,117,184
    #   fc 1024*200+200 = 205,000 ; total 3,649,032
    assert count_params(build_model("resnet20")) == 3_649_032
    # resnet20_cifar (option A: parameter-free shortcuts): stem 3*16*9 + 32 = 464
    #   stage 1: 3 x (2*2,304 + 64) = 14,016 ; stage 2: (4,608 + 9,216 + 128) + 2 x (2*9,216 + 128)
    #   = 51,072 ; stage 3: (18,432 + 36,864 + 256) + 2 x (2*36,864 + 256) = 203,520
    #   fc 64*200+200 = 13,000 ; total 282,072 (269,722 with 10 classes, He et al.'s 0.27M)
    assert count_params(build_model("resnet20_cifar")) == 282_072
    assert count_params(build_model("resnet20_cifar", num_classes=10)) == 269_722


def test_count_macs_counts_what_torchs_flop_counter_counts_and_keeps_training_mode():
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), grouped, nn.Flatten())
    assert count_macs(model) == 64 * 64 * 8 * 27 + 64 * 64 * 8 * 2 * 9
    assert count_macs(model, input_size=32) == 32 * 32 * 8 * 27 + 32 * 32 * 8 * 2 * 9
    assert model.training
    for name in NAMES:  # torch's counter reports 2 flops per multiply-add
        model = build_model(name)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, 3, 32, 32))
        assert count_macs(model.train(), input_size=32) == counter.get_total_flops() // 2, name


def test_model_table_has_a_row_per_model():
    rows = model_table()
    assert [r["name"] for r in rows] == NAMES
    for r in rows:
        assert r["params"] > 0 and r["macs"] > 0 and r["provenance"] == MODELS[r["name"]].provenance


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_on_one_batch_drive_the_loss_down(name):
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # 32 px, as progressive resizing feeds them: a quarter of a 64 px step's cost
    x = images(8, size=32).to(memory_format=torch.channels_last)
    y = torch.arange(8) * 25
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    torch.manual_seed(1)
    other = build_model(name).eval()
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(model(images()), other(images()))


class ReluCalls(TorchFunctionMode):
    """Records every relu call (functional, method or module) and its inplace flag."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "relu" in getattr(func, "__name__", ""):
            self.calls.append(func.__name__.endswith("_") or bool(kwargs.get("inplace")))
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_one_relu_module_per_use_never_inplace(name):
    model = build_model(name).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    uses = Counter()
    for m in relus:
        m.register_forward_hook(lambda m, i, o: uses.update([id(m)]))
    with torch.no_grad(), ReluCalls() as mode:
        model(images())
    # every relu in the forward comes from a distinct nn.ReLU module, each called once
    assert sorted(uses.values()) == [1] * len(relus)
    assert len(mode.calls) == len(relus) and not any(mode.calls)


@pytest.mark.parametrize("name", NAMES)
def test_last_conv_is_a_spatial_map_the_logits_depend_on(name):
    model = build_model(name).eval()
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    maps = []
    last.register_forward_hook(lambda m, i, o: maps.append(o))
    out = model(images())
    (grad,) = torch.autograd.grad(out[:, 0].sum(), maps[0])
    assert maps[0].shape[-1] >= 2 and grad.abs().sum() > 0


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = build_model("baseline").eval()
    with torch.no_grad():
        assert torch.allclose(torch.compile(model)(images()), model(images()), atol=1e-4)


def test_unknown_model_or_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match="resnet20_cifar"):
        build_model("resnet21")
    with pytest.raises(ValueError, match="valid options: none"):
        build_model("resnet20", pretrained=True)
    with pytest.raises(ValueError, match="input_size"):
        build_model("inception", freeze=True)
    with pytest.raises(ValueError, match="pretrained=False"):
        build_model("inception", weights="x.pth")


def imagenet_file(path: Path, aux_logits: bool) -> dict[str, torch.Tensor]:
    """Save a random 1000-class torchvision GoogLeNet state dict, as the ImageNet file would be."""
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=1000, aux_logits=aux_logits, init_weights=False)
    with torch.no_grad():  # make every tensor distinct from a fresh model's
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = net.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def assert_backbone_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.net.state_dict()
    backbone = [k for k in state if not k.startswith(("fc.", "aux1.", "aux2."))]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)
    assert model.net.fc.out_features == 200
    assert torch.allclose(model.transform.scale.flatten(), torch.tensor([0.458, 0.448, 0.450]))
    assert not torch.equal(loaded["fc.bias"][:200], state["fc.bias"][:200])


def test_transfer_loads_a_local_weights_file_and_replaces_the_head(tmp_path):
    state = imagenet_file(tmp_path / "googlenet.pth", aux_logits=False)
    model = build_model("inception", pretrained=True, weights=str(tmp_path / "googlenet.pth"))
    assert_backbone_loaded(model, state)
    # a checkpoint reloads into a model built without the weights file, same function
    again = build_model("inception")
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = model.eval()(images())
        assert out.shape == (2, 200) and torch.equal(again.eval()(images()), out)


def test_transfer_model_computes_what_torchvision_googlenet_does(tmp_path):
    state = imagenet_file(tmp_path / "g.pth", aux_logits=True)
    ours = build_model("inception", 1000, pretrained=True, weights=str(tmp_path / "g.pth"))
    ours.net.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    # torchvision's googlenet(weights=...) builder: transform_input=True, aux heads dropped
    reference = GoogLeNet(aux_logits=True, transform_input=True, init_weights=False)
    reference.load_state_dict(state)
    reference.aux_logits, reference.aux1, reference.aux2 = False, None, None
    with torch.no_grad():
        assert torch.allclose(ours.eval()(images()), reference.eval()(images()), atol=1e-5)


def test_transfer_reads_the_hub_cache_file_with_aux_heads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = imagenet_file(tmp_path / "hub" / "checkpoints" / HUB_NAME, aux_logits=True)
    assert any(k.startswith("aux1.") for k in state)  # like the real file
    assert_backbone_loaded(build_model("inception", pretrained=True), state)


def test_missing_weights_error_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = str(tmp_path / "hub" / "checkpoints" / HUB_NAME)
    with pytest.raises(ValueError) as err:
        build_model("inception", pretrained=True, weights=str(tmp_path / "nope.pth"))
    assert "nope.pth" in str(err.value) and cached in str(err.value)
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{HUB_NAME}"
    monkeypatch.setattr(GoogLeNet_Weights.IMAGENET1K_V1.value, "url", url)
    with pytest.raises(ValueError, match=cached):  # no download can fill the cache: it says where
        build_model("inception", pretrained=True)


def test_freeze_backbone_freezes_all_but_the_head(tmp_path):
    imagenet_file(tmp_path / "g.pth", aux_logits=False)
    model = freeze_backbone(
        build_model("inception", pretrained=True, weights=str(tmp_path / "g.pth"))
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.fc.weight", "net.fc.bias"]
    groups = param_groups(model, 0.1, 0.01, 1e-4, no_decay_norm_bias=True)
    assert [(g["name"], len(g["params"])) for g in groups] == [("head", 1), ("head_no_decay", 1)]


def test_param_groups_split_head_backbone_and_no_decay():
    model = build_model("resnet20_cifar")
    groups = {g["name"]: g for g in param_groups(model, 0.1, 0.01, 5e-4, True)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["head"]["params"] == [model.fc.weight] and groups["head"]["lr"] == 0.1
    assert groups["head_no_decay"]["params"] == [model.fc.bias]
    assert groups["backbone"]["lr"] == 0.01 and groups["backbone"]["weight_decay"] == 5e-4
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.dim() == 4 for p in groups["backbone"]["params"])  # only conv weights decay
    bn = model.stem[1]
    assert any(p is bn.weight for p in groups["backbone_no_decay"]["params"])
    every = [p for g in groups.values() for p in g["params"]]
    assert len(every) == len(list(model.parameters())) == len({id(p) for p in every})
    for backbone_lr in (None, 0):
        plain = param_groups(model, 0.1, backbone_lr, 5e-4, False)
        assert [(g["name"], g["lr"], g["weight_decay"]) for g in plain] == [
            ("backbone", 0.1, 5e-4),
            ("head", 0.1, 5e-4),
        ]
    torch.optim.SGD(param_groups(model, 0.1, 0.01, 5e-4, True), lr=0.1, momentum=0.9).step()


@pytest.mark.parametrize("name", ["resnet20", "resnet18_s2"])
def test_zero_init_residual_starts_each_block_as_its_shortcut(name):
    model = build_model(name, num_classes=10)
    zero_init_residual(model, name)
    last_bns = [
        m.bn3 if hasattr(m, "bn3") else m.bn2 for m in model.modules() if hasattr(m, "shortcut")
    ]
    assert last_bns and all(bn.weight.abs().sum() == 0 for bn in last_bns)
    with pytest.raises(LabError, match="baseline has no residual blocks"):
        zero_init_residual(build_model("baseline", num_classes=10), "baseline")
