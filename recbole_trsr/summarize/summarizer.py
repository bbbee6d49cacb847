"""The LLM summarizer: plans the calls of every user, runs them batched, fills the store."""
import logging
import time
from collections import defaultdict

from tqdm import tqdm

from recbole_trsr import faults
from recbole_trsr.summarize.engines import LocalEngine
from recbole_trsr.summarize.plan import digest, plan_user
from recbole_trsr.summarize.segment import blocks

logger = logging.getLogger(__name__)


class MissingSummaries(RuntimeError):
    """Summaries a run needs that are not in the store, where this run may not generate them."""

    def __init__(self, missing, needed, users, advice=""):
        super().__init__(f"{missing} of {needed} summaries ({users} users) are not in the store" + advice)
        self.missing, self.needed, self.users = missing, needed, users


class Summarizer:
    """Hierarchical or recurrent block summaries for many users, batched across users.

    ``generate`` maps a list of prompt strings to a list of summaries (an :class:`LLMGenerator`
    or, in tests, any callable), or is an engine of :mod:`recbole_trsr.summarize.engines` (Ray
    actors). ``item_text(item_id)`` gives the text shown for an item.
    Templates are ``str.format`` strings: ``block_template`` ({items}), ``merge_template``
    ({summaries}), ``recurrent_template`` ({summary}, {items}).
    """

    def __init__(self, generate, store, item_text, paradigm, block_size, templates, fanin=2, batch_size=16,
                 show_progress=True):
        self.engine = generate if hasattr(generate, "map") else LocalEngine(generate)
        self.store = store
        self.item_text = item_text
        self.paradigm = paradigm
        self.block_size = int(block_size)
        self.templates = templates
        self.fanin = int(fanin)
        self.batch_size = int(batch_size)
        self.show_progress = show_progress

    def _items_text(self, items):
        return "\n".join(f"- {self.item_text(i)}" for i in items)

    def summarize(self, requests, generate_missing=True):
        """Compute missing summaries; return ``{(user, m): key}`` for every requested prefix.

        ``requests`` is a list of ``(user, history_items, prefix_lengths)``: the summary of the
        first ``m`` blocks of ``history_items`` is needed for each ``m`` in ``prefix_lengths``.
        ``generate_missing=False`` generates nothing: a missing summary is a :class:`MissingSummaries`.
        """
        all_nodes, roots = {}, {}
        for user, items, prefixes in requests:
            nodes, user_roots = self.plan(user, items, prefixes)
            for node in nodes.values():
                all_nodes.setdefault(node.key, node)
            roots.update({(user, m): key for m, key in user_roots.items()})
        todo = [n for n in all_nodes.values() if n.key not in self.store]
        logger.info("summaries: %d needed, %d already in the store, %d to generate (%s, block_size=%d)",
                    len(all_nodes), len(all_nodes) - len(todo), len(todo), self.paradigm, self.block_size)
        if todo and not generate_missing:
            raise MissingSummaries(len(todo), len(all_nodes), len({n.user for n in todo}))
        self._run(todo)
        return roots

    def plan(self, user, items, prefixes):
        """``(nodes, roots)`` of one user (see :func:`~recbole_trsr.summarize.plan.plan_user`), each node
        with the text of the block it reads."""
        prefixes = sorted({int(m) for m in prefixes if m > 0})
        if not prefixes:
            return {}, {}
        texts = [self._items_text(block) for block in blocks(list(items), self.block_size, max(prefixes))]
        nodes, roots = plan_user(self.paradigm, [digest(t) for t in texts], prefixes, self.fanin, user)
        for node in nodes.values():
            node.block_text = texts[node.block] if node.block >= 0 else None
        return nodes, roots

    def _prompt(self, node):
        t = self.templates
        if node.kind == "block" or (node.kind == "step" and not node.children):
            return t["block"].format(items=node.block_text)
        if node.kind == "merge":
            listed = "\n".join(f"{n + 1}. {self.store[c]}" for n, c in enumerate(node.children))
            return t["merge"].format(summaries=listed)
        return t["recurrent"].format(summary=self.store[node.children[0]], items=node.block_text)

    def _run(self, todo):
        if not todo:
            return
        remaining = defaultdict(int)
        for node in todo:
            remaining[node.user] += 1
        users_total = len(remaining)
        by_depth = defaultdict(list)
        for node in todo:
            by_depth[node.depth].append(node)
        bar = tqdm(total=len(todo), desc="summaries", unit="call", disable=not self.show_progress)
        users_done, started = 0, time.perf_counter()
        for depth in sorted(by_depth):
            nodes, depth_started = by_depth[depth], time.perf_counter()
            bar.set_description(f"summaries, depth {depth} of {max(by_depth)}")
            prompts = [(self._prompt(n), n) for n in nodes]
            prompts.sort(key=lambda p: len(p[0]))  # similar lengths together: less padding
            size = min(self.batch_size, getattr(self.engine, "calls_per_batch", None) or self.batch_size)
            chunks = [prompts[s:s + size] for s in range(0, len(prompts), size)]
            for index, texts in self.engine.map([[p for p, _ in chunk] for chunk in chunks]):
                chunk = chunks[index]
                self.store.add_many({n.key: text for (_, n), text in zip(chunk, texts)})
                faults.reached("summary_batch")
                for _, n in chunk:
                    remaining[n.user] -= 1
                    users_done += remaining[n.user] == 0
                bar.update(len(chunk))
                bar.set_postfix_str(f"users {users_done}/{users_total}")
            seconds = time.perf_counter() - depth_started
            logger.info("summaries: depth %d: %d calls in %.1f s (%.2f calls/s)", depth, len(nodes), seconds,
                        len(nodes) / max(seconds, 1e-9))
        bar.close()
        seconds = time.perf_counter() - started
        logger.info("summaries: %d calls for %d users in %.1f s (%.2f calls/s)", len(todo), users_total, seconds,
                    len(todo) / max(seconds, 1e-9))
