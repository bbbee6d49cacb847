"""Trainers: the safe-checkpoint mixin for every model and the LLM trainer."""
from recbole_trsr.trainer.trainer import DELRecTrainer, LLMTrainer, SafeCheckpointMixin, with_safe_checkpoints

LLMTRSRTrainer = LLMTrainer

__all__ = ["DELRecTrainer", "LLMTrainer", "LLMTRSRTrainer", "SafeCheckpointMixin", "with_safe_checkpoints"]
