"""Trainers: the safe-checkpoint mixin for every model and the LLM trainer."""
from recbole_trsr.trainer.trainer import LLMTrainer, SafeCheckpointMixin, with_safe_checkpoints

LLMTRSRTrainer = LLMTrainer

__all__ = ["LLMTrainer", "LLMTRSRTrainer", "SafeCheckpointMixin", "with_safe_checkpoints"]
