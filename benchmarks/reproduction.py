"""The seed studies' models, reproduced through mgr-batch's own pipeline on GTZAN (song level, leak-free).

Run from the repository root (../shared/data beside it):

    python benchmarks/reproduction.py                      # every configuration (hours on 2 CPUs)
    python benchmarks/reproduction.py --only classic stft4k --cv classic
    python benchmarks/reproduction.py --list               # the configurations and their groups

Each preset's features are computed once with the same Ray Data stage `mgr-batch train` uses, then every
model of that preset is fitted with the same code (`execution.train.fit`: Ray Train for networks,
scikit-learn with song-grouped grid search for classic models) on the artist-filtered train list and
scored on the valid list; `--cv GROUP` adds 5-fold cross-validation by song over train+valid
(`execution.evaluate.cross_validate`). Results accumulate in benchmarks/results/reproduction.json
(a rerun skips configurations already measured unless --force, and adding CV to a measured row does not
refit its valid model) and docs/reproduction.md is rewritten from it. Models, Ray Train runs and CV folds
go to --work (default runs/reproduction/, ignored by git): an interrupted CV resumes from its finished
folds, and an interrupted fold from its last epoch, when rerun with the same --work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gtzan"
RESULTS = ROOT / "benchmarks" / "results" / "reproduction.json"
DOC = ROOT / "docs" / "reproduction.md"


@dataclass(frozen=True)
class Row:
    """One model of one study: what we run, and what the study reported."""

    key: str
    group: str
    model: str
    preset: str
    study: str
    reported: str  # the study's figure and protocol, as printed
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0  # networks only
    lr: float = 1e-3
    clips: dict[str, Any] = field(default_factory=dict)
    note: str = ""


S4K = "4 kHz spectrogram study"
CROP = "2 s crop study"
TRANSFER = "transfer study"
LSTM = "LSTM study"
CRNN = "CRNN study"
MUSICNN = "pre-trained musicnn (issue 6)"
ROWS: list[Row] = [
    # 4 kHz spectrogram of 5 s clips (513 x 22)
    Row("s4k-svm", "stft4k", "svm", "stft4k", S4K, "0.405"),
    Row("s4k-softmax", "stft4k", "logreg", "stft4k", S4K, "0.381"),
    Row("s4k-mlp", "stft4k", "mlp", "stft4k", S4K, "0.70", epochs=20),
    Row("s4k-rnn", "stft4k", "rnn", "stft4k", S4K, "0.655", epochs=20),
    Row("s4k-lstm", "stft4k", "lstm", "stft4k", S4K, "0.79", epochs=20),
    Row("s4k-lstm-attention", "stft4k", "lstm_attention", "stft4k", S4K, "0.748", epochs=20),
    # classic models on the 58-value vector: whole songs, and 3 s segments with voting
    *(
        Row(f"classic-{m}-30s", "classic", m, "classic58_30s", TRANSFER, r30)
        for m, r30 in (
            ("svm", "0.4356"),
            ("logreg", "0.38"),
            ("tree", "0.5008"),
            ("naive_bayes", "0.3067"),
            ("knn", "0.2767"),
        )
    ),
    *(
        Row(
            f"classic-{m}-3s",
            "classic3s",
            m,
            "classic58_3s",
            TRANSFER,
            r3,
            note="3 s segments, song = mean of segments",
        )
        for m, r3 in (
            ("svm", "0.4567"),
            ("logreg", "0.4267"),
            ("tree", "0.3964"),
            ("naive_bayes", "0.3067"),
            ("knn", "0.34"),
        )
    ),
    # LSTM study: MLP on 30 s vectors, LSTM over sequences of 3/6/9 s vectors
    Row("lstm-mlp-30s", "classic", "mlp", "classic58_30s", LSTM, "0.74 (30 s features)", epochs=60),
    Row("lstm-mlp-3s", "classic3s", "mlp", "classic58_3s", LSTM, "0.66 (3 s features)", epochs=30),
    # 316 sequences are 5 batches an epoch: at the default lr 1e-3 the LSTM does not fit them in 60 epochs
    *(
        Row(f"lstm-seq{w}", f"seq{w}", "lstm_seq", f"classic58_seq{w}", LSTM, r, epochs=60, lr=1e-2, note="lr 1e-2")
        for w, r in ((3, "0.93"), (6, "0.76"), (9, "0.73"))
    ),
    # 2 s crop study: log-mel 64 vs raw amplitude; PCA + kNN, PCA + SVM, FFNN, 3-layer CNN; random crops
    Row("crop-svm-logmel", "logmel64", "svm_pca", "logmel64_2s", CROP, "0.60"),
    Row("crop-knn-logmel", "logmel64", "knn", "logmel64_2s", CROP, "0.54"),
    Row("crop-ffnn-logmel", "logmel64", "ffnn", "logmel64_2s", CROP, "0.54", epochs=20),
    Row(
        "crop-cnn3-logmel",
        "logmel64",
        "cnn3",
        "logmel64_2s",
        CROP,
        "0.82",
        epochs=20,
        clips={"select": "random", "crops": 8},
        note="8 random 2 s crops per training song",
    ),
    Row("crop-svm-raw", "raw", "svm_pca", "raw2s", CROP, "0.28"),
    Row("crop-knn-raw", "raw", "knn", "raw2s", CROP, "0.21"),
    Row("crop-ffnn-raw", "raw", "ffnn", "raw2s", CROP, "0.25", epochs=20),
    # transfer study: mel images with VGG/ResNet-style nets (one-cycle), GRU and skip-RNN on MFCCs
    Row(
        "tr-vgg",
        "logmel128",
        "vgg",
        "logmel128",
        TRANSFER,
        "0.75 (VGG-16, ImageNet weights)",
        epochs=8,
        params={"width": 0.25},
        note="quarter width, from scratch (no ImageNet weights here)",
    ),
    Row(
        "tr-resnet",
        "logmel128",
        "resnet",
        "logmel128",
        TRANSFER,
        "0.79 (ResNet-34, ImageNet weights)",
        epochs=8,
        params={"width": 0.25},
        note="quarter width, from scratch (no ImageNet weights here)",
    ),
    Row("tr-gru", "mfcc", "gru", "mfcc", TRANSFER, "0.403", epochs=20),
    Row("tr-skip-rnn", "mfcc", "skip_rnn", "mfcc", TRANSFER, "(skip-RNN, no figure)", epochs=20),
    # CRNN: 1-D convolutions over time, LSTM, a softmax per step averaged over the song
    Row("crnn", "logmel128", "crnn", "logmel128", CRNN, "0.67 song level (700/300 split)", epochs=20),
    # Transfer from MSD_musicnn: (a) its pooled penultimate embedding + a classic head; (b) fine-tuning
    *(
        Row(
            f"musicnn-{m}",
            "musicnn_emb",
            m,
            "musicnn_embedding",
            MUSICNN,
            "0.75-0.80 (pre-trained embeddings + simple classifier, artist-filtered split)",
            note="MSD_musicnn embedding of each 3 s clip, song = mean of clip probabilities",
        )
        for m in ("logreg", "svm")
    ),
    Row(
        "musicnn-finetune",
        "musicnn",
        "musicnn",
        "musicnn",
        MUSICNN,
        "(fine-tuning, no figure)",
        epochs=5,
        lr=5e-4,
        params={"pretrained": "MSD_musicnn"},
        note="whole network from MSD_musicnn, new 10-genre head",
    ),
]


def run(
    rows: list[Row], cv_groups: set[str], work: Path, results: dict[str, Any], keep_valid: set[str] = frozenset()
) -> None:
    from mgr_batch.config import CVConfig, TrainConfig, from_dict
    from mgr_batch.evaluation import datasets
    from mgr_batch.execution.evaluate import cross_validate
    from mgr_batch.execution.runtime import ray_session
    from mgr_batch.execution.train import featurized_songs, fit, training_spec
    from mgr_batch.features.presets import with_preset

    def config(row: Row, output: Path) -> TrainConfig:
        data = {
            "data": str(DATA),
            "output": str(output),
            "preset": row.preset,
            "storage_path": str(work / "runs"),
            "run_name": row.key,
            "cpus_per_worker": 2,
            "model": {"name": row.model, "params": row.params},
            "clips": row.clips,
            "optim": {"epochs": max(1, row.epochs), "lr": row.lr, "schedule": "onecycle"},
            "train_list": str(DATA / "train_filtered.txt"),
            "valid_list": str(DATA / "valid_filtered.txt"),
        }
        return from_dict(TrainConfig, with_preset(data))

    by_preset: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_preset.setdefault((row.preset, json.dumps(row.clips, sort_keys=True)), []).append(row)
    with ray_session(TrainConfig().ray, trains=True):
        for (preset_name, _), group in by_preset.items():
            cfg = config(group[0], work / "x")
            files = datasets.labelled(cfg.data, train_list=cfg.train_list, valid_list=cfg.valid_list)
            started = time.time()
            songs = featurized_songs(files, training_spec(files, cfg), cfg)
            featurize_s = time.time() - started
            print(f"[{preset_name}] featurized {len(files)} songs in {featurize_s:.0f} s", flush=True)
            for row in group:
                cfg = config(row, work / row.key)
                spec = training_spec(files, cfg)
                out = results.get(row.key, {}) if row.key in keep_valid else {}
                if not out:
                    started = time.time()
                    trained = fit(songs, files, spec, cfg)
                    m = trained["metrics"]
                    out = {
                        "key": row.key,
                        "model": row.model,
                        "preset": preset_name,
                        "model_id": trained["model_id"],
                        "valid_song_accuracy": m.get("valid_song_accuracy"),
                        "valid_song_balanced_accuracy": m.get("valid_song_balanced_accuracy"),
                        "valid_n_songs": m.get("valid_n_songs"),
                        "n_train_songs": trained["n_songs"].get("train"),
                        "best_epoch": trained.get("best_epoch"),
                        "epochs": row.epochs,
                        "featurize_seconds": round(featurize_s),
                        "fit_seconds": round(time.time() - started),
                    }
                if row.group in cv_groups:
                    cv_files = files.assign(split="train")
                    cv_cfg = CVConfig(folds=5, train=dataclasses.replace(cfg, output=str(work / f"{row.key}-cv")))
                    s = cross_validate(songs, cv_files, spec, cv_cfg)
                    out |= {
                        "cv_song_accuracy": s["song_accuracy"],
                        "cv_song_balanced_accuracy": s["song_balanced_accuracy"],
                        "cv_n_songs": s["n_songs"],
                        "cv_group_by": s["group_by"],
                        "cv_seconds": s["wall_seconds"],
                    }
                results[row.key] = out
                save(results)
                print(f"[{row.key}] {json.dumps(out)}", flush=True)


def save(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(markdown(results))


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Reproducing the seed studies through mgr-batch",
        "",
        "Every model of the five studies, trained by mgr-batch's own pipeline on `../shared/data/gtzan` and scored at",
        "song level. **valid**: trained on the artist-filtered train list (what audio we have of it), scored on the valid",
        "list (n songs given; hiphop, pop and reggae have almost no valid songs, so balanced accuracy is over the genres",
        "present). Networks keep the epoch with the best valid song accuracy (so their valid figure is slightly",
        "optimistic); classic models choose hyper-parameters by grid search folded by song inside the training songs.",
        "**5-fold CV**: train+valid songs, folds by song (the split lists name no artists, so CV folds can share an",
        "artist: these figures run high), mean ± std over folds.",
        "",
        "Regenerate: `python benchmarks/reproduction.py [--only GROUP ...] [--cv GROUP ...]` (results accumulate in",
        "`benchmarks/results/reproduction.json`; configurations not yet run show no figure; a CV interrupted midway",
        "resumes from its finished folds when rerun with the same `--work`).",
        "",
        "| study | model | features (preset) | study's figure | valid acc | valid bal. acc | n valid | 5-fold CV acc | CV bal. acc | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        r = results.get(row.key, {})
        cv = r.get("cv_song_accuracy")
        cv_s = "-" if cv is None else f"{cv['mean']:.3f} ± {cv['std']:.3f}"
        cvb = r.get("cv_song_balanced_accuracy")
        cvb_s = "-" if cvb is None else f"{cvb['mean']:.3f}"
        epochs = f"{row.epochs} epochs (best {r.get('best_epoch')})" if row.epochs and r else ""
        note = "; ".join(x for x in (row.note, epochs) if x)
        lines.append(
            f"| {row.study} | `{row.model}` | {row.preset} | {row.reported} | {_f(r.get('valid_song_accuracy'))} | "
            f"{_f(r.get('valid_song_balanced_accuracy'))} | {r.get('valid_n_songs', '-')} | {cv_s} | {cvb_s} | {note} |"
        )
    lines += ["", WHY, ""]
    return "\n".join(lines)


WHY = """## Why ours differ from the studies' figures

- **Leaky splits.** Most studies cut the 30 s GTZAN excerpts into 3 s (or 5 s) segments and split the segments at
  random, so segments of one song, and songs of one artist, sit on both sides: the LSTM study's 0.93 on 3 s
  sequences and the 2 s crop study's CNN 0.82 are of that kind. Our valid figures never share a song or an artist
  with training (Kereliuk and Sturm's artist-filtered split); published figures on that split are 50-80 %.
- **Small and uneven data here.** `../shared/data/gtzan` holds 444 of the 640 train+valid songs and 150 of them are
  only 2-3 s excerpts; the valid list has 128 songs with audio and almost no hiphop, pop or reggae.
- **Small test sets.** The transfer study scored on 100 songs (one song = 1 %), the CRNN study on 300.
- **No ImageNet weights.** The transfer study's VGG-16 and ResNet-34 started from ImageNet; nothing can be downloaded
  here, so ours start from scratch (at quarter width, to train on CPU). `--init-from` starts from any compatible
  mgr-batch checkpoint instead; issue 6's pre-trained musicnn is the transfer learning this project can offer.
  For comparison with its rows: the packaged from-scratch log-mel CNN (`--model logmel-cnn`) scores 0.555
  (balanced 0.590) on the same 128 valid songs (README, "The shipped model").
- **Features on 30 s vs padded excerpts.** The 58-value vector of a 3 s excerpt describes 3 s, not 30 s.
- **Short CPU schedules.** Every network here trained on 2 CPU cores. The quarter-width VGG and ResNet ran 8
  epochs and were still improving at the last one, so their rows are a floor. The 2 s crop study's CNN (0.578
  on 8 random crops per training song) is the best from-scratch row, above the packaged log-mel CNN (0.555):
  the crops are a cheap augmentation that helps here too.
- **Run-to-run spread.** Seeds are fixed, but the order in which Ray Data hands blocks to training is not, so
  retraining a row moves its valid figure: VGG 0.469 -> 0.445, ResNet 0.492 -> 0.445, the 3 s MLP 0.438 ->
  0.453, `lstm_seq` 0.484 / 0.477 / 0.500 -> 0.477 / 0.445 / 0.484, the FFNN on raw amplitude 0.344 ->
  0.297 when they were run again for their CV. On 128 valid songs one song is 0.8 points; the CV column
  (five folds, mean ± std) is the steadier figure.
- **The 2 s crop study's classic rows agree under CV.** On raw amplitude our CV gives 0.26 / 0.26 / 0.29
  (SVM / kNN / FFNN) against the study's 0.28 / 0.21 / 0.25; on 64-band log-mel kNN 0.475 and the FFNN 0.538
  against 0.54 and 0.54, the SVM 0.450 against 0.60. Log-mel beats raw amplitude by 19-25 points under CV,
  the study's point.
- **On the 4 kHz spectrogram our networks fall short of the study's, our linear models do not.** Under CV the LSTM scores
  0.586 and the other networks 0.49-0.52, against the study's 0.655-0.79 for its networks, which split 5 s
  segments of one song across train and test; its SVM and softmax (0.405 / 0.381) are below ours (0.473 /
  0.529).
- **`lstm_seq` first did not learn; three causes, fixed.** It predicted rock (the largest valid genre) for
  every valid song on 3 s and 6 s vectors (0.188 = 24/128). (1) The windows' `length` column was a constant
  66150: variance 0, so the float32 running mean's rounding (-0.06) over sqrt(eps) of the input BatchNorm
  became a constant input of about 20 in eval mode (train accuracy 0.27 in eval mode, 0.62 with batch
  statistics). (2) 150 of the 316 train songs are 2-3 s excerpts padded at the end, so the last step the
  LSTM reads was the same silence vector for all of them (train accuracy 0.61-0.80). (3) 316 sequences are
  5 batches an epoch: 300 steps peaking at lr 1e-3 leave it at 0.75-0.82 train accuracy. Now
  `classic58_seq` puts the padding windows first and `length` counts a window's samples of audio, the
  model keeps its input statistics in float64, and these rows train at lr 1e-2 (train accuracy 0.97-1.0
  in plain PyTorch on the same features); lr 1e-2 is now the model type's own default. Valid song accuracy
  0.484 / 0.477 / 0.500 for 3 / 6 / 9 s when fixed (best epoch, as every row; 0.469 / 0.453 / 0.438 at epoch
  60), 0.477 / 0.445 / 0.484 when retrained for the CV; CV 0.700 / 0.721 / 0.727, on a par with the MLP on
  30 s and 3 s vectors (0.696 / 0.718): sequences of the 58 values add little over their mean here.
- **Pre-trained musicnn: a linear head on its embedding beats fine-tuning the whole network.** Fine-tuned for 5
  epochs (one-cycle, peak lr 5e-4), musicnn scores 0.523 on the valid songs and 0.782 ± 0.061 under CV (folds
  0.67-0.85), against 0.656 and 0.842 ± 0.033 for logistic regression on its frozen embedding: with 316-355
  training songs, retraining 779 k weights for 5 CPU epochs generalizes worse than a linear head. Both stay
  far above every from-scratch network here. The CV trained on the faster training path of the front end
  (same gradients up to rounding; 2.2x faster on CPU), the valid row before it.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="groups or keys to run (default: all)")
    parser.add_argument("--cv", nargs="*", default=[], help="groups to cross-validate too (5 folds by song)")
    parser.add_argument("--force", action="store_true", help="rerun configurations already in the results")
    parser.add_argument(
        "--work",
        default=str(ROOT / "runs" / "reproduction"),
        help="models, Ray Train runs and CV folds (reuse to resume an interrupted CV)",
    )
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for row in ROWS:
            print(f"{row.group:<10} {row.key:<22} {row.model:<16} {row.preset}")
        return
    sys.path.insert(0, str(ROOT))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    todo = [
        r
        for r in ROWS
        if (not args.only or r.group in args.only or r.key in args.only)
        and (args.force or r.key not in results or (r.group in args.cv and "cv_song_accuracy" not in results[r.key]))
    ]
    keep_valid = set() if args.force else {r.key for r in todo if r.key in results}
    run(todo, set(args.cv), Path(args.work).resolve(), results, keep_valid)
    save(results)


if __name__ == "__main__":
    main()
