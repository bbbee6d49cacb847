"""Each test user's outcome from a RecBole evaluation: how many candidates beat its positive, how many
tie with it, and a fingerprint of the candidates it was ranked against (to prove models saw the same)."""
import hashlib

import numpy as np
import torch

from recbole_trsr.evaluation.ties import tie_counts

#: What a recorded outcome means; rows recorded under another protocol are not compared with these.
#: "tie-aware-v1": ties ranked by expectation (``ties.py``), 1 + N distinct negatives per user.
PROTOCOL = "tie-aware-v1"


class PerUserRecorder:
    """Records, for every user a RecBole trainer evaluates, ``greater`` (candidates scored strictly above
    its positive), ``ties`` (candidates scored the same, the positive included) and ``candidates`` (a
    hash of the sampled candidate set; in full ranking, of the catalogue size, the masked items and
    the positive, which together name the ranked set).

    The counts come from the very score tensor RecBole's collector ranks, under the same tie rule
    (:mod:`recbole_trsr.evaluation.ties`), so the mean of the per-user metrics equals RecBole's
    reported metrics. Leave-one-out only: one positive per user.
    Use: ``PerUserRecorder(trainer, user_field, k).attach()`` before ``trainer.evaluate(test_data)``.
    """

    def __init__(self, trainer, user_field, k):
        self.trainer, self.user_field, self.k = trainer, user_field, int(k)
        self.reset()

    def attach(self):
        for name in ("_neg_sample_batch_eval", "_full_sort_batch_eval"):
            setattr(self.trainer, name, self._recording(getattr(self.trainer, name), sampled=name.startswith("_neg")))
        return self

    def reset(self):
        self.users, self.greater, self.ties, self.candidates = [], [], [], []

    def _recording(self, eval_func, sampled):
        def wrapped(batched_data):
            interaction, scores, positive_u, positive_i = eval_func(batched_data)
            n_rows = scores.shape[0]
            if torch.bincount(positive_u.cpu(), minlength=n_rows).ne(1).any():
                raise ValueError("per-user recording needs exactly one positive item per user (leave-one-out)")
            users = interaction[self.user_field].cpu()
            if sampled:
                row_idx = batched_data[1].cpu()
                row_users = torch.zeros(n_rows, dtype=users.dtype).index_copy_(0, row_idx, users)
                items = interaction[self.trainer.config["ITEM_ID_FIELD"]].cpu()
                self.candidates += [candidate_fingerprint(items[row_idx == r]) for r in range(n_rows)]
            else:
                row_users = users
                self.candidates += full_ranking_fingerprints(batched_data[1], positive_u, positive_i, n_rows,
                                                             scores.shape[1])
            rows = positive_u.cpu()
            greater, ties = (torch.empty(n_rows, dtype=torch.long).index_copy_(0, rows, c.cpu())
                             for c in tie_counts(scores, positive_u, positive_i))
            self.greater += greater.tolist()
            self.ties += ties.tolist()
            self.users += row_users.tolist()
            return interaction, scores, positive_u, positive_i

        return wrapped

    def result(self):
        """``{"users", "greater", "ties", "candidates", "k", "protocol"}`` (lists in evaluation order)."""
        return {"users": list(self.users), "greater": list(self.greater), "ties": list(self.ties),
                "candidates": list(self.candidates), "k": self.k, "protocol": PROTOCOL}


def full_ranking_fingerprints(history_index, positive_u, positive_i, n_rows, n_items):
    """Per row of a full-ranking batch: ``full:`` and a hash of (catalogue size, masked items, positive)."""
    if history_index is None:
        raise ValueError("a full-ranking batch without its masked items: build the loaders with "
                         "recbole_trsr.evaluation.fix_full_ranking (quick_start does)")
    rows, items = (t.cpu() for t in history_index)
    out = []
    for r in range(n_rows):
        masked = items[rows == r]
        h = hashlib.sha1(str(int(n_items)).encode())
        h.update(np.sort(masked.numpy()).astype(np.int64).tobytes())
        h.update(positive_i.cpu()[positive_u.cpu() == r].numpy().astype(np.int64).tobytes())
        out.append("full:" + h.hexdigest()[:16])
    return out


def candidate_fingerprint(items):
    """A short hash of one user's candidate items (a 1-d tensor, positive included)."""
    return hashlib.sha1(np.sort(items.numpy()).astype(np.int64).tobytes()).hexdigest()[:16]
