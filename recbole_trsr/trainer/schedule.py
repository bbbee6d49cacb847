"""Learning-rate schedules of the LLM trainers: warmup, then constant, linear or cosine decay.

``lr_scheduler: constant | linear | cosine`` with ``warmup_steps`` (optimizer steps) or
``warmup_ratio`` (of all the run's optimizer steps); transformers' own schedules do the arithmetic.
``constant`` without warmup builds none, so the trainer steps exactly as before the keys existed.
The schedule's state travels in the resumable state (``trainer/resume.py``).
"""
import math

SCHEDULES = ("constant", "linear", "cosine")


def optimizer_steps(config, batches_per_epoch, accumulation_steps):
    """The optimizer steps of the whole run (the last partial accumulation of an epoch steps too)."""
    return int(config["epochs"]) * math.ceil(batches_per_epoch / max(1, accumulation_steps))


def warmup_of(config, total_steps):
    steps, ratio = config["warmup_steps"], config["warmup_ratio"]
    if steps and ratio:
        raise ValueError(f"set warmup_steps ({steps}) or warmup_ratio ({ratio}), not both")
    if ratio and not 0 <= float(ratio) < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), not {ratio}")
    return int(steps) if steps else int(math.ceil(float(ratio or 0) * total_steps))


def build_schedule(config, optimizer, total_steps):
    """The scheduler of ``optimizer`` over ``total_steps`` optimizer steps, or None (constant, no warmup)."""
    from transformers import get_scheduler

    kind = config["lr_scheduler"] or "constant"
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler must be one of {SCHEDULES}, not {kind!r}")
    warmup = warmup_of(config, total_steps)
    if kind == "constant" and not warmup:
        return None
    name = "constant_with_warmup" if kind == "constant" else kind
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
