"""Data-parallel runs (torch.distributed, gloo on CPU): 2 processes on this machine."""
import socket

import pytest
import torch

from conftest import DATASET, llm_config
from recbole_trsr.quick_start import evaluate_checkpoint, run
from recbole_trsr.trainer.checkpoint import load_checkpoint


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_two(model, config):
    """``run`` on 2 processes; once more on another port if gloo reset a connection at start-up (seen now and
    then in full-suite runs on 2 cores, never alone; see tests/test_resume.py). Any other failure stands."""
    try:
        return run(model, DATASET, config_dict=config, nproc=2)
    except Exception as exc:
        if "Connection reset by peer" not in str(exc):
            raise
        config["port"] = free_port()
        return run(model, DATASET, config_dict=config, nproc=2)


def test_two_processes_train_one_replica_and_gather_the_metrics_of_one_process(data_root, tmp_path, tiny_llm):
    config = llm_config(data_root, tmp_path, tiny_llm, subset_users=8, train_batch_size=4, epochs=2, eval_step=1,
                        eval_batch_size=60, port=free_port())
    # Several processes never summarize (a rank would wait on the one summarizing past dist_timeout):
    with pytest.raises(Exception, match=r"summaries \(\d+ users\) are not in the store.*python -m recbole_trsr.summarize"):
        run_on_two("LLMTRSR", dict(config))
    run("LLMTRSR", DATASET, config_dict=dict(config, summarize_only=True))  # one process fills the store
    two = run_on_two("LLMTRSR", config)

    # Both ranks ended with the same trainable weights (run() also fails if they differ).
    assert len(two["rank_weights"]) == 2 and two["rank_weights"][0] == two["rank_weights"][1]
    # One checkpoint, written by rank 0; and it trained: LoRA B starts at zero.
    checkpoints = sorted((tmp_path / "saved").glob("*.pth"))
    assert [str(c) for c in checkpoints] == [two["checkpoint"]]
    state = load_checkpoint(two["checkpoint"], "cpu")["state_dict"]
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert len(list((tmp_path / "log_tensorboard").iterdir())) == 1

    # The gathered test metrics are those of one process scoring the same weights on the same data.
    one = evaluate_checkpoint("LLMTRSR", DATASET, two["checkpoint"], config_dict=config)
    assert two["test_result"].keys() == one["test_result"].keys()
    for name, value in one["test_result"].items():
        assert two["test_result"][name] == pytest.approx(value, abs=1e-4)
    assert sorted(two["per_user"]["users"]) == sorted(one["per_user"]["users"])  # every user once, none padded in
    def by_user(r):
        return dict(zip(r["per_user"]["users"], zip(r["per_user"]["greater"], r["per_user"]["ties"])))

    assert by_user(two) == by_user(one)


def test_a_baseline_runs_on_two_processes(data_root, tmp_path):
    from conftest import base_config

    config = base_config(data_root, tmp_path, hidden_size=16, inner_size=32, n_layers=1, epochs=2,
                         train_batch_size=64, subset_users=20, subset_history=30, MAX_ITEM_LIST_LENGTH=20,
                         port=free_port())
    two = run_on_two("SASRec", config)
    assert two["rank_weights"][0] == two["rank_weights"][1]
    one = evaluate_checkpoint("SASRec", DATASET, two["checkpoint"], config_dict=config)
    for name, value in one["test_result"].items():
        assert two["test_result"][name] == pytest.approx(value, abs=1e-4)


def test_launch_settings_follow_recbole():
    from recbole_trsr.distributed.launch import is_multi_process, launch_settings

    settings = launch_settings({"nproc": 2, "world_size": -1, "ip": None, "port": None, "offset": None})
    assert settings == {"nproc": 2, "world_size": 2, "ip": "localhost", "port": 5678, "offset": 0}
    assert is_multi_process(launch_settings({"nproc": 1, "world_size": 4, "ip": "10.0.0.1", "port": 1, "offset": 2}))
    assert not is_multi_process(launch_settings({"nproc": 1, "world_size": -1, "ip": None, "port": None, "offset": 0}))


def test_a_batch_smaller_than_the_world_is_refused_before_any_worker_starts(data_root, tmp_path):
    from conftest import base_config

    config = base_config(data_root, tmp_path, train_batch_size=1, port=free_port())
    with pytest.raises(ValueError, match=r"train_batch_size=1 is split over world_size=2"):
        run("SASRec", DATASET, config_dict=config, nproc=2)


def test_every_worker_takes_its_own_gpu():
    """No GPU here: the CUDA choices are pinned as functions of what a machine would show."""
    from recbole_trsr.distributed.process_group import rank_device, visible_devices

    assert visible_devices("0", 8) is None  # RecBole's default: use the 8 GPUs the machine shows
    assert visible_devices("4,5,6,7", 4) == "4,5,6,7" and visible_devices("4, 5", 2) == "4,5"
    assert visible_devices("", 2) is None
    assert [str(rank_device(r, 8, True, 8)) for r in (0, 7)] == ["cuda:0", "cuda:7"]
    assert str(rank_device(1, 2, False, 0)) == "cpu"
    with pytest.raises(RuntimeError, match="8 processes on this machine but 1 GPU"):
        rank_device(3, 8, True, 1)


def test_the_launcher_does_not_hand_recboles_gpu_id_to_its_workers(monkeypatch, data_root, tmp_path):
    from conftest import base_config
    from recbole_trsr.config import TRSRConfig

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    TRSRConfig("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, nproc=2, use_gpu=True))
    assert "CUDA_VISIBLE_DEVICES" not in __import__("os").environ  # RecBole's Config exported '0' here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # a scheduler's choice is kept
    TRSRConfig("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, nproc=2, use_gpu=True))
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    TRSRConfig("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, nproc=1, use_gpu=True))
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "0"  # one process: RecBole's own rule
