"""Config checks: every bad value refused before any work, naming the field and its range; the
CLI's one-line errors for the lab's own errors and OS errors, tracebacks for bugs."""

import re
from pathlib import Path

import pytest

from lab import cli
from lab.config import EXPERIMENT_FIELDS, FIELDS, RESUME_FIELDS, make_config
from lab.errors import LabError
from lab.models import model_names
from lab.presets import PRESETS
from lab.records import NOT_THE_EXPERIMENT


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number, not nan"),
        ({"lr": "NaN"}, "lr must be a finite number"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number, not inf"),
        ({"momentum": "Infinity"}, "momentum must be a finite number"),
        ({"ramp_end": float("nan")}, "ramp_end must be a finite number"),
        ({"momentum": 1.0}, "momentum must be in [0, 1), not 1.0"),
        ({"label_smoothing": 5}, "label_smoothing must be in [0, 1), not 5.0"),
        ({"ema": -0.5}, "ema must be in [0, 1)"),
        ({"min_size": 7}, "min_size must be a multiple of 8 from 32 to 64, not 7"),
        ({"min_size": 30}, "min_size must be a multiple of 8 from 32 to 64, not 30"),
        ({"min_size": 72}, "min_size must be a multiple of 8 from 32 to 64"),
        ({"train_eval_size": 0}, "train_eval_size must be positive"),
        ({"test_size": 0}, "test_size must be positive"),
        ({"crop_scale": 0.0}, "crop_scale must be in (0, 1], not 0.0"),
        ({"crop_scale": 1.5}, "crop_scale must be in (0, 1]"),
        ({"grad_clip": -1.0}, "grad_clip must not be negative"),
        ({"name": ".."}, "name must be one folder name"),
        ({"name": "/tmp/x"}, "name must be one folder name"),
        ({"name": "a/b"}, "name must be one folder name"),
        ({"name": ".hidden"}, "name must be one folder name"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values: dict, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        make_config({"model": "baseline", **values})


def test_several_problems_are_named_in_one_message() -> None:
    with pytest.raises(LabError) as error:
        make_config({"lr": float("nan"), "min_size": 30, "train_eval_size": 0})
    assert len(str(error.value).splitlines()) == 1
    assert all(f in str(error.value) for f in ("lr", "min_size", "train_eval_size"))


def test_good_values_pass() -> None:
    config = make_config({"momentum": 0.0, "label_smoothing": 0.2, "min_size": 40, "name": "a-1.b"})
    assert (config.min_size, config.name) == (40, "a-1.b")


def test_field_kinds_give_the_resume_and_seed_group_lists() -> None:
    assert set(RESUME_FIELDS) == {"device", "compile", "quiet", "data", "cache_dir"}
    assert {"seed", "lr", "epochs", "model", "preset"} <= set(EXPERIMENT_FIELDS)
    assert not set(RESUME_FIELDS) & set(EXPERIMENT_FIELDS)
    assert set(NOT_THE_EXPERIMENT) == {"seed", *(set(FIELDS) - set(EXPERIMENT_FIELDS))}


def test_every_preset_value_is_a_config_field() -> None:
    for name, preset in PRESETS.items():
        assert set(preset) <= {"models", "config", "per_model", "with_weights"}, name
        per_model = {**preset["per_model"], **preset.get("with_weights", {})}
        assert set(per_model) <= set(model_names()), f"preset {name}: unknown models"
        for values in [preset["config"], *per_model.values()]:
            unknown = set(values) - set(FIELDS)
            assert not unknown, f"preset {name}: unknown fields {unknown}"
        for model in preset["models"]:
            make_config({"preset": name, "model": model})  # every value of the right type


def test_os_errors_on_the_users_paths_are_one_line(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    code = cli.main(["train", "--runs-root", str(a_file), "--name", "x", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lab train: error:") and len(err.splitlines()) == 1
    assert str(a_file) in err


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def bug(*args: object) -> None:
        raise ValueError("a bug inside a library")

    monkeypatch.setattr(cli.records, "load_runs", bug)
    with pytest.raises(ValueError, match="a bug inside a library"):
        cli.main(["runs", str(tmp_path)])


def test_epochs_given_override_a_presets_minutes() -> None:
    budgeted = make_config({"preset": "quick", "model": "baseline"})
    assert budgeted.minutes > 0
    assert make_config({"preset": "quick", "model": "baseline", "epochs": 2}).minutes == 0
    both = make_config({"preset": "quick", "model": "baseline", "epochs": 2, "minutes": 1.5})
    assert (both.epochs, both.minutes) == (2, 1.5)
