"""The history-signal yardstick: features see only what precedes the example, and the reader uses them."""
import numpy as np
import pytest

from recbole_trsr.evaluation import rank_counts
from recbole_trsr.analysis.history_signal import FEATURES, FeatureReader, ItemSignals, example_features
from recbole_trsr.analysis.co_watched import item_cosine


def _signals(n_items=12):
    genres = [set()] + [{"A"} if i % 2 else {"B"} for i in range(1, n_items)]
    years = [np.nan] + [1990.0 + i for i in range(1, n_items)]
    return ItemSignals(genres, years, np.arange(n_items), item_cosine([list(range(1, n_items))], n_items).toarray())


def test_features_read_only_items_before_the_example():
    signals, items = _signals(), list(range(1, 12))
    # position 9, 3 recent items, blocks of 3: older = items[:6], recent = items[6:9]
    base = example_features(items, 9, [10, 11], signals, recent_items=3, block_size=3)
    later = items[:9] + [items[10], items[9]]       # what follows the target changes
    assert np.array_equal(base, example_features(later, 9, [10, 11], signals, recent_items=3, block_size=3))
    col = {f: i for i, f in enumerate(FEATURES)}
    # recent items 7, 8, 9: A, B, A; older 1..6: half A
    assert base[1, col["recent_genre"]] == pytest.approx(2 / 3)   # candidate 11 is A
    assert base[1, col["older_genre"]] == pytest.approx(1 / 2)
    assert base[0, col["recent_year"]] == pytest.approx(-0.2)     # 2000 vs median 1998


def test_reader_uses_an_informative_feature_and_ranks_ties_by_the_shared_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = (x[:, FEATURES.index("older_cooc")] + 0.3 * rng.normal(size=2000) > 0).astype(float)
    with_it = FeatureReader(["popularity", "older_cooc"]).fit(x, y)
    without = FeatureReader(["popularity"]).fit(x, y)
    groups = [rng.normal(size=(5, len(FEATURES))) for _ in range(200)]
    for g in groups:
        g[0, FEATURES.index("older_cooc")] = 3.0         # the target stands out on that feature only
    assert np.mean([rank_counts(with_it.score(g), 0)[0] for g in groups]) < 0.05  # candidates above the target
    assert np.mean([rank_counts(without.score(g), 0)[0] for g in groups]) > 1.0
    assert rank_counts([0.5, 0.5, 0.1], 0) == (0, 2)  # a tie: ranks 1-2 by expectation, no longer 2
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureReader(["older_plot"])
