"""Fault injection for the interruption tests (``tests/test_resume.py``).

``TRSR_FAULT="point:n"`` (or ``"point:n:rank"``) makes this process kill itself with SIGKILL the
``n``-th time it reaches ``point`` (on that global rank only). Points:

* ``train_step``: after an optimizer step (and the resumable state it may write);
* ``state_write``: halfway through writing a resumable state, before it is renamed into place;
* ``eval_batch``: after a scored evaluation batch is journaled;
* ``summary_batch``: after a batch of summaries is written to the store.

Unset (every real run) it costs one dictionary lookup.
"""
import os
import signal

_counts = {}


def reached(point, rank=None):
    """Kill this process if ``TRSR_FAULT`` names ``point`` and this is its ``n``-th visit."""
    spec = os.environ.get("TRSR_FAULT")
    if not spec:
        return
    name, n, *who = spec.split(":")
    if name != point:
        return
    if who and rank is not None and int(who[0]) != int(rank):
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
