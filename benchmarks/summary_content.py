"""What the summaries of a quality profile's summary rows say (issue #20): genres named against the
genres of the items summarized, and of the target against the sampled negatives; or, with ``--lens
words`` (items without genres, e.g. titles only), the summary's words against its items' texts, the
target's and the negatives', and whether the call that made it only copied a summary it was given.

    python benchmarks/summary_content.py benchmarks/profiles/ml-100k-plot.yaml \
        --rows LLMTRSR-hierarchical,LLMTRSR-recurrent [--split test] [--record]
    python benchmarks/summary_content.py benchmarks/profiles/amazon-games-long.yaml \
        --rows LLMTRSR-recurrent --lens words --split valid

Run it after the rows (``benchmarks/quality.py``): it builds each row's model as the row did, so
the summaries come from the store; any missing one is generated first, as the row's own run would. The statistics are defined in
:mod:`recbole_trsr.analysis.summary_content`.
"""
import argparse
import logging
from pathlib import Path

import yaml

from common import record, row_settings

from recbole_trsr.config import TRSRConfig
from recbole_trsr.evaluation import sampled_candidates
from recbole_trsr.analysis.summary_content import (GenreMatcher, content_table, summary_content, word_content,
                                                      word_table)
from recbole_trsr.quick_start import _prepare

# Words a summary uses for MovieLens' genres besides the genre's own name.
ALIASES = {"Comedy": ["comedies", "comedic", "funny", "humor", "humour"], "Drama": ["dramatic"],
           "Sci-Fi": ["science fiction", "science-fiction", "scifi"], "Children's": ["children", "kids", "family"],
           "Animation": ["animated", "cartoon"], "Film-Noir": ["noir"], "Romance": ["romantic", "love stories"],
           "Mystery": ["mysteries"], "Thriller": ["suspense"], "Documentary": ["documentaries"],
           "Crime": ["criminal", "gangster"], "Horror": ["scary"], "Musical": ["musicals"]}


def split_examples(config, split):
    """The row's model, built as the row did (its summaries come from the store), its dataset, and one
    ``(user, position, items, candidates)`` per evaluated user: the ``split`` example's target
    position, the user's items and the sampled candidates."""
    config = TRSRConfig("LLMTRSR", config["dataset"], None, dict(config, summary_progress=False))
    train_data, valid_data, test_data, net = _prepare(config)
    data = train_data._dataset
    candidates = sampled_candidates(valid_data if split == "valid" else test_data, data.uid_field, data.iid_field)
    examples = []
    for uid, positions in sorted(data.eval_positions.items()):
        position = max(positions) if split == "test" else min(positions)
        items = net.histories.items_before(uid, net.histories.length(uid)).tolist()
        examples.append((uid, position, items, candidates.get(uid, [])))
    return net, data, examples


def row_records(config, split, genre_field):
    """One record per evaluated user: the summary its ``split`` prompt holds, the genres of the items
    that summary covers, of the target, and of the sampled negatives."""
    net, data, examples = split_examples(config, split)
    # RecBole's own data_path (the profile's folder joined with the dataset's name)
    by_raw_id = _raw_genres(Path(data.config["data_path"]) / f"{config['dataset']}.item", genre_field)
    raw_ids = data.field2id_token[data.iid_field]

    def genres(item):
        return by_raw_id.get(str(raw_ids[item]), [])

    records = []
    for uid, position, items, candidates in examples:
        m = net.summaries.blocks_covered(position)
        target = items[position]
        records.append({"text": net.summaries.text(uid, position), "covered": [genres(i) for i in items[:m * net.block_size]],
                        "target": genres(target), "negatives": [genres(i) for i in candidates if i != target]})
    return records, sorted({g for gs in by_raw_id.values() for g in gs})


def word_records(config, split):
    """One record per evaluated user for :func:`word_content`: the summary its ``split`` prompt holds, the
    texts of the items it covers (as the summarizer read them), of the target and of the sampled
    negatives (as the recommender reads them), and the summaries the call that made it was given."""
    net, _, examples = split_examples(config, split)
    lookup = net.summaries
    if not hasattr(lookup, "summarizer"):
        raise SystemExit(f"summary_paradigm {config['summary_paradigm']!r}: no LLM summaries to read")
    text, block_text = net.prompts.item_text, lookup.summarizer.item_text
    records = []
    for uid, position, items, candidates in examples:
        m = lookup.blocks_covered(position)
        inputs = []
        if m:
            nodes, roots = lookup.summarizer.plan(uid, items, [m])
            inputs = [lookup.store[c] for c in nodes[roots[m]].children]
        target = items[position]
        records.append({"text": lookup.text(uid, position), "covered": [block_text(i) for i in items[:m * net.block_size]],
                        "target": text(target), "negatives": [text(i) for i in candidates if i != target],
                        "inputs": inputs})
    return records


def _raw_genres(item_file, field):
    """raw item id -> genre tokens, from the atomic .item file's ``field`` column (token_seq)."""
    with open(item_file, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        if field not in header:
            raise SystemExit(f"{item_file} has no {field!r} column (columns: {header}); pass --genre_field")
        col = header.index(field)
        return {row[0]: row[col].split() for row in (line.rstrip("\n").split("\t") for line in f) if len(row) > col}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--rows", required=True, help="comma-separated summary rows of the profile")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--lens", default="genres", choices=("genres", "words"),
                        help="genres: the genres a summary names (needs --genre_field); words: its words")
    parser.add_argument("--genre_field", default="genre", help="the item field (token_seq) holding genres")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = yaml.safe_load(Path(args.profile).read_text())
    out = []
    for name in args.rows.split(","):
        config = row_settings(profile, name)
        if args.lens == "words":
            stats = word_content(word_records(config, args.split))
            table = word_table(stats)
        else:
            records, vocabulary = row_records(config, args.split, args.genre_field)
            stats = summary_content(records, GenreMatcher(vocabulary, ALIASES))
            table = content_table(stats)
        out.append(f"**{name}** ({stats['n']} {args.split} users' summaries; {stats['n_empty']} users with none)\n\n"
                   + table)
        print(out[-1] + "\n", flush=True)
    if args.record:
        how = ("A genre is frequent in a summary's items when at least 25% of them have it; " if args.lens == "genres"
               else "Words: lower-cased, 3+ characters, common words left out (`content_words`); ")
        lens = "" if args.lens == "genres" else " --lens words"
        record(f"What the summaries say: {profile.get('title', profile['dataset'])}",
               f"python benchmarks/summary_content.py {args.profile} --rows {args.rows}{lens} --split {args.split}",
               how + "\"another user's items\" scores the same summary against a different user's covered items "
               "(a fixed derangement). 95% bootstrap CIs over summaries.\n\n" + "\n\n".join(out))


if __name__ == "__main__":
    main()
