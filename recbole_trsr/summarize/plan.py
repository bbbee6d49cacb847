"""Which LLM calls the two summarization paradigms need, with content-derived keys.

Every node (one LLM call) has a key that hashes what it summarizes: a block's key hashes the
text of its items; a merge's key hashes its children's keys; a recurrent step's key hashes the
previous step's key and the new block. Equal keys mean equal inputs, so nodes are shared
between prefixes, users and runs, and a changed text can never return a stale summary.

Hierarchical (fan-in ``k``): the prefix of ``m`` blocks is summarized block by block, then
consecutive groups of ``k`` summaries are merged, level by level, until one remains; a group
of one passes through unchanged. Groups are aligned to multiples of ``k**level`` so every
complete group is shared by all longer prefixes: all prefixes of ``n`` blocks need ``O(n log n)``
calls instead of the ``O(n^2)`` of merging every prefix from scratch.
Recurrent: step ``m`` = LLM(step ``m - 1``, block ``m``); all prefixes of ``n`` blocks need ``n`` calls.
"""
import hashlib
from dataclasses import dataclass, field

PARADIGMS = ("hierarchical", "recurrent")


def digest(*parts):
    h = hashlib.sha1()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass
class Node:
    """One LLM call: a block summary, a merge of summaries, or a recurrent update."""

    key: str
    kind: str  # "block" | "merge" | "step"
    depth: int  # nodes of one depth are independent and are generated in one batched pass
    block: int = -1  # the block it reads (block, step)
    children: list = field(default_factory=list)  # keys it reads (merge: summaries; step: previous)
    user: int = -1
    block_text: str = None  # filled by the summarizer: the block's items as shown to the LLM


def plan_user(paradigm, block_hashes, prefixes, fanin=2, user=-1):
    """Nodes needed for the given prefixes of one user's blocks.

    Returns ``(nodes, roots)``: ``nodes`` maps key -> :class:`Node`, ``roots`` maps each prefix
    length ``m`` to the key of the summary that covers blocks ``[0, m)``.
    """
    if paradigm not in PARADIGMS:
        raise ValueError(f"summary_paradigm must be one of {PARADIGMS}, not {paradigm!r}")
    nodes, roots = {}, {}
    if paradigm == "recurrent":
        last = max(prefixes, default=0)
        prev = ""
        for j in range(last):
            key = digest("step", prev, block_hashes[j])
            nodes[key] = Node(key, "step", depth=j, block=j, children=[prev] if prev else [], user=user)
            prev = key
            if j + 1 in prefixes:
                roots[j + 1] = key
        return nodes, roots
    if fanin < 2:
        raise ValueError("summary_fanin must be at least 2")
    depth_of = {}
    for m in sorted(prefixes):
        level = []
        for j in range(m):
            key = digest("block", block_hashes[j])
            if key not in nodes:
                nodes[key] = Node(key, "block", depth=0, block=j, user=user)
                depth_of[key] = 0
            level.append(key)
        while len(level) > 1:
            merged = []
            for g in range(0, len(level), fanin):
                group = level[g:g + fanin]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                key = digest("merge", *group)
                if key not in nodes:
                    depth = 1 + max(depth_of[c] for c in group)
                    nodes[key] = Node(key, "merge", depth=depth, children=list(group), user=user)
                    depth_of[key] = depth
                merged.append(key)
            level = merged
        if level:
            roots[m] = level[0]
    return nodes, roots
