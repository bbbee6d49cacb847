"""What a preference summary says, measured against the items it summarizes.

A summary that loses can only be explained by reading what it holds. These statistics check the
genres a summary names against the genres of the items it covers, and against the candidates the
recommender must rank:

- ``names_genre``: the summary names at least one genre;
- ``precision``: of the genres it names, the share that are frequent in its items (on at least
  ``frequent_share`` of them);
- ``invented``: of the genres it names, the share that none of its items has;
- ``top_named``: it names the most frequent genre of its items;
- ``target_named`` / ``negative_named``: it names a genre of the test target / of a sampled
  negative (the mean over the user's negatives). Their difference is what a summary can add to a
  Yes/No answer; near 0 means the summary says nothing that separates the target from the rest.

Each own-items statistic has a ``shuffled_`` twin: the same summary scored against another user's
items (a fixed derangement of the users). A summary that only repeats what is frequent everywhere
(Drama, Comedy) scores as well on someone else's items as on its own.

Where items have no genres (titles only), :func:`word_content` reads the summary's words instead:
how many of them come from its items' texts (against another user's), whether it shares a word with
the target's text more often than with a negative's, and whether the LLM call that made it only
copied one of the summaries it was given (a recurrent update that ignored its new block, a merge that
kept one child), or wrote the same text as another user's summary.
"""
import re
from collections import Counter

import numpy as np

from recbole_trsr.evaluation.bootstrap import bootstrap_ci, paired_bootstrap


class GenreMatcher:
    """Finds the genres a text names: each genre's own word (case-insensitive, plural allowed, a hyphen
    read as an optional space or hyphen) and any of its ``aliases`` (``{genre: [phrase, ...]}``)."""

    def __init__(self, genres, aliases=None):
        self.genres = sorted(set(genres))
        aliases = aliases or {}
        self._patterns = {}
        for genre in self.genres:
            phrases = [genre] + list(aliases.get(genre, ()))
            alternatives = []
            for phrase in phrases:
                words = [re.escape(w) for w in re.split(r"[-\s]+", re.sub(r"'s$", "", phrase.lower())) if w]
                alternatives.append(r"[-\s]?".join(words) + r"(?:'s|s|es)?")
            self._patterns[genre] = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)

    def named(self, text):
        """The set of genres ``text`` names."""
        return {g for g, p in self._patterns.items() if p.search(text or "")}


def derangement(n, seed=0):
    """``other[i]``: a fixed random index other than ``i`` (one cycle through a seeded random order),
    for ``n`` > 1; ``[0]`` for ``n`` = 1."""
    order = np.random.default_rng(seed).permutation(n)
    other = np.empty(n, dtype=int)
    other[order] = np.roll(order, -1)
    return other


def _item_stats(named, item_genres, frequent_share):
    """(precision, invented, top_named) of ``named`` against the genre lists of the covered items."""
    counts = {}
    for genres in item_genres:
        for g in set(genres):
            counts[g] = counts.get(g, 0) + 1
    n = max(len(item_genres), 1)
    frequent = {g for g, c in counts.items() if c / n >= frequent_share}
    top = max(counts.values(), default=0)
    tops = {g for g, c in counts.items() if c == top and top > 0}
    if named:
        precision = len(named & frequent) / len(named)
        invented = len(named - set(counts)) / len(named)
    else:
        precision = invented = np.nan  # undefined: the summary names no genre
    return precision, invented, float(bool(named & tops))


def summary_content(records, matcher, frequent_share=0.25, seed=0):
    """Per-summary statistics (arrays, one value per record; NaN where undefined).

    ``records``: dicts with ``text`` (the summary), ``covered`` (genre lists of the items it
    summarizes), ``target`` (the target's genres) and ``negatives`` (genre lists of the sampled
    negatives). Only records with a non-empty summary are counted; ``n_empty`` says how many had none.
    """
    kept = [r for r in records if r["text"]]
    if not kept:
        raise ValueError(f"no summary to measure: all {len(records)} records have an empty summary")
    named = [matcher.named(r["text"]) for r in kept]
    n = len(kept)
    other = derangement(n, seed)  # another user's items for each summary
    out = {k: np.full(n, np.nan) for k in ("names_genre", "precision", "invented", "top_named", "shuffled_precision",
                                            "shuffled_invented", "shuffled_top_named", "target_named",
                                            "negative_named", "words")}
    for i, (r, g) in enumerate(zip(kept, named)):
        out["names_genre"][i] = float(bool(g))
        out["precision"][i], out["invented"][i], out["top_named"][i] = _item_stats(g, r["covered"], frequent_share)
        (out["shuffled_precision"][i], out["shuffled_invented"][i],
         out["shuffled_top_named"][i]) = _item_stats(g, kept[other[i]]["covered"], frequent_share)
        out["target_named"][i] = float(bool(g & set(r["target"])))
        if r["negatives"]:  # else NaN: no candidates to compare the target with
            out["negative_named"][i] = np.mean([bool(g & set(neg)) for neg in r["negatives"]])
        out["words"][i] = len(r["text"].split())
    return {"n": n, "n_empty": len(records) - n, "values": out}


def content_table(stats, n_boot=2000):
    """Markdown rows (one per statistic) with bootstrap CIs over summaries, and paired differences
    (own items - shuffled items; target - negative)."""
    return _table(stats, (("precision", "named genres frequent in its items"),
                          ("invented", "named genres none of its items has"),
                          ("top_named", "names its items' most frequent genre")),
                  (("names_genre", "names a genre"), ("words", "words"),
                   ("target_named", "names a genre of the target"),
                   ("negative_named", "names a genre of a negative (mean over negatives)")),
                  ("target_named", "negative_named"), n_boot)


# Words too common to say anything about a user's items.
STOP_WORDS = frozenset("""a an and are as at be by for from has have in into is it its of on or that the their
    this to was were with who which user users user's prefers prefer preferences items item also more most
    such like likes enjoys interest interested focus""".split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def content_words(text):
    """The lower-cased words of ``text`` (letters and digits) of 3+ characters, stop words left out."""
    return {w for w in _WORD.findall((text or "").lower()) if len(w) >= 3 and w not in STOP_WORDS}


def word_content(records, seed=0):
    """Genre-free per-summary statistics (arrays, one value per record; NaN where undefined).

    ``records``: dicts with ``text`` (the summary), ``covered`` (the texts of the items it summarizes),
    ``target`` (the target's text), ``negatives`` (the sampled negatives' texts) and ``inputs`` (the
    texts of the summaries the LLM call that made it was given; empty for a first block). Only records
    with a non-empty summary are counted, as in :func:`summary_content`.
    """
    kept = [r for r in records if r["text"]]
    if not kept:
        raise ValueError(f"no summary to measure: all {len(records)} records have an empty summary")
    n = len(kept)
    other = derangement(n, seed)
    words = [content_words(r["text"]) for r in kept]
    covered = [set().union(*(content_words(t) for t in r["covered"])) for r in kept]
    texts = Counter(r["text"] for r in kept)
    out = {k: np.full(n, np.nan) for k in ("grounded", "shuffled_grounded", "target_word", "negative_word",
                                            "copies_input", "shared_text", "words")}
    for i, (r, w) in enumerate(zip(kept, words)):
        if w:
            out["grounded"][i] = len(w & covered[i]) / len(w)
            out["shuffled_grounded"][i] = len(w & covered[other[i]]) / len(w)
        out["target_word"][i] = float(bool(w & content_words(r["target"])))
        if r["negatives"]:
            out["negative_word"][i] = np.mean([bool(w & content_words(t)) for t in r["negatives"]])
        if r["inputs"]:
            out["copies_input"][i] = float(r["text"].strip() in {t.strip() for t in r["inputs"] if t})
        out["shared_text"][i] = float(texts[r["text"]] > 1)
        out["words"][i] = len(r["text"].split())
    return {"n": n, "n_empty": len(records) - n, "values": out}


def word_table(stats, n_boot=2000):
    """Markdown rows for :func:`word_content`'s statistics, with bootstrap CIs over summaries and the
    paired differences own - another user's items and target - negative."""
    return _table(stats, (("grounded", "share of its words found in its items"),),
                  (("copies_input", "only copies a summary it was given (previous step or a child)"),
                   ("shared_text", "the same text as another user's summary"), ("words", "words"),
                   ("target_word", "shares a word with the target"),
                   ("negative_word", "shares a word with a negative (mean over negatives)")),
                  ("target_word", "negative_word"), n_boot)


def _table(stats, own_rows, value_rows, target_negative, n_boot):
    """Both lenses' tables: each ``own_rows`` statistic against its ``shuffled_`` twin, each of
    ``value_rows`` alone, then the paired ``target_negative`` difference."""
    v = stats["values"]
    lines = ["| statistic | own items | another user's items | own - another | summaries counted |",
             "|---|---|---|---|---|"]
    for name, label in own_rows:
        own, count = _ci(v[name], n_boot)
        lines.append(f"| {label} | {own} | {_ci(v['shuffled_' + name], n_boot)[0]} | "
                     f"{_paired(v[name], v['shuffled_' + name], n_boot)} | {count} |")
    lines += ["", "| statistic | value | summaries counted |", "|---|---|---|"]
    for name, label in value_rows:
        value, count = _ci(v[name], n_boot)
        lines.append(f"| {label} | {value} | {count} |")
    target, negative = target_negative
    lines.append(f"| target - negative (paired) | {_paired(v[target], v[negative], n_boot)} | {stats['n']} |")
    return "\n".join(lines)


def _ci(values, n_boot):
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return "n/a", 0
    mean, low, high = bootstrap_ci(v, n_boot=n_boot)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]", len(v)


def _paired(a, b, n_boot):
    keep = ~np.isnan(a) & ~np.isnan(b)
    if not keep.any():
        return "n/a"
    mean, low, high, _ = paired_bootstrap(a[keep], b[keep], n_boot=n_boot)
    verdict = "no difference" if low <= 0 <= high else ("higher" if mean > 0 else "lower")
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}], {verdict}"
