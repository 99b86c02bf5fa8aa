"""The ImageNet GoogLeNet weights as torchvision gives them: downloaded from a local HTTP server
on 127.0.0.1 (never the internet) into a temporary torch hub cache; `lab weights`; presets."""

import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights

from lab.cli import main, parser
from lab.errors import LabError
from lab.models import build_model
from lab.models.inception import download_weights, hub_weights_file, weights_status
from lab.presets import preset_values


class Server:
    """Files served over HTTP on 127.0.0.1; `cut` ones stop halfway, past their stated length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[str] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                served.requests.append(self.path)
                body = served.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = self.path.lstrip("/") in served.cut
                self.wfile.write(body[: len(body) // 2] if cut else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, blob: bytes, name: str = "") -> str:
        """Serve blob under its hash name (or `name`); its URL."""
        name = name or f"googlenet-{hashlib.sha256(blob).hexdigest()[:10]}.pth"
        self.files[name] = blob
        return f"{self.url}/{name}"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A local server, and an empty torch hub cache under tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = Server()
    thread = threading.Thread(target=served.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()
    thread.join()


def use_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point torchvision's GoogLeNet_Weights.IMAGENET1K_V1 at url (its value is not frozen)."""
    monkeypatch.setattr(GoogLeNet_Weights.IMAGENET1K_V1.value, "url", url)


def saved(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as the bytes of a .pth file."""
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def small_state() -> bytes:
    return saved({"weight": torch.arange(4096.0)})


def cache_files() -> list[str]:
    """Every file in the hub's checkpoints folder, partial downloads included."""
    folder = hub_weights_file().parent
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_pretrained_inception_downloads_the_weights_into_the_hub_cache(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=1000, aux_logits=False, init_weights=False)
    state = net.state_dict()
    blob = saved(state)
    url = server.add(blob)
    use_url(monkeypatch, url)
    assert main(["weights"]) == 0
    assert "not cached" in capsys.readouterr().out

    model = build_model("inception", pretrained=True)
    cached = hub_weights_file()
    assert cached.name == url.rsplit("/", 1)[1] and cached.read_bytes() == blob
    assert cache_files() == [cached.name]  # no partial file left beside it
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k.startswith("conv1."))
    assert model.net.fc.out_features == 200 and isinstance(model.net.fc, nn.Linear)

    build_model("inception", pretrained=True)  # from the cache: no second request
    assert server.requests == ["/" + cached.name]
    assert main(["weights"]) == 0
    assert "cached, hash checked" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_bad_download_is_refused_and_not_cached(
    server: Server, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    blob = small_state()
    url = server.add(blob)
    name = url.rsplit("/", 1)[1]
    if damage == "corrupted":  # the same length, one byte changed: only the hash tells
        server.files[name] = blob[:-9] + bytes([blob[-9] ^ 1]) + blob[-8:]
    else:
        server.cut.add(name)
    use_url(monkeypatch, url)
    with pytest.raises(LabError, match=r"invalid hash value.*nothing was cached") as error:
        download_weights(progress=False)
    assert str(hub_weights_file()) in str(error.value) and "\n" not in str(error.value)
    assert cache_files() == []
    assert "not cached" in weights_status()


def test_a_refused_connection_gives_the_offline_message(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with socket.socket() as probe:  # a port that nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use_url(monkeypatch, f"http://127.0.0.1:{port}/googlenet-1378be20.pth")
    assert main(["weights", "--download"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab weights: error: GoogLeNet ImageNet weights: downloading")
    assert "Connection refused" in err and "\n" not in err
    assert f"copy that file to {hub_weights_file()} or pass --weights FILE" in err
    with pytest.raises(LabError, match="Connection refused"):
        build_model("inception", pretrained=True)
    assert cache_files() == []


def test_lab_weights_downloads_once_and_names_a_damaged_cache_file(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    use_url(monkeypatch, server.add(small_state()))
    assert main(["weights", "--download"]) == 0
    assert main(["weights", "--download"]) == 0  # already there: nothing fetched
    assert len(server.requests) == 1
    assert capsys.readouterr().out.count("cached, hash checked") == 2
    hub_weights_file().write_bytes(b"copied by hand, cut short")
    assert main(["weights"]) == 0
    assert "is damaged" in capsys.readouterr().out


def test_presets_fine_tune_inception_whenever_the_weights_are_there(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_url(monkeypatch, server.add(small_state()))
    for preset in ("paper", "best"):
        assert "pretrained" not in preset_values(preset, "inception")
        assert preset_values(preset, "inception", weights=True)["pretrained"]
    assert preset_values("best", "inception", weights=True)["input_size"] == 128
    download_weights(progress=False)  # as `lab weights --download` before a sweep
    assert preset_values("paper", "inception")["pretrained"]
    best = preset_values("best", "inception")
    assert best["pretrained"] and best["input_size"] == 128
    assert "pretrained" not in preset_values("best", "resnet20")
    assert server.requests == [server.requests[0]]  # the presets never download


def test_every_argument_of_every_command_says_what_it_is() -> None:
    commands = parser()._subparsers._group_actions[0].choices  # argparse's own table
    for name, command in commands.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"lab {name} {action.dest}: no help"
            if not action.option_strings:  # shown by name: RUNS_ROOT, not a bare runs_root
                assert action.metavar or "_" not in action.dest, f"lab {name} {action.dest}"
