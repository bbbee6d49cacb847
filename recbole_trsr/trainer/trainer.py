"""Trainers of the plugin.

:class:`SafeCheckpointMixin` replaces RecBole's pickled checkpoints with the safe format of
:mod:`recbole_trsr.trainer.checkpoint`; every model run through the plugin (SASRec and GRU4Rec
too) gets it, so the best-checkpoint reload works on torch >= 2.6 without unsafe unpickling.
"""
import functools
import logging
import time
from pathlib import Path

from recbole.trainer import Trainer
from recbole.utils import set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_trsr import faults
from recbole_trsr.distributed import barrier, broadcast_object, gather_objects, is_main_process, rank, world_size
from recbole_trsr.evaluation.journal import ScoreJournal, evaluation_digest
from recbole_trsr.llm.memory import peak_memory, reset_peak_memory
from recbole_trsr.trainer.checkpoint import (load_checkpoint, model_state, plain_config, restore_model_state,
                                             save_checkpoint)
from recbole_trsr.trainer.resume import (capture_rng, read_state, restore_rng, resume_path, settings_digest, wants_resume,
                                         write_state)
from recbole_trsr.trainer.schedule import build_schedule, optimizer_steps

logger = logging.getLogger(__name__)


class SafeCheckpointMixin:
    """Writes and reads checkpoints without pickled objects (see ``checkpoint.py``)."""

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(path, self.model, self.optimizer, self.config, epoch, self.cur_step, self.best_valid_score)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def resume_checkpoint(self, resume_file):
        self.saved_model_file = str(resume_file)
        state = load_checkpoint(self.saved_model_file, self.device)
        if state["config"]["model"].lower() != self.config["model"].lower():
            raise ValueError(f"{resume_file} holds a {state['config']['model']} model, not {self.config['model']}")
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        restore_model_state(self.model, state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            path = model_file or self.saved_model_file
            state = load_checkpoint(path, self.device)
            restore_model_state(self.model, state["state_dict"])
            self.model.load_other_parameter(state.get("other_parameter"))
            self.logger.info(f"Loading model parameters from {path}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


@functools.lru_cache(maxsize=None)
def with_safe_checkpoints(trainer_class):
    """``trainer_class`` (a RecBole trainer) with :class:`SafeCheckpointMixin` mixed in."""
    if issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {})


class EpochSpeed:
    """What sizes a run: examples/s and tokens/s of this rank's training, and its peak memory."""

    def __init__(self, model, device):
        self.device, self.examples, self.started = device, 0, time.perf_counter()
        self.scorer = getattr(model, "scorer", None)
        self.tokens = getattr(self.scorer, "tokens_seen", 0)
        reset_peak_memory(device)

    def __str__(self):
        seconds = max(time.perf_counter() - self.started, 1e-9)
        peak, what = peak_memory(self.device)
        text = f"{self.examples / seconds:.2f} examples/s"
        if self.scorer is not None:
            text += f", {(self.scorer.tokens_seen - self.tokens) / seconds:.0f} tokens/s"
        return text + f", {what} {peak / 2 ** 30:.2f} GiB ({seconds:.0f} s)"


class LLMTrainer(SafeCheckpointMixin, Trainer):
    """Trainer for models with a (mostly frozen) LLM inside.

    Only parameters with ``requires_grad`` reach the optimizer; ``gradient_accumulation_steps``
    batches are summed per optimizer step; checkpoints hold the model's
    ``checkpoint_state_dict()`` (adapters and trainable weights), and the LoRA adapter is also
    written as a peft folder beside each checkpoint (``<checkpoint>.adapter/``).

    Interrupted runs (README "Interrupted runs"): a resumable state (:mod:`.resume`) is written every
    ``save_steps`` optimizer steps or ``save_minutes`` of training, at the end of every epoch's
    training and when training ends; ``resume: True`` (or a path) continues from it, mid-epoch, to the
    same weights as an uninterrupted run. Evaluations journal their finished batches
    (:class:`~recbole_trsr.evaluation.journal.ScoreJournal`) and continue where a kill stopped them.
    """

    supports_resume = True

    def __init__(self, config, model):
        self.accumulation_steps = max(1, int(config["gradient_accumulation_steps"] or 1))
        # The model backpropagates each micro-batch itself as it computes it (recbole_trsr/llm/memory.py).
        self.backward_per_micro_batch = bool(config["backward_per_micro_batch"])
        if self.backward_per_micro_batch and not getattr(model, "supports_backward_per_micro_batch", False):
            raise ValueError(f"backward_per_micro_batch: {config['model']}'s loss does not run its own backward; "
                             "set it to False")
        super().__init__(config, model)
        plain = plain_config(config)
        self.state_path = resume_path(config, plain)
        self.settings_digest = settings_digest(plain)  # names the evaluation journal with the weights
        self.save_steps = int(config["save_steps"] or 0)
        self.save_seconds = 60 * float(config["save_minutes"] or 0)
        self.write_states = self.supports_resume
        self.state_saves = []  # (seconds, bytes) of each resumable state written
        self._resume_point = None
        self.lr_scheduler = None  # built in fit, when the run's length is known (trainer/schedule.py)

    def _build_optimizer(self, **kwargs):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{self.config['model']} has no trainable parameters")
        kwargs.setdefault("params", params)
        return super()._build_optimizer(**kwargs)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        if hasattr(self.model, "save_adapter"):
            self.model.save_adapter(kwargs.get("saved_model_file", self.saved_model_file) + ".adapter")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.lr_scheduler = build_schedule(self.config, self.optimizer,
                                           optimizer_steps(self.config, len(train_data), self.accumulation_steps))
        state = self._read_resumable_state()
        if state is not None and state["finished"]:
            self.logger.info(set_color("resume", "yellow") + f": training had finished ({self.state_path}); "
                             "evaluating its best checkpoint")
            return self.best_valid_score, self.best_valid_result
        self._last_save, self._steps_since_save = time.monotonic(), 0
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        if self.write_states:
            self._write_state(epoch=self.epochs, batches_done=0, loss=0.0, finished=True)
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        resume, skip, total_loss = self._resume_point, 0, 0.0
        if resume is not None and resume["epoch"] == epoch_idx:
            # The epoch's batches in the same order: the loader's generator as it was when the epoch began.
            train_data.generator.set_state(resume["loader"])
            skip, total_loss = resume["batches_done"], resume["loss"]
        self._epoch_loader_state = train_data.generator.get_state()
        phase = "Distill" if getattr(self.model, "stage", None) == "distill" else "Train"  # DELRec's stage 1
        batches = tqdm(train_data, total=len(train_data), ncols=100, desc=f"{phase} {epoch_idx:>5}",
                       unit="batch") if show_progress else train_data
        self.optimizer.zero_grad()
        speed = EpochSpeed(self.model, self.device)
        for step, interaction in enumerate(batches, start=1):
            if step <= skip:  # done before the interruption
                if step == skip:
                    restore_rng(self.model, resume["rng"][rank()])
                    self._resume_point = None
                    self.logger.info(f"resumed epoch {epoch_idx} after batch {skip} of {len(train_data)}")
                continue
            loss = self._forward_backward(loss_func, interaction.to(self.device))
            total_loss += loss.item()
            speed.examples += len(interaction)
            if step % self.accumulation_steps == 0 or step == len(train_data):
                if self.clip_grad_norm:
                    clip_grad_norm_(params, **self.clip_grad_norm)
                self.optimizer.step()
                if self.lr_scheduler is not None:
                    self.lr_scheduler.step()
                if hasattr(self.model, "after_optimizer_step"):
                    self.model.after_optimizer_step()  # e.g. AdaLoRA's budget update, before grads are cleared
                self.optimizer.zero_grad()
                self._maybe_write_state(epoch_idx, step, total_loss, epoch_end=step == len(train_data))
                faults.reached("train_step", rank())
        self.logger.info(f"epoch {epoch_idx} speed: {speed}")
        return total_loss

    def _forward_backward(self, loss_func, interaction):
        """The batch's loss, its gradients accumulated (scaled by 1 / gradient_accumulation_steps)."""
        scale = 1.0 / self.accumulation_steps
        if self.backward_per_micro_batch:  # only models whose loss takes backward_scale get here (__init__)
            loss = loss_func(interaction, backward_scale=scale)
            self._check_nan(loss)
            return loss
        loss = loss_func(interaction)
        self._check_nan(loss)
        (loss * scale).backward()
        return loss

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if load_best_model:  # the weights first: the journal is named after them
            path = model_file or self.saved_model_file
            state = load_checkpoint(path, self.device)
            restore_model_state(self.model, state["state_dict"])
            self.model.load_other_parameter(state.get("other_parameter"))
            self.logger.info(f"Loading model parameters from {path}")
        # Named by the weights and by the settings (prompt template, budgets, summaries' settings...):
        # a run killed mid-evaluation and started again with other settings must not read its scores.
        journal = ScoreJournal(Path(self.config["checkpoint_dir"]) / "eval-journal" / (
            f"{self.config['model']}-{evaluation_digest(self.model)}-{self.settings_digest}"))
        with journal.recording(self.model):
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        barrier()  # every rank has finished reading before rank 0 removes it
        if is_main_process():
            journal.discard()
        return result

    # --- resumable state (recbole_trsr/trainer/resume.py) ---

    def _maybe_write_state(self, epoch, batches_done, loss, epoch_end):
        if not self.write_states:
            return
        self._steps_since_save += 1
        due = epoch_end or (self.save_steps and self._steps_since_save >= self.save_steps) or (
            self.save_seconds and time.monotonic() - self._last_save >= self.save_seconds)
        if broadcast_object(bool(due)):  # rank 0's clock decides for every rank
            self._write_state(epoch, batches_done, loss)

    def _write_state(self, epoch, batches_done, loss, finished=False):
        rngs = gather_objects(capture_rng(self.model))  # every rank's generators, rank 0 writes them
        if is_main_process():
            started = time.perf_counter()
            best = self.best_valid_result
            size = write_state(self.state_path, {
                "epoch": int(epoch), "batches_done": int(batches_done), "loss": float(loss), "finished": finished,
                "loader": getattr(self, "_epoch_loader_state", None), "rng": rngs, "world_size": world_size(),
                "weights": model_state(self.model), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
                "cur_step": int(self.cur_step), "best_valid_score": float(self.best_valid_score),
                "best_valid_result": None if best is None else {k: float(v) for k, v in best.items()},
                "saved_model_file": str(self.saved_model_file),
                "train_loss_dict": {int(k): float(v) for k, v in self.train_loss_dict.items()},
            })
            self.state_saves.append((time.perf_counter() - started, size))
            logger.debug("resumable state written: %s (%.1f MB)", self.state_path, size / 2 ** 20)
        barrier()
        self._last_save, self._steps_since_save = time.monotonic(), 0

    def _read_resumable_state(self):
        if not wants_resume(self.config):
            return None
        if not self.supports_resume:
            raise ValueError(f"resume is not supported for {self.config['model']} yet (its trainer runs two stages)")
        state = read_state(self.state_path)
        if state is None:
            self.logger.info(set_color("resume", "yellow") + f": no state at {self.state_path}: starting from zero")
            return None
        if state["world_size"] != world_size():
            raise ValueError(f"{self.state_path} was written by a run of {state['world_size']} processes; resume it "
                             f"with the same world size (this run has {world_size()})")
        restore_model_state(self.model, state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (state.get("lr_scheduler") is None) != (self.lr_scheduler is None):
            raise ValueError(f"{self.state_path} was written {'with' if state.get('lr_scheduler') else 'without'} a "
                             "learning-rate schedule and this run has the other: resume with the same lr_scheduler")
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.start_epoch, self.cur_step = state["epoch"], state["cur_step"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.saved_model_file = state["saved_model_file"]
        self.train_loss_dict = dict(state["train_loss_dict"])
        if not state["finished"]:
            self._resume_point = {k: state[k] for k in ("epoch", "batches_done", "loss", "loader", "rng")}
            self.logger.info(set_color("resume", "yellow") + f": {self.state_path}: epoch {state['epoch']}, "
                             f"{state['batches_done']} batches done")
        return state


class DELRecTrainer(LLMTrainer):
    """DELRec's two stages from one ``fit``.

    0. The SR model is attached before ``fit`` by the run (``recbole_trsr.sr_model``: loaded from
       ``delrec_sr_checkpoint``, or trained first on the same training data).
    1. Distillation: ``delrec_stage1_epochs`` epochs training only the soft prompt.
    2. Recommendation: the usual RecBole fit (validation, early stopping, best checkpoint)
       training only the AdaLoRA adapters.
    """

    supports_resume = False  # stage 1 and stage 2 would need their own resume points

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model, config = self.model, self.config
        if model.sr_model is None:
            raise RuntimeError("DELRec needs its SR model attached before fit (recbole_trsr.sr_model.attach_sr_models)")
        model.set_stage("distill")
        self.optimizer = self._build_optimizer(learning_rate=config["delrec_stage1_lr"])
        for epoch in range(config["delrec_stage1_epochs"]):
            loss = self._train_epoch(train_data, epoch, loss_func=model.distill_loss, show_progress=show_progress)
            self.logger.info(f"DELRec stage 1 (soft prompt) epoch {epoch}: loss {loss:.4f}")
        if saved:
            path = self.saved_model_file + ".soft_prompt.safetensors"
            model.save_soft_prompt(path)
            self.logger.info(f"DELRec stage 1 soft prompt saved: {path}")
        model.set_stage("recommend")
        self.optimizer = self._build_optimizer()
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
