"""What the older history can tell a reader of item genres, release years and co-occurrences (issue #20):
a logistic reader of popularity and of the candidate's affinity to the recent window and to the summarized
blocks, on a quality profile's validation (or test) users and candidates.

    python benchmarks/history_signal.py benchmarks/profiles/ml-100k-plot.yaml \
        --row LLMTRSR-hierarchical-targets5 [--split valid] [--record]
    python benchmarks/history_signal.py benchmarks/profiles/amazon-games-long.yaml \
        --row LLMTRSR-no-summary --genre_field title   # no genres there: the lens reads title words

The row gives the segmentation (``block_size``, ``recent_items``) and the training examples (its
``train_targets_per_user``); the reader is fitted on those examples, each with ``--negatives``
uniformly drawn unseen items, and ranks the split's candidates, which are checked against the row's
own evaluation (candidate fingerprints in its JSON). Features and reader:
:mod:`recbole_trsr.analysis.history_signal`.
"""
import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.data import data_preparation

from common import record, row_settings

from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import HISTORY_POSITION_FIELD, ItemTextTable, create_dataset, training_positions
from recbole_trsr.data.negatives import TrainingNegatives
from recbole_trsr.evaluation import (bootstrap_ci, fix_eval_candidates, paired_bootstrap, per_user_metrics, rank_counts,
                                     sampled_candidates)
from recbole_trsr.analysis.history_signal import FeatureReader, ItemSignals, example_features
from recbole_trsr.evaluation.per_user import candidate_fingerprint
from recbole_trsr.analysis.co_watched import item_cosine

RECENT = ["recent_genre", "recent_year", "recent_cooc"]
OLDER = ["older_genre", "older_year", "older_cooc"]
BASE = "popularity + recent window"
READERS = {"popularity": ["popularity"], BASE: ["popularity"] + RECENT,
           "+ older genres": ["popularity"] + RECENT + ["older_genre"],
           "+ older years": ["popularity"] + RECENT + ["older_year"],
           "+ older co-occurrence": ["popularity"] + RECENT + ["older_cooc"],
           "+ older genres, years, co-occurrence": ["popularity"] + RECENT + OLDER,
           "popularity + older items only": ["popularity"] + OLDER}


def item_field(data, field):
    """Internal item id -> the .item file's ``field`` text ("" for an item without one), read by
    :class:`~recbole_trsr.data.ItemTextTable` (an unknown field is an error naming the file's fields)."""
    table = ItemTextTable.from_dataset(data, fields=[field], text_format="{%s}" % field)
    return ["" if i in table.fallback_ids else text for i, text in enumerate(table.texts)]


def release_year(title):
    """The year in a MovieLens title's trailing "(1995)", or nan."""
    found = re.search(r"\((\d{4})\)\s*$", title)
    return float(found.group(1)) if found else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--row", required=True, help="the LLMTRSR row whose segmentation and training examples are used")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--negatives", type=int, default=20, help="uniform negatives per training example")
    parser.add_argument("--genre_field", default="genre", help="the item field (token_seq) holding genres")
    parser.add_argument("--title_field", default="title", help="the item field whose trailing (YYYY) is the year")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = yaml.safe_load(Path(args.profile).read_text())
    config = row_settings(profile, args.row)
    config = TRSRConfig("LLMTRSR", config["dataset"], None, config)
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    fix_eval_candidates(config["seed"], valid_data, test_data, seen_items=getattr(data, "seen_items", None))
    train = train_data._dataset
    histories, item_users = train.user_histories, train.train_item_users
    genre_text, titles = item_field(train, args.genre_field), item_field(train, args.title_field)
    examples_of = training_positions(train)
    # Co-occurrences only from what precedes every example a user has (training and evaluation alike).
    cooc = item_cosine([histories.items_before(u, ps[0]).tolist() for u, ps in examples_of.items()],
                       train.item_num).toarray()
    signals = ItemSignals([set(g.split()) for g in genre_text], [release_year(t) for t in titles], item_users, cooc)
    seg = dict(signals=signals, recent_items=config["recent_items"], block_size=config["block_size"])

    uniform = TrainingNegatives(train.item_num, item_users, args.negatives, 0, config["seed"])
    x_train, y_train = [], []
    for user, position in zip(train.inter_feat[train.uid_field].tolist(),
                              train.inter_feat[HISTORY_POSITION_FIELD].long().tolist()):
        items = histories.items_before(user, histories.length(user)).tolist()
        negatives = uniform.draw(set(items[:position + 1]))
        x_train.append(example_features(items, position, [items[position]] + negatives, **seg))
        y_train += [1] + [0] * args.negatives
    x_train = np.vstack(x_train)

    candidates = sampled_candidates(valid_data if args.split == "valid" else test_data, train.uid_field,
                                    train.iid_field)
    examples, fingerprints = [], {}
    for user, items_c in sorted(candidates.items()):
        positions_u = train.eval_positions[user]
        position = min(positions_u) if args.split == "valid" else max(positions_u)
        items = histories.items_before(user, histories.length(user)).tolist()
        target = items[position]
        others = list(items_c)
        others.remove(target)
        fingerprints[user] = candidate_fingerprint(torch.tensor(items_c))
        examples.append(example_features(items, position, [target] + others, **seg))
    _check_candidates(args, profile, fingerprints)

    ndcg = {}
    for name, features in READERS.items():
        reader = FeatureReader(features).fit(x_train, y_train)
        greater, ties = np.array([rank_counts(reader.score(x), 0) for x in examples]).T  # the target is candidate 0
        ndcg[name] = per_user_metrics(greater, ties, [10])["ndcg@10"]
    base = ndcg[BASE]
    lines = [f"| reader ({len(examples)} {args.split} users) | NDCG@10 | difference from {BASE} |",
             "|---|---|---|"]
    for name, values in ndcg.items():
        m, lo, hi = bootstrap_ci(values)
        diff = "" if values is base else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*paired_bootstrap(values, base)[:3])
        lines.append(f"| {name} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {diff} |")
    table = "\n".join(lines)
    print(table)
    if args.record:
        record(f"What the older history tells a reader of genres, years and co-occurrence: "
               f"{profile.get('title', profile['dataset'])}",
               f"python benchmarks/history_signal.py {args.profile} --row {args.row} --split {args.split}"
               + "".join(f" --{k} {v}" for k, v in vars(args).items()
                         if k in ("negatives", "genre_field", "title_field") and v != parser.get_default(k)),
               f"A logistic reader (recbole_trsr/analysis/history_signal.py) fitted on "
               f"{len(x_train) // (args.negatives + 1)} training examples of {args.row} ({args.negatives} uniform "
               "negatives each), ranking the row's own candidates; 95% bootstrap CIs over users, paired "
               f"differences. The genre lens reads the words of the `{args.genre_field}` field, the year lens "
               f"a trailing (YYYY) in `{args.title_field}`.\n\n" + table)


def _check_candidates(args, profile, fingerprints):
    """The candidates must be the ones the row was evaluated on (its JSON's per-user fingerprints)."""
    path = Path(__file__).parent / "quality" / Path(args.profile).stem / f"{args.row}.json"
    if not path.exists():
        logging.warning("%s not found: candidates not checked against the row's evaluation", path)
        return
    saved = json.loads(path.read_text())
    per_user = saved["valid"]["per_user"] if args.split == "valid" and "valid" in saved else (
        saved["per_user"] if args.split == "test" else None)
    if per_user is None:
        logging.warning("%s has no %s evaluation: candidates not checked", path, args.split)
        return
    theirs = dict(zip(per_user["users"], per_user["candidates"]))
    mismatched = [u for u, f in fingerprints.items() if theirs.get(u) != f]
    if mismatched or set(theirs) != set(fingerprints):
        raise SystemExit(f"candidates differ from {path.name}'s evaluation for {len(mismatched)} users "
                         f"({len(set(theirs) ^ set(fingerprints))} users in one only)")
    print(f"candidates match {path.name}'s {args.split} evaluation for all {len(fingerprints)} users")


if __name__ == "__main__":
    main()
