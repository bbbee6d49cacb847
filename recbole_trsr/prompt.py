"""Recommender prompts built at token level: a per-user prefix and one suffix per candidate.

The template (``prompt_template``) must end its user-specific part before ``{candidate}``:
everything before ``{candidate}`` is the *prefix* (instruction, ``{summary}``, ``{recent}``),
shared by every candidate of one user; ``{candidate}`` and what follows is the *suffix*. Each
piece is tokenized on its own and the ids are concatenated, so a prompt's tokens do not depend
on how it is batched or shared, and item texts are tokenized once for the whole run.

Budgets: an item's text is cut to ``item_max_tokens``, a summary to ``summary_max_tokens``;
when prefix + suffix still exceed ``prompt_max_tokens`` the oldest recent items are dropped.
Every such decision is counted in :attr:`PromptBuilder.counters` and logged once per kind.
"""
import logging
import string
from collections import Counter

logger = logging.getLogger(__name__)

_BODY_MARK = "\u241fBODY\u241f"


def chat_frame(tokenizer, use_chat_template=True, plain_tail="\nAnswer: "):
    """(head, tail) strings that wrap a user message into the model's chat format, if it has one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _BODY_MARK}], tokenize=False, add_generation_prompt=True
        )
        head, tail = text.split(_BODY_MARK)
        return head, tail
    return "", plain_tail


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def bos_ids(tokenizer):
    """[bos] when the tokenizer adds one by default (Llama-style), else []."""
    ids = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and ids and ids[0] == bos else []


def head_starts_with_bos(tokenizer, head):
    """Whether the chat header already begins with the BOS token (Llama-2/3, Mistral and Gemma
    templates write ``{{ bos_token }}`` themselves)."""
    if tokenizer is None or tokenizer.bos_token_id is None:  # engines that frame prompts themselves
        return False
    return encode(tokenizer, head)[:1] == [tokenizer.bos_token_id]


def start_ids(tokenizer, head):
    """A prompt's first tokens: exactly one BOS where the model expects one, then the chat header."""
    ids = encode(tokenizer, head)
    return ids if head_starts_with_bos(tokenizer, head) else bos_ids(tokenizer) + ids


class FramedPrompts:
    """The summarizer's prompt texts as token ids in the model's chat frame, with exactly one BOS (the
    local decoders' input, and what ``summary_engine: server`` sends in its ``tokens`` mode). A prompt
    over ``max_prompt_tokens`` keeps the frame (BOS, chat header, tail) and its own last tokens (the
    instruction, and the items nearest it), and is counted in :attr:`n_truncated`."""

    def __init__(self, tokenizer, use_chat_template=True, max_prompt_tokens=1024, plain_tail="\nSummary:"):
        self.tokenizer = tokenizer
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.head, self.tail = chat_frame(tokenizer, use_chat_template, plain_tail=plain_tail)
        self.n_truncated = 0

    def __call__(self, prompts):
        tok = self.tokenizer
        # A header that begins with BOS text gets no second one from the tokenizer.
        rows = tok([self.head + p + self.tail for p in prompts],
                   add_special_tokens=not head_starts_with_bos(tok, self.head))["input_ids"]
        over = [i for i, r in enumerate(rows) if len(r) > self.max_prompt_tokens]
        if over:
            for i in over:
                rows[i] = self.frame_ids() + self.cut_body(prompts[i]) + encode(tok, self.tail)
            self.n_truncated += len(over)
            logger.warning("summarizer: %d prompts over %d tokens were cut inside their text (counted)",
                           len(over), self.max_prompt_tokens)
        return rows

    def frame_ids(self):
        return start_ids(self.tokenizer, self.head)

    def cut_body(self, prompt):
        """The last tokens of ``prompt``'s own text that fit in ``max_prompt_tokens`` with the frame."""
        room = self.max_prompt_tokens - len(self.frame_ids()) - len(encode(self.tokenizer, self.tail))
        if room < 1:
            raise ValueError(f"summary_prompt_max_tokens={self.max_prompt_tokens} leaves no room for a prompt's "
                             f"text inside its chat frame ({self.max_prompt_tokens - room} tokens)")
        return encode(self.tokenizer, prompt)[-room:]


def answer_token_id(tokenizer, word):
    ids = encode(tokenizer, word)
    if not ids:
        raise ValueError(f"answer word {word!r} encodes to no token")
    return ids[0]


def cut_item_ids(tokenizer, item_texts, max_tokens, purpose="item_max_tokens"):
    """(token ids of each item's text cut to ``max_tokens``, how many were cut); id 0 (padding) has none."""
    if int(max_tokens) < 1:
        raise ValueError(f"{purpose} must be at least 1 token, not {max_tokens}")
    texts = list(item_texts)
    ids = tokenizer(texts[1:], add_special_tokens=False)["input_ids"] if len(texts) > 1 else []
    out, n_cut = [[]], 0
    for row in ids:
        if len(row) > max_tokens:
            n_cut += 1
            row = row[:max_tokens]
        out.append(row)
    if n_cut:
        logger.info("prompt: %d item texts cut to %s=%d", n_cut, purpose, max_tokens)
    return out, n_cut


class CutItemTexts:
    """An item's text cut to ``max_tokens`` tokens, by item id: what the summarizer's block prompts show
    when they get their own budget (``summary_item_max_tokens``) instead of the recommender prompt's."""

    def __init__(self, tokenizer, item_texts, max_tokens):
        self.tokenizer = tokenizer
        self.item_ids, self.n_cut = cut_item_ids(tokenizer, item_texts, int(max_tokens), "summary_item_max_tokens")

    def __call__(self, item):
        return self.tokenizer.decode(self.item_ids[int(item)])


class PromptBuilder:
    """Token-level recommender prompts under token budgets (see module docstring)."""

    def __init__(self, tokenizer, template, item_texts=None, item_max_tokens=32, summary_max_tokens=128,
                 prompt_max_tokens=512, use_chat_template=True, no_summary_text="none yet",
                 recent_separator="\n", list_slots=("recent",), text_slots=("summary",), trim_slot="recent",
                 candidate_as_answer=False, item_ids=None, soft_prompt_length=0, candidate_notes=None):
        # candidate_notes: per item id, text shown after the item's text when it is the candidate
        # (never in the recent items), e.g. its training popularity.
        # candidate_as_answer: the candidate's text is the model's answer (after the chat tail),
        # not part of the question; used for likelihood scoring (DELRec).
        self.list_slots, self.text_slots, self.trim_slot = tuple(list_slots), tuple(text_slots), trim_slot
        head, tail = chat_frame(tokenizer, use_chat_template)
        if candidate_as_answer:
            if "{candidate}" in template:
                raise ValueError("with candidate_as_answer the template must not contain {candidate}")
            body_prefix, body_suffix, tail_in_prefix = template, "", True
        else:
            if "{candidate}" not in template:
                raise ValueError("prompt_template must contain {candidate}")
            body_prefix, body_suffix = template.split("{candidate}", 1)
            tail_in_prefix = False
            for name in self.list_slots + self.text_slots:
                if "{" + name + "}" in body_suffix:
                    raise ValueError(f"{{{name}}} must come before {{candidate}} in prompt_template")
        self.tokenizer = tokenizer
        self.summary_max_tokens = summary_max_tokens
        self.prompt_max_tokens = prompt_max_tokens
        self.no_summary_text = no_summary_text
        self.counters = Counter()
        placeholder = [tokenizer.pad_token_id] * int(soft_prompt_length)
        self._prefix_pieces = [("text", placeholder + start_ids(tokenizer, head))]
        for literal, field, _, _ in string.Formatter().parse(body_prefix):
            self._prefix_pieces.append(("text", encode(tokenizer, literal)))
            if field is not None:
                if field not in self.list_slots + self.text_slots:
                    raise ValueError(f"unknown placeholder {{{field}}} in prompt template {template[:40]!r}...")
                self._prefix_pieces.append((field, None))
        if tail_in_prefix:
            self._prefix_pieces.append(("text", encode(tokenizer, tail)))
            self._suffix_tail = []
        else:
            self._suffix_tail = encode(tokenizer, body_suffix) + encode(tokenizer, tail)
        self._separator = encode(tokenizer, recent_separator)
        self.item_ids = item_ids if item_ids is not None else self._tokenize_items(item_texts, item_max_tokens)
        self._summary_cache = {}
        self._suffix_cache = {}
        self.candidate_notes = candidate_notes
        self._note_ids = {note: encode(tokenizer, note) for note in set(candidate_notes or [])}

    def _tokenize_items(self, item_texts, max_tokens):
        ids, n_cut = cut_item_ids(self.tokenizer, item_texts, max_tokens)
        if n_cut:
            self.counters["item_text_truncated"] += n_cut
        return ids

    def item_text(self, item):
        """The item's text as the prompts show it (after the token cut)."""
        return self.tokenizer.decode(self.item_ids[int(item)])

    def summary_ids(self, summary):
        if summary not in self._summary_cache:
            ids = encode(self.tokenizer, summary or self.no_summary_text)
            if len(ids) > self.summary_max_tokens:
                self._count("summary_truncated", f"summaries cut to summary_max_tokens={self.summary_max_tokens}")
                ids = ids[: self.summary_max_tokens]
            self._summary_cache[summary] = ids
        return self._summary_cache[summary]

    def suffix(self, item):
        """Token ids of the candidate part of the prompt for ``item``."""
        item = int(item)
        if item not in self._suffix_cache:
            note = self._note_ids[self.candidate_notes[item]] if self.candidate_notes else []
            self._suffix_cache[item] = self.item_ids[item] + note + self._suffix_tail
        return self._suffix_cache[item]

    def prefix(self, summary=None, recent_items=(), longest_suffix=0, **slots):
        """Token ids of the user part; drops the oldest items of the trim slot if over budget."""
        values = {"summary": summary, "recent": recent_items, **slots}
        values = {k: ([int(i) for i in v] if k in self.list_slots else v) for k, v in values.items()}
        while True:
            ids = self._render_prefix(values)
            if len(ids) + longest_suffix <= self.prompt_max_tokens:
                return ids
            if not values.get(self.trim_slot):
                raise ValueError(
                    f"prompt of {len(ids) + longest_suffix} tokens exceeds prompt_max_tokens={self.prompt_max_tokens} "
                    f"even without {self.trim_slot} items: raise prompt_max_tokens or lower the other budgets"
                )
            values[self.trim_slot] = values[self.trim_slot][1:]
            self._count(f"{self.trim_slot}_items_dropped",
                        f"oldest {self.trim_slot} items dropped to fit prompt_max_tokens={self.prompt_max_tokens}")

    def build(self, summary=None, recent_items=(), candidates=(), **slots):
        """(prefix ids, [suffix ids per candidate]) for one user and several candidates."""
        suffixes = [self.suffix(c) for c in candidates]
        return self.prefix(summary, recent_items, max(map(len, suffixes), default=0), **slots), suffixes

    def _render_prefix(self, values):
        ids = []
        for kind, piece in self._prefix_pieces:
            if kind == "text":
                ids += piece
            elif kind in self.text_slots:
                ids += self.summary_ids(values.get(kind))
            else:
                for n, item in enumerate(values.get(kind) or []):
                    ids += (self._separator if n else []) + self.item_ids[item]
        return ids

    def _count(self, key, message):
        if not self.counters[key]:
            logger.warning("prompt: %s (counted in counters[%r])", message, key)
        self.counters[key] += 1
