"""Trainers: the safe-checkpoint mixin for every model, the LLM trainers, and trainer lookup."""
import functools

from recbole.utils import get_trainer as recbole_get_trainer

from recbole_trsr.distributed.data_parallel import DataParallelMixin
from recbole_trsr.evaluation.ties import TieAwareEvaluation

from recbole_trsr.trainer.trainer import DELRecTrainer, LLMTrainer, SafeCheckpointMixin, with_safe_checkpoints

LLMTRSRTrainer = LLMTrainer

__all__ = ["DELRecTrainer", "LLMTrainer", "LLMTRSRTrainer", "SafeCheckpointMixin", "get_trainer",
           "with_safe_checkpoints"]


def get_trainer(model_type, name):
    """Return the trainer class for ``name``, always with the plugin's safe checkpoint format, its tie
    rule for the metrics (``evaluation/ties.py``) and data-parallel support (a no-op in one process).

    A plugin model may name its own trainer (``<Model>Trainer`` here); RecBole models get RecBole's
    trainer with :class:`SafeCheckpointMixin` mixed in.
    """
    own = globals().get(f"{name}Trainer")
    return data_parallel(own if own is not None else with_safe_checkpoints(recbole_get_trainer(model_type, name)))


@functools.lru_cache(maxsize=None)
def data_parallel(trainer_class):
    """``trainer_class`` with :class:`DataParallelMixin` outermost (so only rank 0 saves, adapters included)
    and :class:`TieAwareEvaluation` (its collector and evaluator replace RecBole's)."""
    return type(trainer_class.__name__, (DataParallelMixin, TieAwareEvaluation, trainer_class), {})
