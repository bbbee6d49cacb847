"""Per-user ranking metrics and bootstrap confidence intervals over test users.

With one held-out item per user, the positive's rank r (0 = outside the top K) gives every metric:
Recall@k = [r <= k], MRR@k = 1/r, NDCG@k = 1/log2(r + 1) (for 0 < r <= k, else 0); their means
over users are RecBole's Recall, MRR and NDCG. Intervals are percentile bootstraps over users
(users resampled with replacement); the paired version resamples the same users for both models,
so what two models share (hard users, easy users) cancels out of their difference.
"""
import numpy as np

METRICS = ("recall", "mrr", "ndcg")


def per_user_metrics(ranks, ks):
    """``{"recall@k": array, "mrr@k": ..., "ndcg@k": ...}`` for each k, one value per user."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = (ranks > 0) & (ranks <= k)
        safe = np.where(hit, ranks, 1.0)
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / safe, 0.0)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0)
    return out


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
