"""Whether a run shows progress bars: ``show_progress`` / ``summary_progress`` as set, or, left unset
(``~``, the default), on exactly when the bars' stream (stderr, where tqdm writes) is a terminal.
So a run at a terminal shows bars with a rate and a time left, and a run under CI, ``nohup`` or a
log file prints none. In a multi-process run only rank 0 shows them. The libraries' own bars
(transformers' "Loading weights", the Hub's downloads) follow ``show_progress``."""
import sys

from transformers.utils import logging as transformers_logging

from recbole_trsr.distributed import is_main_process

KEYS = ("show_progress", "summary_progress")


def resolve_progress(config, stream=None):
    """Set each of :data:`KEYS` in ``config`` to the bool this process uses."""
    stream = sys.stderr if stream is None else stream
    at_terminal = bool(getattr(stream, "isatty", lambda: False)())
    default = at_terminal
    for key in KEYS:  # summary_progress left unset follows show_progress
        given = config[key]
        wanted = default if given is None else str(given).lower() not in ("false", "0", "none", "")
        config[key] = default = wanted and is_main_process()
    if config["show_progress"]:
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.disable_progress_bar()
