"""Segmenting a history into blocks, and which blocks an example's summary may cover.

For the example whose target sits at ``position`` (0-based) in its user's history, the summary
covers the complete blocks of ``block_size`` items that end at or before ``position -
recent_items``; every later item up to the target is shown verbatim as the recent window. The
summary therefore only ever sees items strictly before the recent window, and it changes only
at block boundaries, so neighbouring examples share one summary.
"""


def summary_block_count(position, recent_items, block_size):
    """Number of leading blocks the summary of the example at ``position`` covers."""
    return max(0, int(position) - int(recent_items)) // int(block_size)


def recent_window(position, recent_items, block_size):
    """(start, end) of the verbatim recent items of the example at ``position``: items[start:end]."""
    start = summary_block_count(position, recent_items, block_size) * int(block_size)
    return start, int(position)


def blocks(items, block_size, n_blocks):
    """The first ``n_blocks`` complete blocks of ``items``."""
    return [items[j * block_size:(j + 1) * block_size] for j in range(n_blocks)]
