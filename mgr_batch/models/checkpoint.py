"""Self-describing model checkpoints: ``model.pt`` (a state dict) plus ``config.json`` (everything else)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import nn

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, ModelConfig, from_dict, to_dict
from mgr_batch.errors import CheckpointError, ConfigError, InputNotFoundError
from mgr_batch.features.registry import feature_shape
from mgr_batch.io import storage
from mgr_batch.models import build_model, model_info
from mgr_batch.models.classic import ClassicModel

WEIGHTS = "model.pt"
#: Fitted scikit-learn pipelines of classic models (skops format: no pickle).
CLASSIC_WEIGHTS = "model.skops"
CONFIG = "config.json"
FORMAT_VERSION = 1
DEFAULT_MODEL = "default"
#: Checkpoint folders shipped in the package (under ``assets/``), by ``--model`` name.
PACKAGED_MODELS = {DEFAULT_MODEL: "default_model", "musicnn-logreg": "musicnn_logreg", "logmel-cnn": "logmel_cnn"}
#: Built-in models that need no checkpoint folder (their weights ship with the package), by ``--model`` name.
BUILTIN_MODELS = ("msd-tags", "audioset-tags")


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a trained model except its weights."""

    genres: tuple[str, ...]
    audio: AudioConfig
    clips: ClipConfig
    features: FeatureConfig
    model: ModelConfig
    model_id: str = ""
    #: How outputs become probabilities: ``softmax`` (one genre per clip) or ``sigmoid`` (multi-label tags).
    activation: str = "softmax"
    train: dict[str, Any] = field(default_factory=dict)  # data manifest hash, command, hyper-parameters
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Fitted by training by cross-validation inside the training songs (see :mod:`mgr_batch.evaluation.calibration`):
    #: ``temperature`` (probabilities become softmax(log p / T)) and ``uncertain_below`` (the certainty under
    #: which a song is flagged ``uncertain``); empty for a model without them. Its ``out_of_fold`` figures (ECE,
    #: flagged share, accuracy of the rest) are measured on the rows both were fitted on: in-sample for them.
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float | None:
        t = self.calibration.get("temperature")
        return None if t is None else float(t)

    @property
    def uncertain_below(self) -> float | None:
        t = self.calibration.get("uncertain_below")
        return None if t is None else float(t)

    @property
    def input_shape(self) -> tuple[int, int]:
        return feature_shape(sr=self.audio.sr, clip_seconds=self.clips.clip_seconds, cfg=self.features)

    @property
    def family(self) -> str:
        """``neural`` (a torch module) or ``classic`` (a scikit-learn pipeline)."""
        return model_info(self.model.name).family

    def build(self) -> nn.Module | ClassicModel:
        return build_model(
            self.model.name, n_classes=len(self.genres), input_shape=self.input_shape, params=self.model.params
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "genres": list(self.genres),
            "audio": to_dict(self.audio),
            "clips": to_dict(self.clips),
            "features": to_dict(self.features),
            "model": to_dict(self.model),
            "activation": self.activation,
            "train": self.train,
            "metrics": self.metrics,
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                genres=tuple(data["genres"]),
                audio=from_dict(AudioConfig, data["audio"]),
                clips=from_dict(ClipConfig, data["clips"]),
                features=from_dict(FeatureConfig, data["features"]),
                model=from_dict(ModelConfig, data["model"]),
                model_id=data.get("model_id", ""),
                activation=data.get("activation", "softmax"),
                train=data.get("train", {}),
                metrics=data.get("metrics", {}),
                calibration=dict(data.get("calibration") or {}),
            )
        except (KeyError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"checkpoint config is not valid: {exc}") from None


def weights_bytes(model: nn.Module) -> bytes:
    return weights_bytes_of(model.state_dict())


def weights_bytes_of(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as ``torch.save`` bytes (CPU tensors)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def model_id_for(name: str, weights: bytes) -> str:
    """Deterministic model id: the model name plus a hash of its weights."""
    return f"{name}-{hashlib.sha256(weights).hexdigest()[:12]}"


def save(
    directory: str, model: nn.Module | ClassicModel, spec: ModelSpec, storage_options: dict[str, Any] | None = None
) -> ModelSpec:
    """Write the weights (``model.pt``, or ``model.skops`` for a classic model) and ``config.json`` under
    ``directory`` (local or URL); returns the spec with its id."""
    classic = isinstance(model, ClassicModel)
    weights = model.to_bytes() if classic else weights_bytes(model)
    spec = dataclasses.replace(spec, model_id=model_id_for(spec.model.name, weights))
    storage.write_bytes_atomic(
        storage.join(directory, CLASSIC_WEIGHTS if classic else WEIGHTS), weights, storage_options
    )
    text = json.dumps(spec.to_json(), indent=2, sort_keys=False)
    storage.write_bytes_atomic(storage.join(directory, CONFIG), text.encode(), storage_options)
    return spec


def packaged_model_dir(name: str) -> str:
    """The folder of the packaged checkpoint ``name`` (a key of :data:`PACKAGED_MODELS`)."""
    return str(resources.files("mgr_batch") / "assets" / PACKAGED_MODELS[name])


def resolve(uri: str | None) -> str:
    """The checkpoint directory a ``--model`` value names: None or "default" is the shipped default model,
    "musicnn-logreg" the earlier default (MSD_musicnn clip embeddings, clip-level logistic regression),
    "logmel-cnn" the packaged from-scratch CNN; anything else is a folder or URL."""
    if uri in (None, ""):
        uri = DEFAULT_MODEL
    return packaged_model_dir(uri) if uri in PACKAGED_MODELS else uri


def builtin_spec(name: str) -> ModelSpec:
    """The spec of built-in model ``name``: ``msd-tags`` is musicnn's pre-trained MSD_musicnn tagger, its
    50 last.fm tags as independent (sigmoid) probabilities, on the ``musicnn`` preset's input;
    ``audioset-tags`` is EfficientAT's mn04_as, its 527 AudioSet classes likewise, on the ``efficientat``
    preset's (10 s clips of 32 kHz Kaldi log-mel)."""
    if name not in BUILTIN_MODELS:
        raise CheckpointError(f"unknown built-in model {name!r} (known: {', '.join(BUILTIN_MODELS)})")
    from mgr_batch.features.presets import preset

    if name == "audioset-tags":
        from mgr_batch.models.efficientat import DEFAULT_PRETRAINED, audioset_labels
        from mgr_batch.models.efficientat import pretrained_path as efficientat_path

        audio, clips, features = preset("efficientat").apply(AudioConfig(), ClipConfig(), FeatureConfig())
        weights = efficientat_path(DEFAULT_PRETRAINED).read_bytes()
        return ModelSpec(
            genres=audioset_labels(),
            audio=audio,
            clips=clips,
            features=features,
            model=ModelConfig(name="efficientat", params={"pretrained": DEFAULT_PRETRAINED}),
            model_id=model_id_for(name, weights),
            activation="sigmoid",
            train={
                "source": "EfficientAT mn04_as (v0.0.1), pre-trained on AudioSet's 527 classes "
                "(Schmid et al., 2023); not trained here"
            },
        )
    from mgr_batch.models.musicnn import pretrained_path
    from mgr_batch.models.musicnn_tags import MSD_TAGS

    audio, clips, features = preset("musicnn").apply(AudioConfig(), ClipConfig(), FeatureConfig())
    weights = pretrained_path("MSD_musicnn").read_bytes()
    return ModelSpec(
        genres=MSD_TAGS,
        audio=audio,
        clips=clips,
        features=features,
        model=ModelConfig(name="musicnn", params={"pretrained": "MSD_musicnn"}),
        model_id=model_id_for(name, weights),
        activation="sigmoid",
        train={
            "source": "musicnn 0.1.0 MSD_musicnn, pre-trained on the Million Song Dataset's "
            "last.fm tags (Pons and Serra, 2019); not trained here"
        },
    )


def load_spec(uri: str | None, storage_options: dict[str, Any] | None = None) -> ModelSpec:
    """Read only a checkpoint's ``config.json`` (or a built-in model's spec)."""
    if uri in BUILTIN_MODELS:
        return builtin_spec(uri)
    directory = resolve(uri)
    try:
        text = storage.read_text(storage.join(directory, CONFIG), storage_options)
    except InputNotFoundError:
        raise CheckpointError(f"no model checkpoint at {directory!r} (expected {CONFIG} and {WEIGHTS})") from None
    try:
        return ModelSpec.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint config {directory!r} is not JSON: {exc}") from None


def _read_weights(directory: str, name: str, storage_options: dict[str, Any] | None) -> bytes:
    fs, path = storage.filesystem(storage.join(directory, name), storage_options)
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint {directory!r} has no {name}")
    with fs.open(path, "rb") as f:
        return f.read()


def load(
    uri: str | None, storage_options: dict[str, Any] | None = None, *, device: str = "cpu"
) -> tuple[nn.Module | ClassicModel, ModelSpec]:
    """Load a checkpoint into a ready model: an eval-mode torch module on ``device`` (weights read with
    ``weights_only=True``), or a fitted classic model (read by skops, scikit-learn types only)."""
    spec = load_spec(uri, storage_options)
    if uri in BUILTIN_MODELS:  # the pre-trained weights load as the model is built
        return spec.build().to(device).eval(), spec
    directory = resolve(uri)
    if spec.family == "classic":
        return spec.build().load_bytes(_read_weights(directory, CLASSIC_WEIGHTS, storage_options)), spec
    data = _read_weights(directory, WEIGHTS, storage_options)
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{WEIGHTS} in {directory!r} is not a PyTorch weights archive")
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights in {directory!r}: {exc}") from None
    model = spec.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {directory!r} do not fit model {spec.model.name!r}: {exc}") from None
    return model.to(device).eval(), spec
