"""Does a trained recommender read its summaries? Its checkpoint is evaluated again with every
user's summary replaced, and the ranks compared with its own (paired, same users and candidates).

- ``"swapped"``: each user's prompt holds the summary another user's prompt of the same split
  holds (a fixed derangement of the users that have one). Same length and style, wrong person: if the
  ranks do not move, the recommender does not use what the summary says about this user.
- ``"empty"``: every prompt's summary is empty, so the prompt says what it says for a user with no
  block before the recent window (``PromptBuilder``'s ``no_summary_text``); the template's other text stays.

A summary row that ties the prompt without a summary can mean either that the summaries hold nothing
the recent items do not already show, or that the recommender never learned to read them; this
tells the two apart.
"""
from recbole_trsr.analysis.summary_content import derangement

REPLACEMENTS = ("swapped", "empty")


class ReplacedSummaries:
    """A summary lookup for one evaluation split whose texts are replaced as ``replacement`` says.

    ``lookup`` is the model's (``text(user, position)``); ``positions`` maps each evaluated user to the
    target position its prompt is built for. Asking for another (user, position) is an error: the
    replacement is defined for that split's prompts only.
    """

    def __init__(self, lookup, positions, replacement, seed=0):
        if replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {REPLACEMENTS}, not {replacement!r}")
        self.positions = {int(u): int(p) for u, p in positions.items()}
        own = {u: lookup.text(u, p) for u, p in sorted(self.positions.items())}
        self.texts = dict.fromkeys(own, "")
        with_summary = [u for u, text in own.items() if text]
        if replacement == "swapped":
            if len(with_summary) < 2:
                raise ValueError(f"{len(with_summary)} user(s) with a summary: nobody to swap with")
            other = derangement(len(with_summary), seed)
            self.texts.update({u: own[with_summary[j]] for u, j in zip(with_summary, other)})
        self.replaced = len(with_summary)  # users whose summary changed; the others had none to replace
        self.prompts_cut = lookup.prompts_cut
        self.unreadable_records = lookup.unreadable_records

    def text(self, user, position):
        user, position = int(user), int(position)
        if self.positions.get(user) != position:
            raise KeyError(f"user {user} at position {position} is not a prompt of the split being evaluated")
        return self.texts[user]
