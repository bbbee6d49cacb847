"""A reference summary that no LLM writes: the items other users most often had together with the
blocks a summary may cover, by name.

``benchmarks/history_signal.py`` found that on ml-100k-plot the items before the recent window add
nothing through their genres or years, and a little through co-occurrence (which items users have
together). This summary puts that co-occurrence into the summary slot, with the same coverage as an
LLM summary (the complete blocks before the recent window,
:func:`~recbole_trsr.summarize.segment.summary_block_count`), so that a row with it tells whether the
recommender can use the collaborative part of the older history when it is spelled out. It is a
diagnostic, not LLM-TRSR: the co-occurrences come from other users, not from the user's items alone.

No leakage: the co-occurrences are counted over each user's items before that user's earliest
example (training or evaluation), so no example's target, nor anything after it, is ever counted.
A user with no example in the run (left out by ``train_users`` and the evaluation draws) counts
nothing, so the co-occurrences shrink with those draws.
"""
import logging

import numpy as np
from scipy import sparse

from recbole_trsr.summarize.segment import summary_block_count

logger = logging.getLogger(__name__)


def item_cosine(user_items, n_items):
    """Item x item cosine similarity over the users that have them (``user_items``: one list per user),
    as a sparse CSR matrix, zero on the diagonal and for the padding id (a user's repeats count once)."""
    rows = np.repeat(np.arange(len(user_items)), [len(items) for items in user_items])
    cols = np.fromiter((i for items in user_items for i in items), dtype=np.int64, count=len(rows))
    keep = cols != 0
    x = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])),
                          shape=(len(user_items), n_items))
    x.data[:] = 1.0  # duplicates were summed
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    scale = sparse.diags(1.0 / norms.astype(np.float32))
    sim = (scale @ (x.T @ x) @ scale).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim


class CoWatchedSummaries:
    """``summary_paradigm: co_watched``: (user, target position) -> "Often chosen by users who chose
    the 20 earlier items: <item>; <item>; ..." (``n_items`` items by summed cosine similarity to the
    covered items, none of them covered; "" when no block precedes the recent window)."""

    prompts_cut = 0
    unreadable_records = 0

    def __init__(self, histories, first_positions, n_catalogue, item_text, n_items, recent_items, block_size):
        # first_positions: {user: the position of its earliest example}; only items before it are counted
        if int(n_items) < 1:
            raise ValueError(f"summary_co_watched_items must be >= 1, not {n_items}")
        self.histories, self.item_text, self.n_items = histories, item_text, int(n_items)
        self.recent_items, self.block_size = int(recent_items), int(block_size)
        counted = [histories.items_before(u, p).tolist() for u, p in sorted(first_positions.items())]
        self.similarity = item_cosine(counted, n_catalogue)
        logger.info("co_watched summaries: item co-occurrences from %d users' %d interactions before their earliest "
                    "example", len(counted), sum(map(len, counted)))
        self._cache = {}

    def blocks_covered(self, position):
        return summary_block_count(position, self.recent_items, self.block_size)

    def top_items(self, user, position):
        """The listed item ids of the example's summary, most similar first (ties: lower id first)."""
        n = self.blocks_covered(position) * self.block_size
        if n == 0:
            return []
        key = (int(user), n)
        if key not in self._cache:
            covered = self.histories.items_before(user, n)
            scores = np.asarray(self.similarity[covered].sum(axis=0), dtype=np.float64).ravel()
            scores[covered] = -np.inf
            scores[0] = -np.inf
            order = np.lexsort((np.arange(len(scores)), -scores))
            self._cache[key] = [int(i) for i in order[:self.n_items] if scores[i] > 0]
        return self._cache[key]

    def text(self, user, position):
        items = self.top_items(user, position)
        if not items:
            return ""
        n = self.blocks_covered(position) * self.block_size
        return f"Often chosen by users who chose the {n} earlier items: " + "; ".join(self.item_text(i) for i in items)


def from_config(config, dataset, item_text):
    """``summary_paradigm: co_watched`` (``recbole_trsr.summarize.pipeline.REFERENCE_SUMMARIES``)."""
    from recbole_trsr.summarize.pipeline import needed_positions

    first = {u: min(ps) for u, ps in needed_positions(dataset).items()}  # users without an example count nothing
    return CoWatchedSummaries(dataset.user_histories, first, dataset.item_num, item_text,
                              config["summary_co_watched_items"], config["recent_items"], config["block_size"])
