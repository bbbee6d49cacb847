"""Quality comparison under one protocol, with 95% bootstrap CIs and paired differences.

    python benchmarks/quality.py benchmarks/profiles/amazon-industrial.yaml            # every row
    python benchmarks/quality.py benchmarks/profiles/amazon-industrial.yaml --rows SASRec,GRU4Rec
    python benchmarks/quality.py benchmarks/profiles/ml-100k.yaml --record             # + RESULTS.md
    python benchmarks/quality.py benchmarks/profiles/amazon-industrial.yaml --valid --rows A,B  # choose
    python benchmarks/quality.py benchmarks/profiles/ml-100k-plot.yaml --report_only --earlier DIR   # replicates

A profile names the dataset, the settings every row shares (split, sampled protocol, test users)
and the rows (a model plus its own settings). Each finished row is written to
``benchmarks/quality/<profile>/<row>.json`` (per-user ranks and candidate fingerprints), so an
interrupted comparison resumes with the rows it has not run (``--rerun`` runs them again). The
report checks that every row ranked the same test users against the same candidates, prints the
tables, and draws ``benchmarks/quality/<profile>.png``.

``--valid`` reports the validation split instead: each selected row's checkpoint is evaluated on
the valid users' validation targets (stored in its JSON), which is where a recipe or a lever is
chosen; the test table is only read once the choice is made.

``--earlier DIR`` adds earlier runs of some rows (their JSONs kept in DIR) to the report, so that the
same row run twice (another machine, another day) is compared on the same users and candidates.

A row recorded under an earlier evaluation protocol (``recbole_trsr.evaluation.PROTOCOL``: ties in
``topk`` index order, negatives that could repeat or be the positive) is never reported: its JSON
is moved to ``<profile>/old-tie-rule/`` and the row is evaluated again, from its checkpoint when that
is still at hand, else by running it again. ``--shift`` then reports how far each row moved from its
old number (paired over the same test users, 95% CI).
"""
import argparse
import json
import os
import time
from pathlib import Path

import yaml

from common import MEASURE_ENV, ROOT, RESULTS, machine

from recbole_trsr.evaluation import PROTOCOL, bootstrap_ci, paired_bootstrap, report
from recbole_trsr.quick_start import evaluate_checkpoint, run


def run_row(profile, row, out_dir):
    config = dict(profile.get("config") or {}, **(row.get("config") or {}))
    config.setdefault("data_path", profile["data_path"])
    if row["model"] == "DELRec" and not config.get("delrec_sr_checkpoint"):
        sasrec = out_dir / "SASRec.json"  # distil the SASRec of this comparison (same split, full data)
        if sasrec.is_file():
            checkpoint = json.loads(sasrec.read_text())["checkpoint"]
            if checkpoint and Path(checkpoint).is_file():
                config["delrec_sr_checkpoint"] = checkpoint
    started = time.perf_counter()
    result = run(row["model"], profile["dataset"], config_dict=config)
    keep = ("model", "test_result", "best_valid_result", "per_user", "trained_on", "decisions", "checkpoint")
    saved = {k: result.get(k) for k in keep}
    saved.update(name=row["name"], config=config, wall_time_s=time.perf_counter() - started,
                 env={k: os.environ[k] for k in MEASURE_ENV if os.environ.get(k)})
    if row.get("trained_on_note"):
        saved["trained_on"] = dict(saved["trained_on"], note=row["trained_on_note"])
    (out_dir / f"{row['name']}.json").write_text(json.dumps(saved, default=float, indent=0))
    return saved


OLD_RULE = "old-tie-rule"


def current(path, row_name, out_dir, move=True):
    """The row's JSON if it was recorded under :data:`PROTOCOL`, else None. With ``move``, an older one
    is moved to ``old-tie-rule/`` (kept for ``--shift``) so that the row is evaluated again; a report
    (``--report_only``) only leaves it out."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if (saved.get("per_user") or {}).get("protocol") == PROTOCOL:
        return saved
    if not move:
        print(f"== {row_name}: recorded under the old protocol, not reported", flush=True)
        return None
    (out_dir / OLD_RULE).mkdir(exist_ok=True)
    path.rename(out_dir / OLD_RULE / path.name)
    print(f"== {row_name}: recorded under the old protocol, moved to {OLD_RULE}/", flush=True)
    return None


def reevaluate(old, profile, out_dir):
    """A row of the old protocol whose checkpoint is at hand, evaluated on the test split again."""
    started = time.perf_counter()
    result = evaluate_checkpoint(old["model"], profile["dataset"], old["checkpoint"], config_dict=old["config"])
    saved = dict(old, test_result=result["test_result"], per_user=result["per_user"], reevaluated=True,
                 wall_time_s=old.get("wall_time_s"), reevaluation_s=time.perf_counter() - started)
    saved.pop("valid", None)
    (out_dir / f"{old['name']}.json").write_text(json.dumps(saved, default=float, indent=0))
    return saved


def refresh(profile, row, out_dir):
    """Evaluate an old-protocol row again: from its checkpoint if that still exists, else run it."""
    old_path = out_dir / OLD_RULE / f"{row['name']}.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    if old.get("checkpoint") and Path(old["checkpoint"]).is_file() and old.get("config"):
        print(f"== {row['name']}: evaluating its checkpoint again", flush=True)
        return reevaluate(old, profile, out_dir)
    print(f"== {row['name']}: running", flush=True)
    return run_row(profile, row, out_dir)


def shift_table(done, out_dir, metric):
    """Markdown: each row's new ``metric`` beside its old-protocol number and the paired shift."""
    k = int(metric.split("@")[1])
    lines = [f"| row | old {metric} (topk ties) | new {metric} (tie-aware, distinct negatives) | shift, paired [95% CI] | "
             "how |", "|---|---|---|---|---|"]
    for row in done:
        old_path = out_dir / OLD_RULE / f"{row['name']}.json"
        if not old_path.is_file():
            continue
        old = dict(json.loads(old_path.read_text()), name=f"{row['name']} (old)")
        users = sorted(set(row["per_user"]["users"]) & set(old["per_user"]["users"]))
        new_values = report.aligned_metrics(row, users, [k])[metric]
        old_values = report.aligned_metrics(old, users, [k], read=report.legacy_outcomes)[metric]
        d, lo, hi, _ = paired_bootstrap(new_values, old_values)
        how = "checkpoint re-evaluated" if row.get("reevaluated") else "run again (same settings)"
        lines.append(f"| {row['name']} | {bootstrap_ci(old_values)[0]:.3f} | {bootstrap_ci(new_values)[0]:.3f} | "
                     f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {how} |")
    return "\n".join(lines)


def valid_row(saved, path, dataset):
    """``saved`` (a finished row) with its validation result in place of the test result; the
    checkpoint is evaluated on the validation split once and the result kept in the row's JSON."""
    if "valid" not in saved:
        if not saved.get("checkpoint") or not Path(saved["checkpoint"]).is_file():
            raise SystemExit(f"{saved['name']}: checkpoint {saved.get('checkpoint')} not found; rerun the row")
        result = evaluate_checkpoint(saved["model"], dataset, saved["checkpoint"], config_dict=saved["config"],
                                     split="valid")
        saved["valid"] = result
        path.write_text(json.dumps(saved, default=float, indent=0))
    return dict(saved, test_result=saved["valid"]["test_result"], per_user=saved["valid"]["per_user"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all); others are read if done")
    parser.add_argument("--rerun", action="store_true", help="run selected rows even if their results exist")
    parser.add_argument("--report_only", action="store_true", help="run nothing; report the finished rows")
    parser.add_argument("--record", action="store_true", help="append the report to benchmarks/RESULTS.md")
    parser.add_argument("--valid", action="store_true",
                        help="report the validation split of the selected rows (checkpoints evaluated once)")
    parser.add_argument("--baseline", help="row the paired differences are taken from (default: the profile's)")
    parser.add_argument("--earlier", help="folder of earlier runs of some rows (the same JSON files, e.g. from another "
                        "machine): each is reported beside the current rows as '<row> [<folder>]'")
    parser.add_argument("--shift", action="store_true",
                        help="also report each row's shift from its old-protocol number (rows in old-tie-rule/)")
    parser.add_argument("--n_boot", type=int, default=2000)
    args = parser.parse_args()

    profile_path = Path(args.profile)
    profile = yaml.safe_load(profile_path.read_text())
    out_dir = ROOT / "benchmarks" / "quality" / profile_path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = set(args.rows.split(",")) if args.rows else {r["name"] for r in profile["rows"]}
    unknown = selected - {r["name"] for r in profile["rows"]}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; the profile has {[r['name'] for r in profile['rows']]}")

    done = []
    for row in profile["rows"]:
        path = out_dir / f"{row['name']}.json"
        saved = current(path, row["name"], out_dir, move=not args.report_only)
        if row["name"] in selected and not args.report_only and (args.rerun or saved is None):
            if saved is None and (out_dir / OLD_RULE / path.name).is_file() and not args.rerun:
                done.append(refresh(profile, row, out_dir))
            else:
                print(f"== {row['name']}: running", flush=True)
                done.append(run_row(profile, row, out_dir))
        elif saved is not None:
            done.append(saved)
    if args.earlier:
        if args.valid:
            raise SystemExit("--earlier reports test results; earlier runs keep no checkpoint to validate")
        folder = Path(args.earlier)
        earlier = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if not earlier:
            raise SystemExit(f"--earlier {folder}: no row JSON there")
        done += [dict(r, name=f"{r['name']} [{folder.name}]") for r in earlier]
    if not done:
        raise SystemExit("no finished rows to report")
    if args.valid:
        done = [valid_row(r, out_dir / f"{r['name']}.json", profile["dataset"]) for r in done if r["name"] in selected]

    ks = profile["report"]["ks"]
    metric_names, diff_metrics = profile["report"]["metrics"], profile["report"]["paired"]
    baseline = args.baseline or profile["baseline"]
    if baseline not in {r["name"] for r in done}:
        # Finished rows are saved; the report waits for the row every difference is taken from.
        raise SystemExit(f"rows saved in {out_dir.relative_to(ROOT)}; no report yet: the baseline row {baseline!r} "
                         f"has not run (run it with --rows {baseline}, or choose another with --baseline)")
    summary = report.summarize(done, baseline, metric_names, ks, n_boot=args.n_boot)
    text = report.markdown(summary, metric_names, diff_metrics)
    if args.valid:
        text = "Validation split (valid users' validation targets; for choosing, not for reporting)\n\n" + text
        text = text.replace("test users", "valid users")
        print(text)
        return
    png = out_dir.parent / f"{profile_path.stem}.png"
    report.chart(summary, profile["report"]["chart"], png, profile.get("title", profile["dataset"]))
    if args.shift:
        text += (f"\n\nShift from the old protocol (ties in topk index order, negatives with replacement) on the "
                 f"same test users:\n\n" + shift_table(done, out_dir, profile["report"]["paired"][0]))
    print(text)
    print(f"\nchart: {png.relative_to(ROOT)}")
    if args.record:
        command = "python benchmarks/quality.py " + " ".join(a for a in __import__("sys").argv[1:] if a != "--record")
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(f"\n## Quality: {profile.get('title', profile['dataset'])} ({stamp})\n\n"
                    f"Command: `{command}` (rows finished earlier are read from benchmarks/quality/{profile_path.stem}/)  \n"
                    f"Machine: {machine()}\n\n{profile.get('protocol', '')}\n\n{text}\n\n"
                    f"![{profile_path.stem}](quality/{profile_path.stem}.png)\n")


if __name__ == "__main__":
    main()
