"""What the summaries of a quality profile's summary rows say (issue #20): genres named against the
genres of the items summarized, and of the target against the sampled negatives.

    python benchmarks/summary_content.py benchmarks/profiles/ml-100k-plot.yaml \
        --rows LLMTRSR-hierarchical,LLMTRSR-recurrent [--split test] [--record]

Run it after the rows (``benchmarks/quality.py``): it builds each row's model as the row did, so
the summaries come from the store; any missing one is generated first, as the row's own run would. The statistics are defined in
:mod:`recbole_trsr.evaluation.summary_content`.
"""
import argparse
import logging
from pathlib import Path

import yaml

from common import record, row_settings

from recbole_trsr.config import TRSRConfig
from recbole_trsr.evaluation import sampled_candidates
from recbole_trsr.evaluation.summary_content import GenreMatcher, content_table, summary_content
from recbole_trsr.quick_start import _prepare

# Words a summary uses for MovieLens' genres besides the genre's own name.
ALIASES = {"Comedy": ["comedies", "comedic", "funny", "humor", "humour"], "Drama": ["dramatic"],
           "Sci-Fi": ["science fiction", "science-fiction", "scifi"], "Children's": ["children", "kids", "family"],
           "Animation": ["animated", "cartoon"], "Film-Noir": ["noir"], "Romance": ["romantic", "love stories"],
           "Mystery": ["mysteries"], "Thriller": ["suspense"], "Documentary": ["documentaries"],
           "Crime": ["criminal", "gangster"], "Horror": ["scary"], "Musical": ["musicals"]}


def row_records(config, split, genre_field):
    """One record per evaluated user: the summary its ``split`` prompt holds, the genres of the items
    that summary covers, of the target, and of the sampled negatives."""
    config = TRSRConfig("LLMTRSR", config["dataset"], None, dict(config, summary_progress=False))
    train_data, valid_data, test_data, net = _prepare(config)
    data = train_data._dataset
    by_raw_id = _raw_genres(Path(config["data_path"]) / f"{config['dataset']}.item", genre_field)
    raw_ids = data.field2id_token[data.iid_field]

    def genres(item):
        return by_raw_id.get(str(raw_ids[item]), [])

    candidates = sampled_candidates(valid_data if split == "valid" else test_data, data.uid_field, data.iid_field)
    records = []
    for uid, positions in sorted(data.eval_positions.items()):
        position = max(positions) if split == "test" else min(positions)
        items = net.histories.items_before(uid, net.histories.length(uid)).tolist()
        m = net.summaries.blocks_covered(position)
        target = items[position]
        records.append({"text": net.summaries.text(uid, position), "covered": [genres(i) for i in items[:m * net.block_size]],
                        "target": genres(target), "negatives": [genres(i) for i in candidates.get(uid, []) if i != target]})
    return records, sorted({g for gs in by_raw_id.values() for g in gs})


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
    parser.add_argument("--genre_field", default="genre", help="the item field (token_seq) holding genres")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = yaml.safe_load(Path(args.profile).read_text())
    out = []
    for name in args.rows.split(","):
        config = row_settings(profile, name)
        records, vocabulary = row_records(config, args.split, args.genre_field)
        stats = summary_content(records, GenreMatcher(vocabulary, ALIASES))
        out.append(f"**{name}** ({stats['n']} {args.split} users' summaries; {stats['n_empty']} users with none)\n\n"
                   + content_table(stats))
        print(out[-1] + "\n", flush=True)
    if args.record:
        record(f"What the summaries say: {profile.get('title', profile['dataset'])}",
               f"python benchmarks/summary_content.py {args.profile} --rows {args.rows} --split {args.split}",
               "A genre is frequent in a summary's items when at least 25% of them have it; \"another user's "
               "items\" scores the same summary against a different user's covered items (a fixed "
               "derangement). 95% bootstrap CIs over summaries.\n\n" + "\n\n".join(out))


if __name__ == "__main__":
    main()
