"""The trainer side of a data-parallel run (any RecBole trainer, the plugin's LLM trainers too).

* Every rank starts from rank 0's trainable weights, iterates the same shuffled batches (RecBole's
  loaders seed their generator with ``seed``) and computes the loss on its slice of each batch.
* Before each optimizer step the gradients of the optimizer's parameters, i.e. the trainable
  ones only (LoRA adapters, soft prompt, a baseline's weights), are averaged over the ranks in one
  all-reduce, so every rank takes the same step and the replicas stay identical.
* Evaluation: rank r scores batches r, r + world_size, ... (whole users: no user twice, none
  padded in), and the collected rows of all ranks are gathered before RecBole's evaluator computes
  the metrics, so they are those of one process on the same data.
* Only rank 0 writes checkpoints; the others wait, then read the same file.
"""
import functools
import os
import shutil

import torch
import torch.distributed as dist

from recbole_trsr.distributed.process_group import (barrier, broadcast_object, gather_objects, is_distributed,
                                                    is_main_process, rank, world_size)

# DataStruct keys that RecBole's collector concatenates batch after batch (one row per user or row).
ROW_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


class DataParallelMixin:
    """Mixed into every trainer by ``recbole_trsr.trainer.get_trainer``; a no-op in one process."""

    def __init__(self, config, model):
        if is_distributed():
            # RecBole's trainer creates checkpoint_dir with check-then-create: ranks starting together can
            # both find it missing, and the later one fails with FileExistsError.
            os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)
        if is_distributed():
            broadcast_trainable(self.model)
            self.saved_model_file = broadcast_object(self.saved_model_file)  # names carry a timestamp
            if not is_main_process():  # RecBole's trainer opened a TensorBoard writer: rank 0's is the one
                log_dir = self.tensorboard.log_dir
                self.tensorboard.close()
                shutil.rmtree(log_dir, ignore_errors=True)
                self.tensorboard = _NullWriter()

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        if is_distributed():
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: average_gradients(opt))
        return optimizer

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss_func = loss_func or self.model.calculate_loss
        if is_distributed():
            loss_func = functools.partial(_loss_on_my_rows, loss_func, self.model)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if is_main_process():
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        barrier()

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not is_distributed() or not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        collector = self.eval_collector
        own = collector.get_data_struct
        collector.get_data_struct = lambda: gather_struct(own())
        try:
            return super().evaluate(my_batches(eval_data), load_best_model, model_file, show_progress)
        finally:
            del collector.get_data_struct


def trainable_parameters(model):
    return [p for p in model.parameters() if p.requires_grad]


def broadcast_trainable(model):
    """Copy rank 0's trainable weights to every rank (ranks seed their init with ``seed + rank``)."""
    for p in trainable_parameters(model):
        dist.broadcast(p.data, src=0)


def average_gradients(optimizer):
    """Average the gradients of ``optimizer``'s parameters over the ranks (one flat all-reduce; a
    parameter without a gradient on this rank contributes zeros, so every rank reduces the same list)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def _loss_on_my_rows(loss_func, model, interaction, **kwargs):
    rows = torch.arange(rank(), len(interaction), world_size())
    if len(rows) == 0:  # a last batch smaller than the world: take part in the all-reduce with zeros
        return sum(p.sum() * 0 for p in trainable_parameters(model))
    return loss_func(interaction[rows], **kwargs)


def my_batches(loader):
    """A view of an evaluation loader that yields only this rank's batches (``r, r + world, ...``)."""
    me, world = rank(), world_size()
    base = type(loader)

    class RankBatches(base):
        def __iter__(self):
            for index, batch in enumerate(base.__iter__(self)):
                if index % world == me:
                    yield batch

        def __len__(self):
            return len(range(me, base.__len__(self), world))

    view = object.__new__(RankBatches)
    view.__dict__.update(loader.__dict__)
    return view


def gather_struct(struct):
    """RecBole's collected ``DataStruct`` with the rows of every rank (rank order)."""
    parts = gather_objects({k: struct.get(k).cpu() for k in ROW_KEYS if k in struct})
    for key in {k for part in parts for k in part}:  # a rank with no batch has no rows
        struct.set(key, torch.cat([part[key] for part in parts if key in part], dim=0))
    return struct


def gather_lists(record):
    """A dict of per-row lists (e.g. the per-user recorder's) concatenated over the ranks."""
    if not is_distributed():
        return record
    parts = gather_objects(record)
    return {k: ([x for p in parts for x in p[k]] if isinstance(v, list) else v) for k, v in record.items()}


def weights_digest(model):
    """A short hash of the trainable weights (to check that every rank holds the same replica)."""
    import hashlib

    h = hashlib.sha1()
    for name, p in model.named_parameters():
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class _NullWriter:
    """Stands in for a TensorBoard ``SummaryWriter`` on ranks other than 0."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
