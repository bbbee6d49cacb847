"""Replacing a split's summaries (does the recommender read them?): who gets which text, and that the
replaced text is what the model's prompts hold."""
import pytest
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.data.dataset import training_positions
from recbole_trsr.analysis.summary_reliance import ReplacedSummaries
from recbole_trsr.model.llmtrsr import LLMTRSR


class Lookup:
    prompts_cut = 2
    unreadable_records = 1

    def __init__(self, texts):
        self.texts = texts  # {(user, position): text}

    def text(self, user, position):
        return self.texts[(user, position)]


POSITIONS = {1: 10, 2: 12, 3: 9, 4: 11, 5: 3}
OWN = Lookup({(1, 10): "likes war", (2, 12): "likes comedy", (3, 9): "likes noir", (4, 11): "likes sci-fi", (5, 3): ""})


def test_swapped_gives_each_user_another_users_summary_and_keeps_the_set():
    swapped = ReplacedSummaries(OWN, POSITIONS, "swapped", seed=1)
    texts = {u: swapped.text(u, p) for u, p in POSITIONS.items()}
    assert all(texts[u] != OWN.text(u, p) for u, p in POSITIONS.items() if u != 5)
    assert sorted(t for u, t in texts.items() if u != 5) == sorted(t for t in OWN.texts.values() if t)
    assert texts[5] == ""  # nothing to swap: the user had no summary
    assert swapped.replaced == 4 and swapped.prompts_cut == 2 and swapped.unreadable_records == 1
    again = ReplacedSummaries(OWN, POSITIONS, "swapped", seed=1)
    assert {u: again.text(u, p) for u, p in POSITIONS.items()} == texts  # fixed by the seed


def test_empty_removes_every_summary_and_other_prompts_are_refused():
    empty = ReplacedSummaries(OWN, POSITIONS, "empty")
    assert [empty.text(u, p) for u, p in POSITIONS.items()] == [""] * 5 and empty.replaced == 4
    with pytest.raises(KeyError, match="not a prompt of the split"):
        empty.text(1, 11)
    with pytest.raises(ValueError, match="replacement must be one of"):
        ReplacedSummaries(OWN, POSITIONS, "shuffled")
    with pytest.raises(ValueError, match="nobody to swap with"):
        ReplacedSummaries(OWN, {1: 10, 5: 3}, "swapped")


def _holds(seq, part):
    return any(seq[i:i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def test_the_models_prompts_hold_the_swapped_summary(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, summary_paradigm="recurrent", subset_users=12, subset_history=30))
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = LLMTRSR(config, train._dataset)
    positions = {u: max(ps) for u, ps in training_positions(valid._dataset).items()}
    item = 1
    own = {u: (model.summaries.text(u, p), model._group(u, p, [item]).prefix) for u, p in positions.items()}
    model.summaries = ReplacedSummaries(model.summaries, positions, "swapped")
    swapped = 0
    for u, p in positions.items():
        text, prefix = own[u]
        if not text:
            continue
        other = model.summaries.text(u, p)
        new_prefix = model._group(u, p, [item]).prefix
        assert other != text and _holds(new_prefix, model.prompts.summary_ids(other)) and new_prefix != prefix
        swapped += 1
    assert swapped >= 2
