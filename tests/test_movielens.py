"""Quality on MovieLens 100k (official ua split, ratings >= 4), with the default hyperparameters.

The floors are the published figure to beat (the Keras example's full AUC, 0.915) and margins
taken from the measured seed-to-seed spread of the defaults (see docs/guide/tuning.md, "How the defaults were chosen").
Skipped where ../shared/data/ml-100k is absent; CI has it.
"""

import numpy as np
import pytest

from bpr_numpy import BPR, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_models(ua):
    train, _ = ua
    return [BPR(threads=1, random_state=seed).fit(train) for seed in (0, 1, 2)]


def test_split_is_the_official_one(ua):
    train, test = ua
    assert train.shape == test.shape == (943, 1682)
    assert train.nnz == 49_906


def test_full_auc_beats_the_keras_example(ua, default_models):
    train, test = ua
    p1 = np.array([metrics.full_auc(m, train, test) for m in default_models])
    # Measured over 5 seeds (docs/guide/tuning.md, benchmarks/tune_defaults.py --final-only): mean 0.9202,
    # std 0.0004. Every seed must clear the Keras example's 0.915 (13 std below our mean),
    # and the mean of 3 seeds must stay within 5 std of what we measured, so a real
    # regression fails here.
    assert p1.min() >= 0.915, p1
    assert p1.mean() >= 0.9202 - 5 * 0.0004, p1


def test_precision_at_10_beats_popularity_and_the_tuned_peers_bpr(ua, default_models):
    train, test = ua
    prec = np.array([metrics.precision_at_k(m, train, test, k=10) for m in default_models])
    popularity = metrics.precision_at_k(metrics.popularity_scorer(train), train, test, k=10)
    assert popularity < 0.075  # docs/design.md, 'What the peers do': 0.067
    # implicit's tuned BPR reaches 0.110 here (docs/design.md, 'What the peers do'); default bpr_numpy must do better.
    # Measured (docs/guide/tuning.md): mean 0.1409, std 0.0017.
    assert prec.min() > 0.110, prec
    assert prec.mean() >= 0.1409 - 5 * 0.0017, prec


def test_multithreaded_training_reaches_the_same_quality(ua):
    train, test = ua
    m = BPR(threads=2, random_state=0).fit(train)
    assert metrics.full_auc(m, train, test) >= 0.915
