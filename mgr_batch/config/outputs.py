"""Configuration of the commands that work on a tag output's tables, not on audio: ``report``, ``train OUT
--labels`` and ``retag``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgr_batch.config.settings import ModelConfig, RayConfig
from mgr_batch.errors import ConfigError


@dataclass(frozen=True)
class ReportConfig:
    """What ``mgr-batch report`` shows: ``songs_per_genre`` least certain and most confident songs per genre,
    ``timelines`` of the longest songs."""

    songs_per_genre: int = 5
    timelines: int = 3

    def __post_init__(self) -> None:
        if self.songs_per_genre < 0 or self.timelines < 0:
            raise ConfigError("report songs_per_genre and timelines must be >= 0")


@dataclass(frozen=True)
class LabelsTrainConfig:
    """Everything ``mgr-batch train OUT --labels SPEC`` needs: a classic head fitted on OUT's stored vectors."""

    tagged: str = ""  # a tag output with an embeddings table
    #: A CSV file (columns ``label`` and ``path`` or ``song_id``) or a column of OUT's songs table (e.g. file_genre).
    labels: str = ""
    label_map: str | None = None  # a YAML mapping of raw values to labels; unmapped values are not used
    output: str = ""  # the checkpoint folder
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="logreg"))
    seed: int = 0
    #: Cross-validation folds (of whole songs, or albums where OUT knows them); fewer when a label has fewer.
    folds: int = 5
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labels:
            raise ConfigError("train --labels needs a CSV file or a songs column")
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2, not {self.folds}")


@dataclass(frozen=True)
class RetagConfig:
    """Everything ``mgr-batch retag OUT --model CKPT --output OUT2`` needs."""

    tagged: str = ""  # a tag output with an embeddings table
    model: str | None = None  # a song-level head on pre-trained embeddings; None: the shipped default
    output: str = ""
    storage_options: dict[str, Any] = field(default_factory=dict)
    ray: RayConfig = field(default_factory=RayConfig)
    #: Stored vectors per batch of the head (and rows per written songs part at most).
    rows_per_batch: int = 65536
    #: Partitions of the join of predictions with the songs rows (at most one per songs part).
    join_partitions: int = 16

    def __post_init__(self) -> None:
        if self.rows_per_batch < 1 or self.join_partitions < 1:
            raise ConfigError("retag rows_per_batch and join_partitions must be >= 1")
