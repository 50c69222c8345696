"""The settings of every command as frozen dataclasses, with their defaults and the reasons for them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mgr_batch.errors import ConfigError

GTZAN_GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)

#: What a folder walk takes as audio (``--extensions`` replaces it): every audio container libsndfile or FFmpeg
#: reads that a catalog plausibly holds, and the video containers whose first audio stream is tagged (one
#: without audio gets an error row). Globs and manifests take every file they name, whatever its extension;
#: whether a file is audio is decided by its content.
AUDIO_EXTENSIONS = (
    # libsndfile first (FFmpeg when libsndfile stops early)
    *(".wav", ".w64", ".rf64", ".flac", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".mp3", ".mp2"),
    # Ogg (Vorbis, Opus, Speex, FLAC in Ogg): FFmpeg first
    *(".ogg", ".oga", ".opus", ".spx"),
    # FFmpeg
    *(".m4a", ".m4b", ".aac", ".wma", ".wv", ".ape", ".mpc", ".tta", ".dsf", ".dff", ".ac3", ".amr", ".mka"),
    # video containers: their audio stream
    *(".webm", ".mp4", ".mkv", ".mov", ".avi"),
)

#: A file extension as ``--extensions`` takes it: a dot, then letters, digits and ``._+-``.
_EXTENSION = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_extensions(extensions: tuple[str, ...]) -> None:
    """Reject an empty list, or a value that is not a file extension (``wav``, ``*.wav``, ``.``)."""
    if not extensions:
        raise ConfigError("extensions must name at least one file extension, e.g. .wav,.mp3")
    for ext in extensions:
        if not _EXTENSION.fullmatch(ext):
            raise ConfigError(f"extensions: {ext!r} is not a file extension (a dot, then letters or digits: .wav)")


@dataclass(frozen=True)
class AudioConfig:
    """How bytes become a waveform: every song is decoded to mono float32 at ``sr`` Hz."""

    sr: int = 22050
    #: Only the first ``max_duration`` seconds of a file are decoded (bounds memory for very long files).
    max_duration: float = 1800.0
    #: A file whose peak deviation from its mean stays below this is rejected as silent.
    silence_threshold: float = 1e-4
    #: soxr quality for resampling ("HQ", "VHQ", "MQ", "LQ", "QQ").
    resample_quality: str = "HQ"


#: Neighbour rank whose distance, median over windows, is the default adjacency scale of the segmentation
#: (Zelnik-Manor and Perona's self-tuning spectral clustering uses the 7th neighbour as a point's local scale).
DEFAULT_SCALE_NEIGHBOURS = 7
REPRESENTATIVES = ("cluster", "longest_run")
CLIP_SELECTIONS = ("fixed", "representative", "random")
FEATURE_SCALES = ("db", "log", "log1p", "linear")
SCHEDULES = ("cosine", "constant", "cyclic", "onecycle")


@dataclass(frozen=True)
class SegmentationConfig:
    """Parameters of the AR/spectral-clustering segmentation (seconds unless a name says otherwise).

    The defaults were chosen on concatenated GTZAN excerpts (``benchmarks/segmentation.py``); the study's
    exact procedure is ``scale=1.0, min_segment_seconds=0.0`` with its own window, order and lag settings.
    """

    #: Analysis window length; 2 s gives stabler AR fits than 1 s and a quarter of the pairs.
    window_seconds: float = 2.0
    #: Seconds between window starts; ``None`` means back-to-back windows (hop = window).
    hop_seconds: float | None = None
    #: AR model order p.
    order: int = 16
    #: Highest residual autocorrelation lag M in the SEM.
    max_lag: int = 32
    #: Analysis sample rate (Hz): songs at a higher rate are resampled (soxr HQ) to it, never upsampled;
    #: ``None`` analyzes at the song's own rate. 11025 Hz keeps the spectral envelope up to 5.5 kHz, where
    #: 16 poles are well spent, and halves the autocorrelation cost of 22050 Hz.
    sr: int | None = 11025
    #: Number of clusters; ``None`` takes it at the largest eigen-gap among 1..``k_max``.
    n_clusters: int | None = None
    k_max: int = 8
    #: Distance scale of the adjacency ``exp(-(S / scale)^2)``; ``1.0`` is the study's adjacency.
    #: ``None`` (default) adapts it to the song: the median, over windows, of the distance to their
    #: ``scale_neighbours``-th nearest window, so each window has a few neighbours with A above exp(-1).
    #: (The median of all distances is dominated by cross-part pairs in a song of several parts and merged
    #: parts on concatenated GTZAN excerpts: boundary F 0.66 against 0.77 for this.)
    scale: float | None = None
    scale_neighbours: int = DEFAULT_SCALE_NEIGHBOURS
    #: Runs of one cluster shorter than this are merged into the neighbouring run they are most adjacent to
    #: (0: keep every run, as the study does; raw window labels flicker, which multiplies the boundaries).
    min_segment_seconds: float = 10.0
    #: ``"cluster"``: every window of the largest cluster; ``"longest_run"``: its longest contiguous run.
    representative: str = "cluster"
    #: ``random_state`` of k-means.
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.window_seconds > 0:
            raise ConfigError(f"segmentation window_seconds must be positive, not {self.window_seconds}")
        if self.hop_seconds is not None and not self.hop_seconds > 0:
            raise ConfigError(f"segmentation hop_seconds must be positive, not {self.hop_seconds}")
        if self.order < 1 or self.max_lag < 1:
            raise ConfigError(f"segmentation order and max_lag must be >= 1, not {self.order} and {self.max_lag}")
        if self.sr is not None and self.sr <= 0:
            raise ConfigError(f"segmentation sr must be positive, not {self.sr}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ConfigError(f"segmentation n_clusters must be >= 1, not {self.n_clusters}")
        if self.k_max < 1:
            raise ConfigError(f"segmentation k_max must be >= 1, not {self.k_max}")
        if self.scale is not None and not self.scale > 0:
            raise ConfigError(f"segmentation scale must be positive, not {self.scale}")
        if self.scale_neighbours < 1:
            raise ConfigError(f"segmentation scale_neighbours must be >= 1, not {self.scale_neighbours}")
        if self.min_segment_seconds < 0:
            raise ConfigError(f"segmentation min_segment_seconds must be >= 0, not {self.min_segment_seconds}")
        if self.representative not in REPRESENTATIVES:
            raise ConfigError(
                f"segmentation representative must be one of {REPRESENTATIVES}, not {self.representative!r}"
            )

    @property
    def hop(self) -> float:
        return self.window_seconds if self.hop_seconds is None else self.hop_seconds


@dataclass(frozen=True)
class ClipConfig:
    """How a song is cut into clips: fixed windows of ``clip_seconds`` every ``hop_seconds``.

    ``select="representative"`` keeps only the clips inside the song's representative segment
    (:mod:`mgr_batch.clips.segmentation`, parameters in ``segmentation``); ``"fixed"`` keeps every window;
    ``"random"`` takes ``crops`` windows at random offsets (seeded by the song id), a training-time
    augmentation: songs that are tagged or evaluated always get fixed windows.
    """

    clip_seconds: float = 3.0
    #: Seconds between clip starts; ``None`` means back-to-back clips (hop = clip).
    hop_seconds: float | None = None
    select: str = "fixed"
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    #: Random crops per song with ``select="random"``.
    crops: int = 8

    def __post_init__(self) -> None:
        if self.select not in CLIP_SELECTIONS:
            raise ConfigError(f"clip selection must be one of {CLIP_SELECTIONS}, not {self.select!r}")
        if self.crops < 1:
            raise ConfigError(f"crops must be >= 1, not {self.crops}")

    @property
    def hop(self) -> float:
        return self.clip_seconds if self.hop_seconds is None else self.hop_seconds


@dataclass(frozen=True)
class FeatureConfig:
    """What a clip becomes before the model (librosa's names); per clip an array (n_features, n_steps).

    ``kind`` is one of :data:`mgr_batch.features.registry.FEATURES`: ``logmel``, ``stft``, ``mfcc``, ``raw``,
    ``classic58``, ``classic58_seq`` (and ``musicnn_embedding``). ``scale`` turns power into the model's
    input: ``db`` (10 log10), ``log`` (natural log, the 2 s crop study's log(X^2)), ``log1p``
    (log10(1 + 10000 X), musicnn's) or ``linear`` (magnitude).
    """

    kind: str = "logmel"
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    scale: str = "db"
    #: MFCC coefficients (``kind="mfcc"``).
    n_mfcc: int = 20
    #: Seconds per feature vector in a ``classic58_seq`` sequence (3, 6 or 9 in the LSTM study).
    window_seconds: float = 3.0
    #: Free parameters of a feature kind (e.g. which pre-trained network makes an embedding).
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale not in FEATURE_SCALES:
            raise ConfigError(f"feature scale must be one of {FEATURE_SCALES}, not {self.scale!r}")
        if min(self.n_fft, self.hop_length, self.n_mels, self.n_mfcc) < 1 or not self.window_seconds > 0:
            raise ConfigError("n_fft, hop_length, n_mels, n_mfcc and window_seconds must be positive")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build and its hyper-parameters."""

    name: str = "cnn"
    params: dict[str, Any] = field(default_factory=dict)
    #: Transfer learning: a checkpoint whose weights start training wherever names and shapes match
    #: (every layer but a head of another size).
    init_from: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Training hyper-parameters."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    #: Learning-rate schedule: ``cosine`` (per epoch), ``constant``, ``cyclic`` (triangular between lr/10
    #: and lr, ``cycle_epochs`` per cycle) or ``onecycle`` (warm up to lr, then anneal), stepped per batch.
    schedule: str = "cosine"
    cycle_epochs: float = 2.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")


@dataclass(frozen=True)
class RayConfig:
    """Where to run: ``address=None`` starts an embedded local Ray."""

    address: str | None = None
    num_cpus: int | None = None


#: What ``InferenceConfig.precision`` accepts.
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class InferenceConfig:
    """The inference actor pool."""

    batch_size: int | None = None  # clips per forward pass; None: 8 on CPU, 64 on a GPU
    num_workers: int = 1  # actors in the pool
    num_gpus: float = 0.0  # GPUs per actor
    #: Songs per batch of the decode/featurize tasks (the features a task holds at a time). A task runs one
    #: to a few batches, fewer as the run nears its end (``execution.runtime.task_rows``): Ray Data's
    #: executor notices a finished task only every 0.1-0.2 s, during which its CPU idles. 16 songs ran the
    #: 10x benchmark catalog on 2 CPUs about 10% faster than 8 when each task was one batch (paired runs).
    songs_per_task: int = 16
    #: Where a model on pre-trained embeddings (``musicnn_embedding``, ``efficientat_embedding``) runs the pre-trained network: in the
    #: inference actors (True: on their GPUs; the decode tasks only compute its log-mel) or in the decode
    #: tasks (False: spread over every CPU). None: in the actors exactly when they have GPUs.
    embed_in_actor: bool | None = None
    #: Where the model runs: in the decode tasks (True: each CPU task worker loads it once and reads, decodes,
    #: featurizes, predicts and writes its batch in one task, no actor; what a CPU-only run needs to keep all
    #: its cores busy) or in the actor pool (False). None: in the decode tasks exactly when no GPU is asked
    #: for and the pre-trained network of an embedding model is not sent to the actors (``embed_in_actor``).
    in_decode_tasks: bool | None = None
    #: Arithmetic of the pre-trained musicnn networks: ``"float32"``, ``"bfloat16"``, or ``"auto"``: bfloat16 on
    #: CPUs that compute it natively (Intel AMX or AVX512_BF16), float32 elsewhere (:mod:`mgr_batch.models.precision`; EfficientAT
    #: always runs in float32, and so does the ``--embeddings`` table of a model not on embeddings). Each worker resolves ``"auto"`` on its own CPU.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"inference.precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.in_decode_tasks and (self.num_gpus > 0 or self.embed_in_actor):
            raise ConfigError(
                "inference.in_decode_tasks runs the model on CPU tasks: it cannot be combined with "
                "num_gpus or embed_in_actor, which need the actor pool"
            )


@dataclass(frozen=True)
class CompactConfig:
    """How ``mgr-batch compact`` (and ``tag --compact``) merges parts: files of about ``target_rows`` rows or
    ``target_mb`` megabytes (compressed), whichever comes first."""

    target_rows: int = 1_000_000
    target_mb: float = 128.0

    def __post_init__(self) -> None:
        if self.target_rows < 1 or self.target_mb <= 0:
            raise ConfigError(
                f"compact targets must be positive (target_rows={self.target_rows}, target_mb={self.target_mb})"
            )


@dataclass(frozen=True)
class TagConfig:
    """Everything ``mgr-batch tag`` needs."""

    input: str = ""
    output: str = ""
    model: str | None = None  # checkpoint dir or URL; None = the shipped model
    force: bool = False  # redo every file (default: skip files the output already holds unchanged)
    timeline: bool = False  # also write the timeline table (per-step genre belief; models with a timeline only)
    #: Write the embeddings table: each song's stored vector. None: exactly for a head on pre-trained embeddings
    #: (the vector it reads); True for another model: MSD_musicnn's mean embedding; False: none.
    embeddings: bool | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    clips: ClipConfig | None = None  # None = the model's own clip settings
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    compact: CompactConfig | None = None  # merge the tables' parts at the end of the run (tag --compact)
    report: bool = False  # write OUT/report/ at the end of the run (tag --report)
    #: What a folder walk takes as audio (``--extensions``); globs and manifests take every file they name.
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS

    def __post_init__(self) -> None:
        check_extensions(self.extensions)


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``mgr-batch train`` needs."""

    data: str = ""
    output: str = ""
    train_list: str | None = None
    valid_list: str | None = None
    storage_path: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    run_name: str = "mgr-batch-train"
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    genres: tuple[str, ...] | None = None  # None = the sorted labels found in DATA
    #: The features preset (mgr_batch.features.presets.PRESETS) the sample rate, clips and features came from.
    preset: str | None = None
    audio: AudioConfig = field(default_factory=AudioConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    #: What a folder walk takes as audio (``--extensions``); globs and manifests take every file they name.
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS

    def __post_init__(self) -> None:
        check_extensions(self.extensions)


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything ``mgr-batch evaluate`` needs."""

    data: str = ""
    output: str = ""
    model: str | None = None
    list: str | None = None  # only songs named in this list file (matched on the stem)
    split: str | None = None  # only rows of the manifest with this split
    clips: ClipConfig | None = None  # None = the model's clip length, back-to-back clips
    storage_options: dict[str, Any] = field(default_factory=dict)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    #: What a folder walk takes as audio (``--extensions``); globs and manifests take every file they name.
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS

    def __post_init__(self) -> None:
        check_extensions(self.extensions)


@dataclass(frozen=True)
class SegmentConfig:
    """Everything ``mgr-batch segment`` needs."""

    input: str = ""
    output: str = ""
    plot: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    audio: AudioConfig = field(default_factory=AudioConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # only songs_per_task is used
    ray: RayConfig = field(default_factory=RayConfig)
    #: What a folder walk takes as audio (``--extensions``); globs and manifests take every file they name.
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS

    def __post_init__(self) -> None:
        check_extensions(self.extensions)


@dataclass(frozen=True)
class CVConfig:
    """Everything ``mgr-batch cv`` needs: the per-fold training config plus the fold layout."""

    folds: int = 5
    #: Column whose values never straddle folds (e.g. artist); default: the song's file stem.
    group_by: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
