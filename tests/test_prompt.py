"""Prompt building under token budgets: every cut is counted, an impossible budget is an error."""
import pytest
from transformers import AutoTokenizer

from recbole_trsr.prompt import PromptBuilder

TEMPLATE = "Summary: {summary}\nRecent:\n{recent}\nWill the user like it? Item: {candidate}"


@pytest.fixture(scope="module")
def tok(tiny_llm):
    return AutoTokenizer.from_pretrained(tiny_llm)


def items(n, words=3):
    return [""] + [" ".join(f"Title{k}" for _ in range(words)) + f" movie {i}" for i, k in enumerate(range(n), 1)]


def test_parts_and_token_order(tok):
    builder = PromptBuilder(tok, TEMPLATE, items(10), use_chat_template=False)
    prefix, suffixes = builder.build("likes dramas", [3, 4], [7, 8])
    text = tok.decode(prefix + suffixes[0])
    assert text.index("likes dramas") < text.index(builder.item_text(3)) < text.index(builder.item_text(4))
    assert text.rstrip().endswith("Answer:")  # plain models get an answer cue
    assert builder.item_text(7) in tok.decode(suffixes[0]) and builder.item_text(8) in tok.decode(suffixes[1])
    assert builder.counters == {}


def test_candidate_notes_follow_the_candidate_only(tok):
    notes = [""] + [" (popularity: high)" if i % 2 else " (popularity: low)" for i in range(1, 11)]
    plain = PromptBuilder(tok, TEMPLATE, items(10), use_chat_template=False)
    noted = PromptBuilder(tok, TEMPLATE, items(10), use_chat_template=False, candidate_notes=notes)
    prefix, suffixes = noted.build("s", [1, 2], [3, 4])
    assert prefix == plain.build("s", [1, 2], [3, 4])[0]  # recent items carry no note
    assert "popularity" not in tok.decode(prefix)
    assert tok.decode(suffixes[0]).startswith(noted.item_text(3) + " (popularity: high)")
    assert tok.decode(suffixes[1]).startswith(noted.item_text(4) + " (popularity: low)")


def test_budgets_cut_and_count(tok):
    builder = PromptBuilder(tok, TEMPLATE, items(10, words=30), item_max_tokens=8, summary_max_tokens=5,
                            prompt_max_tokens=10_000, use_chat_template=False)
    assert builder.counters["item_text_truncated"] == 10
    assert all(len(ids) <= 8 for ids in builder.item_ids)
    builder.prefix("a very long summary " * 20, [1])
    assert builder.counters["summary_truncated"] == 1
    full = len(builder.prefix("x", list(range(1, 11))))
    small = PromptBuilder(tok, TEMPLATE, items(10, words=30), item_max_tokens=8, prompt_max_tokens=full - 12,
                          use_chat_template=False)
    prefix = small.prefix("x", list(range(1, 11)))
    assert small.counters["recent_items_dropped"] >= 1 and len(prefix) <= full - 12
    assert small.item_text(10) in tok.decode(prefix)  # the newest items are kept
    tiny = PromptBuilder(tok, TEMPLATE, items(3), prompt_max_tokens=5, use_chat_template=False)
    with pytest.raises(ValueError, match="exceeds prompt_max_tokens=5"):
        tiny.build("x", [1, 2], [3])


def test_template_errors(tok):
    with pytest.raises(ValueError, match="must contain {candidate}"):
        PromptBuilder(tok, "no slot here", items(2))
    with pytest.raises(ValueError, match="must come before"):
        PromptBuilder(tok, "{candidate} then {summary}", items(2))
    with pytest.raises(ValueError, match="unknown placeholder"):
        PromptBuilder(tok, "{mystery} {candidate}", items(2))
