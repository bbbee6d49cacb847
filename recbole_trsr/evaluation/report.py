"""A comparison's report: per-row metrics with bootstrap CIs, paired differences from a baseline,
the identical-candidates check, a markdown table and a PNG chart.

A *row* is the dict :func:`recbole_trsr.quick_start.run` returns (``per_user`` included) plus a
``name``; rows are compared on the users they share with the baseline, which must be all of them.
"""
import numpy as np

from recbole_trsr.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from recbole_trsr.evaluation.per_user import PROTOCOL
from recbole_trsr.evaluation.ties import per_user_metrics


class CandidateMismatch(ValueError):
    """Two rows were not evaluated on the same users and sampled candidates."""


class OldProtocol(ValueError):
    """A row was recorded under an earlier evaluation protocol (ties in index order, negatives that
    could repeat or be the positive); it must be evaluated again before it is compared."""


def outcomes(row):
    """``(greater, ties)`` arrays of a row recorded under :data:`PROTOCOL`."""
    per_user = row["per_user"]
    if per_user.get("protocol") != PROTOCOL:
        raise OldProtocol(f"{row.get('name', row.get('model'))}: recorded under protocol "
                          f"{per_user.get('protocol', 'topk-index-order (before tie-aware-v1)')!r}, not {PROTOCOL!r}: "
                          "evaluate it again (benchmarks/quality.py reruns such rows)")
    return np.asarray(per_user["greater"]), np.asarray(per_user["ties"])


def legacy_outcomes(row):
    """``(greater, ties)`` of a row of either protocol; an old row's rank r (0: outside its top k) is
    read as r - 1 candidates above and no tie, which is what its ranking made of it."""
    per_user = row["per_user"]
    if per_user.get("protocol") == PROTOCOL:
        return outcomes(row)
    ranks = np.asarray(per_user["ranks"])
    return np.where(ranks > 0, ranks - 1, int(per_user["k"])), np.ones_like(ranks)


def aligned_metrics(row, users, ks, read=outcomes):
    """Per-user metrics of ``row`` in the order of ``users`` (which it must all hold)."""
    index = {u: i for i, u in enumerate(row["per_user"]["users"])}
    missing = [u for u in users if u not in index]
    if missing:
        raise CandidateMismatch(f"{row['name']}: {len(missing)} test users of the baseline were not evaluated")
    order = [index[u] for u in users]
    greater, ties = read(row)
    return per_user_metrics(greater[order], ties[order], ks)


def check_same_candidates(rows):
    """Every row ranked the same users against the same candidates; returns the shared user list."""
    for row in rows:
        if any(c == "" for c in row["per_user"]["candidates"]):
            raise CandidateMismatch(f"{row['name']}: recorded without candidate fingerprints (a full-ranking row "
                                    "from before they were recorded): nothing shows what it ranked; run it again")
    reference = rows[0]["per_user"]
    expected = dict(zip(reference["users"], reference["candidates"]))
    for row in rows[1:]:
        got = dict(zip(row["per_user"]["users"], row["per_user"]["candidates"]))
        if set(got) != set(expected):
            raise CandidateMismatch(f"{row['name']} evaluated {len(got)} users, {rows[0]['name']} {len(expected)}: "
                                    "not the same test users")
        differing = [u for u in expected if got[u] != expected[u]]
        if differing:
            raise CandidateMismatch(f"{row['name']}: {len(differing)} of {len(expected)} users were ranked against "
                                    f"other candidates than in {rows[0]['name']}")
    return sorted(expected)


def check_matches_recbole(row, ks, tol=1e-4):
    """The per-user metrics average to RecBole's own reported test metrics (guards the recording)."""
    metrics = per_user_metrics(*outcomes(row), ks)
    for name, values in metrics.items():
        reported = (row.get("test_result") or {}).get(name)
        if reported is not None and abs(float(values.mean()) - float(reported)) > tol:
            raise ValueError(f"{row['name']}: per-user {name} averages {values.mean():.5f}, RecBole reported {reported:.5f}")


def summarize(rows, baseline, metric_names, ks, n_boot=2000, seed=0):
    """``{"users": n, "rows": [{"name", "metrics": {m: (mean, lo, hi)}, "vs_baseline": {m: (d, lo, hi, p)}}]}``."""
    names = [r["name"] for r in rows]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the rows {names}")
    base = rows[names.index(baseline)]
    users = check_same_candidates([base] + [r for r in rows if r is not base])
    base_metrics = aligned_metrics(base, users, ks)
    out = []
    for row in rows:
        check_matches_recbole(row, ks)
        metrics = aligned_metrics(row, users, ks)
        out.append({
            "name": row["name"],
            "metrics": {m: bootstrap_ci(metrics[m], n_boot, seed) for m in metric_names},
            "vs_baseline": {m: paired_bootstrap(metrics[m], base_metrics[m], n_boot, seed) for m in metric_names}
            if row is not base else {},
            "trained_on": row.get("trained_on", {}),
            "wall_time_s": row.get("wall_time_s"),
        })
    return {"users": len(users), "baseline": baseline, "rows": out}


def verdict(low, high):
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no difference"


def markdown(summary, metric_names, diff_metrics):
    """Two tables: metrics with 95% CIs; paired differences from the baseline, data, wall time."""
    head = "| model | " + " | ".join(metric_names) + " |"
    lines = [head, "|" + "---|" * (len(metric_names) + 1)]
    for row in summary["rows"]:
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in (row["metrics"][n] for n in metric_names)]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired difference from {summary['baseline']} on the same {summary['users']} test users "
              "(mean [95% CI], two-sided bootstrap p); 'no difference' when the CI holds 0.", ""]
    head = "| model | " + " | ".join(f"Δ {m}" for m in diff_metrics) + " | trained on | wall time (s) |"
    lines += [head, "|" + "---|" * (len(diff_metrics) + 3)]
    for row in summary["rows"]:
        if row["vs_baseline"]:
            cells = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] p={p:.3f}, {verdict(lo, hi)}"
                     for d, lo, hi, p in (row["vs_baseline"][m] for m in diff_metrics)]
        else:
            cells = ["(baseline)"] * len(diff_metrics)
        data = row["trained_on"]
        trained = f"{data.get('examples', '?')} examples of {data.get('users', '?')} users" + (
            f"; {data['note']}" if data.get("note") else "")
        wall = f"{row['wall_time_s']:.0f}" if row.get("wall_time_s") is not None else "n/a"
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {trained} | {wall} |")
    return "\n".join(lines)


def bar_colors(n):
    """``n`` distinct bar colours: tab10's, or tab20's then tab20b's past ten rows (tab10 would repeat a
    colour), up to 40 rows."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors if n <= 10 else colormaps["tab20"].colors + colormaps["tab20b"].colors
    if n > len(palette):
        raise ValueError(f"{n} rows in one chart; at most {len(palette)} get distinct colours")
    return list(palette[:n])


def chart(summary, metric_names, path, title):
    """Grouped bars (one group per metric, one bar per model) with 95% CI whiskers, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(metric_names) + 0.25 * len(rows), 4.2))
    x = np.arange(len(metric_names))
    colors = bar_colors(len(rows))
    for i, row in enumerate(rows):
        means = np.array([row["metrics"][m][0] for m in metric_names])
        err = np.array([[means[j] - row["metrics"][m][1], row["metrics"][m][2] - means[j]]
                        for j, m in enumerate(metric_names)]).T
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=row["name"],
               color=colors[i])
    ax.set_xticks(x, metric_names)
    ax.set_ylabel("score (95% bootstrap CI over test users)")
    ax.set_title(f"{title} ({summary['users']} test users)")
    # Outside the axes: with many rows a legend inside covers the tallest bars.
    ax.legend(fontsize=7, ncol=1 if len(rows) <= 12 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
