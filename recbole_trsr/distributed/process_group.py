"""Joining the process group and the few collective helpers the rest of the plugin uses.

Every helper is a no-op in a single process, so callers never test for the distributed case.
"""
import contextlib
import datetime
import os

import torch
import torch.distributed as dist

from recbole_trsr.distributed.launch import launch_settings


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return rank() == 0


def barrier():
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. fills a cache); the others run it once it is done (and
    then only read what rank 0 wrote)."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def init_distributed(final):
    """Join the group for RecBole config dict ``final`` (which has ``local_rank``): rank
    ``local_rank + offset`` of ``world_size`` at ``tcp://ip:port``. Sets ``device`` (``cuda:local_rank``
    on a CUDA machine, else cpu) and the backend (nccl on CUDA, gloo on CPU); ``single_spec`` stays
    True because RecBole's own DDP code is CUDA-only (nccl, ``device_ids``) and averages padded shards:
    the plugin's trainers do the data parallelism themselves (see ``data_parallel.py``)."""
    gpu_id = final.get("gpu_id")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id if gpu_id is not None else "")
    final["gpu_id"] = gpu_id
    if gpu_id:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", gpu_id)
    settings = launch_settings(final)
    local_rank, world = int(final["local_rank"]), settings["world_size"]
    global_rank = local_rank + settings["offset"]
    cuda = bool(gpu_id) and torch.cuda.is_available() and final.get("use_gpu", True)
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # A rank that dies leaves the others waiting in a collective: after dist_timeout seconds they fail
        # instead of hanging (on one machine the launcher notices the death first, see launch.py).
        dist.init_process_group(backend=final.get("dist_backend") or ("nccl" if cuda else "gloo"),
                                init_method=f"tcp://{settings['ip']}:{settings['port']}",
                                rank=global_rank, world_size=world,
                                timeout=datetime.timedelta(seconds=float(final.get("dist_timeout") or 1800)))
    final.update(device=device, single_spec=True, world_size=world, distributed=world > 1, rank=global_rank)
    if global_rank != 0:
        final.update(state="error", show_progress=False, verbose=False, summary_progress=False)
