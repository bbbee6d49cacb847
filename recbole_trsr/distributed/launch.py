"""Spawning the workers of one run, RecBole's way (``recbole.quick_start.run`` with ``nproc``)."""
import torch.distributed as dist
import torch.multiprocessing as mp

def launch_settings(config):
    """``{nproc, world_size, ip, port, offset}`` of a config (RecBole's keys and meanings); ``world_size``
    <= 0 means ``nproc``."""
    nproc = int(config["nproc"] or 1)
    world = int(config["world_size"] or -1)
    return {"nproc": nproc, "world_size": nproc if world <= 0 else world, "ip": str(config["ip"] or "localhost"),
            "port": int(config["port"] or 5678), "offset": int(config["offset"] or 0)}


def check_batch(train_batch_size, settings):
    """``train_batch_size`` is the whole batch of one step, its rows split over the ranks (so a run of N
    processes takes the steps one process would): a batch smaller than the world would idle ranks."""
    if train_batch_size is not None and int(train_batch_size) < settings["world_size"]:
        raise ValueError(f"train_batch_size={train_batch_size} is split over world_size={settings['world_size']} "
                         "processes (the whole step's batch, as in one process): give every rank a row, "
                         f"train_batch_size >= {settings['world_size']}")


def is_multi_process(settings):
    return settings["nproc"] > 1 or settings["world_size"] > 1


def spawn(target, model, dataset, config_file_list, config_dict, argv, saved, settings):
    """Start ``nproc`` workers of this machine (global ranks ``offset`` .. ``offset + nproc - 1``), each
    calling ``target`` (``recbole_trsr.quick_start.run``) with its ``local_rank``, and wait for them;
    return the result of global rank 0 (``None`` on a machine that does not hold it)."""
    if settings["offset"] + settings["nproc"] > settings["world_size"]:
        raise ValueError(f"offset {settings['offset']} + nproc {settings['nproc']} exceeds world_size "
                         f"{settings['world_size']}")
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {}, **settings)
    try:
        mp.spawn(_worker, args=(target, model, dataset, config_file_list, config_dict, argv, saved, queue),
                 nprocs=settings["nproc"], join=True)
    except mp.ProcessExitedException as exc:  # one worker died (killed, out of memory): the others were stopped
        dead = settings["offset"] + exc.error_index
        how = f"signal {exc.signal_name}" if exc.signal_name else f"exit code {exc.exit_code}"
        raise RuntimeError(f"rank {dead} died ({how}); the other ranks of this machine were stopped. Continue with "
                           f"--resume=True and the same world size ({settings['world_size']}).") from exc
    return None if queue.empty() else queue.get()


def _worker(local_rank, target, model, dataset, config_file_list, config_dict, argv, saved, queue):
    try:
        result = target(model, dataset, config_file_list, dict(config_dict, local_rank=local_rank), argv, saved)
        if config_dict["offset"] + local_rank == 0:
            queue.put(result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
