"""A reference summary that no LLM writes: one item field (e.g. genre) counted over the blocks a
summary may cover, most frequent first.

It holds, by construction, what a genre-keeping LLM summary is asked to hold, with the same coverage
(the complete blocks before the recent window, :func:`~recbole_trsr.summarize.segment.summary_block_count`).
A row with it tells whether the recommender can use such a summary at all, apart from what the
LLM summarizer manages to write (issue #20). It is a diagnostic, not LLM-TRSR.
"""
import logging
import os
from collections import Counter

from recbole_trsr.data.item_text import ItemTextTable, read_header
from recbole_trsr.summarize.segment import summary_block_count

logger = logging.getLogger(__name__)


class FieldCountSummaries:
    """``summary_paradigm: field_counts``: (user, target position) -> "genre of the 20 earlier items,
    most frequent first: Drama 9, Comedy 6, ..." ("" when no block precedes the recent window)."""

    prompts_cut = 0
    unreadable_records = 0

    def __init__(self, dataset, field, recent_items, block_size):
        config = dataset.config
        path = os.path.join(config["data_path"], f"{config['dataset']}.item")
        types = dict(read_header(path, config["field_separator"], config["encoding"] or "utf-8"))
        if not field or field not in types:
            raise ValueError(f"summary_paradigm: field_counts needs summary_count_field to name a field of {path} "
                             f"(one of {sorted(types)}), not {field!r}")
        self.field = field
        self.histories = dataset.user_histories
        self.recent_items, self.block_size = int(recent_items), int(block_size)
        table = ItemTextTable.from_dataset(dataset, fields=[field], text_format="{%s}" % field)
        self.item_values = [[] if i == 0 or i in table.fallback_ids else
                            (text.split() if types[field].endswith("_seq") else [text])
                            for i, text in enumerate(table.texts)]
        self.items_without_value = table.n_fallback
        logger.info("field_counts summaries of %r: %d of %d items have no value and add nothing to a count",
                    field, self.items_without_value, len(self.item_values) - 1)

    def blocks_covered(self, position):
        return summary_block_count(position, self.recent_items, self.block_size)

    def text(self, user, position):
        n = self.blocks_covered(position) * self.block_size
        if n == 0:
            return ""
        items = self.histories.items_before(user, n).tolist()
        counts = Counter(value for item in items for value in self.item_values[item])
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return (f"{self.field} of the {n} earlier items, most frequent first: "
                + ", ".join(f"{value} {count}" for value, count in ranked))


def from_config(config, dataset, item_text):
    """``summary_paradigm: field_counts`` (``recbole_trsr.summarize.pipeline.REFERENCE_SUMMARIES``)."""
    return FieldCountSummaries(dataset, config["summary_count_field"], config["recent_items"], config["block_size"])
