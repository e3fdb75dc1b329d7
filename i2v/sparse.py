"""Sparse recovery: batched Orthogonal Matching Pursuit over a word dictionary (pure numpy)."""
import warnings

import numpy as np


_CHUNK = 256


def gram(D):
    """Gram matrix D^T D, (V, V) float64, of a dictionary D (d, V)."""
    D = np.asarray(D, dtype=np.float64)
    return D.T @ D


def _solve_support(G, Xy, support, active, ridge=0.0):
    """(Ridge) least squares on each row's support: coef (n, k) with inactive entries zero."""
    n, k = support.shape
    Gs = G[support[:, :, None], support[:, None, :]]  # (n, k, k)
    rhs = np.take_along_axis(Xy, support, axis=1)  # (n, k)
    # inactive slots: identity row/col and zero rhs, so they solve to 0 without touching the rest
    mask = active[:, :, None] & active[:, None, :]
    eye = np.broadcast_to(np.eye(k, dtype=bool), Gs.shape)
    Gs = np.where(mask, Gs, np.where(eye, 1.0, 0.0))
    rhs = np.where(active, rhs, 0.0)
    Gs = Gs + (ridge + 1e-10) * np.eye(k)  # 1e-10 guards exactly collinear atoms
    return np.linalg.solve(Gs, rhs[..., None])[..., 0]


def omp_gram(G, Xy, n_nonzero, *, non_negative=True, ridge=0.0):
    """Batched OMP from the Gram matrix: k-sparse codes of many signals at once.

    Parameters
    ----------
    G : (V, V) array, Gram matrix D^T D of the dictionary (see `gram`).
    Xy : (n, V) array, correlations D^T y of each signal y with the atoms.
    n_nonzero : int, k, atoms per signal (1 <= k <= V).
    non_negative : bool, default True. Summary words with negative weight make no sense
        ("not a dog" is not a summary), so by default atoms are chosen by their largest
        *positive* correlation with the residual and the coefficients are refit without
        negatives (an active-set step). False gives plain OMP (largest |correlation|),
        identical to `sklearn.linear_model.orthogonal_mp_gram`.
    ridge : float, default 0. Each step's refit solves (G_SS + ridge I) coef = Xy_S, so an atom
        that correlates with one already chosen is not explained away entirely (0 = OMP).

    Returns
    -------
    support : (n, k) int array, chosen atoms in the order they were picked (-1: none).
    coef : (n, k) float array, their least-squares weights (0 where support is -1).
    """
    G = np.asarray(G, dtype=np.float64)
    Xy = np.atleast_2d(np.asarray(Xy, dtype=np.float64))
    V = G.shape[0]
    if G.shape != (V, V) or Xy.shape[1] != V:
        raise ValueError(f"shapes do not match: G {G.shape}, Xy {Xy.shape}; want (V, V) and (n, V)")
    if not 1 <= int(n_nonzero) <= V:
        raise ValueError(f"n_nonzero={n_nonzero}: must be between 1 and the number of atoms ({V})")
    k, n = int(n_nonzero), Xy.shape[0]
    if n > _CHUNK:  # blocks of signals keep the (n, k, V) gathers in cache
        parts = [omp_gram(G, Xy[s:s + _CHUNK], k, non_negative=non_negative, ridge=ridge)
                 for s in range(0, n, _CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    support = np.zeros((n, k), dtype=np.int64)
    active = np.zeros((n, k), dtype=bool)
    coef = np.zeros((n, k))
    rows = np.arange(n)
    taken = np.zeros((n, V), dtype=bool)
    for step in range(k):
        # residual correlation: D^T (y - D_S coef) = Xy - G[:, S] coef
        corr = Xy - np.einsum("nkv,nk->nv", G[support[:, :step]], coef[:, :step]) if step else Xy.copy()
        score = corr if non_negative else np.abs(corr)
        score = np.where(taken, -np.inf, score)
        best = score.argmax(1)
        ok = score[rows, best] > 1e-12  # nothing left to explain (or no positive atom)
        support[:, step] = best
        active[:, step] = ok
        taken[rows[ok], best[ok]] = True
        coef[:, :step + 1] = _solve_support(G, Xy, support[:, :step + 1], active[:, :step + 1], ridge)
        if non_negative:
            for _ in range(step + 1):  # drop atoms whose weight went negative, refit the rest
                neg = active[:, :step + 1] & (coef[:, :step + 1] < 0)
                if not neg.any():
                    break
                active[:, :step + 1] &= ~neg
                coef[:, :step + 1] = _solve_support(G, Xy, support[:, :step + 1], active[:, :step + 1], ridge)
        if not ok.all() and step == 0 and not ok.any():
            warnings.warn("OMP: no atom correlates with any signal; returning empty codes", RuntimeWarning)
    support = np.where(active, support, -1)
    coef = np.where(active, coef, 0.0)
    return support, coef


def omp(D, Y, n_nonzero, *, non_negative=True, ridge=0.0, G=None):
    """OMP of signals Y (n, d) over dictionary D (d, V); see `omp_gram`. G: cached Gram."""
    D = np.asarray(D, dtype=np.float64)
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    if Y.shape[1] != D.shape[0]:
        raise ValueError(f"signals have dimension {Y.shape[1]}, dictionary atoms {D.shape[0]}")
    return omp_gram(gram(D) if G is None else G, Y @ D, n_nonzero, non_negative=non_negative, ridge=ridge)


def explained(D, Y, support, coef):
    """Fraction of each signal's squared norm explained by its sparse code: (n,) in [0, 1]."""
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    atoms = np.asarray(D).T[np.maximum(support, 0)].astype(np.float64)  # (n, k, d): only the chosen atoms
    recon = np.einsum("nkd,nk->nd", atoms, np.where(support >= 0, coef, 0.0))
    res = ((Y - recon) ** 2).sum(1)
    tot = (Y ** 2).sum(1)
    return np.clip(1 - res / np.maximum(tot, 1e-12), 0.0, 1.0)
