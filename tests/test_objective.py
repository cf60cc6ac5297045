"""The math: objective.py against closed forms, and against the finite-difference oracle."""

import decimal

import numpy as np
import pytest
from _budget import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bpr_numpy import objective
from bpr_numpy.gradcheck import DEFAULT_TOLERANCE, check_gradients, gradcheck
from bpr_numpy.objective import Gradients, Regularization, triplet_gradients


@st.composite
def problems(draw):
    """A random BPR batch with repeated rows and a chosen max |x_uij|."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 8))
    factors = draw(st.integers(1, 64))
    batch = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    loss = draw(st.sampled_from(objective.LOSSES))
    bias = draw(st.booleans())
    max_abs_x = draw(st.floats(1e-3, 50.0))
    regs = draw(st.tuples(*[st.floats(0.0, 0.2)] * 4))
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, factors))
    V = rng.normal(size=(n_items, factors))
    b = rng.normal(size=n_items) if bias else None
    users = rng.integers(0, n_users, batch)
    pos = rng.integers(0, n_items, batch)
    neg = (pos + rng.integers(1, n_items, batch)) % n_items
    # x_uij is linear in (U, b). Rescale them so that the Cauchy-Schwarz bound
    # |w_u| |h_i - h_j| + |b_i - b_j| of the largest triplet is max_abs_x: |x_uij|
    # then spans up to max_abs_x without blowing up U when a draw happens to be
    # nearly orthogonal.
    bound = np.linalg.norm(U[users], axis=1) * np.linalg.norm(V[pos] - V[neg], axis=1)
    if b is not None:
        bound += np.abs(b[pos] - b[neg])
    c = max_abs_x / bound.max()
    U *= c
    if b is not None:
        b *= c
    weights = None
    if loss == "warp":
        weights = rng.uniform(0.0, 5.0, batch)
        # The hinge's kink at x = 1: keep every triplet further from it than the
        # stencil's reach (2 steps of 1e-4 max(1, |theta|) times the largest slope of x).
        x = np.einsum("bf,bf->b", U[users], V[pos] - V[neg]) + (0 if b is None else b[pos] - b[neg])
        theta = max(1.0, np.abs(U).max(), np.abs(V).max(), 0 if b is None else np.abs(b).max())
        reach = 4e-4 * theta * max(1.0, np.abs(U).max(), 2 * np.abs(V).max())
        assume(np.min(np.abs(1.0 - x)) > reach)
    return dict(user_factors=U, item_factors=V, item_bias=b, users=users, positives=pos, negatives=neg,
                loss=loss, regularization=Regularization(*regs), weights=weights)


def _args(p):
    return (p["user_factors"], p["item_factors"], p["item_bias"], p["users"], p["positives"], p["negatives"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_gradients_match_finite_differences(p):
    result = check_gradients(*_args(p), loss=p["loss"], regularization=p["regularization"],
                             weights=p["weights"])
    assert result.passed, str(result)
    assert result.max_error <= 1e-6


def _wrong(kind):
    """Gradients with one classic bug each; the oracle must flag every one."""

    def gradient(U, V, b, users, pos, neg, *, loss, regularization):
        g = triplet_gradients(U, V, b, users, pos, neg, loss=loss, regularization=regularization)
        gU, gV, gb = g.user_factors.copy(), g.item_factors.copy(), g.item_bias.copy()
        reg = Regularization.coerce(regularization)
        if kind == "regularization_factor_2":  # lambda * |theta|^2 differentiated as 2 lambda theta
            np.add.at(gU, users, reg.user * U[users])
            np.add.at(gV, pos, reg.positive * V[pos])
            np.add.at(gV, neg, reg.negative * V[neg])
        elif kind == "negative_sign":
            s = objective.pair_loss_derivative(objective.triplet_scores(U, V, b, users, pos, neg), loss)
            np.add.at(gV, neg, 2 * s[:, None] * U[users])
        elif kind == "no_accumulation":  # fancy-index assignment drops repeated rows
            gU = np.zeros_like(U)
            x = objective.triplet_scores(U, V, b, users, pos, neg)
            s = objective.pair_loss_derivative(x, loss)[:, None]
            gU[users] = s * (V[pos] - V[neg]) + reg.user * U[users]
        elif kind == "keras_loss_for_bpr":  # the slope of 1 - sigmoid used for -ln sigmoid
            x = objective.triplet_scores(U, V, b, users, pos, neg)
            ds = (objective.pair_loss_derivative(x, "sigmoid") - objective.pair_loss_derivative(x, loss))[:, None]
            np.add.at(gU, users, ds * (V[pos] - V[neg]))
        elif kind == "bias_without_regularization":
            np.add.at(gb, pos, -reg.bias * b[pos])
            np.add.at(gb, neg, -reg.bias * b[neg])
        return Gradients(g.loss, gU, gV, gb)

    return gradient


@pytest.mark.parametrize("kind", ["regularization_factor_2", "negative_sign", "no_accumulation",
                                  "keras_loss_for_bpr", "bias_without_regularization"])
def test_oracle_catches_classic_gradient_bugs(kind):
    # Few users and items so rows repeat in the batch (needed by "no_accumulation").
    result = gradcheck(n_users=3, n_items=4, factors=8, batch=40, loss="bpr", item_bias=True,
                       regularization=Regularization(0.05, 0.07, 0.03, 0.11), gradient=_wrong(kind))
    assert not result.passed
    assert result.max_error > 1e-3, str(result)


def test_correct_gradient_passes_with_margin():
    for loss in objective.LOSSES:
        for bias in (True, False):
            result = gradcheck(factors=64, loss=loss, item_bias=bias, random_state=1)
            assert result.max_error < 1e-7, str(result)
            assert set(result.errors) == {"loss", "user_factors", "item_factors"} | ({"item_bias"} if bias else set())


@pytest.mark.parametrize("loss", objective.LOSSES)
def test_pair_loss_is_stable_for_large_scores(loss):
    x = np.array([-100.0, -50.0, -1e-300, 0.0, 1e-300, 50.0, 100.0])
    with np.errstate(all="raise"):
        value = objective.pair_loss(x, loss)
        slope = objective.pair_loss_derivative(x, loss)
    assert np.isfinite(value).all() and np.isfinite(slope).all()
    if loss == "warp":
        np.testing.assert_array_equal(value, np.maximum(1.0 - x, 0.0))
        np.testing.assert_array_equal(slope, [-1.0, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0])
    elif loss in ("bpr", "softmax"):  # the softmax with one negative is BPR
        np.testing.assert_allclose(value[[0, 1]], [100.0, 50.0], rtol=1e-15)
        np.testing.assert_allclose(value[-1], np.exp(-100.0), rtol=1e-14)  # no 1 - tiny cancellation
        np.testing.assert_allclose(slope[[0, -1]], [-1.0, -np.exp(-100.0)], rtol=1e-14)
    else:
        np.testing.assert_allclose(value[[0, -1]], [1.0, np.exp(-100.0)], rtol=1e-14)
        np.testing.assert_allclose(slope[-1], -np.exp(-100.0), rtol=1e-14)
        np.testing.assert_allclose(slope[0], -np.exp(-100.0), rtol=1e-14)


@settings(max_examples=examples(200), deadline=None)
@given(st.floats(-100, 100))
def test_pair_losses_match_their_definitions(x):
    # 120-digit decimal arithmetic: an independent, cancellation-free reference.
    with decimal.localcontext() as ctx:
        ctx.prec = 120  # ln(sigma(100)) ~ -4e-44 needs 44 digits beyond the 1e-13 we check
        sig = 1 / (1 + (-decimal.Decimal(x)).exp())
        expected = {
            ("bpr", "value"): -sig.ln(),
            ("sigmoid", "value"): 1 - sig,
            ("bpr", "slope"): -(1 - sig),
            ("sigmoid", "slope"): -sig * (1 - sig),
        }
    for (loss, what), ref in expected.items():
        fn = objective.pair_loss if what == "value" else objective.pair_loss_derivative
        np.testing.assert_allclose(fn(x, loss), float(ref), rtol=1e-13, atol=0, err_msg=f"{loss} {what}")


def test_sigmoid_loss_gradient_vanishes_where_bpr_does_not():
    # The reason the Keras example's 1 - sigmoid(x) learns slowly from badly ranked pairs.
    x = np.array([-20.0])
    assert abs(objective.pair_loss_derivative(x, "sigmoid")[0]) < 1e-8
    assert objective.pair_loss_derivative(x, "bpr")[0] == pytest.approx(-1.0)
    assert abs(objective.pair_loss_derivative(np.array([0.0]), "sigmoid")[0]) == pytest.approx(0.25)


def test_sgd_step_is_minus_learning_rate_times_gradient():
    rng = np.random.default_rng(0)
    U, V, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    reg = Regularization(0.1, 0.2, 0.3, 0.4)
    g = triplet_gradients(U, V, b, np.array([1]), np.array([2]), np.array([0]), regularization=reg)
    U2, V2, b2 = U.copy(), V.copy(), b.copy()
    objective.sgd_step(U2, V2, b2, 1, 2, 0, learning_rate=0.5, regularization=reg)
    np.testing.assert_allclose(U2, U - 0.5 * g.user_factors, rtol=1e-15)
    np.testing.assert_allclose(V2, V - 0.5 * g.item_factors, rtol=1e-15)
    np.testing.assert_allclose(b2, b - 0.5 * g.item_bias, rtol=1e-15)


def test_regularization_coercion_and_errors():
    assert Regularization.coerce(0.1).as_tuple() == (0.1, 0.1, 0.1, 0.1)
    assert Regularization.coerce({"negative": 0.5}).as_tuple() == (0.0, 0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="unknown regularization role"):
        Regularization.coerce({"items": 0.1})
    with pytest.raises(ValueError, match="finite and >= 0"):
        Regularization.coerce(-1.0)
    with pytest.raises(TypeError, match="real number"):
        Regularization.coerce({"user": "0.1"})
    with pytest.raises(TypeError):
        Regularization.coerce("0.1")


def test_batch_validation_names_the_problem():
    U, V = np.zeros((2, 3)), np.zeros((4, 3))
    ok = np.array([0])
    with pytest.raises(ValueError, match="positives holds an index outside"):
        objective.triplet_loss(U, V, None, ok, np.array([4]), ok)
    with pytest.raises(TypeError, match="users must be a 1-D integer array"):
        objective.triplet_loss(U, V, None, np.array([0.0]), ok, ok)
    with pytest.raises(ValueError, match="same number of columns"):
        objective.triplet_loss(U, np.zeros((4, 2)), None, ok, ok, ok)
    with pytest.raises(ValueError, match="loss must be one of"):
        objective.triplet_loss(U, V, None, ok, ok, ok, loss="hinge")


def test_gradcheck_entry_point_reports_every_block():
    result = gradcheck()
    assert result.passed
    text = str(result)
    assert "user_factors" in text and "item_factors" in text and "item_bias" in text and "PASS" in text
    with pytest.raises(ValueError, match="n_items must be at least 2"):
        gradcheck(n_items=1)
    assert DEFAULT_TOLERANCE == 1e-6


def test_warp_weight_is_lightfms_rank_estimate():
    assert objective.warp_weight(1682, 1) == pytest.approx(np.log(1681))
    assert objective.warp_weight(1682, 10) == pytest.approx(np.log(168))
    assert objective.warp_weight(11, 10) == 0.0  # floor(10 / 10) = 1: log 1
    assert objective.warp_weight(5, 10) == 0.0   # fewer items than draws: clamped at log 1
    with pytest.raises(ValueError, match="n_draws"):
        objective.warp_weight(10, 0)


def test_warp_weights_scale_loss_and_gradient_linearly():
    rng = np.random.default_rng(3)
    U, V, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    u, i, j = np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([4, 0, 1])
    w = np.array([0.5, 2.0, 3.0])
    whole = triplet_gradients(U, V, b, u, i, j, loss="warp", weights=w)
    for t in range(3):
        one = triplet_gradients(U, V, b, u[t:t + 1], i[t:t + 1], j[t:t + 1], loss="warp")
        x = objective.triplet_scores(U, V, b, u[t:t + 1], i[t:t + 1], j[t:t + 1])[0]
        assert one.loss == pytest.approx(max(0.0, 1.0 - x))
    assert whole.loss == pytest.approx(sum(
        w[t] * max(0.0, 1.0 - objective.triplet_scores(U, V, b, u[t:t + 1], i[t:t + 1], j[t:t + 1])[0])
        for t in range(3)))
    with pytest.raises(ValueError, match="weights must have shape"):
        objective.triplet_loss(U, V, b, u, i, j, weights=np.ones(2))
    with pytest.raises(ValueError, match="finite and >= 0"):
        objective.triplet_loss(U, V, b, u, i, j, weights=np.array([1.0, -1.0, 1.0]))


def _textbook_step(theta, g, memory, optimizer, lr, t):
    """One optimiser step on one scalar, written out as in the papers (an independent reference)."""
    if optimizer == "sgd":
        return theta - lr * g, memory
    if optimizer == "adagrad":
        acc = memory + g * g
        return theta - lr * g / acc ** 0.5, acc
    m, v = memory
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return theta - lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)) ** 0.5 + 1e-8), (m, v)


# The per-row (lazy) rules; dense Adam moves every row and has its textbook test in
# tests/test_minibatch.py (test_dense_adam_is_keras_1s_update_on_the_dense_mean_gradient).
@pytest.mark.parametrize("optimizer", [o for o in objective.OPTIMIZERS if objective.OPTIMIZER_REGISTRY[o].kernel])
@pytest.mark.parametrize("bias", [True, False])
def test_optimizer_steps_match_their_textbook_definitions(optimizer, bias):
    """sgd_step over a triplet sequence with repeated rows, against scalar loops per element."""
    rng = np.random.default_rng(5)
    n_users, n_items, f = 3, 4, 3
    U, V = rng.normal(size=(n_users, f)), rng.normal(size=(n_items, f))
    b = rng.normal(size=n_items) if bias else None
    reg = Regularization(0.01, 0.02, 0.03, 0.04)
    state = objective.OptimizerState(optimizer, n_users, n_items, f)
    start = 1.0 if optimizer == "adagrad" else 0.0
    mem = {}  # (block, row, col) -> memory of the textbook optimiser
    steps = {}
    ref = {"U": U.copy(), "V": V.copy(), "b": None if b is None else b.copy()}
    for _ in range(25):
        u = int(rng.integers(n_users))
        i, j = (int(k) for k in rng.choice(n_items, 2, replace=False))
        g = triplet_gradients(ref["U"], ref["V"], ref["b"], np.array([u]), np.array([i]), np.array([j]),
                              loss="bpr", regularization=reg)
        grads = {"U": g.user_factors, "V": g.item_factors, "b": g.item_bias}
        touched = [("U", u), ("V", i), ("V", j)] + ([("b", i), ("b", j)] if bias else [])
        for block, row in touched:
            key = (block if block != "b" else "V", row)
            if block != "b":
                steps[key] = steps.get(key, 0) + 1
        new = {k: (None if v is None else v.copy()) for k, v in ref.items()}
        for block, row in touched:
            t = steps[(block if block != "b" else "V", row)]
            cols = range(f) if block != "b" else [None]
            for c in cols:
                idx = (row,) if c is None else (row, c)
                zero = (0.0, 0.0) if optimizer == "adam" else start
                memory = mem.get((block, *idx), zero)
                new[block][idx], mem[(block, *idx)] = _textbook_step(ref[block][idx], grads[block][idx], memory,
                                                                     optimizer, 0.1, t)
        ref = new
        objective.sgd_step(U, V, b, u, i, j, learning_rate=0.1, regularization=reg, optimizer=optimizer,
                           state=state if optimizer != "sgd" else None)
    np.testing.assert_allclose(U, ref["U"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(V, ref["V"], rtol=1e-12, atol=1e-14)
    if bias:
        np.testing.assert_allclose(b, ref["b"], rtol=1e-12, atol=1e-14)


def test_adaptive_optimizer_needs_its_state():
    U, V = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="needs an OptimizerState"):
        objective.sgd_step(U, V, None, 0, 1, 2, learning_rate=0.1, optimizer="adam")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        objective.sgd_step(U, V, None, 0, 1, 2, learning_rate=0.1, optimizer="rmsprop")
