"""Sampled evaluation candidates that depend on the user alone, not on the model that runs.

RecBole's evaluation loaders draw each batch's negatives from numpy's global random state when the
batch is built, i.e. after training: SASRec and an LLM leave that state in different places (and may
use different ``eval_batch_size``), so in RecBole the "same" uni99 protocol ranks each model against
different negatives. RecBole also draws them with replacement and excludes only the items of earlier
phases, so a user's 20 negatives can repeat an item or be the positive itself.
:class:`FixedCandidatesSampler` draws a user's negatives from a generator seeded by (seed, phase,
user) alone: N distinct items, never the positive, never an item the user had before it.

The items excluded from a user's negatives must be the same for every model too. RecBole takes them
from the splits it samples for, after the plugin's draws: ``train_users`` would shrink them, and a
sequential split never names a user's first item (it is no example's target), so SASRec and Pop
would exclude different items. ``fix_eval_candidates`` therefore takes the dataset's
``seen_items`` (computed before any draw, see ``recbole_trsr.data.dataset.seen_items_by_phase``).

Popularity negatives (``popN``) are weighted by the training split's users per item
(``train_item_users``, the same for every model type), never by RecBole's candidate list, which
counts the valid and test targets too. And every user of every phase is checked when the loaders are
built, before training: a user with fewer eligible items than ``N`` is an error naming the users.

Full ranking (``mode: full``) follows one rule for every model too: RecBole masks a general model's
earlier items but gives a sequential model none to mask, so two identical scorers of the two types
ranked different sets. :func:`fix_full_ranking` masks, for every model, exactly the items a sampled
negative excludes (``seen_items`` of the phase, the positive kept).
"""
import hashlib

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader


class FixedCandidatesSampler:
    """Wraps RecBole's evaluation ``Sampler`` (one phase): a user's negatives are ``num`` distinct items
    drawn by a generator seeded with (``seed``, phase, user), uniformly (or by training popularity
    when the phase's distribution is ``popularity``) among the items that are neither the positive
    nor one the phase excludes for the user (``used_ids``)."""

    def __init__(self, sampler, seed, item_users=None):
        self._sampler = sampler
        self._seed = int(seed)
        self._weights = None
        if getattr(sampler, "distribution", "uniform") == "popularity":
            if item_users is None:
                raise ValueError("popularity negatives need the training split's users per item "
                                 "(train_item_users, set by the plugin's datasets)")
            self._weights = np.asarray(item_users, dtype=np.float64).copy()
            self._weights[0] = 0.0  # the padding id

    def __getattr__(self, name):
        return getattr(self._sampler, name)

    def _user_seed(self, user):
        digest = hashlib.sha256(f"{self._seed}:{self._sampler.phase}:{int(user)}".encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def negatives(self, user, positive, num):
        """``num`` distinct negatives of ``user`` whose positive is ``positive`` (a numpy int64 array)."""
        excluded = set(self._sampler.used_ids[int(user)]) | {int(positive), 0}
        n_items = int(self._sampler.item_num)
        available = n_items - len(excluded)
        if available < num:
            raise ValueError(f"user {int(user)} ({self._sampler.phase}): only {available} items are neither the "
                             f"positive nor seen before it, {num} distinct negatives were asked for")
        rng = np.random.default_rng(self._user_seed(user))
        if self._weights is not None:
            allowed = np.setdiff1d(np.arange(n_items), np.fromiter(excluded, dtype=np.int64))
            p = self._weights[allowed]
            if np.count_nonzero(p) < num:
                raise ValueError(f"user {int(user)} ({self._sampler.phase}): fewer than {num} unseen items have "
                                 "training interactions to draw popularity negatives from")
            return rng.choice(allowed, size=num, replace=False, p=p / p.sum()).astype(np.int64)
        chosen = []
        while len(chosen) < num:  # rejection: cheap while the user has seen a small part of the catalogue
            for item in rng.integers(1, n_items, size=2 * num).tolist():
                if item not in excluded:
                    excluded.add(item)
                    chosen.append(item)
                    if len(chosen) == num:
                        break
        return np.asarray(chosen, dtype=np.int64)

    def shortfalls(self, user_ids, item_ids, num):
        """``[(user, eligible), ...]``: the rows whose user has fewer than ``num`` items to draw from."""
        n_items, short = int(self._sampler.item_num), []
        drawable = None if self._weights is None else self._weights > 0
        for user, positive in zip(np.asarray(user_ids).tolist(), np.asarray(item_ids).tolist()):
            excluded = set(self._sampler.used_ids[user]) | {positive, 0}
            if drawable is None:
                eligible = n_items - len(excluded)
            else:
                eligible = int(drawable.sum()) - sum(1 for i in excluded if drawable[i])
            if eligible < num:
                short.append((user, eligible))
        return short

    def sample_by_user_ids(self, user_ids, item_ids, num):
        """RecBole's layout: value j*len(user_ids) + i is the j-th negative of row i."""
        out = np.empty((num, len(user_ids)), dtype=np.int64)
        for i, (user, positive) in enumerate(zip(np.asarray(user_ids), np.asarray(item_ids))):
            out[:, i] = self.negatives(user, positive, num)
        return torch.from_numpy(out.reshape(-1))


def fix_eval_candidates(seed, *loaders, seen_items=None):
    """Give each sampled-evaluation loader a :class:`FixedCandidatesSampler`; full-ranking loaders
    (no sampler) are left as they are. ``seen_items`` (``{phase: per-user item sets}``) replaces the
    phase's exclusions. Every row of every changed loader is checked for ``N`` eligible negatives
    here, before any training. Returns how many loaders were changed."""
    changed = 0
    for loader in loaders:
        sampler = getattr(loader, "_sampler", None)
        if sampler is not None and not isinstance(sampler, FixedCandidatesSampler) and getattr(loader, "neg_sample_args", {}).get("distribution") not in (None, "none"):
            if seen_items is not None and sampler.phase in seen_items:
                sampler.used_ids = seen_items[sampler.phase]  # this phase's own copy (Sampler.set_phase)
            dataset = loader._dataset
            loader._sampler = FixedCandidatesSampler(sampler, seed, getattr(dataset, "train_item_users", None))
            check_negatives(loader)
            changed += 1
    return changed


def fix_full_ranking(*loaders, seen_items):
    """Make every full-ranking loader mask each user's ``seen_items`` of its phase (all but the row's
    positives), whatever the model type. Returns how many loaders were changed."""
    changed = 0
    for loader in loaders:
        sampler = getattr(loader, "_sampler", None)
        if not isinstance(loader, FullSortEvalDataLoader) or sampler is None or getattr(loader, "_full_masked", False):
            continue
        seen, uid = seen_items[sampler.phase], loader._dataset.uid_field
        collate = loader.collate_fn

        def masked_collate(index, collate=collate, seen=seen, uid=uid):
            interaction, _, positive_u, positive_i = collate(index)
            rows, items = [], []
            for row, user in enumerate(interaction[uid].tolist()):
                history = seen[user] - set(positive_i[positive_u == row].tolist())
                rows += [row] * len(history)
                items += sorted(history)
            history_index = (torch.tensor(rows, dtype=torch.int64), torch.tensor(items, dtype=torch.int64))
            return interaction, history_index, positive_u, positive_i

        loader.collate_fn = masked_collate
        loader._full_masked = True
        changed += 1
    return changed


def check_negatives(loader):
    """Raise, naming the users and their counts, if a row of ``loader`` has fewer than its
    ``sample_num`` items to draw distinct negatives from."""
    dataset, num = loader._dataset, int(loader.neg_sample_args["sample_num"])
    users, items = dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]
    short = loader._sampler.shortfalls(users, items, num)
    if short:
        names = ", ".join(f"{dataset.id2token(dataset.uid_field, u)} ({n})" for u, n in short[:10])
        kind = "with training users " if loader._sampler._weights is not None else ""
        raise ValueError(f"{loader._sampler.phase}: {len(short)} users have fewer than {num} items {kind}that are "
                         f"neither their positive nor seen before it, for {num} distinct negatives: {names}"
                         f"{' ...' if len(short) > 10 else ''}. Ask for fewer (eval_args mode uniN/popN) or "
                         "filter these users out (e.g. a smaller catalogue cut, user_inter_num_interval)")


def sampled_candidates(loader, uid_field, iid_field):
    """``{user: [item, ...]}``: every user's ranked items in a sampled-evaluation loader (its target and
    its negatives, in the loader's order); ``{}`` for a full-ranking loader, which samples none."""
    if getattr(loader, "_sampler", None) is None:
        return {}
    found = {}
    for batch in loader:
        interaction = batch[0]
        for user, item in zip(interaction[uid_field].tolist(), interaction[iid_field].tolist()):
            found.setdefault(user, []).append(item)
    return found
