"""Learning-rate schedules: warmup then constant, linear or cosine; none for the constant default."""
import math

import pytest
import torch

from recbole_trsr.trainer.schedule import build_schedule, optimizer_steps


def _config(**keys):
    return dict({"lr_scheduler": "constant", "warmup_steps": None, "warmup_ratio": None, "epochs": 2}, **keys)


def _rates(config, total=10):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(config, optimizer, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_the_default_builds_no_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_schedule(_config(), optimizer, 10) is None


def test_warmup_then_each_decay():
    assert _rates(_config(warmup_steps=2)) == pytest.approx([0, 0.5] + [1.0] * 8)
    assert _rates(_config(lr_scheduler="linear", warmup_steps=2)) == pytest.approx([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    cosine = _rates(_config(lr_scheduler="cosine", warmup_ratio=0.2))
    assert cosine[:3] == pytest.approx([0, 0.5, 1]) and cosine[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_bad_settings_are_refused_by_name():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        build_schedule(_config(lr_scheduler="step"), optimizer, 10)
    with pytest.raises(ValueError, match="not both"):
        build_schedule(_config(warmup_steps=2, warmup_ratio=0.1), optimizer, 10)
    with pytest.raises(ValueError, match="warmup_ratio"):
        build_schedule(_config(warmup_ratio=1.5), optimizer, 10)


def test_the_run_counts_a_last_partial_accumulation_as_a_step():
    assert optimizer_steps(_config(epochs=3), batches_per_epoch=10, accumulation_steps=4) == 9
