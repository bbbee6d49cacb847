"""Scores of an evaluation's finished batches, kept on disk, so a killed evaluation continues where it
stopped instead of scoring its users again.

While :meth:`ScoreJournal.recording` is active, the model's ``predict`` and ``full_sort_predict`` look
each batch up by a digest of its content (every tensor of the interaction: users, positions,
candidates) before computing it; a computed batch is written to its own file atomically (temporary
file, then rename), so a kill leaves only whole files. Evaluation candidates are fixed per user and
seed (:mod:`.candidates`), so the same batch of a later run has the same digest. The folder is named
(by the trainer) after :func:`evaluation_digest` and the run's settings: other weights, another model
attached to the scorer (DELRec's SR model, LLMTRSR's full-sort retriever), or the same weights with
another prompt, never read these scores.
"""
import contextlib
import hashlib
import io
import logging
import os
import shutil
from pathlib import Path

import torch

from recbole_trsr import faults
from recbole_trsr.distributed import rank

logger = logging.getLogger(__name__)


def evaluation_digest(model):
    """A short hash of everything in ``model`` that decides its scores beyond the run's settings: its
    trainable weights, and every parameter and buffer of the frozen models attached to it, named by
    the model's ``ATTACHED_MODELS`` (attribute names; e.g. DELRec's SR model, trained or loaded per
    run and frozen, so its weights are not among the trainable ones)."""
    h = hashlib.sha1()
    tensors = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for attribute in getattr(model, "ATTACHED_MODELS", ()):
        attached = getattr(model, attribute, None)
        if attached is not None:
            tensors += [(f"{attribute}.{n}", t) for n, t in attached.named_parameters()]
            tensors += [(f"{attribute}.{n}", t) for n, t in attached.named_buffers()]
            h.update(f"{attribute}:{type(attached).__name__}:{getattr(attached, 'name', '')}".encode())
    for name, tensor in tensors:
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def batch_digest(kind, interaction):
    h = hashlib.sha1(kind.encode())
    for name in sorted(interaction.interaction):
        tensor = interaction[name]
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ScoreJournal:
    """Per-batch scores of one evaluation of one set of weights, in ``folder`` (one ``.pt`` file a batch)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.reused = 0
        self.computed = 0

    @contextlib.contextmanager
    def recording(self, model):
        """Inside the block, ``model.predict`` / ``model.full_sort_predict`` read and write the journal."""
        self.folder.mkdir(parents=True, exist_ok=True)
        own = {name: getattr(model, name) for name in ("predict", "full_sort_predict")}
        patched_before = {name: vars(model)[name] for name in own if name in vars(model)}
        for name, fn in own.items():
            setattr(model, name, self._journaled(name, fn))
        try:
            yield self
        finally:
            for name in own:
                if name in patched_before:
                    setattr(model, name, patched_before[name])
                else:
                    delattr(model, name)  # back to the class's method
        if self.reused:
            logger.info("evaluation resumed: %d batches read from %s, %d scored", self.reused, self.folder, self.computed)

    def _journaled(self, kind, fn):
        def journaled(interaction):
            path = self.folder / f"{batch_digest(kind, interaction)}.pt"
            if path.exists():
                try:
                    scores = torch.load(path, map_location="cpu", weights_only=True)
                    self.reused += 1
                    return scores.to(interaction[next(iter(interaction.interaction))].device)
                except Exception as exc:  # a file from a broken disk: score the batch again
                    logger.warning("journal file %s is unreadable (%s): scoring the batch again", path, exc)
            scores = fn(interaction)
            buffer = io.BytesIO()
            torch.save(scores.detach().cpu(), buffer)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)
            self.computed += 1
            faults.reached("eval_batch", rank())
            return scores

        return journaled

    def discard(self):
        """Remove the journal (the evaluation it belongs to has finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)
