"""The co_watched reference summary: co-occurrences counted before every example, covered blocks only."""
import numpy as np
import pytest
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.model.llmtrsr import LLMTRSR
from recbole_trsr.analysis.co_watched import CoWatchedSummaries, item_cosine
from recbole_trsr.summarize.pipeline import needed_positions


def test_item_cosine_over_users_with_a_zero_diagonal():
    sim = item_cosine([[1, 2], [1, 2, 3, 3], [3, 0]], n_items=4).toarray()
    assert sim[1, 2] == pytest.approx(1.0) and sim[1, 1] == 0.0
    assert sim[1, 3] == pytest.approx(1 / 2)        # 1 shared user of 2 and 2 (a repeat counts once)
    assert not sim[0].any() and not sim[:, 0].any()  # the padding id


class _Histories:
    def __init__(self, rows):
        self.rows = rows

    def items_before(self, user, position):
        return np.array(self.rows[user][:position])


def test_listed_items_come_from_other_users_before_their_examples_and_skip_covered_ones():
    # user 0: blocks 1 2 | 3 4, recent 5 6, target 7; user 1 had 1, 8, 9 before its example (7); user 2 had 2, 9, 3
    histories = _Histories({0: [1, 2, 3, 4, 5, 6, 7], 1: [1, 8, 9, 7], 2: [2, 9, 3]})
    first = {0: 6, 1: 3, 2: 3}
    summaries = CoWatchedSummaries(histories, first, 10, lambda i: f"film {i}", n_items=3, recent_items=2,
                                   block_size=2)
    assert summaries.blocks_covered(6) == 2
    listed = summaries.top_items(0, 6)
    assert 7 not in listed                   # the target, counted for nobody before their example
    assert not {1, 2, 3, 4} & set(listed)    # covered items are not news
    # 5 and 6: with all four covered items (user 0, before its example); 9: with 1 (user 1), 2 and 3 (user 2)
    assert listed == [5, 6, 9]
    assert summaries.text(0, 6) == "Often chosen by users who chose the 4 earlier items: " + "; ".join(
        f"film {i}" for i in listed)
    assert summaries.text(0, 3) == ""        # no complete block before the recent window


def test_model_reads_co_watched_summaries_without_any_llm_call(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, summary_paradigm="co_watched", summary_co_watched_items=4))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    assert isinstance(model.summaries, CoWatchedSummaries)
    histories = dataset.user_histories
    needed = needed_positions(train._dataset)
    user = next(u for u, ps in needed.items() if model.summaries.blocks_covered(max(ps)) > 0)
    position = max(needed[user])
    listed = model.summaries.top_items(user, position)
    assert 0 < len(listed) <= 4
    assert not set(listed) & set(histories.items_before(user, model.summaries.blocks_covered(position) * 4).tolist())
    # co-occurrences are counted over each user's items before its earliest example, and nothing else
    expected = item_cosine([histories.items_before(u, min(ps)).tolist() for u, ps in sorted(needed.items())],
                           dataset.item_num)
    np.testing.assert_allclose(model.summaries.similarity.toarray(), expected.toarray())
    assert model.summaries.similarity.nnz > 0
