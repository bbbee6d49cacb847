"""What LLMTRSR sees for one user: the blocks, every summary made from them, the recent items, the
prompt, and (with a trained checkpoint) the candidates ranked by P(Yes).

    python -m recbole_trsr.explain --dataset=ml-100k-plot --data_path=../shared/datasets --user=196 \
        [--config_files="a.yaml b.yaml"] [--checkpoint=saved/LLMTRSR-....pth] [--split=test] [--top=10]

Only this user's summaries are computed (``summary_users``), or read from the store when a run has
made them. The summaries shown are the ones of the user's ``split`` example (its last target for
``test``): they cover the complete blocks that end before the recent window, nothing later.
"""
import logging

import torch
from recbole.utils import init_seed

from recbole_trsr.config import TRSRConfig
from recbole_trsr.evaluation import rank_counts, sampled_candidates
from recbole_trsr.summarize.segment import blocks, recent_window, summary_block_count
from recbole_trsr.trainer.checkpoint import load_checkpoint, restore_model_state

logger = logging.getLogger(__name__)


def explain_user(user, dataset, config_file_list=None, config_dict=None, argv=None, checkpoint=None,
                 split="test", top=10):
    """A dict describing what LLMTRSR sees and answers for raw user id ``user`` (see :func:`format_explanation`)."""
    from recbole_trsr.quick_start import _prepare

    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
    config = TRSRConfig("LLMTRSR", dataset, config_file_list, dict(config_dict or {}, summary_users=[str(user)]), argv)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data, net = _prepare(config)
    data = train_data._dataset
    try:
        uid = int(data.token2id(data.uid_field, str(user)))
    except ValueError as exc:
        raise ValueError(f"user {user!r} is not in dataset {dataset}") from exc
    positions = sorted(data.eval_positions.get(uid, ()))
    if not positions:
        raise ValueError(f"user {user} has no {split} example (it may have been left out by test_users / valid_users)")
    position = positions[-1] if split == "test" else positions[0]
    if checkpoint:
        restore_model_state(net, load_checkpoint(checkpoint)["state_dict"])
    net.eval()

    items = net.histories.items_before(uid, net.histories.length(uid)).tolist()
    text = net.prompts.item_text
    # the blocks as the summarizer read them (summary_item_max_tokens may give them a budget of their own)
    block_text = getattr(getattr(net.summaries, "summarizer", None), "item_text", text)
    m = summary_block_count(position, net.recent_items, net.block_size)
    start, end = recent_window(position, net.recent_items, net.block_size)
    out = {"user": str(user), "split": split, "position": position, "history_length": len(items),
           "target": text(items[position]), "paradigm": config["summary_paradigm"], "block_size": net.block_size,
           "summarizer": getattr(net.summaries, "written_by", None),
           "blocks": [[block_text(i) for i in b] for b in blocks(items, net.block_size, m)],
           "summaries": [], "summary": net.summaries.text(uid, position),
           "recent": [text(i) for i in items[start:end]], "recent_positions": [start, end]}
    if m and hasattr(net.summaries, "summarizer"):
        nodes, roots = net.summaries.summarizer.plan(uid, items, [m])
        out["summaries"] = [dict(s, root=s["key"] == roots[m]) for s in _summary_rows(nodes, net.summaries.store)]

    candidates = sampled_candidates(valid_data if split == "valid" else test_data, data.uid_field,
                                    data.iid_field).get(uid, [])
    group = net._group(uid, position, candidates[:1] or [items[position]])
    out["prompt"] = net.prompts.tokenizer.decode(group.prefix + group.suffixes[0])
    if checkpoint and candidates:
        with torch.no_grad():
            margin = net._score([uid] * len(candidates), [position] * len(candidates), candidates)
        ranked = sorted(zip(candidates, margin.sigmoid().tolist()), key=lambda c: -c[1])
        out["candidates"] = [{"item": text(i), "p_yes": p, "target": i == items[position]} for i, p in ranked[:top]]
        greater, ties = rank_counts(margin.tolist(), candidates.index(items[position]))
        out["target_rank"] = {"greater": greater, "ties": ties}  # ranks greater + 1 .. greater + ties, by expectation
        out["n_candidates"] = len(candidates)
    return out


def _summary_rows(nodes, store):
    """Every LLM call behind one summary, lowest level first, with the blocks and history positions it covers."""
    covered = {}
    for node in sorted(nodes.values(), key=lambda n: n.depth):
        if node.kind == "block":
            covered[node.key] = (node.block, node.block + 1)
        elif node.kind == "merge":
            spans = [covered[c] for c in node.children]
            covered[node.key] = (min(a for a, _ in spans), max(b for _, b in spans))
        else:  # a recurrent step reads every block up to its own
            covered[node.key] = (0, node.block + 1)
    rows = []
    for node in sorted(nodes.values(), key=lambda n: (n.depth, covered[n.key])):
        first, last = covered[node.key]
        rows.append({"key": node.key, "kind": node.kind, "level": node.depth, "blocks": [first, last],
                     "text": store[node.key] if node.key in store else None})
    return rows


def format_explanation(e):
    """Plain text for a person: blocks, summaries (level, blocks and positions covered), recent items,
    the prompt and the ranked candidates."""
    size = e["block_size"]
    lines = [f"user {e['user']}: {e['history_length']} items; {e['split']} target at position {e['position']}: "
             f"{e['target']}", f"summary paradigm: {e['paradigm']}, blocks of {size}"
             + (f"; summaries written by {e['summarizer']}" if e.get("summarizer") else ""), ""]
    for j, block in enumerate(e["blocks"]):
        lines.append(f"block {j} (positions {j * size}-{(j + 1) * size - 1}):")
        lines += [f"  - {t}" for t in block]
    if not e["blocks"]:
        lines.append("no complete block before the recent window: no summary")
    for s in e["summaries"]:
        first, last = s["blocks"]
        mark = "  <- the summary in the prompt" if s["root"] else ""
        span = f"block {first}" if last == first + 1 else f"blocks {first}-{last - 1}"
        lines.append(f"\n[{s['kind']}, level {s['level']}] {span} (positions {first * size}-{last * size - 1}){mark}"
                     f"\n  {s['text']}")
    if e["summary"] and not e["summaries"]:  # a summary no LLM call made (field_counts, co_watched)
        lines.append(f"\n[{e['paradigm']}] the summary in the prompt:\n  {e['summary']}")
    a, b = e["recent_positions"]
    lines.append(f"\nrecent items (positions {a}-{b - 1}):")
    lines += [f"  - {t}" for t in e["recent"]]
    lines.append("\nprompt (with the first candidate):\n" + e["prompt"])
    if "candidates" in e:
        lines.append(f"\ntop {len(e['candidates'])} of {e['n_candidates']} candidates by P(Yes) "
                     f"(the target ranks {_rank_text(**e['target_rank'])}):")
        lines += [f"  {c['p_yes']:.3f}  {c['item']}{'   <- target' if c['target'] else ''}" for c in e["candidates"]]
    return "\n".join(lines)


def _rank_text(greater, ties):
    return str(greater + 1) if ties == 1 else f"{greater + 1}-{greater + ties}, tied with {ties - 1} others"


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description="Show what LLMTRSR sees and answers for one user.")
    parser.add_argument("--dataset", "-d", required=True)
    parser.add_argument("--user", "-u", required=True, help="raw user id, as in the .inter file")
    parser.add_argument("--checkpoint", help="a trained LLMTRSR checkpoint: adds the candidates and their P(Yes)")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--config_files", default=None, help='space-separated YAML files, e.g. "a.yaml b.yaml"')
    args, rest = parser.parse_known_args(argv)
    files = args.config_files.strip().split(" ") if args.config_files else None
    print(format_explanation(explain_user(args.user, args.dataset, files, argv=rest, checkpoint=args.checkpoint,
                                          split=args.split, top=args.top)))


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
