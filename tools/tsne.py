"""Exact t-SNE (van der Maaten & Hinton, 2008) in numpy, for a few thousand points:
enough for a picture of a test set's representations without a heavy dependency."""

import numpy as np


def _conditional_p(distances, perplexity, tol=1e-5, steps=64):
    """Row-wise Gaussian affinities whose entropy matches log(perplexity) (bisection
    on each row's precision)."""
    n = len(distances)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        d = np.delete(distances[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(steps):
            w = np.exp(-(d - d.min()) * beta)
            total = w.sum()
            entropy = np.log(total) + beta * np.sum((d - d.min()) * w) / total
            if abs(entropy - target) < tol:
                break
            if entropy > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, np.arange(n) != i] = w / total
    return p


def tsne(x, perplexity=30.0, iterations=500, seed=0):
    """[n, d] -> [n, 2] map preserving neighbourhoods."""
    x = np.asarray(x, np.float64)
    n = len(x)
    perplexity = min(perplexity, (n - 1) / 3)
    x = x - x.mean(0)
    if x.shape[1] > 50:  # PCA first, as is usual
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:50].T
    sq = np.sum(x * x, 1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    p = _conditional_p(distances, perplexity)
    p = np.maximum((p + p.T) / (2 * n), 1e-12)
    rng = np.random.default_rng(seed)
    y = 1e-4 * rng.standard_normal((n, 2))
    velocity, gains = np.zeros_like(y), np.ones_like(y)
    rate = max(n / 12.0, 50.0)
    for it in range(iterations):
        exaggeration = 12.0 if it < 100 else 1.0
        sq_y = np.sum(y * y, 1)
        inverse = 1.0 / (1.0 + sq_y[:, None] + sq_y[None, :] - 2 * y @ y.T)
        np.fill_diagonal(inverse, 0.0)
        q = np.maximum(inverse / inverse.sum(), 1e-12)
        pull = (exaggeration * p - q) * inverse
        grad = 4.0 * (np.diag(pull.sum(1)) - pull) @ y
        gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8)
        gains = np.maximum(gains, 0.01)
        velocity = (0.5 if it < 250 else 0.8) * velocity - rate * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y


def trustworthiness(x, y, k=5):
    """How many of each point's k nearest map neighbours are also among its k nearest
    input neighbours (1: all), a check that a map keeps neighbourhoods."""

    def knn(z):
        sq = np.sum(z * z, 1)
        d = sq[:, None] + sq[None, :] - 2 * z @ z.T
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, :k]

    a, b = knn(np.asarray(x, np.float64)), knn(np.asarray(y, np.float64))
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(a))]))
