"""Each test user's outcome from a RecBole evaluation: the positive's rank within the top K and a
fingerprint of the candidates it was ranked against (to prove models saw the same ones)."""
import hashlib

import numpy as np
import torch


class PerUserRecorder:
    """Records, for every user a RecBole trainer evaluates, ``rank`` (1..K of its positive item,
    0 = not in the top K) and ``candidates`` (a hash of the sampled candidate set; "" in full ranking).

    The rank uses ``torch.topk`` on the very score tensor RecBole's collector ranks, so the mean of
    the per-user metrics equals RecBole's reported metrics. Leave-one-out only: one positive per user.
    Use: ``PerUserRecorder(trainer, user_field, k).attach()`` before ``trainer.evaluate(test_data)``.
    """

    def __init__(self, trainer, user_field, k):
        self.trainer, self.user_field, self.k = trainer, user_field, int(k)
        self.users, self.ranks, self.candidates = [], [], []

    def attach(self):
        for name in ("_neg_sample_batch_eval", "_full_sort_batch_eval"):
            setattr(self.trainer, name, self._recording(getattr(self.trainer, name), sampled=name.startswith("_neg")))
        return self

    def reset(self):
        self.users, self.ranks, self.candidates = [], [], []

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
                self.candidates += [""] * n_rows
            positive = torch.empty(n_rows, dtype=torch.long).index_copy_(0, positive_u.cpu(), positive_i.cpu())
            top = torch.topk(scores, min(self.k, scores.shape[1]), dim=-1).indices.cpu()
            hit = top.eq(positive[:, None])
            self.ranks += torch.where(hit.any(1), hit.float().argmax(1) + 1, 0).tolist()
            self.users += row_users.tolist()
            return interaction, scores, positive_u, positive_i

        return wrapped

    def result(self):
        """``{"users", "ranks", "candidates", "k"}`` (lists in evaluation order)."""
        return {"users": list(self.users), "ranks": list(self.ranks), "candidates": list(self.candidates), "k": self.k}


def candidate_fingerprint(items):
    """A short hash of one user's candidate items (a 1-d tensor, positive included)."""
    # Negatives are drawn with replacement (RecBole's uniform sampler), so the multiset is hashed.
    return hashlib.sha1(np.sort(items.numpy()).astype(np.int64).tobytes()).hexdigest()[:16]
