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


def gpu_ids(gpu_id):
    return [g.strip() for g in str(gpu_id or "").split(",") if g.strip()]


def visible_devices(gpu_id, nproc):
    """``CUDA_VISIBLE_DEVICES`` for the workers of one machine: ``gpu_id`` when it lists a GPU for
    each of the ``nproc`` workers; else None (RecBole's default ``'0'`` among them): the GPUs already
    visible are used, so ``--nproc=8`` takes 8 GPUs without ``--gpu_id``."""
    ids = gpu_ids(gpu_id)
    return ",".join(ids) if ids and len(ids) >= nproc else None


def rank_device(local_rank, nproc, cuda_available, visible_gpus):
    """Worker ``local_rank``'s device: ``cuda:local_rank`` (one GPU per worker, never two on one GPU),
    or the CPU without CUDA."""
    if not cuda_available:
        return torch.device("cpu")
    if visible_gpus < nproc:
        raise RuntimeError(f"{nproc} processes on this machine but {visible_gpus} GPU(s) visible to them: one GPU "
                           "per process; lower nproc, or list the GPUs with --gpu_id")
    return torch.device("cuda", local_rank)


def init_distributed(final):
    """Join the group for RecBole config dict ``final`` (which has ``local_rank``): rank
    ``local_rank + offset`` of ``world_size`` at ``tcp://ip:port``. Sets ``device`` (this rank's own GPU,
    :func:`visible_devices`, :func:`rank_device`, on a CUDA machine, else cpu) and the backend (nccl on CUDA, gloo on CPU);
    ``single_spec`` stays True because RecBole's own DDP code is CUDA-only (nccl, ``device_ids``) and
    averages padded shards: the plugin's trainers do the data parallelism themselves (``data_parallel.py``)."""
    gpu_id = final.get("gpu_id")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id if gpu_id is not None else "")
    final["gpu_id"] = gpu_id
    settings = launch_settings(final)
    local_rank, world = int(final["local_rank"]), settings["world_size"]
    global_rank = local_rank + settings["offset"]
    use_gpu = bool(final.get("use_gpu", True)) and bool(gpu_ids(gpu_id))
    visible = visible_devices(gpu_id, settings["nproc"])
    if use_gpu and visible:  # before CUDA counts its devices in this process
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", visible)
    cuda = use_gpu and torch.cuda.is_available()
    device = rank_device(local_rank, settings["nproc"], cuda, torch.cuda.device_count() if cuda else 0)
    if cuda:
        torch.cuda.set_device(device.index)
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
