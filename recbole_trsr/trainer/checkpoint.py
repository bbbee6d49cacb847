"""The plugin's checkpoint format: plain tensors and numbers only, read with ``weights_only=True``.

RecBole 1.2.1 pickles its whole ``Config`` into every checkpoint, so torch >= 2.6's safe
``torch.load`` refuses its own files. Rather than unpickling arbitrary objects again, the
plugin's trainers write checkpoints without any pickled object and read them back with
torch's safe loader; nothing in the plugin ever calls ``torch.load(weights_only=False)``.
A model that defines ``checkpoint_state_dict()`` / ``load_checkpoint_state_dict()`` (the LLM
models: adapter and other trainable weights only) stores just that instead of its full state.
"""
import os

import torch
import yaml

FORMAT = "recbole-trsr/1"
_PRIMITIVES = (str, int, float, bool, type(None))


def plain_config(config):
    """The config's values that are plain data (safe to store and to load with weights_only)."""

    def plain(value):
        if isinstance(value, _PRIMITIVES):
            return True
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return False

    return {k: v for k, v in config.final_config_dict.items() if plain(v)}


def architecture_overrides(stored_config, model_name):
    """From a checkpoint's stored config, the keys that shape ``model_name``'s weights: those of
    its model YAMLs (RecBole's and the plugin's) and MAX_ITEM_LIST_LENGTH."""
    from recbole_trsr import PROPERTIES_DIR

    recbole_yaml = os.path.join(os.path.dirname(__import__("recbole").__file__), "properties", "model", f"{model_name}.yaml")
    keys = {"MAX_ITEM_LIST_LENGTH"}
    for path in (recbole_yaml, PROPERTIES_DIR / "model" / f"{model_name}.yaml"):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                keys |= set(yaml.safe_load(f) or {})
    return {k: stored_config[k] for k in keys if k in stored_config}


def model_state(model):
    """The weights a checkpoint of ``model`` holds."""
    if hasattr(model, "checkpoint_state_dict"):
        return model.checkpoint_state_dict()
    return model.state_dict()


def restore_model_state(model, state_dict):
    """Load weights written by :func:`model_state` into ``model`` (strictly)."""
    if hasattr(model, "load_checkpoint_state_dict"):
        model.load_checkpoint_state_dict(state_dict)
    else:
        model.load_state_dict(state_dict)


def save_checkpoint(path, model, optimizer, config, epoch, cur_step, best_valid_score):
    """Write a checkpoint that ``torch.load(..., weights_only=True)`` can read."""
    state = {
        "format": FORMAT,
        "config": plain_config(config),
        "epoch": int(epoch),
        "cur_step": int(cur_step),
        "best_valid_score": float(best_valid_score),
        "state_dict": model_state(model),
        "other_parameter": model.other_parameter(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save_checkpoint`, never unpickling objects."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"{path} is not a recbole-trsr checkpoint that can be read safely ({exc.__class__.__name__}). "
            "Checkpoints written by plain RecBole pickle their Config; re-train the model with "
            "run_recbole_trsr.py to get a checkpoint in the safe format."
        ) from exc
    if state.get("format") != FORMAT:
        raise RuntimeError(f"{path}: unknown checkpoint format {state.get('format')!r}, expected {FORMAT!r}")
    return state
