"""Records to trust: checkpoints that would run code, resumes of another experiment, run names
that are paths, and two processes at one run folder."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lab import runs
from lab.cli import main
from lab.config import Config
from lab.errors import LabError
from lab.train import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished one-epoch run (do not modify it: copy it)."""
    return fit(replace(tiny_config, runs_root=str(tmp_path_factory.mktemp("runs")), name="rec"))


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Run `lab ARGS` in this process: the exit code and the one line of stderr."""
    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return code, err


class RunsCode:
    """A pickled object whose loading runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def test_a_checkpoint_that_would_run_code_is_refused(
    record: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "runs" / "planted"
    shutil.copytree(record, run)
    marker = tmp_path / "pwned"
    planted = run / "checkpoint.pt"
    shutil.copy(planted, run / "checkpoint.prev.pt")  # a sound one to fall back to
    evil = {"model": RunsCode(f"touch {marker}"), "epoch": 1, "num_classes": 4}
    torch.save(evil, planted)
    saved = planted.read_bytes()

    code, err = cli(capsys, "evaluate", str(run))
    assert code == 2 and f"{planted}: refused: loading it would call posix.system" in err

    code, err = cli(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 2 and f"{planted}: refused" in err
    # not replaced by the previous checkpoint: it is left for a look
    assert planted.read_bytes() == saved and (run / "checkpoint.prev.pt").exists()
    assert runs.read_json(run / "summary.json")["status"] == "failed"

    data = runs.read_json(record / "config.json")
    code, err = cli(
        capsys,
        "train",
        f"--init-from={planted}",
        "--model=baseline",
        "--batch-size=24",
        f"--data={data['data']}",
        f"--cache-dir={data['cache_dir']}",
        f"--runs-root={tmp_path / 'runs'}",
        "--name=started-from-it",
        "--quiet",
    )
    assert code == 2 and f"{planted}: refused" in err
    assert not marker.exists(), "the pickle's command never ran"


def test_a_lab_checkpoint_loads_as_weights_only(record: Path) -> None:
    state = torch.load(record / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng_cpu", "config"} <= set(state)
    assert state["config"]["name"] == "rec"


def test_resume_of_another_experiment_is_refused(record: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "short"
    shutil.copytree(record, run)
    before = {name: (run / name).read_bytes() for name in runs.RECORD_FILES}
    config = runs.read_json(run / "config.json")
    recorded = Config(**{**config, "runs_root": str(run.parent), "name": run.name, "resume": True})
    # the notebook, a sweep and transfer build their config afresh: here epochs, lr and schedule
    longer = replace(recorded, epochs=3, lr=0.5, schedule="cosine")
    with pytest.raises(LabError) as refused:
        fit(longer)
    assert (
        f"{run}: a resume cannot change the experiment (epochs 1 recorded, 3 given; "
        "lr 0.05 recorded, 0.5 given; schedule 'constant' recorded, 'cosine' given)"
    ) in str(refused.value)
    assert before == {name: (run / name).read_bytes() for name in runs.RECORD_FILES}
    fit(replace(recorded, device="cpu"))  # what a resume may change, it may change
    assert runs.read_json(run / "summary.json")["status"] == "finished"


@pytest.mark.parametrize("name", ["..", "{tmp}/elsewhere", "a/b", ".hidden"])
def test_a_run_name_is_one_folder(
    name: str, tiny_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    name = name.format(tmp=tmp_path)
    root = tmp_path / "deep" / "runs"
    args = [f"--data={tiny_config.data}", f"--cache-dir={tiny_config.cache_dir}", "--quiet"]
    code, err = cli(capsys, "train", f"--runs-root={root}", f"--name={name}", *args)
    assert code == 2 and "name must be one folder name" in err and repr(name) in err
    assert list(tmp_path.iterdir()) == [], "nothing written, in the runs root or outside it"


HOLD = """\
import sys
from lab import runs
lock = runs.lock_run(sys.argv[1])
runs.update_summary(sys.argv[1], status="running")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_folder_is_held_by_one_process(
    record: Path, tiny_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # another process has just started the run: no checkpoint yet
    run = tmp_path / "starting"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout.readline() == "held\n"
    summary = (run / "summary.json").read_text()
    in_use = re.escape(f"{run}: in use by process {holder.pid} on ")
    with pytest.raises(LabError, match=in_use):
        runs.resume_or_clear(run)  # a sweep or transfer rerun would have deleted it
    with pytest.raises(LabError, match=in_use):
        fit(replace(tiny_config, runs_root=str(tmp_path), name="starting"))
    assert (run / "summary.json").read_text() == summary, "the holder's record is untouched"
    # once it has a checkpoint, a resume would interleave its epochs with the holder's
    for name in ("config.json", "checkpoint.pt"):
        shutil.copy(record / name, run)
    code, err = cli(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 2 and err == f"lab train: error: {run}: in use by process {holder.pid} " + (
        f"on {socket.gethostname()}; wait for it to end or stop it"
    )
    assert (run / "summary.json").read_text() == summary
    holder.communicate("")  # it ends, and its lock with it
    assert runs.resume_or_clear(run) == "resume"


WRITE = """\
import sys
from lab import runs
print("ready", flush=True)
sys.stdin.readline()
for i in range(100):
    runs.update_summary(sys.argv[1], **{f"{sys.argv[2]}{i}": i})
"""


def test_summary_updates_of_two_processes_are_all_kept(tmp_path: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE, str(tmp_path), key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for key in ("a", "b")
    ]
    assert all(writer.stdout.readline() == "ready\n" for writer in writers)
    for writer in writers:  # both at once
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert all(writer.wait(timeout=120) == 0 for writer in writers)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {f"{key}{i}" for key in "ab" for i in range(100)} <= set(summary)
