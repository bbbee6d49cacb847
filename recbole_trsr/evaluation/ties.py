"""The one tie rule of every metric of record: tied scores rank by their expectation.

A positive item that ties with ``t - 1`` other candidates and is beaten by ``g`` of them stands, under
a uniformly random order of the tied items, at each of the positions ``g + 1 .. g + t`` with
probability ``1 / t`` (tie-aware metrics, McSherry and Najork, ECIR 2008). Every metric is the
expectation of its value over that order: exact, deterministic, no seed, and a model that scores all
candidates alike gets exactly the chance value (1 + 20 candidates: Recall@10 = 10/21,
NDCG@10 = 0.2163). RecBole's own collector ranks ties by ``torch.topk``'s index order instead, which
favours whichever item the kernel returns first.

Used by RecBole's metrics in every trainer the plugin builds (:class:`TieAwareEvaluation`), by the
per-user outcomes behind the confidence intervals (:func:`per_user_metrics`), and by every tool that
ranks candidates itself (:func:`rank_counts`).
"""
import numpy as np
import torch
from recbole.evaluator import Collector, Evaluator
from recbole.evaluator.base_metric import TopkMetric

#: RecBole's top-k metrics of the positives' positions; all are computed here under the tie rule.
TIE_AWARE_METRICS = ("hit", "mrr", "map", "recall", "ndcg", "precision")
#: Linear in the positions' hit probabilities for any number of positives; the others need one.
_LINEAR = ("recall", "ndcg", "precision")


def check_metrics(names):
    """Refuse RecBole's metrics of the recommended lists (``rec.items``: ItemCoverage, GiniIndex,
    AveragePopularity, ShannonEntropy, TailPercentage): RecBole fills those lists with
    ``torch.topk``, whose order among tied items is the kernel's, and they have no tie-aware form here."""
    from recbole.evaluator.register import metrics_dict

    lists = [n for n in names if "rec.items" in getattr(metrics_dict.get(str(n).lower()), "metric_need", ())]
    if lists:
        raise ValueError(f"metrics {lists}: RecBole computes them from top-k lists ordered by torch.topk, which "
                         "breaks ties by item index, and the plugin has no tie-aware form of them: leave them out "
                         f"of metrics (tie-aware: {', '.join(TIE_AWARE_METRICS)}; also AUC, GAUC)")


def tie_counts(scores, positive_u, positive_i):
    """``(greater, ties)`` per positive: how many items of its row score strictly higher, and how many
    score the same (the positive included). ``scores`` is RecBole's ``[rows, n_items]`` tensor."""
    if torch.isnan(scores).any():
        raise ValueError("the model returned NaN scores: no ranking can be computed")
    own = scores[positive_u, positive_i]
    if not torch.isfinite(own).all():
        raise ValueError(f"{int((~torch.isfinite(own)).sum())} positive items were scored -inf/inf: a positive "
                         "must have a finite score to be ranked (an evaluation candidate masked as history?)")
    rows = scores[positive_u]
    return (rows > own[:, None]).sum(1), (rows == own[:, None]).sum(1)


def rank_counts(scores, target):
    """``(greater, ties)`` of candidate ``target`` among the 1-d ``scores`` (numpy or list)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("NaN scores cannot be ranked")
    own = scores[target]
    return int((scores > own).sum()), int((scores == own).sum())


def expected_hits(greater, ties, k):
    """``[n, k]`` float64: the probability that each positive stands at positions 1..k."""
    greater = torch.as_tensor(greater, dtype=torch.float64).reshape(-1, 1)
    ties = torch.as_tensor(ties, dtype=torch.float64).reshape(-1, 1)
    if (ties < 1).any() or (greater < 0).any():
        raise ValueError("ties must be >= 1 (the positive itself) and greater >= 0")
    position = torch.arange(1, k + 1, dtype=torch.float64)
    inside = (position > greater) & (position <= greater + ties)
    return inside.double() / ties


def topk_values(name, hits, pos_len):
    """``[users, k]`` numpy values of metric ``name`` at every cutoff 1..k, from each user's summed
    position probabilities ``hits`` ([users, k]) and number of positives ``pos_len`` ([users])."""
    hits, pos_len = np.asarray(hits, dtype=np.float64), np.asarray(pos_len, dtype=np.float64)
    if name not in _LINEAR and (pos_len != 1).any():
        raise ValueError(f"{name} under the tie rule is computed for one positive per user (leave-one-out); "
                         f"{int((pos_len != 1).sum())} users have another number: use recall, ndcg or precision")
    position = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    if name in ("hit", "recall"):
        return np.cumsum(hits, axis=1) / (1.0 if name == "hit" else pos_len[:, None])
    if name in ("mrr", "map"):  # one positive: its reciprocal rank, and its average precision
        return np.cumsum(hits / position, axis=1)
    if name == "precision":
        return np.cumsum(hits, axis=1) / position
    if name == "ndcg":
        discount = 1.0 / np.log2(position + 1.0)
        ideal = np.cumsum(discount)[np.minimum(np.maximum(pos_len[:, None], 1), position[None, :]).astype(int) - 1]
        return np.cumsum(hits * discount, axis=1) / ideal
    raise ValueError(f"no tie-aware form of metric {name!r}; known: {TIE_AWARE_METRICS}")


def per_user_metrics(greater, ties, ks, names=("recall", "mrr", "ndcg")):
    """``{"recall@k": array, ...}`` per user (one positive each) for every k in ``ks``."""
    k_max = max(ks)
    hits = expected_hits(greater, ties, k_max).numpy()
    values = {name: topk_values(name, hits, np.ones(len(hits))) for name in names}
    return {f"{name}@{k}": values[name][:, k - 1] for name in names for k in ks}


class TieAwareCollector(Collector):
    """RecBole's collector, with ``rec.topk`` holding each user's position probabilities (float)
    instead of the 0/1 hits of a ``torch.topk`` order; everything else is collected as RecBole does."""

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        wanted = self.register.need("rec.topk")
        self.register.__dict__["rec.topk"] = False  # RecBole's own rec.topk breaks ties by index
        try:
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        finally:
            self.register.__dict__["rec.topk"] = wanted
        if wanted:
            k = max(self.topk)
            greater, ties = tie_counts(scores_tensor, positive_u, positive_i)
            n_rows = scores_tensor.shape[0]
            hits = torch.zeros((n_rows, k), dtype=torch.float64).index_add_(
                0, positive_u.cpu(), expected_hits(greater.cpu(), ties.cpu(), k))
            pos_len = torch.bincount(positive_u.cpu(), minlength=n_rows).double()
            self.data_struct.update_tensor("rec.topk", torch.cat((hits, pos_len[:, None]), dim=1))


class TieAwareTopk(TopkMetric):
    """One of RecBole's top-k metrics computed from :class:`TieAwareCollector`'s probabilities."""

    def __init__(self, config, name):
        super().__init__(config)
        self.name = name

    def calculate_metric(self, dataobject):
        rec = dataobject.get("rec.topk")
        hits, pos_len = torch.split(rec, [max(self.topk), 1], dim=1)
        return self.topk_result(self.name, topk_values(self.name, hits.numpy(), pos_len.squeeze(-1).numpy()))


class TieAwareEvaluator(Evaluator):
    """RecBole's evaluator with its top-k metrics of the positives replaced by :class:`TieAwareTopk`."""

    def __init__(self, config):
        check_metrics(config["metrics"])
        super().__init__(config)
        for name in self.metrics:
            if name in TIE_AWARE_METRICS:
                self.metric_class[name] = TieAwareTopk(config, name)


class TieAwareEvaluation:
    """Trainer mixin: validation and test metrics under the tie rule (every trainer of the plugin)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = TieAwareCollector(config)
        self.evaluator = TieAwareEvaluator(config)
