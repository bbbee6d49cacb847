"""Interrupted runs resume to the same result: processes killed with SIGKILL at several points
(recbole_trsr/faults.py), then resumed; corrupt resumable states are refused or passed over."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATASET, llm_config
from recbole_trsr.trainer.resume import capture_rng, previous, read_state, restore_rng, write_state

RUNNER = Path(__file__).resolve().parent / "run_tiny.py"
GLOO_FLAKE = "Connection reset by peer"


def tiny_run_config(data_root, tiny_llm, folder, **overrides):
    config = llm_config(data_root, Path(folder), tiny_llm, epochs=2, train_batch_size=2, gradient_accumulation_steps=1,
                        eval_batch_size=40, save_steps=2, save_minutes=0, summary_batch_size=4, eval_step=1,
                        stopping_step=5)
    config.update(model="LLMTRSR", dataset=DATASET, **overrides)
    return config


def child(config, fault=None):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop("TRSR_FAULT", None)
    if fault:
        env["TRSR_FAULT"] = fault
    out = subprocess.run([sys.executable, str(RUNNER), json.dumps(config)], capture_output=True, text=True, env=env,
                         cwd=config["checkpoint_dir"].rsplit("/", 1)[0], timeout=600)
    if config.get("nproc") and not fault and out.returncode != 0 and GLOO_FLAKE in out.stderr:
        # gloo's loopback TCP now and then resets a pair connection at start-up here (seen in 2 of the
        # session's full-suite runs, in runs with no fault, once in test_distributed; never in 6 runs of the test
        # alone; cause not found, pytorch/gloo#168 reports the same symptom): once more, on another port.
        # Any other failure stands.
        out = subprocess.run([sys.executable, str(RUNNER), json.dumps(dict(config, port=free_port()))],
                             capture_output=True, text=True, env=env, cwd=config["checkpoint_dir"].rsplit("/", 1)[0],
                             timeout=600)
    return out


def finished(out):
    assert out.returncode == 0, out.stderr[-12000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(data_root, tiny_llm, tmp_path_factory):
    """The uninterrupted run every resumed one must equal."""
    folder = tmp_path_factory.mktemp("reference")
    config = tiny_run_config(data_root, tiny_llm, folder)
    return config, finished(child(config))


def store_contents(cache_dir):
    texts = {}
    for path in Path(cache_dir, "summaries").rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts[record["key"]] = record["text"]
    return texts


@pytest.mark.parametrize("fault", ["train_step:3", "train_step:9", "state_write:2", "eval_batch:8", "summary_batch:2"])
def test_killed_run_resumes_to_the_same_weights_and_metrics(reference, data_root, tiny_llm, tmp_path, fault):
    ref_config, expected = reference
    # Summaries come from the reference's store (already complete), except where the kill is among them.
    cache = tmp_path / "cache" if fault.startswith("summary") else ref_config["trsr_cache_dir"]
    config = tiny_run_config(data_root, tiny_llm, tmp_path, trsr_cache_dir=str(cache))
    killed = child(config, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    if fault.startswith("eval_batch"):
        # 3 batches (2 users of 20 rows each) per evaluation: 2 validations, then the test's 3: killed after its
        # 2nd, whose scores are on disk and are read back, not recomputed, by the resumed run.
        journals = list(Path(config["checkpoint_dir"], "eval-journal").glob("*/*.pt"))
        assert len(journals) == 2, journals
    if fault.startswith("state_write"):  # the half-written state never replaced the whole one
        states = list(Path(config["checkpoint_dir"]).glob("*.resume/state.pt"))
        assert len(states) == 1 and read_state(states[0])["batches_done"] == 2
    out = child(dict(config, resume=True))
    resumed = finished(out)
    assert resumed["weights"] == expected["weights"]
    assert resumed["test_result"] == expected["test_result"]
    if fault.startswith("eval_batch"):
        assert "evaluation resumed: 2 batches read" in out.stdout + out.stderr
    if fault.startswith("summary"):
        assert store_contents(cache) == store_contents(ref_config["trsr_cache_dir"])


def test_two_processes_one_killed_fails_cleanly_and_resumes(data_root, tiny_llm, tmp_path_factory):
    reference_folder, folder = tmp_path_factory.mktemp("ddp_ref"), tmp_path_factory.mktemp("ddp_killed")
    common = dict(nproc=2, dist_timeout=60, port=free_port())
    expected = finished(child(precomputed(tiny_run_config(data_root, tiny_llm, reference_folder, **common))))
    config = precomputed(tiny_run_config(data_root, tiny_llm, folder, **dict(common, port=free_port())))
    killed = child(config, "train_step:3:1")
    assert killed.returncode != 0
    assert "rank 1 died (signal SIGKILL)" in killed.stderr
    resumed = finished(child(dict(config, resume=True, port=free_port())))
    assert resumed["weights"] == expected["weights"]
    assert resumed["test_result"] == expected["test_result"]


def precomputed(config):
    """``config``, its summaries made first in one process (several processes only read the store)."""
    from recbole_trsr.quick_start import run

    settings = {k: v for k, v in config.items() if k not in ("model", "dataset", "nproc")}
    run(config["model"], config["dataset"], config_dict=dict(settings, summarize_only=True))
    return config


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(n):
    return {"epoch": 0, "batches_done": n, "weights": {"w": torch.full((3,), float(n))}}


def test_truncated_state_falls_back_to_the_previous_one(tmp_path, caplog):
    path = tmp_path / "state.pt"
    write_state(path, _state(1))
    write_state(path, _state(2))
    assert read_state(path)["batches_done"] == 2 and previous(path).exists()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert read_state(path)["batches_done"] == 1
    assert str(path) in caplog.text and "truncated or corrupt" in caplog.text


def test_garbage_states_are_refused_naming_the_files(tmp_path):
    path = tmp_path / "state.pt"
    write_state(path, _state(1))
    write_state(path, _state(2))
    path.write_bytes(b"garbage")
    previous(path).write_bytes(os.urandom(200))
    with pytest.raises(RuntimeError, match="no whole resumable state") as error:
        read_state(path)
    assert str(path) in str(error.value) and str(previous(path)) in str(error.value)


def test_resume_with_nothing_saved_starts_from_zero(tmp_path):
    assert read_state(tmp_path / "none" / "state.pt") is None


def test_evaluation_journal_is_named_by_the_settings_that_change_scores(data_root, tiny_llm, tmp_path):
    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.trainer.checkpoint import plain_config
    from recbole_trsr.trainer.resume import settings_digest

    def digest(**overrides):
        config = tiny_run_config(data_root, tiny_llm, tmp_path, **overrides)
        model, dataset = config.pop("model"), config.pop("dataset")
        return settings_digest(plain_config(TRSRConfig(model, dataset, config_dict=config)))

    same = digest()
    assert digest(resume=True, checkpoint_dir=str(tmp_path / "elsewhere"), dist_timeout=99) == same
    # A killed evaluation started again with another prompt must score its batches anew.
    assert digest(prompt_template="Recent: {recent}\nItem: {candidate}\nYes or No?") != same
    assert digest(item_max_tokens=8) != same


def test_a_state_with_generators_the_model_lacks_is_refused():
    class Old:
        def __init__(self):
            self.rng = np.random.default_rng(0)

    class New:
        def __init__(self):
            self.negatives = Old()

    state = capture_rng(Old())
    with pytest.raises(ValueError, match=r"generator\(s\) \['rng'\] that this model does not have.*negatives.rng"):
        restore_rng(New(), state)


def test_a_killed_run_with_a_learning_rate_schedule_resumes_to_the_same_weights(reference, data_root, tiny_llm,
                                                                                  tmp_path):
    _, constant = reference
    scheduled = dict(lr_scheduler="linear", warmup_steps=2)
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
    expected = finished(child(tiny_run_config(data_root, tiny_llm, tmp_path / "whole", **scheduled)))
    assert expected["weights"] != constant["weights"]  # the schedule changed the steps
    config = tiny_run_config(data_root, tiny_llm, tmp_path / "killed", **scheduled)
    assert child(config, "train_step:5").returncode == -signal.SIGKILL
    resumed = finished(child(dict(config, resume=True)))
    assert resumed["weights"] == expected["weights"] and resumed["test_result"] == expected["test_result"]
