"""Trainers: the safe-checkpoint mixin for every model, the LLM trainers, and trainer lookup."""
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_trsr.trainer.trainer import DELRecTrainer, LLMTrainer, SafeCheckpointMixin, with_safe_checkpoints

LLMTRSRTrainer = LLMTrainer

__all__ = ["DELRecTrainer", "LLMTrainer", "LLMTRSRTrainer", "SafeCheckpointMixin", "get_trainer",
           "with_safe_checkpoints"]


def get_trainer(model_type, name):
    """Return the trainer class for ``name``, always with the plugin's safe checkpoint format.

    A plugin model may name its own trainer (``<Model>Trainer`` here); RecBole models get RecBole's
    trainer with :class:`SafeCheckpointMixin` mixed in.
    """
    own = globals().get(f"{name}Trainer")
    if own is not None:
        return own
    return with_safe_checkpoints(recbole_get_trainer(model_type, name))
