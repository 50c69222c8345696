"""One-off port of musicnn's pre-trained TF1 checkpoints to PyTorch, and of its outputs to a test fixture.

musicnn (Pons and Serra, ISC licence, https://github.com/jordipons/musicnn) ships its trained models
as TensorFlow 1 checkpoints inside the ``musicnn`` wheel on PyPI. This script has two commands, run
in two different environments:

``weights`` (the product's virtualenv; needs torch and safetensors, *not* TensorFlow)
    Reads each checkpoint's ``.index``/``.data`` bundle with the small pure-Python reader below,
    maps the TF variables onto :class:`mgr_batch.models.musicnn.Musicnn` (or ``MusicnnVGG``), and
    writes ``mgr_batch/assets/musicnn/<MODEL>.safetensors`` plus the wheel's licence
    (``LICENSE.musicnn``; ``LICENSE.resampy`` beside it, for the resampler that
    ``mgr_batch.models.musicnn`` ports, is kept by hand)::

        pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
        python tools/convert_musicnn.py weights --wheel /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

``reference`` (a THROWAWAY virtualenv with TensorFlow; needs no torch and no mgr_batch)
    Runs the wheel's own code (``musicnn.extractor``, ``musicnn.models``) on a few GTZAN songs and
    writes what the original produced to ``tests/fixtures/musicnn_reference.json``::

        python3.10 -m venv /tmp/tfenv && . /tmp/tfenv/bin/activate
        pip install "tensorflow-cpu==2.15.*" "numpy==1.26.*" "librosa==0.9.2"  # pulls in the dependencies
        pip install --no-deps "librosa==0.7.0" "resampy==0.2.1"          # then the 2019 versions
        python tools/convert_musicnn.py reference --wheel /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl \\
            --data ../shared/data

    librosa 0.7.0 and resampy 0.2.1 are the versions musicnn's training pinned (musicnn-training's
    requirements.txt), and their defaults matter: ``librosa.load`` resampled with resampy 0.2's
    ``kaiser_best`` filter (resampy 0.3 redesigned it; librosa 0.10 switched to soxr), ``stft``
    padded by reflection (zeros since librosa 0.9). Both change the top mel bands and the first
    frame enough to move tag probabilities (by up to 0.09 with soxr on the test songs). numpy must
    be 1.x: musicnn's ``np.log10(10000 * x + 1)`` on a float16 array is computed in float32 under
    numpy 1's value-based casting, but overflows to inf under numpy 2's rules. Two small shims let
    librosa 0.7.0 import on today's numpy and numba (see :func:`record_reference`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "mgr_batch" / "assets" / "musicnn"
FIXTURE = REPO / "tests" / "fixtures" / "musicnn_reference.json"
MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")
#: Songs of ../shared/data/gtzan the reference is recorded on: full 30 s excerpts of four genres.
SONGS = (
    "gtzan/blues/blues.00000.ogg",
    "gtzan/classical/classical.00000.ogg",
    "gtzan/disco/disco.00000.ogg",
    "gtzan/metal/metal.00000.ogg",
)
#: Song and patch whose input features and inner activations go into the fixture too.
PATCH_SONG, PATCH_INDEX = SONGS[0], 0


def unpack_wheel(wheel: str, into: str) -> Path:
    """Extract the wheel; returns the folder holding the ``musicnn`` package."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(into)
    return Path(into)


# --- TF checkpoint bundle reader -------------------------------------------------------------------
# A TF2/TF1 "V2" checkpoint is ``<prefix>.index`` (a LevelDB-format table mapping variable names to
# BundleEntryProto messages: dtype, shape, offset and size in the data file) and
# ``<prefix>.data-00000-of-00001`` (the raw little-endian tensors). Both formats are small and stable,
# so a reader here avoids installing TensorFlow just to copy numbers.

_TABLE_MAGIC = 0xDB4775248B80FB57
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block(data: bytes, offset: int, size: int) -> bytes:
    if data[offset + size] != 0:  # the 5-byte block trailer starts with the compression type
        raise ValueError("compressed checkpoint index blocks are not supported")
    return data[offset : offset + size]


def _block_entries(block: bytes):
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _proto_fields(msg: bytes):
    pos = 0
    while pos < len(msg):
        tag, pos = _varint(msg, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(msg, pos)
        elif wire == 2:
            length, pos = _varint(msg, pos)
            value, pos = msg[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", msg, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", msg, pos)[0], pos + 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield number, value


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All variables of the single-shard TF checkpoint ``prefix`` (``prefix + ".index"`` must exist)."""
    index = Path(prefix + ".index").read_bytes()
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    footer = index[-48:]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise ValueError(f"{prefix}.index is not a TF checkpoint index")
    _, pos = _varint(footer, 0)  # metaindex handle: unused
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    out: dict[str, np.ndarray] = {}
    for _, handle in _block_entries(_block(index, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _block_entries(_block(index, offset, size)):
            if not key:  # the bundle header
                continue
            entry = {"dtype": 0, "shape": [], "offset": 0, "size": 0}
            for number, field in _proto_fields(value):
                if number == 1:
                    entry["dtype"] = field
                elif number == 2:
                    entry["shape"] = [dict(_proto_fields(dim)).get(1, 0) for n, dim in _proto_fields(field) if n == 2]
                elif number in (3, 7) and field:
                    raise ValueError("sharded or sliced checkpoints are not supported")
                elif number in (4, 5):
                    entry["offset" if number == 4 else "size"] = field
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            array = np.frombuffer(data, dtype, count=entry["size"] // dtype.itemsize, offset=entry["offset"])
            out[key.decode()] = array.reshape(entry["shape"]).copy()
    return out


# --- TF variable names -> PyTorch state dict -------------------------------------------------------
# tf.compat.v1.layers names variables by creation order (conv2d, conv2d_1, ...; batch_normalization,
# batch_normalization_1, ...), so the order of musicnn.models' layer calls fixes the mapping.


def _bn(tf: dict[str, np.ndarray], name: str, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.weight": tf[f"{name}/gamma"],
        f"{prefix}.bias": tf[f"{name}/beta"],
        f"{prefix}.running_mean": tf[f"{name}/moving_mean"],
        f"{prefix}.running_var": tf[f"{name}/moving_variance"],
    }


def _conv2d(tf: dict[str, np.ndarray], name: str, prefix: str) -> dict[str, np.ndarray]:
    # TF kernels are (time, freq, in, out); ours run over (batch, in, freq, time) inputs.
    return {f"{prefix}.weight": tf[f"{name}/kernel"].transpose(3, 2, 1, 0), f"{prefix}.bias": tf[f"{name}/bias"]}


def _conv1d(tf: dict[str, np.ndarray], name: str, prefix: str) -> dict[str, np.ndarray]:
    # musicnn's mid-end convolves a (time, channels, 1) map with a (7, channels) kernel: a 1-D conv.
    kernel = tf[f"{name}/kernel"][:, :, 0, :]  # (time, in, out)
    return {f"{prefix}.weight": kernel.transpose(2, 1, 0), f"{prefix}.bias": tf[f"{name}/bias"]}


def _dense(tf: dict[str, np.ndarray], name: str, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": tf[f"{name}/kernel"].T, f"{prefix}.bias": tf[f"{name}/bias"]}


def musicnn_state(tf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Musicnn`` parameters from the variables of a ``build_musicnn`` checkpoint."""
    state = _bn(tf, "batch_normalization", "input_norm")
    # front end, in build order: timbral 7x38, 7x67; temporal 128, 64, 32; each conv then its BN
    for i, prefix in enumerate(["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2"]):
        state |= _conv2d(tf, "conv2d" + (f"_{i}" if i else ""), f"{prefix}.conv")
        state |= _bn(tf, f"batch_normalization_{i + 1}", f"{prefix}.norm")
    for i in range(3):
        state |= _conv1d(tf, f"conv2d_{i + 5}", f"midend.{i}.conv")
        state |= _bn(tf, f"batch_normalization_{i + 6}", f"midend.{i}.norm")
    state |= _bn(tf, "batch_normalization_9", "pool_norm")
    state |= _dense(tf, "dense", "dense")
    state |= _bn(tf, "batch_normalization_10", "dense_norm")
    state |= _dense(tf, "dense_1", "head")
    return state


def vgg_state(tf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``MusicnnVGG`` parameters from the variables of a ``vgg`` checkpoint."""
    state = _bn(tf, "batch_normalization", "input_norm")
    for i in range(5):
        state |= _conv2d(tf, f"{i + 1}CNN", f"blocks.{i}.conv")
        state |= _bn(tf, f"batch_normalization_{i + 1}", f"blocks.{i}.norm")
    state |= _dense(tf, "dense", "head")
    return state


def convert_weights(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO))
    from mgr_batch.models import musicnn as port

    with tempfile.TemporaryDirectory() as tmp:
        root = unpack_wheel(args.wheel, tmp)
        ASSETS.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            tf = read_checkpoint(str(root / "musicnn" / name) + "/")
            tags = port.PRETRAINED_TAGS[name]
            if name.endswith("_vgg"):
                model, state = port.MusicnnVGG(n_classes=len(tags)), vgg_state(tf)
            else:
                model, state = port.Musicnn(n_classes=len(tags)), musicnn_state(tf)
            expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
            if set(state) != set(expected):
                raise SystemExit(
                    f"{name}: unmapped {sorted(set(expected) - set(state))}, extra {sorted(set(state) - set(expected))}"
                )
            tensors = {}
            for key, value in state.items():
                if value.shape != tuple(expected[key].shape):
                    raise SystemExit(f"{name}: {key} is {value.shape}, the port expects {tuple(expected[key].shape)}")
                tensors[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            used = {k for k in tf if "Adam" not in k and not k.startswith("beta")}
            n_tf = sum(tf[k].size for k in used)
            n_pt = sum(t.numel() for t in tensors.values())
            if n_tf != n_pt:
                raise SystemExit(f"{name}: {n_tf} numbers in the checkpoint's model variables, {n_pt} converted")
            # one metadata entry: safetensors writes several in random order, and the files should
            # come out byte-identical on every run
            about = {"model": name, "tags": list(tags), "source": "musicnn 0.1.0 (PyPI wheel), ISC licence"}
            meta = {"musicnn": json.dumps(about)}
            out = ASSETS / f"{name}.safetensors"
            save_file(tensors, str(out), metadata=meta)
            os.chmod(out, 0o644)
            print(f"{out.relative_to(REPO)}: {len(tensors)} tensors, {n_pt} parameters, {out.stat().st_size} bytes")
        shutil.copyfile(root / "musicnn-0.1.0.dist-info" / "LICENSE.md", ASSETS / "LICENSE.musicnn")


# --- reference outputs of the original (TensorFlow) ------------------------------------------------


def _floats(values, digits: int = 6) -> list:
    """Nested lists of floats rounded to ``digits`` significant digits (keeps the JSON small)."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[object])(
        np.asarray(values, dtype=np.float64)
    ).tolist()


def record_reference(args: argparse.Namespace) -> None:
    import types
    import warnings

    import numba

    warnings.simplefilter("ignore")
    # librosa 0.7.0 imports numba.decorators (gone since numba 0.49) and uses numpy aliases that
    # numpy 1.24 removed; neither shim changes any computation.
    for alias, kind in (("complex", complex), ("float", float), ("int", int), ("bool", bool)):
        setattr(np, alias, kind)
    decorators = types.ModuleType("numba.decorators")
    decorators.jit = numba.jit
    sys.modules.setdefault("numba.decorators", decorators)
    import librosa
    import resampy
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        root = unpack_wheel(args.wheel, tmp)
        sys.path.insert(0, str(root))
        from musicnn import configuration, extractor  # the wheel's own code, unmodified

        data = Path(args.data)
        n_frames = (
            librosa.time_to_frames(
                3, sr=configuration.SR, n_fft=configuration.FFT_SIZE, hop_length=configuration.FFT_HOP
            )
            + 1
        )
        batch, _ = extractor.batch_data(str(data / PATCH_SONG), n_frames, n_frames)
        patch = np.ascontiguousarray(batch[PATCH_INDEX], dtype=np.float32)  # (time, mel)
        fixture = {
            "about": (
                "Outputs of the original musicnn 0.1.0 (TensorFlow) recorded by tools/convert_musicnn.py reference: "
                "musicnn.extractor.extractor(path, model, input_length=3, input_overlap=False) on GTZAN songs "
                "(paths relative to ../shared/data). 'taggram' is (n_patches, 50) sigmoid outputs, one row per "
                "non-overlapping 3 s patch; 'mean' its mean over patches (what musicnn.tagger ranks). 'patch' holds "
                "the input features of one patch (time x mel, float32, zlib + base64) and, per musicnn model, that "
                "patch's pooled and penultimate activations."
            ),
            "versions": {
                "musicnn": "0.1.0",
                "tensorflow": tf.__version__,
                "librosa": librosa.__version__,
                "resampy": resampy.__version__,
                "soundfile": __import__("soundfile").__version__,
                "numpy": np.__version__,
            },
            "n_frames": int(n_frames),
            "songs": list(SONGS),
            "patch": {
                "song": PATCH_SONG,
                "index": PATCH_INDEX,
                "shape": list(patch.shape),
                "features_zlib_b64": base64.b64encode(__import__("zlib").compress(patch.tobytes(), 9)).decode(),
            },
            "models": {},
        }
        for name in args.models:
            tags = configuration.MSD_LABELS if name.startswith("MSD") else configuration.MTT_LABELS
            entry = {"tags": list(tags), "songs": {}}
            for song in SONGS:
                # extractor() swallows checkpoint restore errors; the port matching these numbers
                # (tests/models/test_musicnn.py) is what shows the weights were really loaded
                taggram, _, features = extractor.extractor(
                    str(data / song), model=name, input_length=3, input_overlap=False, extract_features=True
                )
                entry["songs"][song] = {"taggram": _floats(taggram), "mean": _floats(taggram.mean(axis=0))}
                if song == PATCH_SONG and "musicnn" in name:
                    # only the first patch's extra features are right: extractor.py concatenates stale
                    # variables for the later ones
                    assert PATCH_INDEX == 0
                    entry["patch"] = {
                        "probabilities": _floats(taggram[0]),
                        "max_pool": _floats(features["max_pool"][0]),
                        "mean_pool": _floats(features["mean_pool"][0]),
                        "penultimate": _floats(features["penultimate"][0]),
                    }
            fixture["models"][name] = entry
            print(
                name,
                "top tags of",
                SONGS[0],
                [tags[i] for i in np.argsort(-np.array(entry["songs"][SONGS[0]]["mean"]))[:5]],
            )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(fixture, indent=1)
        # one line per innermost list of numbers keeps the file short and still diffable
        text = re.sub(
            r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ",".join(m.group(1).split()).replace(",,", ",") + "]", text
        )
        out.write_text(text + "\n")
        print(f"{out}: {out.stat().st_size} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    weights = sub.add_parser("weights", help="checkpoints -> mgr_batch/assets/musicnn/*.safetensors (no TF needed)")
    weights.add_argument("--wheel", required=True, help="path of musicnn-0.1.0-py3-none-any.whl")
    weights.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    weights.set_defaults(run=convert_weights)
    ref = sub.add_parser(
        "reference", help="run the original (needs TensorFlow) -> tests/fixtures/musicnn_reference.json"
    )
    ref.add_argument("--wheel", required=True, help="path of musicnn-0.1.0-py3-none-any.whl")
    ref.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding gtzan/")
    ref.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ref.add_argument("--out", default=str(FIXTURE))
    ref.set_defaults(run=record_reference)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
