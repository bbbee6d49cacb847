"""Warnings the plugin's libraries raise about their own code, each named, each silenced only around
the call that raises it (never globally): a user's terminal shows the warnings that are theirs, or
ours to fix, and no others. tests/test_run_output.py fails on any warning a short run lets through."""
import contextlib
import logging
import re
import warnings

#: name -> (category, message regex). Each was read from a run's warnings with their call stacks.
KNOWN = {
    # RecBole 1.2.1 Dataset._dataframe_to_interaction: torch.from_numpy on a read-only pandas column
    # (copy-on-write); RecBole never writes to it.
    "recbole-read-only-array": (UserWarning, r"The given NumPy array is not writable"),
    # RecBole 1.2.1 Dataset._remap / _reset_index / _drop: DataFrame.reset_index/drop(inplace=True),
    # deprecated by pandas (PDEP-8), still correct on the pinned pandas.
    "recbole-pandas-inplace": (Warning, r"The inplace keyword in DataFrame\.\w+ is deprecated"),
    # RecBole 1.2.1 Interaction.__len__ path: np.sum over a torch tensor (numpy 2's __array_wrap__ notice).
    "recbole-numpy-array-wrap": (DeprecationWarning, r"__array_wrap__ must accept context"),
    # RecBole 1.2.1 Trainer._train_epoch (the ID baselines): torch.cuda.amp.GradScaler, deprecated by torch
    # for torch.amp.GradScaler("cuda"); the same scaler.
    "recbole-cuda-amp-gradscaler": (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated"),
    # peft's PeftModel.__init__ asks transformers' deprecated `is_gradient_checkpointing` (peft's call).
    "peft-is-gradient-checkpointing": (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
}


@contextlib.contextmanager
def silenced(*names):
    """Inside the block, the :data:`KNOWN` warnings ``names`` are not shown."""
    with warnings.catch_warnings():
        for name in names:
            category, message = KNOWN[name]
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


#: logger name -> message regex: notices a library logs (not warns) about itself, dropped from that
#: logger only.
KNOWN_LOG_RECORDS = {
    # bitsandbytes >= 0.48 on a CPU with avx512_bf16, at import (peft imports it): it looks for an
    # optional 4-bit CPU kernel on the Hub; the plugin never runs 4-bit on a CPU, and has no network.
    "bitsandbytes.backends.cpu.ops": r"Failed to load CPU gemm_4bit_forward from kernels-community",
}


class _DropMatching(logging.Filter):
    def __init__(self, pattern):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record):
        return not self.pattern.search(str(record.msg))


def quiet_known_log_records():
    """Attach a filter to each logger of :data:`KNOWN_LOG_RECORDS` (once per process)."""
    for name, pattern in KNOWN_LOG_RECORDS.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) for f in target.filters):
            target.addFilter(_DropMatching(pattern))
