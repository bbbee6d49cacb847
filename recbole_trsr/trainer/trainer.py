"""Trainers of the plugin.

:class:`SafeCheckpointMixin` replaces RecBole's pickled checkpoints with the safe format of
:mod:`recbole_trsr.trainer.checkpoint`; every model run through the plugin (SASRec and GRU4Rec
too) gets it, so the best-checkpoint reload works on torch >= 2.6 without unsafe unpickling.
"""
import functools

from recbole.trainer import Trainer
from recbole.utils import set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_trsr.trainer.checkpoint import load_checkpoint, restore_model_state, save_checkpoint


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


class LLMTrainer(SafeCheckpointMixin, Trainer):
    """Trainer for models with a (mostly frozen) LLM inside.

    Only parameters with ``requires_grad`` reach the optimizer; ``gradient_accumulation_steps``
    batches are summed per optimizer step; checkpoints hold the model's
    ``checkpoint_state_dict()`` (adapters and trainable weights), and the LoRA adapter is also
    written as a peft folder beside each checkpoint (``<checkpoint>.adapter/``).
    """

    def __init__(self, config, model):
        self.accumulation_steps = max(1, int(config["gradient_accumulation_steps"] or 1))
        super().__init__(config, model)

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

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        batches = tqdm(train_data, total=len(train_data), ncols=100, desc=f"Train {epoch_idx:>5}") if show_progress else train_data
        total_loss = 0.0
        self.optimizer.zero_grad()
        for step, interaction in enumerate(batches, start=1):
            loss = loss_func(interaction.to(self.device))
            self._check_nan(loss)
            (loss / self.accumulation_steps).backward()
            total_loss += loss.item()
            if step % self.accumulation_steps == 0 or step == len(train_data):
                if self.clip_grad_norm:
                    clip_grad_norm_(params, **self.clip_grad_norm)
                self.optimizer.step()
                if hasattr(self.model, "after_optimizer_step"):
                    self.model.after_optimizer_step()  # e.g. AdaLoRA's budget update, before grads are cleared
                self.optimizer.zero_grad()
        return total_loss


class DELRecTrainer(LLMTrainer):
    """DELRec's two stages from one ``fit``.

    0. The SR model is attached before ``fit`` by the run (``recbole_trsr.sr_model``: loaded from
       ``delrec_sr_checkpoint``, or trained first on the same training data).
    1. Distillation: ``delrec_stage1_epochs`` epochs training only the soft prompt.
    2. Recommendation: the usual RecBole fit (validation, early stopping, best checkpoint)
       training only the AdaLoRA adapters.
    """

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
