"""The field_counts reference summary: exact counts over the blocks before the recent window, nothing later."""
from collections import Counter

import pytest
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.model.llmtrsr import LLMTRSR
from recbole_trsr.analysis.field_counts import FieldCountSummaries


def test_counts_cover_only_the_blocks_before_the_recent_window(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, summary_paradigm="field_counts", summary_count_field="class"))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    lookup = model.summaries
    assert isinstance(lookup, FieldCountSummaries)
    histories, raw_ids = dataset.user_histories, dataset.field2id_token["item_id"]
    with open(data_root / DATASET / f"{DATASET}.item", encoding="utf-8") as f:
        header = [c.split(":")[0] for c in f.readline().rstrip("\n").split("\t")]
        genres = {row[header.index("item_id")]: row[header.index("class")].split()
                  for row in (line.rstrip("\n").split("\t") for line in f)}
    user = next(u for u in range(1, dataset.user_num) if histories.length(u) >= 15)
    # recent_items 3, blocks of 4: position 14 -> 2 blocks (items 0-7) summarized, items 8-13 verbatim
    text = lookup.text(user, 14)
    items = histories.items_before(user, 8).tolist()
    expected = Counter(g for i in items for g in genres[raw_ids[i]])
    listed = dict(part.rsplit(" ", 1) for part in text.split(": ", 1)[1].split(", "))
    assert text.startswith("class of the 8 earlier items") and {k: int(v) for k, v in listed.items()} == expected
    assert list(map(int, listed.values())) == sorted(expected.values(), reverse=True)
    # the items of the recent window do not count: positions 11-14 all read blocks 0-1; 15 reads a third
    assert lookup.text(user, 11) == text and lookup.text(user, 15).startswith("class of the 12 earlier items")
    assert lookup.text(user, 6) == "" and lookup.blocks_covered(6) == 0  # no complete block before the window
    # and the prompt the recommender reads holds it
    prefix, _ = model.prompts.build(text, histories.items_before(user, 14)[8:], [1])
    assert "earlier items, most frequent first" in model.prompts.tokenizer.decode(prefix)


def test_an_unknown_field_is_refused(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, summary_paradigm="field_counts", summary_count_field="colour"))
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match="summary_count_field"):
        FieldCountSummaries(dataset, "colour", 3, 4)
