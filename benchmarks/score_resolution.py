"""How finely LLMTRSR's Yes/No scores rank one user's candidates, with the answer head in the model's
dtype (the path before the fp32 head) and in fp32 (now), and what the fp32 head costs.

    python benchmarks/score_resolution.py benchmarks/profiles/amazon-industrial.yaml --users 60 --dtype bfloat16

The row's model (untrained unless ``--checkpoint``) scores each test user's 1 + 20 candidates once; the
final hidden states are projected onto the Yes/No rows both ways. Reported per head: the median
number of distinct scores among a user's candidates, how many positives tie a negative, and NDCG@10
under the tie rule with its bounds (ties all against / all for the positive).
"""
import argparse
import sys
import time

import numpy as np
import torch
import yaml

from common import record, row_settings, table

from recbole_trsr.config import TRSRConfig
from recbole_trsr.evaluation import per_user_metrics, rank_counts, sampled_candidates
from recbole_trsr.llm.scoring import output_weight
from recbole_trsr.quick_start import _prepare
from recbole_trsr.trainer.checkpoint import load_checkpoint, restore_model_state


def ndcg_of(greater, ties, k=10):
    greater, ties = np.asarray(greater), np.asarray(ties)
    return {"tie rule": per_user_metrics(greater, ties, [k])[f"ndcg@{k}"],
            "ties against": per_user_metrics(greater + ties - 1, np.ones_like(ties), [k])[f"ndcg@{k}"],
            "ties for": per_user_metrics(greater, np.ones_like(ties), [k])[f"ndcg@{k}"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--row", default="LLMTRSR-no-summary-untrained")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--checkpoint")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    config = row_settings(yaml.safe_load(open(args.profile)), args.row)
    dataset = config.pop("dataset")
    config.update(test_users=args.users, llm_dtype=args.dtype, epochs=0)
    cfg = TRSRConfig("LLMTRSR", dataset, config_dict=config)
    train_data, _, test_data, net = _prepare(cfg)
    if args.checkpoint:
        restore_model_state(net, load_checkpoint(args.checkpoint)["state_dict"])
    net.eval()
    data = train_data._dataset
    weight = output_weight(net.llm)[net.scorer.answer_ids]
    heads = {"model dtype (before)": lambda h: h @ weight.t().to(h.dtype),
             "fp32 (now)": lambda h: h.float() @ weight.float().t()}
    counts = {name: ([], [], []) for name in heads}  # greater, ties, distinct
    seconds = {"hidden states": 0.0, **{name: 0.0 for name in heads}}
    for user, items in sorted(sampled_candidates(test_data, data.uid_field, data.iid_field).items()):
        position = max(data.eval_positions[user])
        target = items.index(net.histories.items_before(user, position + 1).tolist()[position])
        with torch.no_grad():
            started = time.perf_counter()
            hidden = net.scorer.answer_hidden([net._group(user, position, items)])
            seconds["hidden states"] += time.perf_counter() - started
            for name, head in heads.items():
                started = time.perf_counter()
                for _ in range(10):
                    logits = head(hidden)
                seconds[name] += (time.perf_counter() - started) / 10
                scores = torch.log_softmax(logits.float(), dim=-1)[:, 0].tolist()
                greater, ties = rank_counts(scores, target)
                counts[name][0].append(greater)
                counts[name][1].append(ties)
                counts[name][2].append(len(set(scores)))
    n = len(counts["fp32 (now)"][0])
    rows = []
    for name, (greater, ties, distinct) in counts.items():
        ndcg = ndcg_of(greater, ties)
        rows.append([name, f"{np.median(distinct):.0f} (min {min(distinct)})", f"{sum(t > 1 for t in ties)} of {n}",
                     f"{ndcg['tie rule'].mean():.3f}", f"{ndcg['ties against'].mean():.3f}",
                     f"{ndcg['ties for'].mean():.3f}", f"{1000 * seconds[name] / n:.3f}"])
    text = table(["answer head", "distinct scores of 21 (median)", "positives tied with a negative",
                  "NDCG@10 (tie rule)", "ties against", "ties for", "head ms/user"], rows)
    text += (f"\n\n{args.row} ({'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained'}), {n} test users, "
             f"LLM in {net.llm.dtype}; the decoder's hidden states took {1000 * seconds['hidden states'] / n:.0f} ms/user, "
             f"so the fp32 head costs {seconds['fp32 (now)'] / seconds['hidden states']:.2%} of scoring time "
             f"(the model-dtype head {seconds['model dtype (before)'] / seconds['hidden states']:.2%}).")
    print(text)
    if args.record:
        record(f"Score resolution: {dataset}, {args.row}, {args.dtype}",
               "python benchmarks/score_resolution.py " + " ".join(a for a in sys.argv[1:] if a != "--record"), text)


if __name__ == "__main__":
    main()
