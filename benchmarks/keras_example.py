"""The seed Keras notebook's experiment, through the NumPy minibatch trainer, beside its published curve.

Kula's ``triplet_recommendations_keras`` notebook (the example this project started from)
prints the full AUC after each of its 10 epochs; this script trains the same model the same
way with ``BPR(solver="minibatch")`` for several seeds and prints the mean per epoch beside
the published figures.

The printed epochs are the model's 11th to 20th. The notebook (commit d23818e) shows its
model-building cell at execution count 6 and its training loop at 8, and the training loop
does not rebuild the model: count 7 was a first run of the same 10 epochs, whose output the
second run replaced (the layer names ``flatten_7..9`` also show the building cell ran three
times). Trained from scratch, the recipe below gives 0.827-0.833 after one epoch and 0.904
after ten, and an independent plain-NumPy transcription of Keras 1's update gives the same;
its epochs 11-20 give the published curve. ``--offset`` (default 10) says how many epochs
train before the printed ones.

What the notebook did, as its code shows:

- MovieLens 100k ``ua.base``/``ua.test``, ratings >= 4 set to 1, matrices indexed by the raw
  1-based ids: shape (944, 1683), user 0 and item 0 unused (its 94,400 and 168,300 embedding
  parameters);
- every training positive once per epoch with a negative drawn uniformly over all 1,683
  columns and *not* rejected when it is a positive (``sampler="uniform-any"``), Keras shuffling
  the triplets and cutting batches of 64;
- 100-dimensional embeddings, Keras 1's ``Embedding`` initialisation (uniform on +-0.05:
  ``init="uniform", init_std=0.05 / sqrt(3)``), no bias, no L2;
- loss ``1 - sigma(x_uij)`` averaged over the batch (``loss="sigmoid"``);
- Keras 1's ``Adam()`` (lr 0.001) applied to the embedding matrices as dense tensors by
  Theano (``optimizer="adam-dense"``);
- full AUC (protocol P1, :func:`bpr_numpy.metrics.full_auc`): per user with a test positive,
  the ROC AUC of ``w_u . V^T`` over all 1,683 columns, test positives against everything else.

``--vary`` trains the same with one of the notebook's choices replaced by bpr_numpy's default,
one at a time: ``bpr`` (loss ``-ln sigma``), ``rejected`` (negatives redrawn while a positive),
``bias`` (an item bias), ``kernel`` (the numba per-sample SGD kernel at its default step).

Run: ``python benchmarks/keras_example.py [--seeds 5] [--vary bpr,rejected,bias,kernel] [--plot PNG]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402

one_thread(__name__)

from _data import DEFAULT_DATA  # noqa: E402  (after one_thread: it imports numpy)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bpr_numpy import BPR, metrics  # noqa: E402


#: Full AUC after each epoch, as the notebook printed it (the model's epochs 11-20, see above).
PUBLISHED = (0.9059, 0.9082, 0.9097, 0.9108, 0.9122, 0.9126, 0.9133, 0.9138, 0.9146, 0.9154)

#: The notebook's model and training, as BPR's arguments.
NOTEBOOK = dict(factors=100, loss="sigmoid", item_bias=False, regularization=0.0, solver="minibatch",
                batch_size=64, sampler="uniform-any", optimizer="adam-dense", learning_rate=0.001,
                init="uniform", init_std=0.05 / np.sqrt(3), dtype=np.float32, threads=1)

#: One of the notebook's choices replaced by bpr_numpy's.
VARIANTS = {
    "bpr": {"loss": "bpr"},
    "rejected": {"sampler": "uniform"},
    "bias": {"item_bias": True},
    "kernel": {"solver": "kernel", "sampler": "uniform", "optimizer": "sgd", "learning_rate": 0.02,
               "init": "normal", "init_std": None},
}


def load(folder: Path) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``ua.base`` and ``ua.test`` as the notebook built them: raw ids as indices, ratings >= 4 as 1."""
    shape = (944, 1683)
    parts = []
    for name in ("ua.base", "ua.test"):
        table = np.loadtxt(folder / name, dtype=np.int64)
        keep = table[:, 2] >= 4
        users, items = table[keep, 0], table[keep, 1]
        parts.append(sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape))
    return parts[0], parts[1]


def curve(train: sp.csr_matrix, test: sp.csr_matrix, seed: int, epochs: int, offset: int = 0,
          **changes) -> tuple[list, float]:
    """Full AUC after each of the ``epochs`` epochs that follow ``offset`` unprinted ones, and the fit's seconds."""
    aucs: list[float] = []
    model = BPR(**{**NOTEBOOK, **changes}, epochs=offset + epochs, random_state=seed)

    def evaluate(report) -> None:
        if report.epoch > offset:
            aucs.append(metrics.full_auc(model, train, test))

    model.fit(train, callback=evaluate)
    return aucs, sum(r.seconds for r in model.history_)


def plot(results: dict, offset: int, path: Path) -> bool:
    """The published curve and each row's mean (min-max band) per printed epoch, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install 'bpr_numpy[bench]')", file=sys.stderr)
        return False
    epochs = np.arange(1, len(PUBLISHED) + 1)
    fig, axes = plt.subplots(1, 2 if len(results) > 1 else 1, figsize=(12 if len(results) > 1 else 7, 4.2),
                             squeeze=False)
    # Left: the reproduction alone, at the published curve's scale; right: every row.
    for ax, rows in zip(axes[0], ({k: v for k, v in results.items() if k == "notebook's choices"}, results)):
        ax.plot(epochs, PUBLISHED, "k--o", label="published (Keras 1, Theano)")
        for k, (label, aucs) in enumerate(rows.items()):
            x = np.arange(1, aucs.shape[1] + 1)
            ax.plot(x, aucs.mean(axis=0), "-o", color=f"C{k}", label=f"{label} ({aucs.shape[0]} seeds)")
            ax.fill_between(x, aucs.min(axis=0), aucs.max(axis=0), color=f"C{k}", alpha=0.2)
        ax.set_xlabel(f"printed epoch (the model's epoch minus {offset})")
        ax.set_ylabel("full AUC (P1), ua.test")
        ax.legend(fontsize=8)
    axes[0][0].set_title("The Keras example's curve, BPR(solver='minibatch')")
    if len(results) > 1:
        axes[0][1].set_title("one of the notebook's choices replaced by bpr_numpy's")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--offset", type=int, default=10, help="epochs trained before the printed ones")
    parser.add_argument("--vary", default="", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--plot", type=Path, default=None, help="write the curves to this PNG")
    args = parser.parse_args(argv)
    if not (args.data / "ua.base").is_file():
        print(f"MovieLens 100k not found in {args.data} (set BPR_NUMPY_ML100K)", file=sys.stderr)
        return 2
    train, test = load(args.data)
    print(f"ua.base {train.nnz:,} positives, ua.test {test.nnz:,}, shape {train.shape}; seeds 0-{args.seeds - 1}; "
          f"printed: epochs {args.offset + 1}-{args.offset + args.epochs}")
    rows = {"notebook's choices": {}}
    rows.update({f"... but {name}": VARIANTS[name] for name in filter(None, args.vary.split(","))})
    results = {}
    for label, changes in rows.items():
        start = time.perf_counter()
        runs = [curve(train, test, seed, args.epochs, args.offset, **changes) for seed in range(args.seeds)]
        aucs = np.array([r[0] for r in runs])
        results[label] = aucs
        print(f"{label}: {time.perf_counter() - start:.0f} s, fit {np.mean([r[1] for r in runs]):.1f} s a seed",
              file=sys.stderr)
    header = "| epoch | published | " + " | ".join(f"{label} (mean, min-max)" for label in results) + " |"
    print(header)
    print("|" + "---|" * (2 + len(results)))
    for e in range(args.epochs):
        cells = [f"{a[:, e].mean():.4f} ({a[:, e].min():.4f}-{a[:, e].max():.4f})" for a in results.values()]
        published = f"{PUBLISHED[e]:.4f}" if e < len(PUBLISHED) else "-"
        print(f"| {e + 1} | {published} | " + " | ".join(cells) + " |")
    base = results["notebook's choices"].mean(axis=0)
    common = min(len(base), len(PUBLISHED))
    worst = np.abs(base[:common] - np.array(PUBLISHED[:common])).max()
    print(f"\nlargest |mean - published| over printed epochs 1-{common}: {worst:.4f}")
    if args.plot is not None:
        plot(results, args.offset, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
