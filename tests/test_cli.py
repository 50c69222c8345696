"""The command line: help with examples, one-line errors with a non-zero exit on bad arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mgr_batch.cli import main


def _commands() -> list[str]:
    from mgr_batch.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_help_has_examples(command, capsys):
    """Every command's --help ends with examples (the README says so)."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_models_lists_the_registry(capsys):
    from mgr_batch.models import MODELS

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "family", "features"]
    end = lines.index("")  # the model table, then the packaged models and the embedding features
    rows = {line.split()[0]: line.split() for line in lines[1:end]}
    assert set(rows) == set(MODELS)
    assert rows["cnn"][1:4] == ["neural", "logmel", "(logmel)"] and rows["svm"][1:4] == [
        "classic",
        "classic58",
        "(classic58_30s)",
    ]
    assert rows["vgg"][3] == "(logmel128)" and rows["efficientat"][1:4] == ["neural", "efficientat", "(efficientat)"]
    packaged = lines[end + 1].split(": ", 1)[1].split(", ")
    assert packaged == ["default", "musicnn-logreg", "logmel-cnn", "msd-tags", "audioset-tags"]
    kinds = [line.split()[0] for line in lines[end + 3 :]]
    assert kinds == ["efficientat_embedding", "musicnn_embedding", "stacked_embedding"]


def test_models_lists_the_presets(capsys):
    from mgr_batch.features.presets import PRESETS

    assert main(["models", "--presets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert set(PRESETS) <= set(names) and "stft4k" in names


#: YAML config files with one bad value each (a wrong type, or out of range).
BAD_CONFIGS = {
    "clip_three": "clips:\n  clip_seconds: three\n",
    "songs_zero": "inference:\n  songs_per_task: 0\n",
    "gpus_text": "inference:\n  num_gpus: one\n",
    "force_text": "force: 'yes please'\n",
    "workers_float": "inference:\n  num_workers: 2.5\n",
    "inference_list": "inference: [1, 2]\n",
    "sr_text": "audio:\n  sr: '22050'\n",
    "quality": "audio:\n  resample_quality: best\n",
    "n_fft": "features:\n  n_fft: 0\n",
    "precision": "inference:\n  precision: half\n",
}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tag", "/no/such/folder", "-o", "{tmp}/o"], "does not exist"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--model", "/no/such/model"], "no model checkpoint"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--model", "{tmp}/badckpt"], "not JSON"),
        (["train", "{tmp}", "-o", "{tmp}/o", "--model-type", "nope"], "unknown model type"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--storage-option", "novalue"], "key=value"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/missing.yaml"], "cannot read config"),
        # every config value's type and range, whether from a flag or a YAML file
        (["tag", "{tmp}", "-o", "{tmp}/o", "--clip-seconds", "0"], "clips.clip_seconds must be positive, not 0.0"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--hop-seconds", "-1"], "clips.hop_seconds must be positive"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--songs-per-task", "0"], "inference.songs_per_task must be at least 1"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--num-workers", "-3"], "inference.num_workers must be at least 1"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--batch-size", "0"], "inference.batch_size must be at least 1"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--num-gpus", "-0.5"], "inference.num_gpus must not be negative"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--num-cpus", "0"], "ray.num_cpus must be at least 1"),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--clip-seconds", "nan"], "clips.clip_seconds must be finite"),
        (
            ["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/clip_three.yaml"],
            "clips.clip_seconds must be a number, not 'three'",
        ),
        (
            ["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/songs_zero.yaml"],
            "inference.songs_per_task must be at least 1",
        ),
        (
            ["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/gpus_text.yaml"],
            "inference.num_gpus must be a number",
        ),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/force_text.yaml"], "force must be true or false"),
        (
            ["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/workers_float.yaml"],
            "inference.num_workers must be an integer, not 2.5",
        ),
        (["tag", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/inference_list.yaml"], "inference must be a mapping"),
        (
            ["evaluate", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/precision.yaml"],
            "inference.precision must be one of auto, float32, bfloat16, not 'half'",
        ),
        (
            ["train", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/sr_text.yaml"],
            "audio.sr must be an integer, not '22050'",
        ),
        (
            ["train", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/quality.yaml"],
            "audio.resample_quality must be one of",
        ),
        (["train", "{tmp}", "-o", "{tmp}/o", "--num-workers", "-3"], "num_workers must be at least 1, not -3"),
        (["train", "{tmp}", "-o", "{tmp}/o", "--epochs", "0"], "optim.epochs must be at least 1"),
        (["train", "{tmp}", "-o", "{tmp}/o", "--lr", "-0.1"], "optim.lr must not be negative"),
        (["train", "{tmp}", "-o", "{tmp}/o", "--config", "{tmp}/c/n_fft.yaml"], "features.n_fft must be at least 1"),
        (["cv", "{tmp}", "-o", "{tmp}/o", "--folds", "1"], "folds must be at least 2, not 1"),
        (["segment", "{tmp}", "-o", "{tmp}/o", "--songs-per-task", "0"], "inference.songs_per_task must be at least 1"),
        (["evaluate", "{tmp}", "-o", "{tmp}/o", "--batch-size", "-1"], "inference.batch_size must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    from audio_factory import write_tone

    write_tone(tmp_path / "g" / "a.wav", seconds=1.0)
    (tmp_path / "badckpt").mkdir()
    (tmp_path / "badckpt" / "config.json").write_text("{not json")
    (tmp_path / "c").mkdir()
    for name, text in BAD_CONFIGS.items():
        (tmp_path / "c" / f"{name}.yaml").write_text(text)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgr-batch: error:") and message in err and "\n" not in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "mgr_batch.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mgr-batch ")


def test_a_bad_config_value_fails_before_ray_starts(tmp_path):
    """``--clip-seconds 0`` is one line and exit 2 at once, not a task's ValueError after a Ray start."""
    from audio_factory import write_tone

    write_tone(tmp_path / "a.wav", seconds=1.0)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgr_batch.cli",
            "tag",
            str(tmp_path),
            "-o",
            str(tmp_path / "o"),
            "--clip-seconds",
            "0",
            "-v",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip() == "mgr-batch: error: config key clips.clip_seconds must be positive, not 0.0"
    assert not (tmp_path / "o").exists() and time.monotonic() - started < 60


def test_console_script_exits_with_the_commands_code(tmp_path):
    """``mgr-batch`` (cli.run) exits with main's code: 0 for a listing, 2 for a user error."""
    ok = subprocess.run([sys.executable, "-m", "mgr_batch.cli", "models"], capture_output=True, text=True)
    assert ok.returncode == 0 and "cnn" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mgr_batch.cli", "tag", str(tmp_path / "missing"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("mgr-batch: error:")


@pytest.mark.parametrize("command", ["tag", "train", "evaluate"])
def test_clips_flag_reaches_the_clip_config(command):
    from mgr_batch.cli import build_parser, evaluate_config, tag_config, train_config

    build = {"tag": tag_config, "train": train_config, "evaluate": evaluate_config}[command]
    args = build_parser().parse_args([command, "x", "-o", "y", "--clips", "representative"])
    assert build(args).clips.select == "representative"
    plain = build(build_parser().parse_args([command, "x", "-o", "y"]))
    assert plain.clips is None or plain.clips.select == "fixed"


@pytest.mark.parametrize("command", ["tag", "evaluate"])
def test_precision_flag_reaches_the_inference_config(command):
    from mgr_batch.cli import build_parser, evaluate_config, tag_config

    build = {"tag": tag_config, "evaluate": evaluate_config}[command]
    assert build(build_parser().parse_args([command, "x", "-o", "y"])).inference.precision == "auto"
    args = build_parser().parse_args([command, "x", "-o", "y", "--precision", "float32"])
    assert build(args).inference.precision == "float32"


@pytest.mark.parametrize(
    "command, select",
    [("tag", "representative"), ("train", "random"), ("evaluate", "representative"), ("cv", "random")],
)
def test_the_old_segmentation_flag_is_clips_with_a_warning(command, select, capsys):
    from mgr_batch.cli import build_parser, cv_config, evaluate_config, tag_config, train_config
    from mgr_batch.config import to_dict

    build = {"tag": tag_config, "train": train_config, "evaluate": evaluate_config, "cv": cv_config}[command]
    new = to_dict(build(build_parser().parse_args([command, "x", "-o", "y", "--clips", select])))
    assert capsys.readouterr().err == ""
    old = to_dict(build(build_parser().parse_args([command, "x", "-o", "y", "--segmentation", select])))
    assert capsys.readouterr().err == "mgr-batch: warning: --segmentation is deprecated; use --clips\n"
    assert old == new
    assert (new["train"] if command == "cv" else new)["clips"]["select"] == select
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert "--clips {fixed,representative,random}" in shown and "--segmentation" not in shown


def test_a_model_types_own_training_defaults_apply_unless_the_user_sets_them(tmp_path):
    from mgr_batch.cli import build_parser, train_config

    def cfg(*extra):
        return train_config(build_parser().parse_args(["train", "x", "-o", "y", *extra]))

    assert cfg("--model-type", "lstm_seq").optim.lr == 1e-2  # its registry entry's lr
    assert cfg("--model-type", "lstm_seq", "--lr", "3e-4").optim.lr == 3e-4  # a flag wins
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.005\n")
    assert cfg("--model-type", "lstm_seq", "--config", str(tmp_path / "c.yaml")).optim.lr == 0.005  # so does a file
    assert cfg("--model-type", "cnn").optim.lr == 1e-3  # the general default
