"""Does a summary row's trained recommender read its summaries? (issue #20)

    python benchmarks/summary_reliance.py benchmarks/profiles/ml-100k-plot.yaml \
        --row LLMTRSR-hierarchical-targets5 [--split valid] [--record]

Run it after the row (``benchmarks/quality.py``): the row's checkpoint is evaluated on ``--split`` with
every user's summary replaced by another user's, then by none (see
:mod:`recbole_trsr.analysis.summary_reliance`), and compared, paired, with the row's own outcome on
that split (its JSON; for valid, ``quality.py --valid`` computes and keeps it). Each replacement is one
evaluation of the split (about 7 minutes for 600 users of ml-100k-plot on 2 cores, bf16).
"""
import argparse
import json
import logging
import time
from pathlib import Path

import yaml

from common import record

from recbole_trsr.config import TRSRConfig
from recbole_trsr.data.dataset import training_positions
from recbole_trsr.evaluation import report
from recbole_trsr.analysis.summary_reliance import REPLACEMENTS, ReplacedSummaries
from recbole_trsr.quick_start import _prepare, evaluate_weights
from recbole_trsr.sr_model import attach_sr_models

METRICS = ["recall@10", "mrr@10", "ndcg@10"]


def replaced_outcomes(saved, dataset, split):
    """``{replacement: {"test_result", "per_user", "replaced", "wall_time_s"}}`` for the row ``saved`` (its JSON)."""
    config = TRSRConfig(saved["model"], dataset, None, dict(saved["config"], summary_progress=False))
    train_data, valid_data, test_data, net = _prepare(config)
    attach_sr_models(config, net, train_data, valid_data)
    data = valid_data if split == "valid" else test_data
    positions = {u: max(ps) for u, ps in training_positions(data._dataset).items()}  # one target a user
    own, saved_dir = net.summaries, Path(config["checkpoint_dir"])
    out = {}
    for replacement in REPLACEMENTS:
        net.summaries = ReplacedSummaries(own, positions, replacement)
        # A journal of its own: the evaluation journal is named by the weights and the config's settings,
        # and these are the row's weights and settings with other summaries (a killed run must not resume
        # from another replacement's scores).
        config["checkpoint_dir"] = str(saved_dir / "summary-reliance" / replacement)
        started = time.perf_counter()
        out[replacement] = dict(evaluate_weights(config, net, data, saved["checkpoint"]),
                                replaced=net.summaries.replaced, wall_time_s=time.perf_counter() - started)
        print(f"{replacement}: {out[replacement]['test_result']} ({out[replacement]['wall_time_s']:.0f} s)", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--row", required=True, help="a summary row of the profile, already run")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = yaml.safe_load(Path(args.profile).read_text())
    path = Path(__file__).parent / "quality" / Path(args.profile).stem / f"{args.row}.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the row first (benchmarks/quality.py --rows {args.row})")
    saved = json.loads(path.read_text())
    if saved["config"].get("summary_paradigm", "none") == "none":
        raise SystemExit(f"{args.row} has no summaries to replace")
    if not saved.get("checkpoint") or not Path(saved["checkpoint"]).is_file():
        raise SystemExit(f"{args.row}: checkpoint {saved.get('checkpoint')} not found; rerun the row")
    own = saved if args.split == "test" else saved.get("valid")
    if not own:
        raise SystemExit(f"{args.row} has no valid outcome yet: run quality.py --valid --rows {args.row} first")
    outcomes = replaced_outcomes(saved, profile["dataset"], args.split)
    ks = [int(m.split("@")[1]) for m in METRICS]
    trained_on = saved["trained_on"]  # one checkpoint: every row was trained on the same examples
    rows = [dict(own, name=f"{args.row}, own summaries", trained_on=trained_on, wall_time_s=None)]
    label = {"swapped": "another user's summary", "empty": "no summary"}
    rows += [dict(o, name=f"{args.row}, {label[r]}", trained_on=trained_on) for r, o in outcomes.items()]
    table = report.markdown(report.summarize(rows, rows[0]["name"], METRICS, sorted(set(ks))), METRICS,
                            ["ndcg@10", "recall@10"]).replace("test users", f"{args.split} users")
    replaced = outcomes[REPLACEMENTS[0]]["replaced"]
    print(table)
    if args.record:
        record(f"Does the recommender read its summaries? {args.row}, {args.split} split",
               f"python benchmarks/summary_reliance.py {args.profile} --row {args.row} --split {args.split}",
               f"The row's checkpoint ranks the same {args.split} users' candidates with each user's summary "
               f"replaced ({replaced} users had one): by another user's (a fixed derangement), or by none. "
               "One checkpoint, three prompts; the wall time is the evaluation's.\n\n" + table)


if __name__ == "__main__":
    main()
