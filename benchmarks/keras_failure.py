"""Why a Keras BPR triplet model's loss does not go down (docs/design.md, 'The problem'), shown with bpr_numpy.

Two of the causes, measured rather than asserted:

1. The loss ``1 - sigmoid(x_uij)`` has derivative ``-sigmoid(x)(1 - sigmoid(x))``: at most 0.25,
   and vanishing exactly where the model is most wrong (x_uij << 0). BPR's ``-ln sigmoid(x)``
   keeps a slope near -1 there. Same data, same settings, only the loss differs.
2. ``score = anchor @ positive.T`` is a batch x batch matrix: each user is scored against every
   *other* triplet's items, and only the diagonal holds the real triplets. The per-triplet score
   is the row-wise ``sum(anchor * positive, axis=-1)``.

Run: ``python benchmarks/keras_failure.py`` (MovieLens 100k from ../shared/data/ml-100k or
$BPR_NUMPY_ML100K when present, the built-in synthetic set otherwise; well under 30 s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bpr_numpy import BPR, datasets, metrics
from bpr_numpy.objective import pair_loss_derivative

ML100K = Path(os.environ.get("BPR_NUMPY_ML100K", Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
EPOCHS = 5


def load() -> tuple[str, object, object]:
    """MovieLens 100k ua split (ratings >= 4), or the built-in synthetic set when it is absent."""
    if (ML100K / "ua.base").is_file():
        train, test = datasets.load_movielens_100k(ML100K, split="ua", min_rating=4.0)
        return "MovieLens 100k ua split", train.matrix, test.matrix
    data = datasets.synthetic_small(random_state=0)
    train, test = datasets.split_random(data, test_fraction=0.2, random_state=0)
    return "built-in synthetic set (MovieLens 100k not found)", train.matrix, test.matrix


def loss_comparison() -> None:
    name, train, test = load()
    print(f"1. The loss. {name}, {EPOCHS} epochs, 64 factors, learning rate 0.02, threads=1, seed 0")
    print("   initial factors        loss      P1 full AUC   mean |ell'| on 10,000 training triplets after")
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    pick = rng.integers(0, train.nnz, 10_000)
    u, i, j = users[pick], train.indices[pick], rng.integers(0, train.shape[1], 10_000)
    # init_std=1 spreads the initial x_uij over about +-8 (64 factors): many pairs start badly
    # ranked, as with a tower whose outputs are not centred. Only the loss differs within a row pair.
    for init_std, label in ((None, "std 1/sqrt(64)"), (1.0, "std 1 (wide)")):
        for loss in ("sigmoid", "bpr"):
            model = BPR(loss=loss, epochs=EPOCHS, init_std=init_std, threads=1, random_state=0)
            model.fit(train, show_progress=False)
            p1 = metrics.evaluate(model, train, test, metrics=["full_auc"])["full_auc"]
            # The slope SGD actually applies: ell'(x_uij) on sampled (u, i, j) with the trained factors.
            slope = np.abs(pair_loss_derivative(model.score(u, i) - model.score(u, j), loss)).mean()
            print(f"   {label:22s} {loss:8s}  {p1:.4f}        {slope:.3f}")
    x = np.array([-6.0, -3.0, 0.0, 3.0])
    print("   derivative ell'(x) at x_uij =   " + "  ".join(f"{v:6.1f}" for v in x))
    for loss in ("sigmoid", "bpr"):
        print(f"     {loss:8s}                     " + "  ".join(f"{v:6.3f}" for v in pair_loss_derivative(x, loss)))
    print("   A badly ranked pair (x = -6) barely moves under 1 - sigmoid; under -ln sigmoid it gets the full\n"
          "   step. From a well-scaled start both learn (the working Keras example uses 1 - sigmoid); from a\n"
          "   wide one, 1 - sigmoid stays near chance (P1 about 0.5) while -ln sigmoid keeps learning.")


def score_matrix_bug(batch: int = 4, factors: int = 8) -> None:
    rng = np.random.default_rng(0)
    anchor, pos, neg = (rng.normal(size=(batch, factors)) for _ in range(3))
    right = np.sum(anchor * pos, axis=-1) - np.sum(anchor * neg, axis=-1)   # one x_uij per triplet
    wrong = anchor @ pos.T - anchor @ neg.T                                  # K.dot(anchor, K.transpose(...))
    print(f"\n2. The score. {batch} triplets, {factors} factors")
    print("   row-wise x_uij:      " + np.array2string(right, precision=2))
    print("   anchor @ positive.T - anchor @ negative.T (batch x batch):")
    for row in wrong:
        print("       " + np.array2string(row, precision=2))
    print(f"   only its diagonal is the real triplets ({batch} of {batch * batch} entries); "
          f"diagonal == row-wise: {np.allclose(np.diag(wrong), right)}")
    # The gradient each user's embedding receives, per-triplet BPR loss vs the matrix "loss" (both means).
    b = 64
    anchor, pos, neg = (rng.normal(size=(b, factors)) for _ in range(3))
    x_right = np.sum(anchor * (pos - neg), axis=-1)
    g_right = pair_loss_derivative(x_right)[:, None] * (pos - neg) / b
    s = pair_loss_derivative(anchor @ (pos - neg).T)                       # (b, b)
    g_wrong = s @ (pos - neg) / (b * b)
    cos = np.sum(g_right * g_wrong, axis=1) / (np.linalg.norm(g_right, axis=1) * np.linalg.norm(g_wrong, axis=1))
    longer = np.median(np.linalg.norm(g_wrong, axis=1) / np.linalg.norm(g_right, axis=1))
    print(f"   batch {b}: cosine between each user's true gradient and the matrix version's, "
          f"median {np.median(cos):.2f}; the matrix version's gradient is {longer:.2f}x "
          "as long: mostly the other triplets' items")


if __name__ == "__main__":
    start = time.perf_counter()
    loss_comparison()
    score_matrix_bug()
    print(f"\n({time.perf_counter() - start:.1f} s)")
