"""The ``mgr-batch`` argument parser: its sub-commands, their flags and the examples in their help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mgr_batch import __version__
from mgr_batch.cli.examples import (
    COMPACT_EXAMPLES,
    CV_EXAMPLES,
    EVALUATE_EXAMPLES,
    MODELS_EXAMPLES,
    PLOT_TIMELINE_EXAMPLES,
    REPORT_EXAMPLES,
    RETAG_EXAMPLES,
    SEGMENT_EXAMPLES,
    SIMILAR_EXAMPLES,
    TAG_EXAMPLES,
    TRAIN_EXAMPLES,
)
from mgr_batch.config import CLIP_SELECTIONS, PRECISIONS, REPRESENTATIVES, SCHEDULES

CLIPS_HELP = (
    "which clips of each song the model sees: every window (fixed, the default), those of the representative "
    "segment (AR segmentation), or random crops (training only; --crops per song)"
)
FEATURES_HELP = (
    "features preset: sample rate, clip length and features of a seed study (default: the model type's own); "
    "see 'mgr-batch models --presets'"
)


class _Deprecated(argparse.Action):
    """An old flag name: stores like the new one and says on stderr to use that one."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"mgr-batch: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _clips_flag(p: argparse.ArgumentParser) -> None:
    """``--clips`` (config ``clips.select``), and its old name ``--segmentation``, hidden from the help."""
    p.add_argument("--clips", choices=CLIP_SELECTIONS, help=CLIPS_HELP)
    p.add_argument(
        "--segmentation",
        dest="clips",
        choices=CLIP_SELECTIONS,
        action=_Deprecated,
        new="--clips",
        help=argparse.SUPPRESS,
    )


def _training_flags(p: argparse.ArgumentParser) -> None:
    """Flags train and cv share: what to train and how."""
    p.add_argument("--model-type", help="model name (see 'mgr-batch models'; default cnn)")
    p.add_argument(
        "--model-param",
        action="append",
        metavar="KEY=VALUE",
        help="model hyper-parameter (repeatable), e.g. hidden_size=64 or pretrained=MSD_musicnn",
    )
    p.add_argument("--features", help=FEATURES_HELP)
    p.add_argument("--init-from", help="checkpoint to start from (transfer learning: every layer whose shape fits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default 1e-3, or the model type's own: `mgr-batch models` lists it)",
    )
    p.add_argument("--weight-decay", type=float, help="L2 penalty (AdamW weight decay)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default cosine)")
    p.add_argument("--seed", type=int)
    p.add_argument("--hop-seconds", type=float, help="seconds between training clips (default: = clip length)")
    _clips_flag(p)
    p.add_argument("--crops", type=int, help="random crops per training song with --clips random (default 8)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (default 1)")
    p.add_argument("--cpus-per-worker", type=int, help="CPUs (torch threads) per Ray Train worker (default 1)")
    p.add_argument("--storage-path", help="Ray Train storage for run checkpoints (local or s3://); reuse to resume")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file; flags given here override it")
    p.add_argument(
        "--extensions",
        metavar=".EXT,...",
        help="file extensions a folder is searched for, comma-separated, replacing the default list (every audio "
        "container FFmpeg reads, and .mp4 .mkv .mov .webm .avi for their audio), e.g. .wav,.mp3; globs and "
        "manifests take every file they name",
    )
    p.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option (repeatable), e.g. endpoint_url=..., key=..., secret=...",
    )
    p.add_argument(
        "--address", help="join a running Ray cluster (e.g. 'auto' or ray://host:10001) instead of starting one"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show Ray's and the workers' output (decoder notes included) and debug logs",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts) instead of a summary")
    p.add_argument(
        "--progress-seconds",
        type=float,
        metavar="S",
        help="seconds between progress lines when the output is not a terminal (default 10)",
    )


def _tool_flags(p: argparse.ArgumentParser) -> None:
    """Flags the commands that only read or rewrite an output (no Ray) share."""
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec storage option (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _command(sub: Any, name: str, *, help: str, epilog: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its ``epilog`` of examples, as written."""
    return sub.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )


def _inference_flags(p: argparse.ArgumentParser) -> None:
    """Flags tag and evaluate share: how the model runs."""
    p.add_argument("--batch-size", type=int, help="clips per forward pass (default 8 on CPU, 64 on a GPU)")
    p.add_argument("--num-workers", type=int, help="inference actors in the pool, with --num-gpus (default 1)")
    p.add_argument(
        "--num-gpus",
        type=float,
        help="GPUs per inference actor (default 0: the model runs in the decode tasks, on every CPU)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="arithmetic of the pre-trained musicnn network (default auto: bfloat16 on CPUs with Intel AMX, where it "
        "is 2x faster and gave the same genres as float32 on GTZAN; float32 elsewhere)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgr-batch", description="Tag music catalogs with genres on Ray; train genre models."
    )
    parser.add_argument("--version", action="version", version=f"mgr-batch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tag = _command(
        sub,
        "tag",
        help="tag audio files with genres",
        epilog=TAG_EXAMPLES,
        description="Tag every audio file of INPUT; write songs/, clips/, errors/ Parquet tables and run.json to OUTPUT.",
    )
    tag.add_argument(
        "input", help="folder (recursive), glob, manifest (.csv/.parquet with a 'path' column), or a URL of those"
    )
    tag.add_argument("--output", "-o", required=True, help="output folder or URL")
    tag.add_argument(
        "--model",
        help="checkpoint folder or URL (default: the model shipped in the package, pre-trained "
        "MSD_musicnn + EfficientAT embeddings, song-level logistic regression, calibrated), 'musicnn-logreg': "
        "the earlier default (musicnn embeddings, clip-level), 'logmel-cnn': the packaged log-mel CNN (2.4x cheaper "
        "on CPUs with Intel AMX, 3.7x on others), 'msd-tags': musicnn's pre-trained tagger, 50 last.fm tags as independent probabilities, or "
        "'audioset-tags': EfficientAT's pre-trained AudioSet tagger, 527 sound and music classes likewise",
    )
    tag.add_argument("--clip-seconds", type=float, help="clip length in seconds (default: the model's, 3)")
    tag.add_argument("--hop-seconds", type=float, help="seconds between clip starts (default: = clip length)")
    _inference_flags(tag)
    tag.add_argument(
        "--songs-per-task",
        type=int,
        help="songs per batch of a decode/featurize task (default 16; a task runs 1 to 4 batches)",
    )
    _clips_flag(tag)
    tag.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="redo every file (default: a rerun skips files OUTPUT already holds, unchanged, for the same model)",
    )
    tag.add_argument(
        "--timeline",
        action="store_true",
        default=None,
        help="also write a timeline/ table: the model's genre probabilities at every time step of every "
        "clip (models with a belief over time, e.g. crnn); see 'mgr-batch plot-timeline'",
    )
    tag.add_argument(
        "--embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the embeddings/ table, each song's stored vector (default: on for a model on pre-trained "
        "embeddings, the shipped one included: the vector its head reads, for 'train --labels', 'retag' and "
        "similarity; another model gets MSD_musicnn's mean embedding with --embeddings); --no-embeddings skips it",
    )
    tag.add_argument(
        "--compact",
        action="store_true",
        default=None,
        help="merge the tables' parts into large sorted files at the end of the run (see 'mgr-batch compact')",
    )
    tag.add_argument(
        "--report",
        action="store_true",
        default=None,
        help="write OUTPUT/report/index.html and report.md at the end of the run (see 'mgr-batch report')",
    )
    _common(tag)

    train = _command(
        sub,
        "train",
        help="train a genre model",
        epilog=TRAIN_EXAMPLES,
        description="Train a model on labelled audio (DATA: <genre>/<file> tree or manifest with path,label[,split]).",
    )
    train.add_argument("data", help="labelled folder tree or manifest (local or URL)")
    train.add_argument("--output", "-o", required=True, help="where the final checkpoint goes (folder or URL)")
    train.add_argument("--train-list", help="file of training songs, one relative path per line (matched on the stem)")
    train.add_argument("--valid-list", help="file of validation songs")
    train.add_argument("--clip-seconds", type=float, help="clip length in seconds (default: the preset's, 3 for cnn)")
    train.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Ray Train worker")
    train.add_argument("--run-name", help="Ray Train run name (reuse with the same storage path to resume)")
    train.add_argument(
        "--labels",
        metavar="CSV_OR_COLUMN",
        help="DATA is a tag output: fit a classic head (default logreg) on its stored vectors, reading no audio; "
        "labels from a CSV (columns label and path or song_id) or a songs column (e.g. file_genre)",
    )
    train.add_argument(
        "--label-map", metavar="YAML", help="with --labels: a YAML mapping of raw values to labels; others unused"
    )
    _training_flags(train)
    _common(train)

    ev = _command(
        sub,
        "evaluate",
        help="score a model on labelled audio and write a report",
        epilog=EVALUATE_EXAMPLES,
        description="Tag labelled songs with the same graph as 'tag', then write metrics.json, "
        "per_genre.csv, songs.parquet, confusion_matrix.png and report.md to OUTPUT.",
    )
    ev.add_argument("data", help="labelled folder tree or manifest with path,label[,split] (local or URL)")
    ev.add_argument("--output", "-o", required=True, help="report folder or URL")
    ev.add_argument(
        "--model",
        help="checkpoint folder or URL (default: the shipped model; 'musicnn-logreg': the earlier "
        "default; 'logmel-cnn': the packaged CNN)",
    )
    ev.add_argument("--list", help="only the songs in this list file (one relative path per line, matched on the stem)")
    ev.add_argument("--split", help="only the manifest rows of this split (e.g. valid)")
    _clips_flag(ev)
    _inference_flags(ev)
    _common(ev)

    cv = _command(
        sub,
        "cv",
        help="K-fold cross-validation by song",
        epilog=CV_EXAMPLES,
        description="Cross-validate a model type: folds are made of songs (never clips), stratified by "
        "genre, and a group (--group-by, default artist if DATA has it, else the song) never straddles "
        "two folds. Split lists, if given, restrict DATA to the songs they name.",
    )
    cv.add_argument("data", help="labelled folder tree or manifest (local or URL)")
    cv.add_argument("--output", "-o", required=True, help="folder for per-fold models and reports, cv.json and cv.md")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--group-by", help="column whose values never straddle folds (e.g. artist)")
    cv.add_argument("--train-list", help="with --valid-list: only the songs the lists name take part")
    cv.add_argument("--valid-list")
    _training_flags(cv)
    _common(cv)

    seg = _command(
        sub,
        "segment",
        help="find each song's representative segment",
        epilog=SEGMENT_EXAMPLES,
        description="Segment songs by AR-model spectral distances between windows and normalized spectral "
        "clustering; write a segments table (song_id, start_s, end_s, cluster, is_representative), "
        "errors, and with --plot a PNG per song.",
    )
    seg.add_argument("input", help="folder (recursive), glob, manifest, or a URL of those")
    seg.add_argument("--output", "-o", required=True, help="output folder or URL")
    seg.add_argument("--plot", action="store_true", default=None, help="also write plots/<song_id>.png per song")
    seg.add_argument("--window-seconds", type=float, help="analysis window (default 2)")
    seg.add_argument("--n-clusters", type=int, help="clusters per song (default: from the eigen-gap)")
    seg.add_argument("--representative", choices=REPRESENTATIVES, help="largest cluster (default) or its longest run")
    seg.add_argument("--songs-per-task", type=int, help="songs per batch of a task (default 16; a task runs 1 to 4)")
    _common(seg)

    pt = _command(
        sub,
        "plot-timeline",
        help="draw a song's genre belief over time (from 'tag --timeline') as a PNG",
        epilog=PLOT_TIMELINE_EXAMPLES,
        description="Read OUT/timeline (written by 'tag --timeline') and draw one song's per-genre "
        "probabilities over time, stacked, titled with its path and song-level genre.",
    )
    pt.add_argument("tagged", metavar="OUT", help="a tag output folder or URL that holds timeline/ and songs/")
    pt.add_argument("--song", required=True, help="the song's song_id, or its path as listed in songs/")
    pt.add_argument("--output", "-o", required=True, help="PNG file (local path or URL) to write")
    _tool_flags(pt)

    sim = _command(
        sub,
        "similar",
        help="list the songs most like a song (cosine similarity of their stored vectors)",
        epilog=SIMILAR_EXAMPLES,
        description="Read OUT/embeddings (each song's stored vector, written by 'tag') and list the --k songs "
        "nearest the given one by cosine similarity, itself left out, among vectors of its own kind (feature_id).",
    )
    sim.add_argument("tagged", metavar="OUT", help="a tag output folder or URL that holds embeddings/")
    sim.add_argument("--song", required=True, help="the song's song_id, or its path as listed in songs/")
    sim.add_argument("--k", type=int, default=10, help="how many songs (default 10)")
    sim.add_argument("--json", action="store_true", help="print a JSON list of {path, song_id, similarity}")
    _tool_flags(sim)

    rep = _command(
        sub,
        "report",
        help="write a run report (one self-contained HTML page and report.md)",
        epilog=REPORT_EXAMPLES,
        description="Read the columns it needs from a tag (or evaluate) output and write OUT/report/"
        "index.html (figures inline, no external links or scripts) and report.md with the same figures.",
    )
    rep.add_argument("tagged", metavar="OUT", help="a tag or evaluate output folder or URL")
    rep.add_argument(
        "--songs-per-genre", type=int, help="least certain and most confident songs listed per genre (default 5)"
    )
    rep.add_argument("--timelines", type=int, help="longest songs whose clip genres are drawn over time (default 3)")
    _tool_flags(rep)

    com = _command(
        sub,
        "compact",
        help="merge each table's many small parts into few large sorted files",
        epilog=COMPACT_EXAMPLES,
        description="Merge the Parquet parts of every table of OUT into files of about --target-rows "
        "rows or --target-mb MB (clips and timeline sorted by song_id), under a commit record that "
        "keeps every moment safe; a killed compaction is finished or rolled back by the next "
        "compact or tag. Rerunning tag afterwards still skips every done song.",
    )
    com.add_argument("tagged", metavar="OUT", help="a tag output folder or URL")
    com.add_argument("--target-rows", type=int, help="rows per merged file at most (default 1000000)")
    com.add_argument("--target-mb", type=float, help="compressed megabytes per merged file at most (default 128)")
    com.add_argument("--address", help="join a running Ray cluster: the merges run there as tasks (default: here)")
    _tool_flags(com)

    retag = _command(
        sub,
        "retag",
        help="re-tag a tag output from its stored vectors with another head (no audio read)",
        epilog=RETAG_EXAMPLES,
        description="Apply a song-level head on pre-trained embeddings (the default, or one from 'train --labels') "
        "to the stored vectors of OUT (its embeddings/ table) with Ray Data, and write a songs table to --output: "
        "OUT's songs with the head's genre, probabilities and uncertain flag. A head of another feature id is refused.",
    )
    retag.add_argument("tagged", metavar="OUT", help="a tag output folder or URL with an embeddings/ table")
    retag.add_argument("--model", help="checkpoint folder or URL (default: the shipped model)")
    retag.add_argument("--output", "-o", required=True, help="output folder or URL (songs/ and run.json)")
    retag.add_argument("--address", help="join a running Ray cluster instead of starting one")
    retag.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    retag.add_argument("--json", action="store_true", help="print the result as JSON")
    _tool_flags(retag)

    models = _command(
        sub,
        "models",
        help="list the models that --model-type accepts (and the feature presets)",
        epilog=MODELS_EXAMPLES,
    )
    models.add_argument("--presets", action="store_true", help="list the feature presets that --features accepts")
    return parser
