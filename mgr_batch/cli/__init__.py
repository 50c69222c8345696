"""The ``mgr-batch`` command: parse flags, build a config, hand it to the execution layer."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
from typing import Any, NoReturn

from mgr_batch.cli.configs import (
    compact_config,
    cv_config,
    evaluate_config,
    labels_train_config,
    report_config,
    retag_config,
    segment_config,
    storage_options,
    tag_config,
    train_config,
)
from mgr_batch.cli.parser import build_parser
from mgr_batch.errors import ConfigError, MgrBatchError, OutputError

__all__ = [
    "COMMANDS",
    "build_parser",
    "cv_config",
    "evaluate_config",
    "list_models",
    "main",
    "run",
    "segment_config",
    "tag_config",
    "train_config",
]


def _evaluate_shown(result: dict[str, Any]) -> dict[str, Any]:
    """What ``evaluate`` prints: the model and the report's headline metrics."""
    from mgr_batch.evaluation.report import HEADLINE_METRICS

    return {k: result[k] for k in ("model_id", *HEADLINE_METRICS)}


#: command -> (module, function, config builder, what of its result to print); modules load lazily.
COMMANDS = {
    "tag": ("mgr_batch.execution.tag", "run_tag", tag_config, lambda r: {k: v for k, v in r.items() if k != "config"}),
    "train": (
        "mgr_batch.execution.train",
        "run_train",
        train_config,
        lambda r: {k: v for k, v in r.items() if k != "history"},
    ),
    "evaluate": (
        "mgr_batch.execution.evaluate",
        "run_evaluate",
        evaluate_config,
        _evaluate_shown,
    ),
    "cv": (
        "mgr_batch.execution.evaluate",
        "run_cv",
        cv_config,
        lambda r: {k: v for k, v in r.items() if k != "per_fold"},
    ),
    "segment": (
        "mgr_batch.execution.segment",
        "run_segment",
        segment_config,
        lambda r: {k: v for k, v in r.items() if k != "config"},
    ),
    "train-labels": ("mgr_batch.execution.relabel", "run_train_labels", labels_train_config, lambda r: r),
    "retag": ("mgr_batch.execution.retag", "run_retag", retag_config, lambda r: r),
}


def list_models(*, presets: bool = False) -> None:
    """Print the model table (name, family, input features, study, description), or the presets."""
    from mgr_batch.features.presets import PRESETS, default_preset
    from mgr_batch.features.registry import all_kinds
    from mgr_batch.models import MODELS
    from mgr_batch.models.checkpoint import BUILTIN_MODELS, PACKAGED_MODELS

    if presets:
        for p in PRESETS.values():
            print(f"{p.name:<18} sr={p.audio['sr']:<6} clip={p.clips['clip_seconds']:<5} {p.features}  # {p.study}")
        return
    print(f"{'name':<16} {'family':<8} {'features (default preset)':<32} {'study':<44} description")
    for info in sorted(MODELS.values(), key=lambda m: (m.family, m.name)):
        features = f"{info.features} ({default_preset(info.name, info.features)})"
        own = "".join(f" [default {k} {v}]" for k, v in info.optim.items())
        print(f"{info.name:<16} {info.family:<8} {features:<32} {info.study:<44} {info.description}{own}")
    print(f"\npackaged models (tag/evaluate --model): {', '.join([*PACKAGED_MODELS, *BUILTIN_MODELS])}")
    print("pre-trained embedding features (train --features PRESET, or features.kind):")
    kinds = all_kinds()
    for kind in sorted(k for k in kinds if k.endswith("_embedding")):
        print(f"  {kind:<22} {kinds[kind].description}")


def _quiet_or_verbose(args: argparse.Namespace) -> None:
    """Quiet by default: warnings only, and Ray's and the workers' output in the Ray session's log files
    (see :mod:`mgr_batch.execution.progress`); ``-v`` shows it all, with debug logs."""
    from mgr_batch.execution.progress import SETTINGS

    verbose = getattr(args, "verbose", False)
    SETTINGS.verbose = verbose
    seconds = getattr(args, "progress_seconds", None)
    if seconds is not None:
        if seconds <= 0:
            raise MgrBatchError(f"--progress-seconds must be > 0, got {seconds}")
        SETTINGS.interval_s = seconds
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _require_tables(out: str, so: dict[str, Any]) -> None:
    """OUT must hold a tag output (songs/ or errors/), or an evaluate output's tags/."""
    from mgr_batch.io import storage

    fs, root = storage.filesystem(out, so)
    if not any(
        fs.exists(storage.join(root, *sub)) for sub in (("songs",), ("errors",), ("tags", "songs"), ("tags", "errors"))
    ):
        raise ConfigError(f"{out!r} holds no songs/ or errors/ table (is it a tag or evaluate output?)")


def _plot_timeline(args: argparse.Namespace) -> None:
    from mgr_batch.plots.timeline import plot_timeline

    so = storage_options(args.storage_option)
    print(json.dumps(plot_timeline(args.tagged, song=args.song, png=args.output, storage_options=so), indent=2))


def _similar(args: argparse.Namespace) -> None:
    from mgr_batch.io.similar import similar, similar_lines

    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}")
    so = storage_options(args.storage_option)
    _require_tables(args.tagged, so)
    found = similar(args.tagged, song=args.song, k=args.k, storage_options=so)
    print(json.dumps(found, indent=2) if args.json else "\n".join(similar_lines(found)))


def _report(args: argparse.Namespace) -> None:
    from mgr_batch.evaluation.run_report import build as build_report

    cfg = report_config(args)
    so = storage_options(args.storage_option)
    _require_tables(args.tagged, so)
    print(json.dumps(build_report(args.tagged, so, cfg), indent=2))


def _compact(args: argparse.Namespace) -> None:
    from mgr_batch.config import RayConfig
    from mgr_batch.execution.compact import compact_output

    cfg = compact_config(args)
    so = storage_options(args.storage_option)
    _require_tables(args.tagged, so)
    result = compact_output(args.tagged, so, cfg, RayConfig(address=args.address))
    print(json.dumps(result, indent=2))


def _job(args: argparse.Namespace) -> None:
    """One of :data:`COMMANDS`: build its config, run it, print its summary (or its result as JSON)."""
    command = "train-labels" if args.command == "train" and args.labels else args.command
    module, runner, build, shown = COMMANDS[command]
    result = getattr(importlib.import_module(module), runner)(build(args))
    if args.json:
        print(json.dumps(shown(result), indent=2, default=str))
    elif command in ("train-labels", "retag"):
        from mgr_batch.execution import relabel, retag

        print("\n".join((relabel.train_summary if command == "train-labels" else retag.retag_summary)(result)))
    else:
        from mgr_batch.execution.summary import SUMMARIES

        print("\n".join(SUMMARIES[args.command](result, args.output)))


#: commands that read or list what is there, run in this process; every other command is a :func:`_job`.
TOOLS = {
    "models": lambda args: list_models(presets=args.presets),
    "plot-timeline": _plot_timeline,
    "similar": _similar,
    "report": _report,
    "compact": _compact,
}


def main(argv: list[str] | None = None) -> int:
    """Run one ``mgr-batch`` command: 0 when done, 1 when the run failed (a rerun completes it), 2 for bad input."""
    args = build_parser().parse_args(argv)
    try:
        _quiet_or_verbose(args)
        TOOLS.get(args.command, _job)(args)
    except OutputError as exc:  # the run itself failed (not its arguments): exit 1, and a rerun completes it
        print(f"mgr-batch: error: {exc}", file=sys.stderr)
        return 1
    except MgrBatchError as exc:
        print(f"mgr-batch: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None = None) -> NoReturn:
    """The ``mgr-batch`` command: :func:`main`, then exit with its code (``os._exit``).

    Before the interpreter shuts down, every object still alive moves to the cyclic GC's permanent
    generation (``gc.freeze``), which its shutdown collections skip: they would otherwise walk every
    object of every imported module, 0.5-0.7 s of a ``tag`` run with torch loaded (README, Throughput).
    Memory is the OS's to reclaim by then. :func:`main` stays free of this, for callers in a process
    that goes on.
    """
    code = main(argv)
    gc.freeze()
    # Then leave without the interpreter's teardown: every output is written and closed and Ray is shut
    # down by now, and a native thread pool torn down at exit could abort a finished run ("terminate called
    # without an active exception", exit -6, seen once after a complete ``compact``).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
