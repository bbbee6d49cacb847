"""What both converters share: problem counting, k-core filtering, atomic atomic-file writing."""
import logging
import os
import sys
from collections import Counter

logger = logging.getLogger("dataset_converters")


class Problems:
    """Counts every skipped or repaired input by reason; with ``strict`` the first one raises."""

    def __init__(self, strict=False, show=5):
        self.strict = strict
        self.show = show
        self.counts = Counter()

    def __call__(self, reason, where, detail=""):
        self.counts[reason] += 1
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise ValueError(message + "  [--strict]")
        if self.counts[reason] <= self.show:
            logger.warning(message)

    def report(self):
        return {reason: n for reason, n in sorted(self.counts.items())}


def read_lines(path, problems, name):
    """Yield (line number, decoded line without newline), streaming; undecodable lines are counted."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems("bad encoding", f"{name} line {line_no}", str(exc))
                continue
            yield line_no, line.rstrip("\r\n")


def clean_text(value):
    """Text safe for a tab-separated atomic file."""
    return " ".join(str(value).replace("\t", " ").split())


def k_core(sequences, user_core=0, item_core=0):
    """Iteratively drop users with < user_core and items with < item_core interactions."""
    if not user_core and not item_core:
        return sequences
    while True:
        item_counts = Counter(i for seq in sequences.values() for i, _ in seq)
        changed = False
        out = {}
        for user, seq in sequences.items():
            kept = [(i, t) for i, t in seq if item_counts[i] >= item_core] if item_core else seq
            changed |= len(kept) != len(seq)
            if len(kept) >= max(user_core, 1):
                out[user] = kept
            else:
                changed = True
        sequences = out
        if not changed:
            return sequences


def atomic_write(path, header, rows):
    """Write a tab-separated file via a temporary name, renamed only once complete."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\t".join(header) + "\n")
            for row in rows:
                f.write("\t".join(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_dataset(output, name, sequences, item_header, item_rows):
    """Write ``<output>/<name>/<name>.inter`` and ``.item``; return (users, items, interactions)."""
    folder = os.path.join(output, name)
    os.makedirs(folder, exist_ok=True)
    used = {i for seq in sequences.values() for i, _ in seq}

    def inter_rows():
        for user in sorted(sequences):
            for item, ts in sorted(sequences[user], key=lambda x: x[1]):
                yield user, item, repr(float(ts))

    atomic_write(os.path.join(folder, f"{name}.inter"), ["user_id:token", "item_id:token", "timestamp:float"], inter_rows())
    atomic_write(os.path.join(folder, f"{name}.item"), item_header, (r for r in item_rows() if r[0] in used))
    return len(sequences), len(used), sum(len(s) for s in sequences.values())


def finish(output, name, sequences, item_header, item_rows, problems, extra, user_core=0, item_core=0):
    """k-core filter (when asked), write the atomic files, print the summary; return (counts, problems)."""
    before = sum(len(s) for s in sequences.values())
    sequences = k_core(sequences, user_core, item_core)
    counts = write_dataset(output, name, sequences, item_header, item_rows)
    print_summary(name, counts, problems, dict(extra, **{"interactions removed by k-core": before - counts[2]}))
    return counts, problems.report()


def print_summary(name, counts, problems, extra=None):
    users, items, inters = counts
    lines = [f"{name}: {users} users, {items} items, {inters} interactions"]
    for key, value in (extra or {}).items():
        lines.append(f"  {key}: {value}")
    report = problems.report()
    lines.append("  rows/items skipped by reason: " + (", ".join(f"{k}={v}" for k, v in report.items()) or "none"))
    print("\n".join(lines), file=sys.stdout)


def add_common_args(parser):
    parser.add_argument("--input", required=True, help="folder with the raw files")
    parser.add_argument("--output", required=True, help="data_path: the dataset is written to OUTPUT/NAME/")
    parser.add_argument("--strict", action="store_true", help="fail on the first malformed row")
    parser.add_argument("--user-core", type=int, default=0, help="k-core: keep users with >= K interactions")
    parser.add_argument("--item-core", type=int, default=0, help="k-core: keep items with >= K interactions")
