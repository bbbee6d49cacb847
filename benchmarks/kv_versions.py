"""kv scoring (one user's prefix once, its 100 candidates against it) of this checkout against another
revision of the project, on the default SmolLM2-135M: seconds per user, peak RSS, and whether the logits
are equal. Each revision runs in its own process, alternated, best of two passes each.

    python benchmarks/kv_versions.py --baseline a192c36~1 [--prefixes 180,1000] [--record]

The baseline is checked out with ``git worktree`` under ``~/.cache/recbole_trsr/kv_versions/``."""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES, SUFFIX, USERS = 100, 20, 3


def measure(tree, prefixes, out):
    """Run in a child process whose ``sys.path`` starts at ``tree``."""
    import torch

    sys.path[:0] = [tree, str(Path(tree) / "benchmarks")]
    import recbole_trsr
    from common import load_default_backbone

    assert recbole_trsr.__file__.startswith(tree), recbole_trsr.__file__
    from recbole_trsr.llm.scoring import AnswerScorer, Group

    backbone = load_default_backbone()
    model, tok = backbone.model.eval(), backbone.tokenizer
    rows = {}
    for prefix in prefixes:
        g = torch.Generator().manual_seed(0)
        data = [Group(torch.randint(100, len(tok), (prefix,), generator=g).tolist(),
                      [torch.randint(100, len(tok), (SUFFIX,), generator=g).tolist() for _ in range(CANDIDATES)])
                for _ in range(USERS)]
        scorer = AnswerScorer(model, 10539, 5230, tok.pad_token_id, mode="kv")
        with torch.no_grad():
            scorer.yes_no_logits([Group(data[0].prefix, data[0].suffixes[:8])])  # warm-up
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                logits = scorer.yes_no_logits(data)
                best = min(best, time.perf_counter() - start)
        rows[prefix] = dict(seconds=best / USERS, rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                            logits=logits.tolist(), dtype=str(next(model.parameters()).dtype))
    Path(out).write_text(json.dumps(rows))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="a git revision of this project")
    parser.add_argument("--prefixes", default="180,1000")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    prefixes = [int(p) for p in args.prefixes.split(",")]
    if args._child:
        return measure(args._child[0], prefixes, args._child[1])

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import ROOT, cache_dir, record, table

    revision = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    work = Path(cache_dir()).expanduser() / "kv_versions"
    tree = work / revision
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True)
    trees = {f"baseline {revision}": str(tree), "this checkout": str(ROOT)}
    results = {name: [] for name in trees}
    for _ in range(2):
        for name, path in trees.items():
            out = work / "out.json"
            subprocess.run([sys.executable, __file__, "--prefixes", args.prefixes, "--baseline", args.baseline,
                            "--_child", path, str(out)], check=True, stdout=subprocess.DEVNULL)
            results[name].append(json.loads(out.read_text()))
    base, mine = (results[name] for name in trees)
    lines = []
    for p in prefixes:
        key = str(p)
        b, m = min(r[key]["seconds"] for r in base), min(r[key]["seconds"] for r in mine)
        same = base[0][key]["logits"] == mine[0][key]["logits"]
        lines.append([p, f"{b:.3f}", f"{m:.3f}", f"{b / m:.2f}x", f"{max(r[key]['rss_mb'] for r in base):.0f}",
                      f"{max(r[key]['rss_mb'] for r in mine):.0f}", "yes" if same else "no"])
    text = (f"SmolLM2-135M ({base[0][key]['dtype']}), kv scoring, {CANDIDATES} candidates x {SUFFIX} tokens a user, "
            f"{USERS} users, best of two passes per process, two processes per revision (alternated). Peak RSS is "
            "the process's (cumulative over the prefixes, in order).\n\n" + table(
                ["prefix tokens", f"baseline {revision} s/user", "this checkout s/user", "speed-up",
                 "baseline peak RSS MB", "this checkout peak RSS MB", "logits equal"], lines))
    print(text)
    if args.record:
        record("kv scoring against an earlier revision", f"python benchmarks/kv_versions.py --baseline {args.baseline}"
               f" --prefixes {args.prefixes} --record", text)


if __name__ == "__main__":
    main()
