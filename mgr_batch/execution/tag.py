"""The tagging graph: listing -> decode+featurize (CPU tasks) -> inference (actor pool, or the same CPU
tasks when no GPU is asked for) -> Parquet."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import ray

from mgr_batch.config import ClipConfig, InferenceConfig, TagConfig, redacted, to_dict
from mgr_batch.errors import ConfigError, OutputError
from mgr_batch.execution.cache import call_cached
from mgr_batch.execution.compact import compact_output
from mgr_batch.execution.progress import Progress
from mgr_batch.execution.records import check_every_file_accounted, write_run_record
from mgr_batch.execution.runtime import DECODE_MAX_CALLS, dataset_from_listing, ray_session
from mgr_batch.execution.tally import ReportSong, SongTally, poll_tally
from mgr_batch.io import output, output_checks, storage
from mgr_batch.io.schemas import TAG_TABLES
from mgr_batch.io.writer import write_tables
from mgr_batch.models import checkpoint, model_info
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages.decode import LISTING_COLUMNS, featurize_batch
from mgr_batch.stages.predict import Embedder, Predictor, actor_split, has_timeline
from mgr_batch.stages.vectors import stored_kind

log = logging.getLogger(__name__)


def featurized(
    files,
    *,
    spec: ModelSpec,
    clip_cfg: ClipConfig,
    inference: InferenceConfig,
    storage_options: dict[str, Any] | None,
    embedding_input: bool = False,
    precision: str = "float32",
    on_song: Callable[[dict[str, Any]], None] | None = None,
) -> ray.data.Dataset:
    """Dataset of per-song rows with ``features`` (and with ``embedding_input`` musicnn's input of the same
    clips; see :func:`mgr_batch.stages.decode.featurize_batch`). For a model on pre-trained embeddings whose network
    runs in the inference actors (``inference.embed_in_actor``), ``features`` is the network's log-mel.
    Pre-trained networks in the decode tasks run in ``precision`` (tagging passes ``inference.precision``;
    training keeps float32, the features its models are fitted on)."""
    split = actor_split(spec.features, sr=spec.audio.sr) if embeds_in_actor(spec, inference) else None
    feature_cfg = split.INPUT_FEATURES if split is not None else spec.features
    ds = dataset_from_listing(files, songs_per_task=inference.songs_per_task)
    return ds.map_batches(
        featurize_batch,
        fn_kwargs=dict(
            audio=spec.audio,
            clip_cfg=clip_cfg,
            feature_cfg=feature_cfg,
            storage_options=storage_options,
            precision=precision,
            **({"embedding_input": True} if embedding_input else {}),
            **({"on_song": on_song} if on_song is not None else {}),
        ),
        batch_size=inference.songs_per_task,
        batch_format="numpy",
        **DECODE_TASK,
    )


#: Remote arguments of the decode tasks. Every stage given exactly these joins the decode tasks: Ray Data
#: fuses consecutive task stages whose remote arguments are equal into one task.
DECODE_TASK = {"num_cpus": 1, "max_calls": DECODE_MAX_CALLS}


def write_task_args(inference: InferenceConfig) -> dict[str, Any]:
    """Remote arguments of the write tasks behind an actor pool: a quarter CPU, and a bounded pool, so that
    Ray Data's resource budget leaves the CPUs they do not use to the decode tasks (an unbounded stage is
    handed every CPU no other stage claims, and short write tasks never use them)."""
    return {"num_cpus": 0.25, "compute": ray.data.TaskPoolStrategy(size=max(2, inference.num_workers))}


def in_decode_tasks(spec: ModelSpec, inference: InferenceConfig) -> bool:
    """Whether the model runs in the decode tasks rather than an actor pool (``inference.in_decode_tasks``).

    On CPU the fused task is what keeps every core busy: with separate decode, inference and write stages,
    Ray Data's resource budget split the CPUs among them and, on 2 CPUs, let only one decode task run at a
    time (benchmarks/results/throughput.md), and each batch crossed the object store twice.
    """
    if inference.in_decode_tasks is not None:
        return inference.in_decode_tasks
    return inference.num_gpus == 0 and not embeds_in_actor(spec, inference)


def embeds_in_actor(spec: ModelSpec, inference: InferenceConfig) -> bool:
    """Whether the pre-trained network of a ``musicnn_embedding`` or ``efficientat_embedding`` model runs in
    the inference actors."""
    in_actor = inference.num_gpus > 0 if inference.embed_in_actor is None else inference.embed_in_actor
    return in_actor and actor_split(spec.features, sr=spec.audio.sr) is not None


def predicted(
    ds: ray.data.Dataset,
    *,
    model: str | None,
    inference: InferenceConfig,
    storage_options: dict[str, Any] | None,
    timeline: bool = False,
    vectors: bool = False,
) -> ray.data.Dataset:
    """Adds ``clip_probs`` (and with ``timeline`` the per-step columns, see :class:`Predictor`) with an
    actor pool that loads the model once per actor, or, with ``inference.in_decode_tasks``, in the decode
    tasks, which load it once per worker process (:func:`mgr_batch.execution.cache.call_cached`).

    A CPU actor reserves no CPU (``num_cpus=0``): it works only when decode tasks hand it a batch, so
    reserving a whole CPU for it left that CPU idle most of the time (with 2 CPUs only one decode task
    could run) and deadlocked a 1-CPU Ray (the actor held the only CPU, no decode task could start).
    Its share of the CPUs is taken from the decode tasks by the OS; if it falls behind, Ray Data's
    backpressure pauses decoding. A GPU actor keeps Ray Data's default of one CPU to feed the GPU.
    """
    kwargs = dict(
        model_uri=model,
        storage_options=storage_options,
        batch_size=inference.batch_size,
        timeline=timeline,
        precision=inference.precision,
        vectors=vectors,
    )
    return _model_stage(ds, Predictor, kwargs, inference)


def embedded(ds: ray.data.Dataset, *, spec: ModelSpec, inference: InferenceConfig) -> ray.data.Dataset:
    """Adds each song's musicnn ``embedding`` (see :class:`Embedder`), where :func:`predicted` runs its model."""
    return _model_stage(ds, Embedder, {"sr": spec.audio.sr, "clip_seconds": spec.clips.clip_seconds}, inference)


def _model_stage(
    ds: ray.data.Dataset, stage: type, kwargs: dict[str, Any], inference: InferenceConfig
) -> ray.data.Dataset:
    """``stage(**kwargs)`` over ``ds``'s batches of songs: built once per worker process in the decode tasks
    (``inference.in_decode_tasks``, on CPU), or once per actor of a pool (0 CPUs, or ``num_gpus`` each)."""
    if inference.in_decode_tasks:
        # freeze_gc: the worker keeps its modules and the model until it is recycled (see call_cached).
        fn_kwargs = dict(stage=stage, kwargs=dict(kwargs, device="cpu"), freeze_gc=True)
        return ds.map_batches(
            call_cached, fn_kwargs=fn_kwargs, batch_size=inference.songs_per_task, batch_format="numpy", **DECODE_TASK
        )
    return ds.map_batches(
        stage,
        fn_constructor_kwargs=kwargs,
        batch_size=inference.songs_per_task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=inference.num_workers),
        num_gpus=inference.num_gpus or None,
        **({} if inference.num_gpus else {"num_cpus": 0}),
    )


def tag_files(
    files: pd.DataFrame,
    *,
    spec: ModelSpec,
    model: str | None,
    clip_cfg: ClipConfig,
    inference: InferenceConfig,
    output: str,
    storage_options: dict[str, Any] | None,
    timeline: bool = False,
    embeddings: bool = False,
    desc: str = "tag",
) -> dict[str, Any]:
    """Run the tagging graph over listed ``files`` (inside a Ray session); returns the counts.

    Writes songs/, clips/ and errors/ (and with ``timeline``, timeline/; with ``embeddings``, embeddings/)
    under ``output``; fails if any file is missing from both songs and errors. The embeddings of a head on
    pre-trained embeddings are the vectors it reads (:func:`stored_kind`, added by the :class:`Predictor`);
    any other model's are MSD_musicnn's (the :class:`Embedder`).
    """
    inference = dataclasses.replace(inference, in_decode_tasks=in_decode_tasks(spec, inference))
    vectors = embeddings and stored_kind(spec) is not None
    tally = SongTally.remote()
    ds = featurized(
        files,
        spec=spec,
        clip_cfg=clip_cfg,
        inference=inference,
        storage_options=storage_options,
        embedding_input=embeddings and not vectors,
        precision=inference.precision,
        on_song=ReportSong(tally),
    )
    if embeddings and not vectors:
        ds = embedded(ds, spec=spec, inference=inference)
    try:
        return tag_featurized(
            ds,
            len(files),
            spec=spec,
            model=model,
            clip_cfg=clip_cfg,
            inference=inference,
            output=output,
            storage_options=storage_options,
            timeline=timeline,
            vectors=vectors,
            desc=desc,
            poll=poll_tally(tally),
        )
    finally:
        ray.kill(tally)


def tag_featurized(
    ds: ray.data.Dataset,
    n_files: int,
    *,
    spec: ModelSpec,
    model: str | None,
    clip_cfg: ClipConfig,
    inference: InferenceConfig,
    output: str,
    storage_options: dict[str, Any] | None,
    timeline: bool = False,
    vectors: bool = False,
    desc: str = "tag",
    poll: Callable[[], tuple[int, int, float] | None] | None = None,
) -> dict[str, Any]:
    """The rest of the tagging graph (inference, tables) over already featurized songs (``desc`` names the
    progress bar, ``poll`` gives it the songs decoded so far, see :class:`Progress`; ``vectors``: the Predictor
    adds each song's stored vector)."""
    inference = dataclasses.replace(inference, in_decode_tasks=in_decode_tasks(spec, inference))
    ds = predicted(
        ds, model=model, inference=inference, storage_options=storage_options, timeline=timeline, vectors=vectors
    )
    ds = ds.map_batches(
        write_tables,
        fn_kwargs=dict(
            output=output,
            genres=spec.genres,
            model_id=spec.model_id,
            clip_seconds=clip_cfg.clip_seconds,
            storage_options=storage_options,
            uncertain_below=spec.uncertain_below,
        ),
        batch_size=None,
        batch_format="numpy",
        **(DECODE_TASK if inference.in_decode_tasks else write_task_args(inference)),
    )
    totals: Counter = Counter()
    error_types: Counter = Counter()
    with Progress(n_files, desc=desc, poll=poll) as progress:
        for row in _summaries(ds):  # one small summary row per written batch, as it is written
            for key in ("n_songs", "n_errors", "n_clips", "n_timeline_steps", "n_embeddings", "audio_s"):
                totals[key] += row[key]
            error_types.update(json.loads(row["error_types"]))
            progress.update(
                files=int(row["n_songs"] + row["n_errors"]), errors=int(row["n_errors"]), audio_s=float(row["audio_s"])
            )
    counts = {
        "n_songs": int(totals["n_songs"]),
        "n_errors": int(totals["n_errors"]),
        "n_clips": int(totals["n_clips"]),
        "n_timeline_steps": int(totals["n_timeline_steps"]),
        "n_embeddings": int(totals["n_embeddings"]),
        "errors_by_type": dict(sorted(error_types.items())),
        "audio_seconds": round(float(totals["audio_s"]), 3),
    }
    check_every_file_accounted(n_files, counts["n_songs"], counts["n_errors"])
    return counts


def _summaries(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """``ds.iter_rows()``, as the rows come; a task that failed on storage (its error's cause an ``OSError`` or another error of
    :func:`storage.read_errors`, e.g. a full disk or an S3 server that went away) fails the run with an
    :class:`OutputError` that says so; any other error is a bug and propagates as it is."""
    ds.context.raise_original_map_exception = True  # the OSError itself, not a UserCodeException without its cause
    try:
        yield from ds.iter_rows()
    except ray.exceptions.RayTaskError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, storage.read_errors()):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None:
            raise
        raise OutputError(
            f"the run stopped: {type(cause).__name__}: {cause}; every part written so far is whole, "
            "and a rerun on the same output completes it"
        ) from exc


def run_tag(cfg: TagConfig) -> dict[str, Any]:
    """Tag every audio file under ``cfg.input``; writes songs/, clips/, errors/ (timeline/ with
    ``cfg.timeline``, embeddings/ with ``cfg.embeddings``, by default for a head on pre-trained embeddings),
    run.json, config.yaml.

    Rerunning on the same output does only what is missing: files already tagged (or failed) unchanged
    by the same model are skipped, changed ones are redone with their old rows pruned (``force`` redoes
    everything).
    """
    started = time.time()
    so = cfg.storage_options
    spec = checkpoint.load_spec(cfg.model, so)  # fail fast, on the driver, for a bad --model
    if cfg.timeline and not has_timeline(model_info(spec.model.name).build):
        raise ConfigError(
            f"--timeline needs a model with a genre belief per time step (e.g. crnn); "
            f"{spec.model_id} is a {spec.model.name!r} model, which has none"
        )
    # The model fixes the clip length; the hop is the user's (back-to-back clips unless told otherwise).
    clip_cfg = cfg.clips or ClipConfig(clip_seconds=spec.clips.clip_seconds)
    with ThreadPoolExecutor(1) as background:
        if not cfg.force:  # the output is read while the input is listed (both mostly wait on the filesystem)
            output_checks.check_same_clips(cfg.output, clip_cfg, so)
            opened = background.submit(output.open_for_run, cfg.output, so)
        listing = storage.list_inputs(cfg.input, so, extensions=cfg.extensions)
        if cfg.force:  # only once the input is known to be there
            output.clear(cfg.output, so)
            opened = background.submit(output.open_for_run, cfg.output, so)
        tables = opened.result()
    files = listing.files[list(LISTING_COLUMNS)]
    if listing.ignored:
        kinds = ", ".join(f"{k} {n}" for k, n in listing.ignored_kinds.items())
        log.warning(
            "skipping %d non-audio file(s) in %s (%s), e.g. %s",
            len(listing.ignored),
            cfg.input,
            kinds,
            listing.ignored[0],
        )
    # The stored vectors: by default for a head on pre-trained embeddings (--no-embeddings skips them).
    embeddings = cfg.embeddings if cfg.embeddings is not None else stored_kind(spec) is not None
    require = (("timeline",) if cfg.timeline else ()) + (("embeddings",) if embeddings else ())
    tables, todo = output.start_run(tables, files, spec.model_id, require=require)
    counts = dict.fromkeys(("n_songs", "n_errors", "n_clips", "n_timeline_steps", "n_embeddings"), 0)
    counts.update(errors_by_type={}, audio_seconds=0.0)
    if len(todo.todo):
        with ray_session(cfg.ray):
            counts = tag_files(
                todo.todo,
                spec=spec,
                model=cfg.model,
                clip_cfg=clip_cfg,
                inference=cfg.inference,
                output=cfg.output,
                storage_options=so,
                timeline=cfg.timeline,
                embeddings=embeddings,
            )
    totals = output.end_run(tables, files, spec.model_id, (*TAG_TABLES, *require), spec.genres, wrote=len(todo.todo))
    summary = {
        "model_id": spec.model_id,
        "input": cfg.input,
        "output": cfg.output,
        "n_files": len(files),
        "n_skipped": todo.skipped,
        "n_processed": len(todo.todo),
        "this_run": counts,
        "n_songs": totals["songs"],
        "n_errors": totals["errors"],
        "n_clips": totals["clips"],
        "n_timeline_steps": totals["timeline"],
        "n_embeddings": totals["embeddings"],
        "errors_by_type": tables.errors_by_type(),
        "audio_seconds": counts["audio_seconds"],
        "ignored_non_audio_files": len(listing.ignored),
        "ignored_by_kind": listing.ignored_kinds,
        "wall_seconds": round(time.time() - started, 3),
        "clips": to_dict(clip_cfg),
        "config": to_dict(redacted(cfg)),
    }
    write_run_record(cfg.output, summary, cfg, so)
    if cfg.compact is not None:
        summary["compaction"] = compact_output(cfg.output, so, cfg.compact, cfg.ray)
    if cfg.report:
        from mgr_batch.evaluation.run_report import build as build_report

        summary["report"] = build_report(cfg.output, so)["report"]
    return summary
