"""The summary-content statistics: genre matching, own vs another user's items, target vs negatives."""
import numpy as np
import pytest

from recbole_trsr.analysis.summary_content import (GenreMatcher, content_table, content_words, summary_content,
                                                      word_content, word_table)

GENRES = ["Action", "Children's", "Comedy", "Drama", "Sci-Fi", "News", "War"]


def test_genre_matcher_reads_plurals_hyphens_and_aliases_but_not_parts_of_words():
    m = GenreMatcher(GENRES, aliases={"Comedy": ["comedies"], "Sci-Fi": ["science fiction"]})
    assert m.named("Enjoys comedies and dramas, some sci fi") == {"Comedy", "Drama", "Sci-Fi"}
    assert m.named("A science-fiction fan; children's films") == {"Sci-Fi", "Children's"}
    assert m.named("new releases, award-winning, dramatic") == set()  # "news", "war", "drama" are not there
    assert m.named("") == set() and m.named(None) == set()


def _record(text, covered, target, negatives):
    return {"text": text, "covered": covered, "target": target, "negatives": negatives}


def test_statistics_separate_a_specific_summary_from_a_generic_one():
    m = GenreMatcher(GENRES)
    war = [["War", "Drama"]] * 4 + [["Action"]]
    kids = [["Children's", "Comedy"]] * 5
    specific = [_record("Loves war films", war, ["War"], [["Comedy"], ["Children's"]]),
                _record("Watches children's comedy", kids, ["Comedy"], [["War"], ["Drama"]])]
    stats = summary_content(specific + [_record("", war, ["War"], [])], m)
    v = stats["values"]
    assert stats["n"] == 2 and stats["n_empty"] == 1
    assert list(v["precision"]) == [1.0, 1.0] and list(v["shuffled_precision"]) == [0.0, 0.0]
    assert list(v["invented"]) == [0.0, 0.0] and list(v["shuffled_invented"]) == [1.0, 1.0]
    assert list(v["top_named"]) == [1.0, 1.0] and list(v["shuffled_top_named"]) == [0.0, 0.0]
    assert list(v["target_named"]) == [1.0, 1.0] and list(v["negative_named"]) == [0.0, 0.0]

    # A summary that names no genre has no precision (NaN, not 0), and says nothing about the target.
    vague = summary_content([_record("Likes good films", war, ["War"], [["Comedy"]])] * 2, m)["values"]
    assert np.isnan(vague["precision"]).all() and list(vague["names_genre"]) == [0.0, 0.0]
    assert list(vague["target_named"]) == [0.0, 0.0]

    # Without sampled negatives there is nothing to compare the target with: NaN, not 0.
    lone = summary_content([_record("Loves war films", war, ["War"], [])] * 2, m)["values"]
    assert np.isnan(lone["negative_named"]).all() and list(lone["target_named"]) == [1.0, 1.0]

    table = content_table(stats, n_boot=200)
    assert "| named genres frequent in its items | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | +1.000" in table
    assert "target - negative (paired) | +1.000" in table


def test_shuffled_items_are_never_the_summary_s_own():
    m = GenreMatcher(GENRES)
    records = [_record("War", [["War"]] if i % 2 else [["Comedy"]], ["War"], [["Drama"]]) for i in range(51)]
    v = summary_content(records, m, seed=3)["values"]
    # Own items: precision 1 where the items are War, 0 where Comedy; another user's: any mix, but the
    # derangement must not reproduce the own column exactly.
    assert list(v["precision"]) == [float(i % 2) for i in range(51)]
    assert not np.array_equal(v["precision"], v["shuffled_precision"])
    with pytest.raises(ValueError, match="no summary to measure"):
        summary_content([_record("", [["War"]], ["War"], [])], m)


def _words(text, covered, target, negatives, inputs=()):
    return {"text": text, "covered": covered, "target": target, "negatives": negatives, "inputs": list(inputs)}


def test_word_lens_separates_a_grounded_update_from_a_copied_generic_one():
    halo = ["Halo 5: Guardians - Xbox One", "Forza Motorsport 6 - Xbox One"]
    mario = ["Super Mario Odyssey - Nintendo Switch", "Mario Kart 8 Deluxe - Nintendo Switch"]
    grounded = [_words("Plays Xbox One racing and Halo shooters", halo, "Gears of War 4 - Xbox One",
                       ["Zelda: Breath of the Wild - Nintendo Switch"], ["Plays Halo"]),
                _words("A Nintendo Switch player of Mario games", mario, "Splatoon 2 - Nintendo Switch",
                       ["Fallout 4 - Xbox One"], ["Likes Mario"])]
    stats = word_content(grounded + [_words("", halo, "x", [])])
    v = stats["values"]
    assert stats["n"] == 2 and stats["n_empty"] == 1
    # "plays xbox one racing halo shooters": xbox, one, halo found in its items; nothing in Mario's.
    assert v["grounded"][0] == pytest.approx(3 / 6) and v["shuffled_grounded"][0] == 0.0
    assert list(v["target_word"]) == [1.0, 1.0] and list(v["negative_word"]) == [0.0, 0.0]
    assert list(v["copies_input"]) == [0.0, 0.0] and list(v["shared_text"]) == [0.0, 0.0]

    # A recurrent update that returns the summary it was given, word for word, and says the same for
    # every user; a first block has no input summary (NaN, not 0).
    generic = "This user prefers an immersive gaming experience."
    copied = word_content([_words(generic, halo, "Gears of War 4", ["Zelda"], [generic + " "]),
                           _words(generic, mario, "Splatoon 2", ["Fallout 4"], [])])["values"]
    assert copied["copies_input"][0] == 1.0 and np.isnan(copied["copies_input"][1])
    assert list(copied["shared_text"]) == [1.0, 1.0]
    assert list(copied["target_word"]) == [0.0, 0.0]

    table = word_table(stats, n_boot=200)
    assert "| share of its words found in its items |" in table and "target - negative (paired) | +1.000" in table
    with pytest.raises(ValueError, match="no summary to measure"):
        word_content([_words("", halo, "x", [])])


def test_content_words_drop_short_and_common_words():
    assert content_words("The user's Xbox One: Call of Duty, an FPS") == {"xbox", "one", "call", "duty", "fps"}
    assert content_words("") == set() and content_words(None) == set()
