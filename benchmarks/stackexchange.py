"""The StackExchange model, reproduced and fixed: why a metadata-only BPR triplet model does not learn.

docs/design.md, 'The problem': a user built BPR as a three-tower Keras model on MovieLens 100k:
user metadata (age, gender, occupation) and item metadata (genre flags) through embeddings and
dense layers ending in softmax, dropout 0.5, for every training pair (u, i) a "hard" negative j (the
unobserved item whose genres are most cosine-similar to i's), the loss ``1 - sigmoid(x_uij)``,
``train_on_batch`` with batches of 64. The loss did not move. This script rebuilds that design
from bpr_numpy's pieces, measures each cause, and shows the fix.

Inputs, as the question had them: user features are the one-hot age bucket (<18, 18-24, 25-34,
35-44, 45-49, 50-55, 56+), gender and occupation of ``u.user`` (30 columns); item features are
the 19 genre flags of ``u.item``. Positives: ratings >= 4; ``ua.base`` to train, ``ua.test`` to
score (P1 full AUC, P2 AUC, precision@10 as in docs/design.md, 'Evaluation protocols').

- **A**, the failing design: metadata-only representations (``identity=False``: a user is the
  mean of its 3 feature embeddings, an item the mean of its genres'), loss ``"sigmoid"``
  (1 - sigma), hard negatives, minibatch SGD over batches of 64: the library's NumPy trainer,
  ``BPR(solver="minibatch", batch_size=64)``, with the hard negatives as a sampler with its own
  ``draw`` (:func:`hard_sampler`). Softmax towers and dropout cannot be expressed in the
  library: their effect is measured with a small NumPy computation instead.
- **A + one change**: the same trainer with ``-ln sigma`` instead of ``1 - sigma``, with uniform
  negatives (rejecting known positives) instead of hard ones, with an identity feature per user
  and item, and with all three: which change matters, tied to a figure.
- **B**, the fix, with the library: ``BPR(identity=True, loss="bpr", sampler="uniform")
  .fit(train, user_features=X, item_features=Y)``.
- **C**, pure collaborative filtering: ``BPR().fit(train)``.

B's and C's learning rate, regularisation, ``normalize_features`` (B) and epochs are chosen on a
validation split of ``ua.base`` (``split_random(train, 0.1, random_state=0)``, validation P2 AUC),
never on ``ua.test``. The per-epoch ``ua.test`` AUCs in the curves are monitoring only.

Cold start: 10% of the items (seeded) are removed from training entirely; B-style models are
trained on the rest and the held-out items are scored from their features alone
(``BPR.score_new_items``). Metric: per test user with a held-out positive in ``ua.test``, the AUC of
those positives against the other held-out items the user has no positive for (train or test);
mean over users. Settings (item identity on/off, ``normalize_features``, epochs) are chosen on a
cold-start validation built from ``ua.base`` alone: another 10% of the remaining items held out,
scored against their ``ua.base`` positives. Genres only, and genres plus the release-year bucket
from ``u.item`` (metadata the question did not use), are both reported.

Usage::

    python benchmarks/stackexchange.py [--data PATH] [--epochs N] [--quick] [--markdown PATH] [--plot PATH]

``--epochs`` sets the epochs of A and its one-change rows (default 10, as the Keras example; one epoch = one pass over
the training positives, as in Keras). ``--markdown PATH`` writes the
``## The StackExchange model, reproduced and fixed`` section into PATH (only that section is
replaced) and the plot next to it as ``stackexchange.png`` unless ``--plot`` says otherwise.
Everything runs on one thread (``threads=1``, BLAS limited to one thread).
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402 - standard library only

one_thread(__name__)  # one core only; before numpy is imported

import argparse  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Iterator, Sequence, TextIO  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bpr_numpy import BPR, metrics, sampling  # noqa: E402
from bpr_numpy.datasets import load_movielens_100k, split_random  # noqa: E402
from bpr_numpy.objective import pair_loss, pair_loss_derivative  # noqa: E402

import _report  # noqa: E402
from _data import DEFAULT_DATA  # noqa: E402
from _report import code_version, machine_line  # noqa: E402

SECTION_TITLE = "## The StackExchange model, reproduced and fixed"

AGE_EDGES = (18, 25, 35, 45, 50, 56)          # buckets <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
YEAR_EDGES = (1960, 1980, 1990, 1995, 1996, 1997, 1998)   # release-year buckets (cold start only)
FACTORS = 64
BATCH = 64
A_LEARNING_RATE = 0.05   # per triplet: the minibatch trainer's rate on the batch mean is this times BATCH
A_EPOCHS = 10          # the Keras example's 10 epochs
METRICS = ["full_auc", "auc", "precision"]
TARGET_GAP = 0.01        # B's P2 AUC within this of pure CF's
TARGET_COLD = 0.75       # cold-start P2 AUC among held-out items
MAX_EPOCHS = 200         # B and C: validated every 10 epochs up to this

# B and C grids (validation P2 AUC on split_random(ua.base, 0.1, random_state=0)).
GRID_B = [dict(normalize_features=n, learning_rate=lr, regularization=reg)
          for n in (False, True) for lr, reg in ((0.02, 0.02), (0.05, 0.005), (0.05, 0.002))]
GRID_C = [dict(learning_rate=lr, regularization=reg) for lr, reg in ((0.02, 0.02), (0.05, 0.005), (0.05, 0.02))]
# Cold start: items with or without identity x normalize_features; epochs from COLD_EPOCHS.
GRID_COLD = [dict(item_identity=ii, normalize_features=n) for ii in (True, False) for n in (False, True)]
COLD_EPOCHS = (25, 50, 100)
COLD_PARAMS = dict(learning_rate=0.02, regularization=0.02)
# --quick: no search, these settings (those the full run picked when this was written).
QUICK_B = dict(normalize_features=False, learning_rate=0.02, regularization=0.02)
QUICK_C = dict(learning_rate=0.02, regularization=0.02)
QUICK_EPOCHS = 30


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    train: sp.csr_matrix          # ua.base positives
    test: sp.csr_matrix           # ua.test positives
    user_meta: sp.csr_matrix      # users x 30 one-hot (age bucket, gender, occupation)
    genres: np.ndarray            # items x 19
    year_onehot: np.ndarray       # items x len(YEAR_EDGES) + 1
    user_meta_names: list[str]
    fit_train: sp.csr_matrix      # ua.base minus the validation pairs
    valid: sp.csr_matrix


def one_hot(codes: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """One column per distinct value (sorted), one 1 per row."""
    values, inverse = np.unique(codes, return_inverse=True)
    n = len(inverse)
    return sp.csr_matrix((np.ones(n), (np.arange(n), inverse.ravel())), shape=(n, len(values))), values


def load(path: str | os.PathLike) -> Data:
    """ua.base / ua.test (ratings >= 4), the question's user and item features, the validation split."""
    train_i, test_i = load_movielens_100k(path, split="ua", min_rating=4.0)
    # Same id space on both sides (943 x 1682, every user of u.user, every movie of u.item).
    assert train_i.matrix.shape == test_i.matrix.shape
    assert np.array_equal(train_i.user_ids, test_i.user_ids) and np.array_equal(train_i.item_ids, test_i.item_ids)
    uf = train_i.user_features
    age, _ = one_hot(np.digitize(uf["age"], AGE_EDGES))
    gender, g_names = one_hot(uf["gender"])
    occupation, o_names = one_hot(uf["occupation"])
    ages_present = np.unique(np.digitize(uf["age"], AGE_EDGES))
    names = ([f"age {AGE_LABELS[a]}" for a in ages_present] + [f"gender {g}" for g in g_names]
             + [f"occupation {o}" for o in o_names])
    user_meta = sp.hstack([age, gender, occupation], format="csr")
    genres = np.asarray(train_i.item_features, dtype=np.float64)
    years = np.array([int(d[-4:]) if len(d) >= 4 and d[-4:].isdigit() else 0
                      for d in train_i.item_info["release_date"]])
    year_onehot = np.eye(len(YEAR_EDGES) + 1)[np.digitize(years, YEAR_EDGES)]  # unknown year -> oldest bucket
    fit_i, valid_i = split_random(train_i, 0.1, random_state=0)
    return Data(train_i.matrix.tocsr(), test_i.matrix.tocsr(), user_meta, genres, year_onehot, names,
                fit_i.matrix.tocsr(), valid_i.matrix.tocsr())


def evaluate(factors: SimpleNamespace | BPR, train: sp.csr_matrix, test: sp.csr_matrix) -> dict[str, float]:
    """P1 full AUC, P2 AUC, precision@10 (train positives removed from the ranking)."""
    return metrics.evaluate(factors, train, test, metrics=METRICS, k=10)


def p2_auc(factors, train, test) -> float:
    return float(metrics.evaluate(factors, train, test, metrics=["auc"])["auc"])


# --------------------------------------------------------------------------- negatives


def pair_arrays(train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every stored pair, in CSR order."""
    return np.repeat(np.arange(train.shape[0]), np.diff(train.indptr)), train.indices.astype(np.int64)


def hard_negatives(train: sp.csr_matrix, genres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every training pair (u, i): the unobserved item whose genre vector is most cosine-similar to i's.

    Ties (many items share a genre vector) are broken uniformly at random. "Unobserved" means
    not a training positive of u, which is all the Keras model knew.
    """
    unit = genres / np.maximum(np.linalg.norm(genres, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    out = np.empty(train.nnz, dtype=np.int64)
    for u in range(train.shape[0]):
        lo, hi = train.indptr[u], train.indptr[u + 1]
        if lo == hi:
            continue
        liked = train.indices[lo:hi]
        block = sim[liked] + rng.random((hi - lo, sim.shape[1])) * 1e-6   # random tie-break
        block[:, liked] = -np.inf
        out[lo:hi] = np.argmax(block, axis=1)
    return out


def positive_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted ``u * n_items + i`` of every stored pair: membership tests by binary search."""
    users, items = pair_arrays(matrix)
    return np.sort(users * matrix.shape[1] + items)


def is_positive(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether each (users[k], items[k]) is among ``keys`` (from :func:`positive_keys`)."""
    q = np.asarray(users, dtype=np.int64) * n_items + items
    pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
    return (keys[pos] == q) if len(keys) else np.zeros(len(q), dtype=bool)


def uniform_negatives(keys: np.ndarray, users: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """j uniform over items, resampled while j is a training positive of u (the paper's sampler)."""
    j = rng.integers(0, n_items, len(users))
    bad = is_positive(keys, users, j, n_items)
    while bad.any():
        j[bad] = rng.integers(0, n_items, int(bad.sum()))
        bad[bad] = is_positive(keys, users[bad], j[bad], n_items)
    return j


# --------------------------------------------------------------------------- variant A's minibatch loop


@dataclass
class Run:
    """One trained variant: per-epoch training loss and ua.test P2 AUC, final metrics, fit seconds."""

    name: str
    loss_name: str
    losses: list[float] = field(default_factory=list)
    aucs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    final: dict = field(default_factory=dict)
    model: object = None
    settings: str = ""


HARD_SAMPLER = "stackexchange-hard"   # registered by :func:`hard_sampler` for variant A's fits


@contextmanager
def hard_sampler(train: sp.csr_matrix, hard: np.ndarray) -> Iterator[str]:
    """The hard negatives as a sampler of the library's minibatch trainer, registered while in use.

    A sampler with its own ``draw`` (:class:`bpr_numpy.sampling.Sampler`): the negative of a
    training pair ``(u, i)`` is ``hard[k]``, ``k`` the pair's position in ``train`` (CSR order),
    the same every epoch, as the question's precomputed triplets were.
    """
    keys = pair_arrays(train)[0].astype(np.int64) * train.shape[1] + train.indices
    order = np.argsort(keys, kind="stable")
    sorted_keys, hard_of_key = keys[order], hard[order]

    def draw(users, positives, user_items, rng):
        return hard_of_key[np.searchsorted(sorted_keys, users.astype(np.int64) * train.shape[1] + positives)]

    sampling.register_sampler(sampling.Sampler(
        HARD_SAMPLER, sampling.SamplerCodes(sampling.CANDIDATE_UNIFORM, False, sampling.ADAPTIVE_NONE), (),
        warp=False, hybrid=True, distributed=False, draw=draw))
    try:
        yield HARD_SAMPLER
    finally:
        sampling.unregister_sampler(HARD_SAMPLER)


def minibatch_loop(name: str, data: Data, *, loss: str, negatives: str, identity: bool, epochs: int,
                   hard: np.ndarray, seed: int = 0, learning_rate: float = A_LEARNING_RATE,
                   log: TextIO = sys.stderr) -> Run:
    """Minibatch SGD on triplets through the library: ``BPR(solver="minibatch", batch_size=64)``.

    One pass over the training pairs per epoch, batches of 64, metadata representations
    (:mod:`bpr_numpy.hybrid`, L1-normalised rows), no regularisation (the Keras model had none
    but dropout). Each batch's step is the library's: the mean of
    :func:`bpr_numpy.objective.hybrid_triplet_gradients` over the batch, times the learning
    rate ``learning_rate * 64`` (``learning_rate`` per triplet, as the kernels' SGD counts it).
    Hard negatives come from :func:`hard_sampler`; uniform ones are the library's ``"uniform"``.
    """
    train = data.train
    run = Run(name, loss, settings=f"{'identity + ' if identity else ''}metadata, {loss}, {negatives} negatives, "
                                   f"batch {BATCH}, SGD lr {learning_rate} a triplet, {epochs} epochs")
    with hard_sampler(train, hard) if negatives == "hard" else nullcontext("uniform") as sampler:
        model = BPR(factors=FACTORS, epochs=epochs, solver="minibatch", batch_size=BATCH, optimizer="sgd",
                    learning_rate=learning_rate * BATCH, regularization=0.0, loss=loss, sampler=sampler,
                    identity=identity, normalize_features=True, threads=1, random_state=seed)

        def after_epoch(report) -> None:
            run.seconds += report.seconds
            run.losses.append(report.loss)
            run.aucs.append(p2_auc(model, train, data.test))
            print(f"  {name}: epoch {report.epoch}/{epochs} loss {report.loss:.4f} P2 AUC {run.aucs[-1]:.4f}",
                  file=log, flush=True)

        model.fit(train, show_progress=False, callback=after_epoch, **feature_kwargs(data))
    run.model = model
    run.final = evaluate(model, train, data.test)
    return run


# --------------------------------------------------------------------------- the causes, measured


def softmax_figures(rng: np.random.Generator, k: int = FACTORS, n: int = 20_000, logit_std: float = 1.0) -> dict:
    """Scores of softmax tower outputs, and how much the softmax Jacobian shrinks the gradient.

    Each tower ends in ``p = softmax(z)``, ``z`` with standard deviation ``logit_std``. The
    score ``p_u . p_i`` then lies in [0, 1] and ``x_uij = p_u . (p_i - p_j)`` in [-1, 1], so
    ``1 - sigma(x_uij)`` can only move between 1 - sigma(1) and 1 - sigma(-1). The gradient of
    ``x_uij`` with respect to the user tower's logits is ``J (p_i - p_j)`` with
    ``J = diag(p) - p p^T``; a linear tower would pass ``p_i - p_j`` through unchanged.
    """
    def softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    pu, pi, pj = (softmax(rng.normal(0.0, logit_std, (n, k))) for _ in range(3))
    scores = np.concatenate([np.sum(pu * pi, axis=1), np.sum(pu * pj, axis=1)])
    x = np.sum(pu * (pi - pj), axis=1)
    d = pi - pj
    jd = pu * d - pu * np.sum(pu * d, axis=1, keepdims=True)      # J(z_u) (p_i - p_j)
    shrink = np.linalg.norm(jd, axis=1) / np.linalg.norm(d, axis=1)
    return dict(k=k, logit_std=logit_std, score_min=float(scores.min()), score_max=float(scores.max()),
                mean_abs_x=float(np.abs(x).mean()), max_abs_x=float(np.abs(x).max()),
                loss_floor=float(pair_loss(1.0, "sigmoid")), loss_ceiling=float(pair_loss(-1.0, "sigmoid")),
                mean_loss=float(pair_loss(x, "sigmoid").mean()), median_shrink=float(np.median(shrink)))


def negative_figures(data: Data, hard: np.ndarray, rng: np.random.Generator) -> dict:
    """How alike the hard negatives are to their positives, and how often they are false negatives."""
    users, items = pair_arrays(data.train)
    uniform = uniform_negatives(positive_keys(data.train), users, data.train.shape[1], rng)
    unit = data.genres / np.maximum(np.linalg.norm(data.genres, axis=1, keepdims=True), 1e-12)
    test_keys = positive_keys(data.test)
    out = {}
    for name, neg in (("hard", hard), ("uniform", uniform)):
        out[name] = dict(
            same_genres=float(np.mean(np.all(data.genres[items] == data.genres[neg], axis=1))),
            cosine=float(np.mean(np.sum(unit[items] * unit[neg], axis=1))),
            test_positive=float(np.mean(is_positive(test_keys, users, neg, data.train.shape[1]))),
        )
    return out


def slope_figures() -> dict:
    """ell'(x) of both losses at a few x_uij: 1 - sigma saturates where the pair is badly ranked."""
    x = np.array([-6.0, -3.0, -1.0, 0.0, 1.0, 3.0])
    return dict(x=x.tolist(), **{loss: pair_loss_derivative(x, loss).tolist() for loss in ("sigmoid", "bpr")})


def model_figures(run: Run, data: Data, hard: np.ndarray, rng: np.random.Generator, n: int = 20_000) -> dict:
    """On A's trained representations and its hard triplets: x_uij, the slope, and dropout's noise.

    Dropout 0.5 on each tower's output (inverted: kept units scaled by 2), three independent
    masks per triplet, as Keras applies it in each tower.
    """
    users, items = pair_arrays(data.train)
    pick = rng.integers(0, len(users), n)
    u, i, j = users[pick], items[pick], hard[pick]
    U, V, b = run.model.user_factors, run.model.item_factors, run.model.item_biases
    x = np.sum(U[u] * (V[i] - V[j]), axis=1) + b[i] - b[j]
    # Dropout acts on the tower outputs, so on the factor part of x (the bias is not a tower output).
    dot = np.sum(U[u] * (V[i] - V[j]), axis=1)
    masks = [(rng.random((n, U.shape[1])) < 0.5) * 2.0 for _ in range(3)]
    dropped = np.sum(masks[0] * U[u] * (masks[1] * V[i] - masks[2] * V[j]), axis=1)
    moving = dot != 0
    return dict(
        zero_x=float(np.mean(x == 0)),
        mean_abs_x=float(np.abs(x).mean()),
        slope_sigmoid=float(np.abs(pair_loss_derivative(x, "sigmoid")).mean()),
        slope_bpr=float(np.abs(pair_loss_derivative(x, "bpr")).mean()),
        # pairs with identical features: x_uij = 0 without dropout, dropout makes it a random number
        dropout_on_zero=float(np.abs(dropped[~moving]).mean()) if (~moving).any() else float("nan"),
        # the other pairs: their signal, dropout's noise on it, and how often it flips the sign
        mean_abs_dot=float(np.abs(dot[moving]).mean()) if moving.any() else float("nan"),
        dropout_noise=float(np.std(dropped[moving] - dot[moving])) if moving.any() else float("nan"),
        dropout_sign_flipped=float(np.mean(np.sign(dropped[moving]) != np.sign(dot[moving]))) if moving.any()
        else float("nan"),
    )


# --------------------------------------------------------------------------- B and C with the library


def feature_kwargs(data: Data) -> dict:
    return dict(user_features=data.user_meta, item_features=data.genres)


def tune(name: str, grid: Sequence[dict], data: Data, with_features: bool, log: TextIO) -> tuple[dict, int, list]:
    """Each configuration trained on ua.base minus the validation pairs, validation P2 AUC every 10 epochs."""
    tried = []
    for params in grid:
        start = time.perf_counter()
        model = BPR(factors=FACTORS, epochs=MAX_EPOCHS, threads=1, random_state=0, **params)
        model.fit(data.fit_train, show_progress=False, validation=(data.fit_train, data.valid), metric="auc",
                  validate_every=10, patience=50, **(feature_kwargs(data) if with_features else {}))
        tried.append((params, int(model.best_epoch_), float(model.best_score_)))
        print(f"  tune {name}: {describe(params)}: validation P2 AUC {model.best_score_:.4f} at epoch "
              f"{model.best_epoch_} ({time.perf_counter() - start:.1f} s)", file=log, flush=True)
    params, epochs, _ = max(tried, key=lambda t: t[2])
    return params, epochs, tried


def describe(params: dict) -> str:
    names = {"normalize_features": "normalize", "learning_rate": "lr", "regularization": "reg",
             "item_identity": "item identity"}
    return ", ".join(f"{names.get(k, k)} {v}" for k, v in params.items())


def library_run(name: str, data: Data, params: dict, epochs: int, with_features: bool, log: TextIO) -> Run:
    """Fit on all of ua.base, recording report.loss and the ua.test P2 AUC after every epoch."""
    run = Run(name, "bpr", settings=f"{describe(params)}, {epochs} epochs")
    model = BPR(factors=FACTORS, epochs=epochs, threads=1, random_state=0, loss="bpr", sampler="uniform",
                **params)
    eval_seconds = [0.0]

    def record(report):
        t = time.perf_counter()
        run.losses.append(float(report.loss))
        run.aucs.append(p2_auc(model, data.train, data.test))
        eval_seconds[0] += time.perf_counter() - t

    start = time.perf_counter()
    model.fit(data.train, show_progress=False, callback=record, **(feature_kwargs(data) if with_features else {}))
    run.seconds = time.perf_counter() - start - eval_seconds[0]
    run.model = model
    run.final = evaluate(model, data.train, data.test)
    print(f"  {name}: loss {run.losses[-1]:.4f}, P2 AUC {run.final['auc']:.4f} ({run.seconds:.1f} s)",
          file=log, flush=True)
    return run


# --------------------------------------------------------------------------- cold start


def cold_auc(scores: np.ndarray, positives: np.ndarray, excluded: np.ndarray) -> tuple[float, int]:
    """Mean over users with a positive of the AUC of their positives against the non-excluded others."""
    keep = positives.any(axis=1)
    candidates = ~excluded | positives
    per_user = metrics.auc_from_scores(scores[keep], positives[keep], candidates[keep])
    return float(np.nanmean(per_user)), int(np.sum(~np.isnan(per_user)))


def cold_model(params: dict, data: Data, item_meta: np.ndarray, warm: np.ndarray, epochs: int) -> BPR:
    """B-style model on the warm items' columns of ua.base. ``item_identity=False``: items
    metadata-only while users keep their identity (``identity="users"``)."""
    p = dict(params)
    item_identity = p.pop("item_identity")
    model = BPR(factors=FACTORS, epochs=epochs, threads=1, random_state=0,
                identity=True if item_identity else "users", **COLD_PARAMS, **p)
    model.fit(data.train[:, warm], show_progress=False, user_features=data.user_meta, item_features=item_meta[warm])
    return model


def cold_start(data: Data, quick: bool, log: TextIO) -> dict:
    """Hold out 10% of the items, train on the rest, score the held-out ones from metadata alone."""
    n_users, n_items = data.train.shape
    rng = np.random.default_rng(0)
    held = np.sort(rng.choice(n_items, n_items // 10, replace=False))
    warm = np.setdiff1d(np.arange(n_items), held)
    val_items = np.sort(rng.choice(warm, len(warm) // 10, replace=False))   # validation: from ua.base only
    warm_val = np.setdiff1d(warm, val_items)
    train_csc = data.train.tocsc()
    val_pos = train_csc[:, val_items].toarray() > 0
    test_pos = data.test.tocsc()[:, held].toarray() > 0
    test_excl = train_csc[:, held].toarray() > 0
    all_users = np.arange(n_users)
    sets = {"genres": data.genres, "genres + release year": np.hstack([data.genres, data.year_onehot])}
    rows = []
    for set_name, meta in sets.items():
        for item_identity in (True, False):
            grid = [g for g in GRID_COLD if g["item_identity"] == item_identity]
            if quick:
                grid, schedule = grid[:1], COLD_EPOCHS[:1]
            else:
                schedule = COLD_EPOCHS
            tried = []
            for params in grid:
                done, model = 0, None
                for epochs in schedule:   # validated at each epoch count by continuing to train
                    if model is None:
                        model = cold_model(params, data, meta, warm_val, epochs)
                    else:
                        model.partial_fit(data.train[:, warm_val], epochs=epochs - done, show_progress=False)
                    done = epochs
                    if quick:
                        score = float("nan")
                    else:
                        score = cold_auc(model.score_new_items(all_users, meta[val_items]), val_pos,
                                         np.zeros_like(val_pos))[0]
                    tried.append((params, epochs, score))
            params, epochs, val_score = max(tried, key=lambda t: -np.inf if np.isnan(t[2]) else t[2])
            start = time.perf_counter()
            model = cold_model(params, data, meta, warm, epochs)
            seconds = time.perf_counter() - start
            # score_new_items and item_representations agree (the latter used for a check).
            factors, bias = model.item_representations(meta[held])
            scores = model.score_new_items(all_users, meta[held])
            assert np.allclose(scores, model.user_factors @ factors.T + bias, atol=1e-4)
            test_score, n_eval = cold_auc(scores, test_pos, test_excl)
            rows.append(dict(features=set_name, item_identity=item_identity, params=params, epochs=epochs,
                             validation=val_score, test=test_score, users=n_eval, seconds=seconds,
                             tried=tried))
            print(f"  cold start, {set_name}, item identity {item_identity}: {describe(params)}, {epochs} epochs; "
                  f"validation {val_score:.4f}, ua.test {test_score:.4f} over {n_eval} users", file=log, flush=True)
    return dict(held=len(held), warm=len(warm), val_items=len(val_items), rows=rows,
                test_positives=int(test_pos.sum()), val_positives=int(val_pos.sum()))


# --------------------------------------------------------------------------- output


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def render(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(h), *(len(r[k]) for r in body)) for k, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'<' if k == 0 else '>'}{w}}}" for k, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in body])


LOSS_LABEL = {"sigmoid": "1 - σ", "bpr": "-ln σ"}


def variants_table(runs: Sequence[Run], markdown: bool = False) -> str:
    header = ["variant", "loss", "final training loss", "P2 AUC", "P1 full AUC", "precision@10", "fit s"]
    body = [[r.name, LOSS_LABEL[r.loss_name], _f(r.losses[-1]), _f(r.final["auc"]), _f(r.final["full_auc"]),
             _f(r.final["precision@10"]), f"{r.seconds:.1f}"] for r in runs]
    return render(header, body, markdown)


def epochs_table(a: Run, b: Run, c: Run, markdown: bool = False) -> str:
    """Per-epoch training loss and ua.test P2 AUC: every epoch of A, then every 10th (and the last)."""
    last = max(len(a.losses), len(b.losses), len(c.losses))
    shown = sorted({e for e in range(1, len(a.losses) + 1)} | set(range(10, last + 1, 10))
                   | {len(b.losses), len(c.losses)} - {0})
    header = ["epoch", "A loss (1 - σ)", "A P2 AUC", "B loss (-ln σ)", "B P2 AUC", "C loss (-ln σ)", "C P2 AUC"]

    def cell(run, e, what):
        seq = run.losses if what == "loss" else run.aucs
        return _f(seq[e - 1]) if e <= len(seq) else ""
    body = [[str(e)] + [cell(r, e, w) for r in (a, b, c) for w in ("loss", "auc")] for e in shown]
    return render(header, body, markdown)


def cold_table(cold: dict, markdown: bool = False) -> str:
    header = ["item features", "item identity", "chosen on validation", "validation AUC", "ua.test cold AUC",
              "users", "fit s"]
    body = [[r["features"], "yes" if r["item_identity"] else "no (metadata only)",
             f"normalize {r['params']['normalize_features']}, {r['epochs']} epochs", _f(r["validation"]),
             _f(r["test"]), str(r["users"]), f"{r['seconds']:.1f}"] for r in cold["rows"]]
    return render(header, body, markdown)


def cause_lines(runs: dict, figs: dict) -> list[str]:
    """One line per cause, each quoting the figure that shows it."""
    neg, soft, slope, model = figs["negatives"], figs["softmax"], figs["slopes"], figs["model"]
    a = runs["A"]
    hard, uni = neg["hard"], neg["uniform"]
    floor = hard["same_genres"] * 0.5
    x = slope["x"]
    at = {v: k for k, v in enumerate(x)}

    def auc(key):
        return _f(runs[key].final["auc"]) if key in runs else "n/a"
    lines = [
        f"- Identical features for the \"hard\" negatives: {hard['same_genres']:.1%} of them have exactly the "
        f"positive's genre vector (uniform negatives: {uni['same_genres']:.1%}); mean genre cosine "
        f"{hard['cosine']:.3f} (uniform {uni['cosine']:.3f}). With metadata-only items f(i) = f(j) there, so "
        f"x_uij = 0 for any weights: {model['zero_x']:.1%} of A's triplets after training, each stuck at "
        f"1 - σ(0) = 0.5. A's loss cannot go below {floor:.3f} ({hard['same_genres']:.1%} x 0.5); it went from "
        f"{a.losses[0]:.4f} (epoch 1) to {a.losses[-1]:.4f} (epoch {len(a.losses)}). Uniform negatives instead, "
        f"all else equal: P2 AUC {auc('A+uniform')} (A: {auc('A')}).",
        f"- Metadata-only representations: every user with the same age bucket, gender and occupation, and "
        f"every item with the same genres, get the same factors; no per-user or per-item signal can be learned. "
        f"Identity features added to A: P2 AUC {auc('A+identity')}; with all three changes in the same loop: "
        f"{auc('A+all')}.",
        f"- `1 - sigmoid` saturates: its slope ell'(x) is at most 0.25 (at x = 0) and "
        f"{slope['sigmoid'][at[-6.0]]:.4f} at x_uij = -6, where -ln σ gives {slope['bpr'][at[-6.0]]:.4f}; at "
        f"x = 0 the slopes are {slope['sigmoid'][at[0.0]]:.2f} and {slope['bpr'][at[0.0]]:.2f}. On A's trained "
        f"triplets the mean |ell'| is {model['slope_sigmoid']:.3f} (1 - σ) against {model['slope_bpr']:.3f} "
        f"(-ln σ). Swapping only the loss in A: P2 AUC {auc('A+bpr')} (A: {auc('A')}).",
        f"- Softmax towers (not expressible in the library; NumPy, {soft['k']} outputs, logits of std "
        f"{soft['logit_std']:g}): every score p_u·p_i lies in [0, 1] (here {soft['score_min']:.4f} to "
        f"{soft['score_max']:.4f}), |x_uij| <= 1 (here mean {soft['mean_abs_x']:.4f}, max {soft['max_abs_x']:.4f}), "
        f"so 1 - σ starts at {soft['mean_loss']:.4f} and can only ever range over [{soft['loss_floor']:.3f}, "
        f"{soft['loss_ceiling']:.3f}]; the softmax Jacobian diag(p) - pp^T passes a median "
        f"{soft['median_shrink']:.1%} of the gradient's norm back to the logits.",
        f"- False negatives: {hard['test_positive']:.2%} of the hard negatives are ua.test positives of the very "
        f"user (liked later), {hard['test_positive'] / max(uni['test_positive'], 1e-12):.1f}x the rate of "
        f"uniform negatives ({uni['test_positive']:.2%}): the most similar unobserved item is the one most "
        f"likely to be liked.",
        f"- Dropout 0.5 on the three tower outputs (A's trained representations, its hard triplets): on the "
        f"pairs with identical features, where x_uij = 0, it makes the factor part of x_uij a random number of "
        f"mean magnitude {model['dropout_on_zero']:.3f} (pure noise, a gradient with no signal); on the others "
        f"it adds noise of standard deviation {model['dropout_noise']:.3f} to a signal of mean magnitude "
        f"{model['mean_abs_dot']:.3f} and flips the sign of {model['dropout_sign_flipped']:.0%} of them. On a "
        "flat objective it adds noise, not regularisation.",
    ]
    return lines


def target_lines(runs: dict, cold: dict) -> list[str]:
    b, c = runs["B"].final["auc"], runs["C"].final["auc"]
    ok = b >= c - TARGET_GAP
    lines = [f"- B's P2 AUC within {TARGET_GAP} of pure CF or better: B {b:.4f}, C {c:.4f}, difference "
             f"{b - c:+.4f}: {'met' if ok else 'NOT met'}."]
    for r in cold["rows"]:
        verdict = "met" if r["test"] >= TARGET_COLD else f"NOT met, {TARGET_COLD - r['test']:.4f} short"
        lines.append(f"- Cold-start P2 AUC >= {TARGET_COLD} ({r['features']}, item identity "
                     f"{'yes' if r['item_identity'] else 'no'}): {r['test']:.4f}: {verdict}.")
    return lines


def plot(path: Path, a: Run, b: Run, c: Run, log: TextIO, floor: float | None = None) -> bool:
    """Loss and ua.test P2 AUC per epoch for A, B and C; False (with a message) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not importable: no plot written to {path}", file=log)
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run, style, label in ((a, "o-", "A: Keras design (1 - σ)"), (b, "-", "B: identity + metadata (-ln σ)"),
                              (c, "-", "C: pure CF (-ln σ)")):
        epochs = np.arange(1, len(run.losses) + 1)
        left.plot(epochs, run.losses, style, markersize=3, label=label)
        right.plot(epochs, run.aucs, style, markersize=3, label=label)
    left.set(xlabel="epoch", ylabel="mean training loss", title="training loss per epoch", xscale="log")
    right.set(xlabel="epoch", ylabel="P2 AUC on ua.test", title="AUC per epoch", xscale="log", ylim=(0.45, 1.0))
    right.axhline(0.5, color="grey", lw=0.8, ls=":")
    if floor is not None:   # A's loss floor: the share of x_uij = 0 triplets times 1 - sigma(0)
        left.axhline(floor, color="C0", lw=0.8, ls=":", label=f"A's floor ({floor:.3f}): identical features")
    left.legend(fontsize=8)
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(path: str | os.PathLike, section: str) -> None:
    """Replace (or append) only this script's section of ``path`` (:func:`_report.write_markdown`)."""
    _report.write_markdown(path, section, title=SECTION_TITLE)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs of A and its one-change rows (default {A_EPOCHS}; --quick: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: no search (fixed settings), few epochs")
    parser.add_argument("--markdown", metavar="PATH",
                        help=f"write the '{SECTION_TITLE}' section to PATH (replacing only that section)")
    parser.add_argument("--plot", metavar="PATH",
                        help="PNG of loss and AUC per epoch (default: stackexchange.png beside --markdown)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, log: TextIO = sys.stderr) -> dict:
    """Run the benchmark; print the tables to ``out`` and progress to ``log``.

    Returns
    -------
    dict
        ``runs`` (key -> Run: "A", "A+lr", "A+bpr", "A+uniform", "A+identity", "A+all", "B", "C"),
        ``figures`` (the causes' measurements), ``cold`` (cold-start rows), ``tuning``,
        ``targets`` (lines), ``markdown`` (the section's text), ``plot`` (path or None).
    """
    args = build_parser().parse_args(argv)
    epochs_a = args.epochs if args.epochs is not None else (2 if args.quick else A_EPOCHS)
    if epochs_a < 1:
        raise SystemExit("--epochs must be >= 1")
    epochs_one_change = 1 if args.quick and args.epochs is None else epochs_a
    started = time.perf_counter()
    version = code_version()
    data = load(args.data)
    train, test = data.train, data.test
    print(f"ua.base {train.nnz} positives, ua.test {test.nnz}; {train.shape[0]} users x {train.shape[1]} items; "
          f"user features {data.user_meta.shape[1]} one-hot columns, item features {data.genres.shape[1]} genres",
          file=log, flush=True)
    # Compile the numba kernels (plain and hybrid) before anything is timed.
    BPR(factors=8, epochs=1, threads=1, random_state=0).fit(data.fit_train, show_progress=False)
    BPR(factors=8, epochs=1, threads=1, random_state=0).fit(data.fit_train, show_progress=False,
                                                            **feature_kwargs(data))

    rng = np.random.default_rng(0)
    hard = hard_negatives(train, data.genres, rng)
    figures = dict(negatives=negative_figures(data, hard, np.random.default_rng(1)),
                   softmax=softmax_figures(np.random.default_rng(2)), slopes=slope_figures())

    print("variant A and its one-change rows (BPR(solver='minibatch'), batches of 64)", file=log, flush=True)
    runs: dict[str, Run] = {}
    loop = dict(data=data, hard=hard, log=log)
    runs["A"] = minibatch_loop("A: Keras design (metadata only, 1 - σ, hard negatives)", loss="sigmoid",
                               negatives="hard", identity=False, epochs=epochs_a, **loop)
    runs["A+lr"] = minibatch_loop(f"A, learning rate x10 ({A_LEARNING_RATE * 10:g})", loss="sigmoid",
                                  negatives="hard", identity=False, epochs=epochs_one_change,
                                  learning_rate=A_LEARNING_RATE * 10, **loop)
    runs["A+bpr"] = minibatch_loop("A + -ln σ instead of 1 - σ", loss="bpr", negatives="hard", identity=False,
                                   epochs=epochs_one_change, **loop)
    runs["A+uniform"] = minibatch_loop("A + uniform negatives instead of hard", loss="sigmoid",
                                       negatives="uniform", identity=False, epochs=epochs_one_change, **loop)
    runs["A+identity"] = minibatch_loop("A + identity features", loss="sigmoid", negatives="hard", identity=True,
                                        epochs=epochs_one_change, **loop)
    runs["A+all"] = minibatch_loop("A + all three (the fix, same loop)", loss="bpr", negatives="uniform",
                                   identity=True, epochs=epochs_one_change, **loop)
    figures["model"] = model_figures(runs["A"], data, hard, np.random.default_rng(3))

    if args.quick:
        b_params, b_epochs, c_params, c_epochs, tuning = QUICK_B, QUICK_EPOCHS, QUICK_C, QUICK_EPOCHS, None
    else:
        print("tuning B and C on split_random(ua.base, 0.1, random_state=0), validation P2 AUC", file=log,
              flush=True)
        b_params, b_epochs, tried_b = tune("B", GRID_B, data, True, log)
        c_params, c_epochs, tried_c = tune("C", GRID_C, data, False, log)
        tuning = dict(B=tried_b, C=tried_c)
    print("B and C on all of ua.base", file=log, flush=True)
    runs["B"] = library_run("B: library, identity + metadata, -ln σ, uniform", data, b_params, b_epochs, True, log)
    runs["C"] = library_run("C: library, pure CF", data, c_params, c_epochs, False, log)
    print("cold start", file=log, flush=True)
    cold = cold_start(data, args.quick, log)
    total_s = time.perf_counter() - started

    plot_path = Path(args.plot) if args.plot else (Path(args.markdown).resolve().parent / "stackexchange.png"
                                                   if args.markdown else None)
    floor = figures["negatives"]["hard"]["same_genres"] * 0.5
    plotted = plot(plot_path, runs["A"], runs["B"], runs["C"], log, floor) if plot_path is not None else False
    targets = target_lines(runs, cold)
    causes = cause_lines(runs, figures)
    order = ["A", "A+lr", "A+bpr", "A+uniform", "A+identity", "A+all", "B", "C"]
    command = "python benchmarks/stackexchange.py" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    settings = [f"- {runs[k].name}: {runs[k].settings}" for k in order]
    tuned_text = ("Fixed settings (--quick: no search)." if tuning is None else
                  "B and C tuned on `split_random(ua.base, 0.1, random_state=0)` by validation P2 AUC (every 10 "
                  f"epochs up to {MAX_EPOCHS}, patience 50), never on ua.test: B from "
                  + "; ".join(f"{describe(p)} -> {s:.4f} @ {e}" for p, e, s in tuning["B"])
                  + "; C from " + "; ".join(f"{describe(p)} -> {s:.4f} @ {e}" for p, e, s in tuning["C"]) + ".")
    cold_text = (f"Cold start: {cold['held']} of {train.shape[1]} items (10%, `np.random.default_rng(0)`) removed "
                 f"from training; {cold['test_positives']} ua.test positives fall on them. Scores from metadata "
                 "alone (`score_new_items`); per test user with a held-out positive, AUC of those positives "
                 "against the other held-out items the user has no positive for (train or test); mean over "
                 f"users. normalize_features and epochs ({', '.join(map(str, COLD_EPOCHS))}) chosen on a "
                 f"validation built from ua.base alone ({cold['val_items']} more items held out, scored against "
                 f"their {cold['val_positives']} ua.base positives); lr {COLD_PARAMS['learning_rate']}, reg "
                 f"{COLD_PARAMS['regularization']}. \"Item identity no\": items metadata-only, users keep an "
                 "identity column. \"genres + release year\" adds 8 release-year buckets from u.item, metadata "
                 "the question did not use.")

    print(f"MovieLens 100k, ua split, ratings >= 4 (ua.base {train.nnz}, ua.test {test.nnz}); {FACTORS} factors, "
          "threads=1; P2 AUC, P1 full AUC, precision@10 on ua.test", file=out)
    print(variants_table([runs[k] for k in order]), file=out)
    print("\nSettings:", file=out)
    for line in settings:
        print(line, file=out)
    print(tuned_text, file=out)
    print("\nThe causes, measured:", file=out)
    for line in causes:
        print(line, file=out)
    print("\nPer epoch (training loss; P2 AUC on ua.test, monitoring only):", file=out)
    print(epochs_table(runs["A"], runs["B"], runs["C"]), file=out)
    print("\n" + cold_text, file=out)
    print(cold_table(cold), file=out)
    print("\nTargets:", file=out)
    for line in targets:
        print(line, file=out)
    print(f"\nmachine: {machine_line()}\ncode: {version}\nwhole run {total_s:.0f} s", file=out)
    if plotted:
        print(f"plot: {plot_path}", file=out)

    md = [
        SECTION_TITLE,
        "",
        "The Keras triplet model of docs/design.md, 'The problem', rebuilt from bpr_numpy's pieces on "
        "MovieLens 100k (`ua` split, "
        f"ratings >= 4, ua.base {train.nnz} pairs, ua.test {test.nnz}): user features one-hot age bucket, "
        f"gender and occupation ({data.user_meta.shape[1]} columns), item features the 19 genre flags; "
        f"{FACTORS} factors, `threads=1`. A and its one-change rows are minibatch SGD (batches of {BATCH}, one "
        "pass over the training pairs per epoch): the library's NumPy trainer, `BPR(solver=\"minibatch\")`, "
        "whose step is the batch mean of `objective.hybrid_triplet_gradients`; the hard negatives are a sampler "
        "with its own `draw` (`sampling.Sampler`), registered by the script. B and C are `BPR.fit` with the "
        "numba kernels. Fit seconds exclude the per-epoch evaluation.",
        "",
        f"- Command: `{command}` (whole run {total_s / 60:.1f} min)",
        f"- Machine: {machine_line()}",
        f"- Code: {version}",
        "",
        variants_table([runs[k] for k in order], markdown=True),
        "",
        *settings,
        "",
        tuned_text,
        "",
        "### The causes, measured",
        "",
        *causes,
        "- Not measured here: the batch x batch score matrix (`K.dot(anchor, K.transpose(positive))`) and "
        "metadata fed to `Embedding` as ids; `benchmarks/keras_failure.py` shows the first.",
        "",
        "### Per epoch",
        "",
        "Training loss (mean pair loss over the epoch; A's is 1 - σ, B's and C's -ln σ, not comparable across) "
        "and P2 AUC on ua.test after each epoch (monitoring; nothing was chosen on it).",
        "",
        epochs_table(runs["A"], runs["B"], runs["C"], markdown=True),
        "",
    ]
    if plotted:
        rel = (os.path.relpath(plot_path.resolve(), Path(args.markdown).resolve().parent) if args.markdown
               else str(plot_path))
        md += [f"![loss and AUC per epoch for A, B and C]({rel})", ""]
    md += ["### Cold start", "", cold_text, "", cold_table(cold, markdown=True), "", "### Targets", "", *targets, ""]
    markdown = "\n".join(md)
    if args.markdown:
        write_markdown(args.markdown, markdown)
        print(f"wrote the '{SECTION_TITLE}' section to {args.markdown}", file=log)
    return dict(runs=runs, figures=figures, cold=cold, tuning=tuning, targets=targets, markdown=markdown,
                plot=plot_path if plotted else None)


if __name__ == "__main__":
    main()
