"""The trainer: run records, resume after kill -9, atomic writes, DDP, evaluate and the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lab import data, device, records, runs
from lab.cli import main
from lab.config import Config, make_config
from lab.device import resolve_device
from lab.errors import LabError
from lab.evaluate import evaluate_run, load_checkpoint_model, predict_logits, reestimate_bn
from lab.models import build_model, classifier_name
from lab.train import epoch_plan, fit, lr_factor, lr_multiplier, make_optimizer, train_size

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tiny_archive: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A cheap config on the tiny archive, writing into a fresh runs root (the baseline trains
    in half resnet20_cifar's time; tests of residual models name theirs)."""
    return Config(
        model="baseline",
        epochs=2,
        batch_size=32,
        lr=0.05,
        data=str(tiny_archive),
        cache_dir=str(tiny_cache),
        runs_root=str(tmp_path_factory.mktemp("runs")),
        quiet=True,
        train_eval_size=64,
    )


@pytest.fixture(scope="module")
def finished(base: Config) -> Path:
    """One finished two-epoch run."""
    return fit(replace(base, name="finished"))


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run `lab ARGS` in this process, as its entry point does: exit code, stdout, stderr."""
    capsys.readouterr()  # drop what was printed before
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def config_args(config: Config, *extra: str) -> list[str]:
    """The CLI options that reproduce the fields of `config` this module sets, and `extra`."""
    keys = (
        "model",
        "epochs",
        "batch_size",
        "lr",
        "data",
        "cache_dir",
        "runs_root",
        "train_eval_size",
        *extra,
    )
    args = [f"--{k.replace('_', '-')}={getattr(config, k)}" for k in keys]
    return [*args, "--quiet"]


def test_finished_run_has_the_whole_record(finished: Path, tiny_cache: Path) -> None:
    run = runs.load_run(finished)
    summary, metrics = run["summary"], run["metrics"]
    assert summary["status"] == "finished" and summary["error"] is None
    assert summary["epochs_done"] == 2 and list(metrics["epoch"]) == [1, 2]
    expected = [
        "epoch",
        "run_epochs",
        "train_loss",
        "train_top1",
        "train_size",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        "epoch_time_s",
        "images_per_s",
    ]
    assert sorted(metrics.columns) == sorted(expected)
    assert list(metrics["run_epochs"]) == [2, 2]  # the plan each epoch trained in
    for key in ("train_top1", "val_top1", "test_top1", "test_top5"):
        assert 0 <= summary[key] <= 100
    assert summary["params"] > 0 and summary["macs"] > 0 and summary["torch"] == torch.__version__
    assert run["config"]["model"] == "baseline" and run["config"]["name"] == "finished"
    test_labels = np.load(next(tiny_cache.rglob("test_labels.npy")))
    confusion = run["confusion"]
    assert confusion.shape == (4, 4) and confusion.sum() == len(test_labels)
    per_class = run["per_class"]
    assert list(per_class["count"]) == list(np.bincount(test_labels, minlength=4))
    assert per_class["correct"].sum() == np.trace(confusion)
    assert summary["test_top1"] == pytest.approx(100 * np.trace(confusion) / confusion.sum())
    predictions = run["predictions"]
    assert len(predictions) == len(test_labels) and (predictions["label"] == test_labels).all()
    assert predictions["top5"].str.split().map(len).eq(4).all()  # 4 classes: top-5 is top-4
    challenge = (finished / "challenge.txt").read_text().splitlines()
    assert challenge and all(line.split()[1] in set(per_class["wnid"]) for line in challenge)
    assert not list(finished.glob(".*.tmp")), "no temporary files left behind"


def test_tiny_data_is_learned(finished: Path) -> None:
    # Four classes of distinct colour patterns: chance is 25%.
    assert runs.read_json(finished / "summary.json")["val_top1"] > 50


def test_evaluate_recomputes_the_summary(finished: Path, capsys: pytest.CaptureFixture) -> None:
    summary = runs.read_json(finished / "summary.json")
    recomputed = evaluate_run(finished, device="cpu")
    for key, value in recomputed.items():
        assert value == pytest.approx(summary[key], abs=0.01), key
    code, out, err = cli(capsys, "evaluate", str(finished))
    assert code == 0, err
    assert "test_top1" in out


def test_bn_reestimation_averages_train_images_at_the_test_side(
    finished: Path, capsys: pytest.CaptureFixture
) -> None:
    model, config = load_checkpoint_model(finished)
    config.test_size = 80
    run = data.load_data(config, torch.device("cpu"))
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    sides, bn_inputs = [], []
    hooks = [
        model.register_forward_pre_hook(lambda m, args: sides.append(args[0].shape[-1])),
        first_bn.register_forward_pre_hook(lambda m, args: bn_inputs.append(args[0])),
    ]
    reestimate_bn(model, config, run, 40)
    for hook in hooks:
        hook.remove()
    inputs = torch.cat(bn_inputs)
    assert set(sides) == {80} and len(inputs) == min(40, len(run.images["train"]))
    # the average over the batches (one here), not a running one with momentum; on a CPU with
    # native bf16 the pass runs under autocast, so the inputs are bf16 and the statistics fp32
    expected = inputs.float().mean(dim=(0, 2, 3))
    torch.testing.assert_close(first_bn.running_mean, expected, rtol=1e-3, atol=1e-3)
    assert not model.training
    code, out, err = cli(
        capsys, "evaluate", str(finished), "--test-size", "80", "--bn-images", "40"
    )
    assert code == 0, err
    assert "at 80 px, BN on 40 images" in out and "test_top1" in out


def test_evaluate_flags_a_mismatch(finished: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished), str(copy)], check=True)
    runs.update_summary(
        copy, test_top1=0.0 if runs.read_json(copy / "summary.json")["test_top1"] else 99.0
    )
    code, _, err = cli(capsys, "evaluate", str(copy))
    assert code == 1 and "mismatch" in err


def test_resume_after_kill_gives_the_same_rows(
    base: Config, capsys, wait_for_an_epoch: Callable
) -> None:
    # With the weight average and progressive resizing, whose state must survive the kill too.
    config = replace(base, epochs=3, per_class=0, ema=0.9, min_size=32, ramp_start=0.0)
    reference = pd.read_csv(fit(replace(config, name="reference")) / "metrics.csv")
    assert list(reference["train_size"]) == [40, 56, 64]
    run_dir = Path(config.runs_root) / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "train",
            *config_args(config, "ema", "min_size", "ramp_start"),
            "--epochs=3",
            "--name=killed",
        ],
        cwd=REPO,
    )

    wait_for_an_epoch(process, run_dir, 300)
    with pytest.raises(LabError, match=f"in use by process {process.pid} "):
        runs.resume_or_clear(run_dir)  # the running process holds its folder
    process.send_signal(signal.SIGKILL)
    process.wait()
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "running", "kill -9 leaves the run looking live, not finished"
    assert summary["epochs_done"] < 3, "the run was killed before it finished"
    wall_kept = runs.load_checkpoint(run_dir, "cpu", fallback=True)["wall_s"]
    resume_started = time.time()
    code, _, err = cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    resume_wall = time.time() - resume_started
    assert code == 0, err
    resumed = pd.read_csv(run_dir / "metrics.csv")
    assert list(resumed["epoch"]) == [1, 2, 3], "no epoch lost, none doubled"
    columns = ["train_loss", "train_top1", "val_loss", "val_top1", "lr"]
    np.testing.assert_allclose(resumed[columns], reference[columns], rtol=1e-4, atol=1e-4)
    final = runs.read_json(run_dir / "summary.json")
    assert final["status"] == "finished"
    assert final["started"] == summary["started"], "the first process's start is kept"
    # wall time counts the killed process's kept epochs as well as the resumed process
    assert wall_kept < final["wall_time_s"] <= wall_kept + resume_wall


def test_checkpoint_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = runs.save_checkpoint(tmp_path, {"epoch": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "as readable as any file the user writes"

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        runs.save_checkpoint(tmp_path, {"epoch": 2, "bad": Unpicklable()})
    assert torch.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_failed_run_is_recorded_with_its_error(base: Config, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(Exception, match="nowhere.zip"):
        fit(replace(base, name="failed", data=str(missing), cache_dir=str(tmp_path / "c")))
    summary = runs.read_json(Path(base.runs_root) / "failed" / "summary.json")
    assert summary["status"] == "failed" and "nowhere.zip" in summary["error"]


def test_load_runs_lists_broken_runs(finished: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["cp", "-r", str(finished), str(root / "good")], check=True)
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "summary.json").write_text('{"status": "finis')
    table = records.load_runs(root).set_index("run")
    assert table.loc["good", "status"] == "finished"
    assert table.loc["broken", "status"] == "broken"
    assert "summary.json" in table.loc["broken", "error"]
    assert records.load_runs(tmp_path / "empty").empty


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--epochs", "-1"], "epochs must be positive"),
        (["--schedule", "sometimes"], "schedule must be one of"),
        (["--data", "/no/such/archive.zip"], "/no/such/archive.zip"),
    ],
)
def test_cli_errors_are_one_clear_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    code, _, err = cli(capsys, "train", "--runs-root", str(tmp_path / "runs"), "--quiet", *args)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_cli_train_starts_from_a_preset(base: Config, tmp_path: Path) -> None:
    # quick's values for squeezenet (lr 0.05, batch 64, flip, channel mean), except what is given
    args = ["--preset", "quick", "--model", "squeezenet", "--minutes", "0", "--epochs", "1"]
    args += ["--classes", "2"]
    args += ["--data", base.data, "--cache-dir", base.cache_dir, "--device", "cpu"]
    args += ["--runs-root", str(tmp_path), "--quiet", "--train-eval-size", "32"]
    assert main(["train", *args]) == 0
    config = json.loads((tmp_path / "quick-squeezenet" / "config.json").read_text())
    assert (config["preset"], config["lr"], config["batch_size"]) == ("quick", 0.05, 64)
    assert (config["augment"], config["normalize"]) == ("flip", "channel")
    # given options win over the preset: no time budget, one epoch
    assert (config["minutes"], config["epochs"], config["classes"]) == (0, 1, 2)
    assert main(["train", *args[:8], "--lr", "0.3", "--name", "x", *args[8:]]) == 0
    assert json.loads((tmp_path / "x" / "config.json").read_text())["lr"] == 0.3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="device 'cuda:1' asked for, but CUDA is not available"):
        resolve_device("cuda")  # under torchrun, rank 1 asks for its own GPU
    assert resolve_device("auto") == torch.device("cpu")


def test_cli_runs_and_models(finished: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", str(finished.parent)]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "alexnet_reduced" in out and "resnet18" in out


def test_runs_and_export_do_without_torch(finished: Path, tmp_path: Path) -> None:
    # reading records needs no torch: `lab runs` answers in under a second, not after its import
    script = (
        "import sys\nfrom lab.cli import main\n"
        f"assert main(['runs', {str(finished.parent)!r}]) == 0\n"
        f"assert main(['export', {str(finished.parent)!r}, {str(tmp_path / 'out')!r}]) == 0\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("torch imported: False\n")
    assert (tmp_path / "out" / finished.name / "summary.json").exists()


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 50, 1.0),
        ("step", 60, 0.1),
        ("step", 90, 0.01),
        ("cosine", 10, 1.0),
        ("cosine", 100, 0.5 * (1 + np.cos(np.pi * 90 / 100))),
        ("onecycle", 60, 0.5),
        ("constant", 4, 0.5),
    ],
)
def test_lr_schedules(schedule: str, step: int, expected: float) -> None:
    # 110 steps, the first 10 of them warmup.
    assert lr_factor(step, 110, 10, schedule) == pytest.approx(expected)


def test_warmup_leaves_half_a_short_run_to_anneal() -> None:
    # the cpu preset's 2 warmup epochs, in the 2 epochs a budget plans on a slow CPU
    short = lr_multiplier(Config(epochs=2, warmup_epochs=2.0, schedule="onecycle"), 10)
    assert short(9) == pytest.approx(1.0)  # the peak after one epoch
    assert short(19) == pytest.approx(0.1)  # the last step anneals
    long = lr_multiplier(Config(epochs=30, warmup_epochs=2.0, schedule="onecycle"), 10)
    assert long(19) == pytest.approx(1.0)  # longer runs warm up as configured


def test_every_rank_takes_the_same_whole_batches() -> None:
    assert epoch_plan(255, 256, 2) == (0, 128)  # no whole batch: fit refuses, no rank waits
    assert epoch_plan(51, 26, 2) == (1, 13)  # 26 + 25 images, but one step each
    assert epoch_plan(216, 32, 1) == (6, 32)


# `lab train ARGS` with a failure on rank 1 when it reads its data
FAIL_ON_RANK_1 = """\
import os
import sys

from lab import train
from lab.cli import main


def lost(*args, **kwargs):
    raise OSError("rank 1 lost its data")


if os.environ["RANK"] == "1":
    train.load_data = lost
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_ddp_two_processes_write_one_record(base: Config, tmp_path: Path) -> None:
    options = [*config_args(replace(base, runs_root=str(tmp_path))), "--device=cpu"]

    def torchrun(*args: str, ok: bool = True) -> str:
        """Run `torchrun ARGS` on two processes: its stderr, once it exited as `ok` says."""
        command = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            "--nproc_per_node=2",
            *args,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        # a rank with a step more than the other would wait in its all-reduce forever
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, timeout=150, env=env
        )
        assert (result.returncode == 0) == ok, result.stderr[-3000:]
        return result.stderr

    train = ("-m", "lab.cli", "train")
    torchrun(*train, *options, "--name=ddp")
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2
    assert list(pd.read_csv(tmp_path / "ddp" / "metrics.csv")["epoch"]) == [1, 2]
    assert summary["val_top1"] > 25  # learned beyond the 25% chance of four classes

    # rank 0 decides for every rank: all refuse at once, none waits in a barrier to be killed
    err = torchrun(*train, *options, "--name=ddp", ok=False)
    assert err.count("ddp: a run of that name exists") == 2, err[-3000:]
    # and picks the checkpoint to resume from: one fallback, one rename, both ranks train on it
    (tmp_path / "ddp" / "checkpoint.pt").write_bytes(b"\0" * 100)
    err = torchrun(*train, "--resume", str(tmp_path / "ddp"), "--device=cpu", "--quiet")
    assert err.count("resuming from checkpoint.prev.pt") == 1, err[-3000:]
    assert runs.read_json(tmp_path / "ddp" / "summary.json")["status"] == "finished"
    assert list(pd.read_csv(tmp_path / "ddp" / "metrics.csv")["epoch"]) == [1, 2]
    # a failure on another rank than 0 is recorded, with its rank
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1)
    torchrun(str(script), *options, "--name=ddp-failed", ok=False)
    summary = runs.read_json(tmp_path / "ddp-failed" / "summary.json")
    assert summary["status"] == "failed", summary
    assert summary["error"] == "rank 1: OSError: rank 1 lost its data"

    # 3 classes x 17 = 51 images, batch 26: ranks of 26 and 25 images, one step of 13 each; and
    # a time budget: rank 0 plans the epochs for every rank (unequal plans would hang)
    uneven = ("--classes=3", "--per-class=17", "--batch-size=26", "--minutes=0.02")
    torchrun(*train, *options, "--name=uneven", *uneven)
    summary = runs.read_json(tmp_path / "uneven" / "summary.json")
    assert summary["status"] == "finished" and summary["epochs_done"] == summary["epochs"]
    metrics = pd.read_csv(tmp_path / "uneven" / "metrics.csv")
    trained = metrics["images_per_s"] * metrics["epoch_time_s"]  # images both ranks trained on
    assert list(trained.round()) == [26] * summary["epochs"]


def test_transfer_from_a_run_to_other_classes(base: Config, finished: Path) -> None:
    # Start from the 4-class run, fine-tune the head only on classes 2 and 3.
    transfer = fit(
        replace(
            base,
            name="transfer",
            epochs=1,
            init_from=str(finished),
            first_class=2,
            classes=2,
            freeze_backbone=True,
        )
    )
    source = torch.load(finished / "checkpoint.pt")["model"]
    state = torch.load(transfer / "checkpoint.pt")["model"]
    head = [k for k in state if state[k].shape != source[k].shape]
    fc = classifier_name(build_model(base.model))
    assert head == [f"{fc}.weight", f"{fc}.bias"], "only the classifier is new (2 classes, not 4)"
    for key in state:
        if key not in head:  # weights and norm statistics alike
            assert torch.equal(state[key], source[key]), f"{key} changed though frozen"
    per_class = pd.read_csv(transfer / "per_class.csv")
    assert list(per_class["wnid"]) == list(pd.read_csv(finished / "per_class.csv")["wnid"][2:])


def test_transfer_errors_name_the_problem(base: Config, finished: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        fit(replace(base, name="t1", init_from=str(tmp_path)))
    with pytest.raises(ValueError, match="another architecture"):
        fit(replace(base, name="t2", model="resnet20_cifar", init_from=str(finished)))
    with pytest.raises(ValueError, match="data set has 4 classes"):
        fit(replace(base, name="t3", first_class=3, classes=2))


def test_sweep_overrides_are_typed_and_checked() -> None:
    from lab.cli import assignments

    values = assignments(["classes=20", "lr=0.3", "quiet=true", "per-class=5"])
    assert values == {"classes": "20", "lr": "0.3", "quiet": "true", "per_class": "5"}
    config = make_config(values)
    assert (config.classes, config.lr, config.quiet, config.per_class) == (20, 0.3, True, 5)
    with pytest.raises(ValueError, match="--set classes: expected FIELD=VALUE"):
        assignments(["classes"])
    with pytest.raises(ValueError, match="unknown Config field 'nope'"):
        make_config(assignments(["nope=1"]))
    with pytest.raises(ValueError, match="epochs must be of type int, not 'many'"):
        make_config(assignments(["epochs=many"]))
    with pytest.raises(ValueError, match="quiet must be of type bool, not 'ture'"):
        make_config(assignments(["quiet=ture"]))  # not False


def test_cli_sweep_set_errors_are_one_clear_line(tmp_path: Path, capsys) -> None:
    args = ["sweep", "--preset", "quick", "--runs-root", str(tmp_path), "--set", "quiet=ture"]
    code, _, err = cli(capsys, *args)
    assert code == 2 and not list(tmp_path.iterdir())
    assert err.strip() == "lab sweep: error: quiet must be of type bool, not 'ture'"


def test_train_help_explains_every_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lab.config import FIELDS

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help at the terminal's width
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # whitespace as one space
    for name, field in FIELDS.items():
        if name != "resume":  # --resume RUN takes a run folder instead
            assert f"{field.metadata['help']} (default: {field.default!r})" in help_text, name
    assert "--resume RUN continue this run folder" in help_text
    assert "only --device, --compile, --data, --cache-dir, --quiet may change" in help_text


def test_resume_refuses_what_it_cannot_change(finished: Path, capsys) -> None:
    from lab.config import resume_config

    code, _, err = cli(capsys, "train", "--resume", str(finished), "--epochs", "10", "--lr", "1")
    assert code == 2, err
    assert "epochs, lr cannot change on resume (only device, compile, data, cache_dir, quiet" in err
    assert len(err.strip().splitlines()) == 1
    config = resume_config(finished, {"device": "cpu", "quiet": "false"})
    assert (config.name, config.resume, config.epochs) == ("finished", True, 2)
    assert (config.device, config.quiet, config.runs_root) == ("cpu", False, str(finished.parent))


def test_export_copies_records_without_checkpoints(finished: Path, tmp_path: Path) -> None:
    (finished.parent / "table.csv").write_text("a,b\n1,2\n")
    assert main(["export", str(finished.parent), str(tmp_path / "results")]) == 0
    exported = tmp_path / "results" / finished.name
    assert sorted(p.name for p in exported.iterdir()) == sorted(runs.RECORD_FILES)
    assert (tmp_path / "results" / "table.csv").read_text() == "a,b\n1,2\n"
    assert runs.load_run(exported)["summary"] == runs.read_json(finished / "summary.json")


def test_train_size_grows_from_min_size_to_64_between_the_ramp_fractions() -> None:
    config = Config(epochs=30, min_size=32, ramp_start=0.4, ramp_end=0.85)
    sizes = [train_size(epoch, config) for epoch in range(1, 31)]
    assert sizes[:12] == [32] * 12 and sizes[25:] == [64] * 5
    assert sizes == sorted(sizes) and all(size % 8 == 0 for size in sizes)
    assert {train_size(epoch, Config(epochs=30)) for epoch in range(1, 31)} == {64}


def test_batches_resize_whole_batches() -> None:
    images = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    mean, scale = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    x, _ = next(data.batches(images, torch.zeros(6), 4, mean=mean, scale=scale, size=40))
    assert x.shape == (4, 3, 40, 40) and x.is_contiguous(memory_format=torch.channels_last)
    # antialiased bilinear: a 64 -> 32 resize of a constant image keeps the constant
    flat = torch.full((2, 64, 64, 3), 200, dtype=torch.uint8)
    x, _ = next(data.batches(flat, torch.zeros(2), 2, mean=mean, scale=scale, size=32))
    torch.testing.assert_close(x, torch.full_like(x, 200.0))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512_bf16", "avx2"}, "bf16"),
        ({"amx_bf16", "avx512_bf16"}, "bf16 with AMX"),
        ({"avx512f", "avx2"}, "fp32"),
    ],
)
def test_cpu_precision_follows_native_bf16(
    flags: set, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_info", lambda: ("Some CPU", flags))
    cpu = torch.device("cpu")
    native = expected.startswith("bf16")
    assert device.precision(cpu, amp=True) == ("bf16" if native else "fp32")
    assert device.precision(cpu, amp=False) == "fp32"
    assert device.autocast(cpu, True).fast_dtype == torch.bfloat16
    with device.autocast(cpu, True):
        assert torch.is_autocast_enabled("cpu") == native
    label = device.device_label(cpu)
    assert label.startswith("Some CPU (") and ("native bf16" in label) == native
    assert ("with AMX" in label) == expected.endswith("AMX")


def test_cpu_info_names_the_family_and_model(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 207\n"
        "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 amx_bf16\n"
    )
    real_path = device.Path
    monkeypatch.setattr(device, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert device.cpu_info.__wrapped__() == (  # past the process-wide cache
        "Intel(R) Xeon(R) Processor family 6 model 207",
        {"avx2", "amx_bf16"},
    )


def test_tta_flip_averages_the_logits_of_the_mirrored_images() -> None:
    torch.manual_seed(0)
    model = build_model("baseline", num_classes=5)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    mean, scale = torch.full((1, 3, 1, 1), 100.0), torch.full((1, 3, 1, 1), 50.0)
    plain = predict_logits(model, images, mean, scale, amp=False)
    mirrored = predict_logits(model, images.flip(2), mean, scale, amp=False)
    both = predict_logits(model, images, mean, scale, amp=False, tta_flip=True)
    torch.testing.assert_close(both, (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored)


def test_ema_run_checkpoints_the_average_and_the_raw_weights(base: Config) -> None:
    run_dir = fit(replace(base, name="ema", ema=0.5, epochs=1))
    state = torch.load(run_dir / "checkpoint.pt")
    assert state["ema_updates"] > 0 and state["raw_model"] is not None
    differs = [not torch.equal(state["model"][k], v) for k, v in state["raw_model"].items()]
    assert any(differs), "the evaluated weights are the average, not the last step's"
    summary = runs.read_json(run_dir / "summary.json")
    assert evaluate_run(run_dir)["test_top1"] == pytest.approx(summary["test_top1"], abs=0.01)


def test_recipe_knobs_train_and_evaluate_as_recorded(base: Config) -> None:
    config = replace(
        base,
        name="recipe-knobs",
        model="resnet20_cifar",  # zero_init_residual needs residual blocks
        epochs=1,
        augment="rrc",
        crop_scale=0.3,
        nesterov=True,
        zero_init_residual=True,
        test_size=80,
    )
    run_dir = fit(config)
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "finished"
    # the re-evaluation tests at the recorded side: upsampled to 80 px, as the summary was
    assert evaluate_run(run_dir)["test_top1"] == pytest.approx(summary["test_top1"], abs=0.01)
    model = build_model("resnet20_cifar", num_classes=4)
    assert make_optimizer(model, config).param_groups[0]["nesterov"] is True
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    mean, scale = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    at_64 = predict_logits(model, images, mean, scale, amp=False)
    at_80 = predict_logits(model, images, mean, scale, amp=False, size=80)
    assert at_80.shape == at_64.shape and not torch.allclose(at_80, at_64)


MMAPPED_BYTES = """
import ctypes, sys, torch
from lab.device import keep_freed_memory
fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in fields.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
activations = torch.ones(64, 64, 64, 64)  # 64 MB, as a batch's activations
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only",
)
def test_keep_freed_memory_serves_big_blocks_from_the_heap() -> None:
    """A run's big activations come from the heap, reused, not from an mmap each step."""

    def mmapped(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", MMAPPED_BYTES, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert mmapped("default") >= 64 * 2**20  # glibc's default: an mmap of its own
    assert mmapped("kept") == 0
