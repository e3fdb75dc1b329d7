import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp_gram

from i2v.sparse import explained, gram, omp, omp_gram


def planted(n=300, d=48, V=200, k=3, seed=0, signed=True, noise=0.0):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(d, V))
    D /= np.linalg.norm(D, axis=0)
    X = np.zeros((n, V))
    for i in range(n):
        X[i, rng.choice(V, k, replace=False)] = rng.uniform(0.5, 2.0, k) * (rng.choice([-1, 1], k) if signed else 1)
    return D, X, X @ D.T + noise * rng.normal(size=(n, d))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_same_supports_as_sklearn(k):
    D, _, Y = planted(k=k, noise=0.05)
    G = gram(D)
    support, coef = omp_gram(G, Y @ D, k, non_negative=False)
    ref = orthogonal_mp_gram(G, (Y @ D).T, n_nonzero_coefs=k)
    for i in range(len(Y)):
        assert set(support[i]) == set(np.flatnonzero(ref[:, i]))
        np.testing.assert_allclose(np.sort(coef[i]), np.sort(ref[ref[:, i] != 0, i]), rtol=1e-6, atol=1e-8)


def test_exact_recovery_of_planted_supports():
    D, X, Y = planted(signed=False)
    support, coef = omp(D, Y, 3)
    for i in range(len(Y)):
        assert set(support[i]) == set(np.flatnonzero(X[i]))
        np.testing.assert_allclose(coef[i], X[i, support[i]], rtol=1e-8)
    np.testing.assert_allclose(explained(D, Y, support, coef), 1.0)


def test_non_negative_never_returns_negative_weights():
    D, _, Y = planted(signed=True, noise=0.1, seed=2)
    support, coef = omp(D, Y, 4, non_negative=True)
    assert (coef >= 0).all()
    assert ((support >= 0) == (coef > 0)).all()
    fit = explained(D, Y, support, coef)
    assert ((fit >= 0) & (fit <= 1)).all()


def test_naive_reference_single_signal():
    """Textbook OMP, one signal at a time, as the naive reference."""
    D, _, Y = planted(n=20, noise=0.02, seed=3)
    for y in Y:
        r, S = y.copy(), []
        for _ in range(3):
            S.append(int(np.argmax(np.abs(D.T @ r) - 1e9 * np.isin(np.arange(D.shape[1]), S))))
            c, *_ = np.linalg.lstsq(D[:, S], y, rcond=None)
            r = y - D[:, S] @ c
        s, _ = omp(D, y[None], 3, non_negative=False)
        assert list(s[0]) == S


def test_zero_signal_and_bad_arguments():
    D, _, _ = planted(n=1)
    with pytest.warns(RuntimeWarning):
        s, c = omp(D, np.zeros((2, D.shape[0])), 3)
    assert (s == -1).all() and (c == 0).all()
    with pytest.raises(ValueError, match="n_nonzero=0"):
        omp(D, np.ones((1, D.shape[0])), 0)
    with pytest.raises(ValueError, match="dimension"):
        omp(D, np.ones((1, 3)), 2)


def test_ridge_keeps_correlated_atoms_and_zero_ridge_is_omp():
    a, b, c = np.array([1.0, 0, 0]), np.array([0.8, 0.6, 0]), np.array([0, 0, 1.0])  # a.b = 0.8
    D = np.stack([a, b, c], 1)
    y = a + 0.9 * b + 0.5 * c  # a.y = 1.72 > b.y = 1.70: no tie for the first pick
    plain, _ = omp(D, y[None], 2)
    ridged, w = omp(D, y[None], 2, ridge=3.0)
    assert list(plain[0]) == [0, 2]  # OMP explains b away with a, then takes c
    assert list(ridged[0]) == [0, 1]  # the ridge leaves b's share in the residual
    assert (w > 0).all()
    D2, X, Y = planted(signed=False)
    np.testing.assert_array_equal(omp(D2, Y, 3, ridge=0.0)[0], omp(D2, Y, 3)[0])
