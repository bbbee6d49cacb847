"""Summarizer: call counts of both paradigms, store keys, resume, corrupt cache."""
import json
import math

import pytest

from recbole_trsr.summarize.plan import plan_user
from recbole_trsr.summarize.store import SummaryStore
from recbole_trsr.summarize.summarizer import Summarizer

TEMPLATES = {"block": "ITEMS:\n{items}", "merge": "MERGE:\n{summaries}", "recurrent": "PREV: {summary}\nITEMS:\n{items}"}


class RecordingGenerator:
    """Stands in for the LLM: echoes the item texts it was shown, records every prompt."""

    def __init__(self, fail_after=None):
        self.prompts = []
        self.fail_after = fail_after

    def __call__(self, prompts):
        out = []
        for p in prompts:
            if self.fail_after is not None and len(self.prompts) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.prompts.append(p)
            # a "summary" that names exactly the items it covers
            names = sorted({w for w in p.replace("\n", " ").split() if w.startswith("T") and w[1:].isdigit()}, key=lambda w: int(w[1:]))
            out.append(" ".join(names))
        return out


def reference_hierarchical_calls(n_blocks, prefixes, fanin):
    """Brute force: the distinct (level, start, end) groups of >= 2 children over all prefixes, plus blocks."""
    distinct = set()
    for m in prefixes:
        level, nodes = 0, [(j, j + 1) for j in range(m)]
        while len(nodes) > 1:
            nxt = []
            for g in range(0, len(nodes), fanin):
                grp = nodes[g:g + fanin]
                if len(grp) == 1:
                    nxt.append(grp[0])
                else:
                    span = (grp[0][0], grp[-1][1])
                    distinct.add((level + 1, span))
                    nxt.append(span)
            nodes, level = nxt, level + 1
    return len(distinct) + max(prefixes)


def _summarize(tmp_path, paradigm, n_items, block_size, prefixes, generate, fanin=2, settings=None):
    store = SummaryStore(tmp_path / "cache", settings or {"paradigm": paradigm, "fanin": fanin})
    s = Summarizer(generate, store, lambda i: f"T{i}", paradigm, block_size, TEMPLATES, fanin=fanin,
                   batch_size=4, show_progress=False)
    return s.summarize([(7, list(range(1, n_items + 1)), prefixes)]), store


@pytest.mark.parametrize("n_blocks", [1, 5, 16, 23])
def test_recurrent_makes_one_call_per_block(tmp_path, n_blocks):
    gen = RecordingGenerator()
    roots, store = _summarize(tmp_path, "recurrent", n_blocks * 3, 3, range(1, n_blocks + 1), gen)
    assert len(gen.prompts) == n_blocks
    assert store[roots[(7, n_blocks)]] == " ".join(f"T{i}" for i in range(1, 3 * n_blocks + 1))


@pytest.mark.parametrize("n_blocks,fanin", [(1, 2), (7, 2), (16, 2), (33, 2), (33, 3)])
def test_hierarchical_reuses_aligned_groups(tmp_path, n_blocks, fanin):
    gen = RecordingGenerator()
    prefixes = range(1, n_blocks + 1)
    roots, store = _summarize(tmp_path, "hierarchical", n_blocks * 2, 2, prefixes, gen, fanin=fanin)
    assert len(gen.prompts) == reference_hierarchical_calls(n_blocks, prefixes, fanin)
    # O(n log n), far below the n(n+1)/2 block calls of summarizing every prefix from scratch
    assert len(gen.prompts) <= 2 * n_blocks * (1 + math.ceil(math.log(max(n_blocks, 2), fanin)))
    for m in prefixes:  # every prefix's summary covers exactly its blocks
        assert store[roots[(7, m)]] == " ".join(f"T{i}" for i in range(1, 2 * m + 1))


def test_hierarchical_call_count_grows_n_log_n_not_quadratically(tmp_path):
    counts = {}
    for n in (16, 64):
        gen = RecordingGenerator()
        _summarize(tmp_path / str(n), "hierarchical", n, 1, range(1, n + 1), gen)
        counts[n] = len(gen.prompts)
    assert counts[64] / counts[16] < 6  # quadratic would be 16x


def test_plan_keys_depend_on_content():
    a, ra = plan_user("hierarchical", ["x", "y", "z"], {3})
    b, rb = plan_user("hierarchical", ["x", "y", "CHANGED"], {3})
    assert ra[3] != rb[3] and set(a) & set(b)  # shared first blocks, different root


def test_interrupted_run_resumes_without_repeating_calls(tmp_path):
    first = RecordingGenerator(fail_after=9)
    with pytest.raises(KeyboardInterrupt):
        _summarize(tmp_path, "hierarchical", 40, 2, range(1, 21), first)
    done_before = len(first.prompts)
    second = RecordingGenerator()
    roots, store = _summarize(tmp_path, "hierarchical", 40, 2, range(1, 21), second)
    fresh = RecordingGenerator()
    _summarize(tmp_path / "fresh", "hierarchical", 40, 2, range(1, 21), fresh)
    # batches of 4: the 9th call interrupts the third batch, so 8 summaries were persisted
    assert done_before == 9 and len(store) == len(fresh.prompts)
    assert len(second.prompts) == len(fresh.prompts) - 8
    assert not set(second.prompts) & set(first.prompts[:8])


def test_cut_off_and_damaged_lines_are_counted_and_recomputed(tmp_path):
    gen = RecordingGenerator()
    roots, store = _summarize(tmp_path, "recurrent", 12, 3, range(1, 5), gen)
    lines = store.path.read_text().splitlines()
    store.path.write_text(lines[0] + "\n" + "{not json\n" + "\n".join(lines[2:]) + "\n" + lines[1][:10])
    gen2 = RecordingGenerator()
    roots2, store2 = _summarize(tmp_path, "recurrent", 12, 3, range(1, 5), gen2)
    assert store2.n_corrupt == 2
    assert len(gen2.prompts) == 1  # only the cut-off record (step 2) is lost; steps 3-4 stay valid
    assert gen2.prompts[0].startswith("PREV: T1 T2 T3")
    assert store2[roots2[(7, 4)]] == " ".join(f"T{i}" for i in range(1, 13))
    for line in store2.path.read_text().splitlines()[2:]:
        json.loads(line)  # appends start on a fresh line


def test_a_changed_setting_never_reads_old_summaries(tmp_path):
    gen = RecordingGenerator()
    _summarize(tmp_path, "recurrent", 12, 3, range(1, 5), gen, settings={"template": "a"})
    gen2 = RecordingGenerator()
    _, store = _summarize(tmp_path, "recurrent", 12, 3, range(1, 5), gen2, settings={"template": "b"})
    assert len(gen2.prompts) == 4 and len(store) == 4
