"""Device handling without a GPU: what a CUDA machine would get is pinned by faking CUDA's answers."""
import datetime

import pytest
import torch
import torch.distributed as dist

from recbole_trsr.distributed import process_group
from recbole_trsr.llm.backbone import pick_dtype


@pytest.fixture
def fake_group(monkeypatch):
    joined = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: joined.update(kw))
    return joined


def test_a_cpu_worker_joins_with_gloo_on_the_cpu(fake_group, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    final = {"local_rank": 1, "nproc": 2, "world_size": -1, "ip": "10.1.2.3", "port": 29511, "offset": 2, "gpu_id": "0",
             "dist_timeout": 90}
    process_group.init_distributed(final)
    assert fake_group == {"backend": "gloo", "init_method": "tcp://10.1.2.3:29511", "rank": 3, "world_size": 2,
                          "timeout": datetime.timedelta(seconds=90)}
    assert final["device"] == torch.device("cpu") and final["rank"] == 3 and final["state"] == "error"


def test_a_cuda_worker_joins_with_nccl_on_its_own_gpu(fake_group, monkeypatch):
    import os

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    final = {"local_rank": 1, "nproc": 2, "world_size": 4, "ip": "localhost", "port": 5678, "offset": 0, "gpu_id": "0,1"}
    process_group.init_distributed(final)
    assert fake_group["backend"] == "nccl" and fake_group["rank"] == 1 and fake_group["world_size"] == 4
    assert final["device"] == torch.device("cuda", 1) and chosen == [1]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # the GPUs gpu_id names, one a worker
    # RecBole's default gpu_id '0' for 2 workers: the visible GPUs, each worker its own, env untouched
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    final = {"local_rank": 1, "nproc": 2, "world_size": 2, "ip": "localhost", "port": 5678, "offset": 0, "gpu_id": "0"}
    process_group.init_distributed(final)
    assert final["device"] == torch.device("cuda", 1) and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_auto_dtype_is_bf16_on_a_cuda_gpu_that_has_it_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert pick_dtype("auto", "cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert pick_dtype("auto", "cuda") == torch.float16
    assert pick_dtype("float32", "cuda") == torch.float32


def test_single_process_helpers_are_no_ops():
    assert process_group.world_size() == 1 and process_group.is_main_process()
    assert process_group.gather_objects({"a": 1}) == [{"a": 1}]
    assert process_group.broadcast_object(5) == 5
    with process_group.main_process_first():
        pass
