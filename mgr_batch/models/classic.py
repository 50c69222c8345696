"""Classic models (scikit-learn) over flattened clip features, as the seed studies ran them.

Each is a pipeline ``StandardScaler -> [PCA] -> estimator`` whose hyper-parameters are chosen by grid
search with folds grouped by song (clips of one song never sit on both sides of an inner split).
Features of shape (n, n_features, n_steps) are flattened to (n, n_features * n_steps). Fitted models are
saved with ``skops`` (no pickle: loading a checkpoint never runs code from it).

``pooling`` picks what one training row is: ``clip`` (each clip, labelled with its song's genre; a song's
probabilities are then the mean of its clips'), or a song-level head fitted on one row per song:
``mean`` (the mean of the song's clip features) or ``mean_std`` (their mean and standard deviation side
by side). A song-level head scores a song from its pooled row (:meth:`ClassicModel.predict_song_proba`);
its clip rows are the same head applied to each clip alone, as a song of one clip (pooled row = the
clip's features, with a standard deviation of 0 for ``mean_std``).
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from mgr_batch.errors import CheckpointError, ConfigError
from mgr_batch.models.registry import register

#: scikit-learn internals skops does not trust by default but our pipelines hold (the SVM's calibration,
#: the neighbour search trees of kNN, the decision tree).
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.tree._tree.Tree",
)
#: Inner folds of the grouped grid search (fewer when there are fewer songs per genre).
INNER_FOLDS = 3
#: What one training row of a classic head is: a clip, or one pooled row per song.
POOLINGS = ("clip", "mean", "mean_std")


def pool_rows(x: np.ndarray, groups: np.ndarray, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened features ``x`` (n_clips, d) pooled per song of ``groups`` (n_clips,): ``(rows (n_songs, d or
    2d), first clip index of each song (n_songs,))``, songs in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)  # songs in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    song = rank[inverse.ravel()]
    n = len(first)
    counts = np.bincount(song, minlength=n).astype(np.float64)[:, None]
    mean = np.zeros((n, x.shape[1]))
    np.add.at(mean, song, x)
    mean /= counts
    if pooling == "mean":
        return mean, first[order]
    sq = np.zeros((n, x.shape[1]))
    np.add.at(sq, song, (x - mean[song]) ** 2)
    return np.concatenate([mean, np.sqrt(sq / counts)], axis=1), first[order]


def pool_song(x: np.ndarray, pooling: str) -> np.ndarray:
    """One song's flattened clip features (n_clips, d) -> its pooled row (1, d or 2d)."""
    mean = x.mean(axis=0, keepdims=True)
    return mean if pooling == "mean" else np.concatenate([mean, x.std(axis=0, keepdims=True)], axis=1)


def _svm(**kw: Any):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    # SVC's own probability=True is deprecated in scikit-learn 1.9: calibrate its one-vs-rest scores instead.
    return CalibratedClassifierCV(SVC(kernel="rbf", decision_function_shape="ovr", **kw), ensemble=False, cv=3)


def _logreg(**kw: Any):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**({"solver": "newton-cg", "max_iter": 2000} | kw))


def _knn(**kw: Any):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(**({"n_neighbors": 10, "weights": "distance"} | kw))


def _tree(**kw: Any):
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(**({"random_state": 0} | kw))


def _naive_bayes(**kw: Any):
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB(**kw)


#: name -> (estimator factory, grid over its parameters, default PCA components or None)
ESTIMATORS: dict[str, tuple[Callable[..., Any], dict[str, list[Any]], int | None]] = {
    "svm": (_svm, {"estimator__C": [1.0, 10.0, 100.0]}, None),
    "svm_pca": (_svm, {"estimator__C": [1.0, 10.0, 100.0]}, 15),
    "logreg": (_logreg, {"C": [0.01, 0.1, 1.0]}, None),
    "knn": (_knn, {}, 15),
    "tree": (_tree, {"max_depth": [5, 10, None]}, None),
    "naive_bayes": (_naive_bayes, {}, None),
}


class ClassicModel:
    """A scikit-learn classifier over clip features (n, n_features, n_steps) -> genre probabilities.

    ``pca`` overrides the estimator's default PCA size (0 turns PCA off); ``grid`` replaces the
    search grid (``{}``: no search); ``pooling`` is the training row (:data:`POOLINGS`, see the module);
    ``calibrate`` asks training to fit a temperature and an uncertainty threshold by cross-validation
    (:mod:`mgr_batch.evaluation.calibration`); other keyword arguments go to the estimator.
    """

    family = "classic"

    def __init__(
        self,
        *,
        name: str,
        n_classes: int,
        input_shape: tuple[int, ...],
        pca: int | None = None,
        grid: dict[str, list[Any]] | None = None,
        seed: int = 0,
        pooling: str = "clip",
        calibrate: bool = False,
        **estimator_params: Any,
    ) -> None:
        if name not in ESTIMATORS:
            raise ConfigError(f"unknown classic model {name!r}")
        if pooling not in POOLINGS:
            raise ConfigError(f"classic model pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.pooling, self.calibrate = pooling, bool(calibrate)
        factory, default_grid, default_pca = ESTIMATORS[name]
        self.name, self.n_classes, self.input_shape, self.seed = name, n_classes, tuple(input_shape), seed
        self.pca = default_pca if pca is None else pca
        self.grid = {k: list(v) for k, v in (default_grid if grid is None else grid).items()}
        self.estimator_params = estimator_params
        self._factory = factory
        self.pipeline = None
        self.best_params: dict[str, Any] = {}
        self._build()  # fail fast on bad parameters

    def _build(self):
        from sklearn.decomposition import PCA
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        steps = [("scale", StandardScaler())]
        if self.pca:
            steps.append(("pca", PCA(n_components=self.pca, random_state=self.seed)))
        try:
            steps.append(("model", self._factory(**self.estimator_params)))
        except TypeError as exc:
            raise ConfigError(f"bad parameters for classic model {self.name!r}: {exc}") from None
        return Pipeline(steps)

    @staticmethod
    def flatten(x: np.ndarray) -> np.ndarray:
        """(n, n_features, n_steps) -> (n, n_features * n_steps) float64."""
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1)

    @property
    def song_level(self) -> bool:
        """Whether the head scores songs from one pooled row each (``pooling`` is not ``clip``)."""
        return self.pooling != "clip"

    def rows(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training rows ``(x2, y, groups)`` of clip features ``x``: clips, or one pooled row per song."""
        x2 = self.flatten(x)
        if not self.song_level:
            return x2, np.asarray(y), np.asarray(groups)
        pooled, first = pool_rows(x2, np.asarray(groups), self.pooling)
        return pooled, np.asarray(y)[first], np.asarray(groups)[first]

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> ClassicModel:
        """Fit on clip features ``x`` (n, ...), labels ``y`` (n,) and song ids ``groups`` (n,).

        The grid search's inner folds are grouped by song; with too few songs to fold, the first grid
        point is used. A song-level head fits one pooled row per song.
        """
        return self.fit_rows(*self.rows(x, y, groups))

    def fit_rows(self, x2: np.ndarray, y: np.ndarray, groups: np.ndarray) -> ClassicModel:
        """Fit on training-form rows ``x2`` (n, d) (clips, or a song-level head's pooled rows), labels ``y`` (n,)
        and groups ``groups`` (n,) that the grid search's inner folds keep whole (songs, or albums)."""
        from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

        x2, y, groups = np.asarray(x2, np.float64), np.asarray(y), np.asarray(groups)
        if self.pca and self.pca > min(x2.shape):
            raise ConfigError(f"PCA to {self.pca} dimensions needs at least that many clips and feature values")
        pipeline = self._build()
        grid = {f"model__{k}": v for k, v in self.grid.items()}
        songs_per_class = Counter(label for _, label in set(zip(groups.tolist(), y.tolist(), strict=True)))
        folds = min(INNER_FOLDS, min(songs_per_class.values(), default=0))
        if grid and folds >= 2:
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            search = GridSearchCV(pipeline, grid, cv=splitter, n_jobs=1).fit(x2, y, groups=groups)
            self.pipeline, self.best_params = search.best_estimator_, {k[7:]: v for k, v in search.best_params_.items()}
        else:
            first = {k: v[0] for k, v in grid.items()}
            self.pipeline, self.best_params = (
                pipeline.set_params(**first).fit(x2, y),
                {k[7:]: v for k, v in first.items()},
            )
        return self

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """Genre probabilities (n, n_classes) of training-form rows (n, d); genres unseen in training get 0."""
        if self.pipeline is None:
            raise ConfigError(f"classic model {self.name!r} is not fitted")
        out = np.zeros((len(rows), self.n_classes), np.float32)
        if len(rows):
            out[:, self.pipeline.classes_.astype(int)] = self.pipeline.predict_proba(rows)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Genre probabilities (n, n_classes) of clip features (n, ...), each clip on its own (a song-level
        head sees each clip as a song of one clip); genres unseen in training get 0."""
        x2 = self.flatten(x)
        if self.song_level and self.pooling == "mean_std":
            x2 = np.concatenate([x2, np.zeros_like(x2)], axis=1)
        return self.predict_rows(x2)

    def predict_song_proba(self, x: np.ndarray) -> np.ndarray:
        """One song's genre probabilities (n_classes,) from its clip features (n_clips, ...): the head on the
        pooled row for a song-level head, else the mean of its clips' probabilities."""
        if not self.song_level:
            return self.predict_proba(x).mean(axis=0)
        return self.predict_rows(pool_song(self.flatten(x), self.pooling))[0]

    def refit_copy(self) -> ClassicModel:
        """An unfitted model with this one's chosen hyper-parameters and no grid search."""
        return ClassicModel(
            name=self.name,
            n_classes=self.n_classes,
            input_shape=self.input_shape,
            pca=self.pca,
            grid={},
            seed=self.seed,
            pooling=self.pooling,
            **(self.estimator_params | self.best_params),
        )

    def out_of_fold_song_proba(
        self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = 5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Song probabilities of every training song from a copy (:meth:`refit_copy`) fitted without it:
        ``(probs (n_songs, n_classes), labels (n_songs,))``, by ``folds`` folds of whole songs stratified by genre."""
        from sklearn.model_selection import StratifiedKFold

        groups, y = np.asarray(groups), np.asarray(y)
        songs, first = np.unique(groups, return_index=True)
        labels = y[first]
        per_genre = np.bincount(labels)[np.unique(labels)] if len(labels) else np.zeros(1, int)
        folds = min(folds, int(per_genre.min()))
        probs = np.zeros((len(songs), self.n_classes), np.float32)
        if folds < 2:
            raise ConfigError("calibration needs at least 2 training songs of every genre")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        for fit_songs, test_songs in splitter.split(songs, labels):
            fit_mask = np.isin(groups, songs[fit_songs])
            m = self.refit_copy().fit(x[fit_mask], y[fit_mask], groups[fit_mask])
            for j in test_songs:
                probs[j] = m.predict_song_proba(x[groups == songs[j]])
        return probs, labels

    def out_of_fold_row_proba(
        self, rows: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = 5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of every song-level row (n, d) from a copy (:meth:`refit_copy`) fitted without its
        fold: ``(probs (n, n_classes), fold of each row (n,))``, ``folds`` folds stratified by label that keep
        each of ``groups`` (n,) whole (fewer folds when a label has fewer groups)."""
        from sklearn.model_selection import StratifiedGroupKFold

        rows, y, groups = np.asarray(rows, np.float64), np.asarray(y), np.asarray(groups)
        per_label = Counter(label for _, label in set(zip(groups.tolist(), y.tolist(), strict=True)))
        folds = min(folds, min(per_label.values(), default=0))
        if folds < 2:
            raise ConfigError("cross-validation needs at least 2 songs (2 groups) of every label")
        probs = np.zeros((len(rows), self.n_classes), np.float32)
        fold_of = np.zeros(len(rows), np.int32)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        for k, (fit_idx, test_idx) in enumerate(splitter.split(rows, y, groups)):
            m = self.refit_copy().fit_rows(rows[fit_idx], y[fit_idx], groups[fit_idx])
            probs[test_idx] = m.predict_rows(rows[test_idx])
            fold_of[test_idx] = k
        return probs, fold_of

    def to_bytes(self) -> bytes:
        import skops.io as sio

        if self.pipeline is None:
            raise ConfigError(f"classic model {self.name!r} is not fitted")
        return sio.dumps(self.pipeline)

    def load_bytes(self, data: bytes) -> ClassicModel:
        """Load a fitted pipeline saved by :meth:`to_bytes`; only scikit-learn/numpy types are accepted."""
        import skops.io as sio

        try:
            untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
            if untrusted:
                raise CheckpointError(f"classic model holds types that are not trusted: {untrusted}")
            self.pipeline = sio.loads(data, trusted=list(TRUSTED_TYPES))
        except (ValueError, KeyError, TypeError, zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"cannot read classic model: {exc}") from None
        return self


def _registered(name: str, description: str, study: str):
    def build(**kw: Any) -> ClassicModel:
        return ClassicModel(name=name, **kw)

    build.__name__ = f"classic_{name}"
    register(name, family="classic", features="classic58", study=study, description=description)(build)


_registered(
    "svm",
    "RBF-kernel SVM (one-vs-rest), C by grouped CV, calibrated probabilities",
    "4 kHz spectrogram study; transfer study (classic models)",
)
_registered("svm_pca", "RBF-kernel SVM after PCA to 15 dimensions", "2 s crop study (PCA + SVM)")
_registered(
    "logreg",
    "softmax (multinomial logistic) regression, newton-cg, C by grouped CV",
    "4 kHz spectrogram study; transfer study",
)
_registered(
    "knn",
    "k-nearest neighbours (k=10, distance-weighted) after PCA to 15 dimensions",
    "2 s crop study (PCA + kNN); transfer study",
)
_registered("tree", "decision tree, max_depth by grouped CV", "transfer study (classic models)")
_registered("naive_bayes", "Gaussian naive Bayes", "transfer study (classic models)")
