"""Sampled evaluation candidates that depend on the user alone, not on the model that runs.

RecBole's evaluation loaders draw each batch's negatives from numpy's global random state when the
batch is built, i.e. after training: SASRec and an LLM leave that state in different places (and may
use different ``eval_batch_size``), so in RecBole the "same" uni99 protocol ranks each model against
different negatives. :class:`FixedCandidatesSampler` draws a user's negatives from a generator seeded
by (seed, phase, user), so every model of a comparison sees identical candidates.

The items excluded from a user's negatives must be the same for every model too. RecBole takes them
from the splits it samples for, after the plugin's draws: ``train_users`` would shrink them, and a
sequential split never names a user's first item (it is no example's target), so SASRec and Pop
would exclude different items. ``fix_eval_candidates`` therefore takes the dataset's
``seen_items`` (computed before any draw, see ``recbole_trsr.data.dataset.seen_items_by_phase``).
"""
import hashlib

import numpy as np
import torch


class FixedCandidatesSampler:
    """Wraps RecBole's evaluation ``Sampler`` (one phase); negatives per user are a function of
    (``seed``, phase, user). Items the phase excludes for the user are excluded as before."""

    def __init__(self, sampler, seed):
        self._sampler = sampler
        self._seed = int(seed)

    def __getattr__(self, name):
        return getattr(self._sampler, name)

    def _user_seed(self, user):
        digest = hashlib.sha256(f"{self._seed}:{self._sampler.phase}:{int(user)}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def sample_by_key_ids(self, key_ids, num):
        """RecBole's layout: value j*len(key_ids) + i is the j-th sample of key i."""
        key_ids = np.asarray(key_ids)
        out = np.empty((num, len(key_ids)), dtype=np.int64)
        state = np.random.get_state()  # RecBole's sampler draws from the global state: keep the caller's
        try:
            for i, key in enumerate(key_ids):
                np.random.seed(self._user_seed(key))
                out[:, i] = self._sampler.sample_by_key_ids(key_ids[i:i + 1], num).numpy()
        finally:
            np.random.set_state(state)
        return torch.from_numpy(out.reshape(-1))

    def sample_by_user_ids(self, user_ids, item_ids, num):
        return self.sample_by_key_ids(user_ids, num)


def fix_eval_candidates(seed, *loaders, seen_items=None):
    """Give each sampled-evaluation loader a :class:`FixedCandidatesSampler`; full-ranking loaders
    (no sampler) are left as they are. ``seen_items`` (``{phase: per-user item sets}``) replaces the
    phase's exclusions. Returns how many loaders were changed."""
    changed = 0
    for loader in loaders:
        sampler = getattr(loader, "_sampler", None)
        if sampler is not None and not isinstance(sampler, FixedCandidatesSampler) and getattr(loader, "neg_sample_args", {}).get("distribution") not in (None, "none"):
            if seen_items is not None and sampler.phase in seen_items:
                sampler.used_ids = seen_items[sampler.phase]  # this phase's own copy (Sampler.set_phase)
            loader._sampler = FixedCandidatesSampler(sampler, seed)
            changed += 1
    return changed


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
