"""How much a user's older history tells about the next item beyond the recent window: a yardstick
for what a summary of it could add to a recommender at best, through three lenses on the items.

Each candidate ``c`` of an example (a user's history and the target's position) gets, besides its
``popularity`` (log(1 + its training users), what the prompt's popularity note says), three
affinities to the recent window (``recent_*``) and the same three to the items a summary of that
example covers (``older_*``: the complete blocks before the recent window,
:func:`recbole_trsr.summarize.segment.summary_block_count`; never a later item):

- ``genre``: the mean, over ``c``'s genres, of the share of context items that have the genre;
- ``year``: minus the distance in decades between ``c``'s release year and the context's median one;
- ``cooc``: the mean cosine similarity of ``c`` to the context items over users' co-occurrences
  (:func:`~recbole_trsr.analysis.co_watched.item_cosine`, built from interactions that precede
  every example it is used on).

A logistic regression over a set of features is fitted on training examples and ranks the evaluation
candidates. Two feature sets compared on the same users (paired bootstrap) tell whether the older
items add anything to the recent window and the popularity, for a reader that uses them exactly:
where they add nothing, no summary of those properties can.
"""
import numpy as np

from recbole_trsr.summarize.segment import recent_window

LENSES = ("genre", "year", "cooc")
FEATURES = ("popularity",) + tuple(f"recent_{x}" for x in LENSES) + tuple(f"older_{x}" for x in LENSES)


class ItemSignals:
    """What the features read of each internal item id: ``genres`` (sets), ``years`` (float, nan when
    unknown), ``item_users`` (training users) and ``cooc`` (an item x item cosine matrix)."""

    def __init__(self, genres, years, item_users, cooc):
        self.genres, self.years = genres, np.asarray(years, dtype=np.float64)
        self.item_users, self.cooc = np.asarray(item_users), cooc


def genre_affinity(candidate_genres, context_genres):
    """The mean, over the candidate's genres, of the share of context items having that genre
    (0 when either is empty)."""
    if not candidate_genres or not context_genres:
        return 0.0
    n = len(context_genres)
    return float(np.mean([sum(g in item for item in context_genres) / n for g in candidate_genres]))


def _affinities(c, context, signals):
    if not context:
        return [0.0, 0.0, 0.0]
    years = signals.years[context]
    years = years[~np.isnan(years)]
    year = 0.0 if np.isnan(signals.years[c]) or not len(years) else -abs(signals.years[c] - np.median(years)) / 10
    return [genre_affinity(signals.genres[c], [signals.genres[i] for i in context]), year,
            float(signals.cooc[c, context].mean())]


def example_features(items, position, candidates, signals, recent_items, block_size):
    """A ``len(candidates) x len(FEATURES)`` array for the example whose target sits at ``position``
    of ``items`` (the user's history)."""
    start, end = recent_window(position, recent_items, block_size)
    recent, older = list(items[start:end]), list(items[:start])
    return np.array([[np.log1p(signals.item_users[c])] + _affinities(c, recent, signals) + _affinities(c, older, signals)
                     for c in candidates], dtype=np.float64)


class FeatureReader:
    """Logistic regression over some of :data:`FEATURES`, fitted on labelled candidate rows
    (standardised with the training rows' mean and spread)."""

    def __init__(self, features, l2=1e-3, steps=200):
        unknown = set(features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown feature(s) {sorted(unknown)}; known: {FEATURES}")
        self.columns = [FEATURES.index(f) for f in features]
        self.l2, self.steps = l2, steps

    def fit(self, x, y):
        x = np.asarray(x, dtype=np.float64)[:, self.columns]
        y = np.asarray(y, dtype=np.float64)
        self.mean, self.scale = x.mean(axis=0), x.std(axis=0) + 1e-12
        z = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])
        w = np.zeros(z.shape[1])
        for _ in range(self.steps):  # Newton's method: a handful of features, a convex loss
            p = 1.0 / (1.0 + np.exp(-z @ w))
            grad = z.T @ (p - y) / len(y) + self.l2 * w
            hess = (z * (p * (1 - p))[:, None]).T @ z / len(y) + self.l2 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        self.weights = w
        return self

    def score(self, x):
        x = np.asarray(x, dtype=np.float64)[:, self.columns]
        return np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))]) @ self.weights

