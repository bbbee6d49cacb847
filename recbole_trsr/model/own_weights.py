"""Checkpoints of the LLM models: only the model's own weights, never the base LLM."""
import torch


class OwnWeightsCheckpointMixin:
    """``checkpoint_state_dict`` / ``load_checkpoint_state_dict`` over ``own_weight_names()``
    (adapters, soft prompts): what :mod:`recbole_trsr.trainer.checkpoint` stores for the model."""

    def own_weight_names(self):
        raise NotImplementedError

    def checkpoint_state_dict(self):
        params = dict(self.named_parameters())
        return {n: params[n].detach().cpu().clone() for n in self.own_weight_names()}

    def load_checkpoint_state_dict(self, state_dict):
        params = dict(self.named_parameters())
        expected = set(self.own_weight_names())
        if set(state_dict) != expected:
            raise KeyError(f"checkpoint does not match {type(self).__name__}'s own weights: missing "
                           f"{sorted(expected - set(state_dict))[:3]}, unexpected {sorted(set(state_dict) - expected)[:3]}")
        with torch.no_grad():
            for name, tensor in state_dict.items():
                params[name].copy_(tensor)
