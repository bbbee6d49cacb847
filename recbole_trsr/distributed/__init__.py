"""Data-parallel runs over several processes and machines (torch.distributed), the way RecBole
launches them: ``nproc`` workers per machine, ``world_size`` in all, rendezvous at ``ip:port``,
this machine's first rank at ``offset``.

* :mod:`.process_group`: joining the group (gloo on CPU, nccl on CUDA), rank helpers.
* :mod:`.launch`: spawning the workers of one run and collecting rank 0's result.
* :mod:`.data_parallel`: the trainer side (each rank takes a slice of every batch, trainable
  gradients averaged before each optimizer step, evaluation batches split and gathered).
"""
from recbole_trsr.distributed.process_group import (barrier, broadcast_object, gather_objects, init_distributed,
                                                    is_distributed, is_main_process, main_process_first, rank,
                                                    world_size)

__all__ = ["barrier", "broadcast_object", "gather_objects", "init_distributed", "is_distributed", "is_main_process",
           "main_process_first", "rank", "world_size"]
