"""Bootstrap confidence intervals over test users.

Per-user metrics come from :func:`recbole_trsr.evaluation.ties.per_user_metrics` (each user's
positive, the candidates above it and those tied with it; ties ranked by expectation); their means
over users are RecBole's Recall, MRR and NDCG. Intervals are percentile bootstraps over users
(users resampled with replacement); the paired version resamples the same users for both models,
so what two models share (hard users, easy users) cancels out of their difference.
"""
import numpy as np

METRICS = ("recall", "mrr", "ndcg")


def _resampled_means(values, n_boot, seed):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("bootstrap needs a non-empty 1-d array of per-user values")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks keep memory at 256 x n_users
        idx = rng.integers(0, len(values), size=(min(256, n_boot - start), len(values)))
        means[start:start + len(idx)] = values[idx].mean(axis=1)
    return means


def bootstrap_ci(values, n_boot=2000, seed=0, level=0.95):
    """(mean, low, high): the mean over users and its percentile-bootstrap interval."""
    means = _resampled_means(values, n_boot, seed)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(np.mean(values)), float(low), float(high)


def paired_bootstrap(values, baseline, n_boot=2000, seed=0, level=0.95):
    """Difference ``values - baseline`` on the same users: (mean, low, high, p), where p is the
    two-sided bootstrap p-value (share of resampled differences on the far side of zero, doubled).
    The difference is called real only when the interval excludes zero."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired bootstrap needs the same users: {values.shape} vs {baseline.shape}")
    diff = values - baseline
    means = _resampled_means(diff, n_boot, seed)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return float(diff.mean()), float(low), float(high), float(p)
