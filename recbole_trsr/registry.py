"""Model and trainer lookup: the plugin's classes first, then RecBole's."""
import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

#: Plugin models: name -> module holding the class of the same name.
PLUGIN_MODELS = {
    "LLMTRSR": "recbole_trsr.model.llmtrsr",
    "DELRec": "recbole_trsr.model.delrec",
}


def get_model(name):
    """Return the model class called ``name``: a plugin model, else any RecBole model."""
    if name in PLUGIN_MODELS:
        return getattr(importlib.import_module(PLUGIN_MODELS[name]), name)
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError) as exc:
        # RecBole probes its exlib models last, importing lightgbm/xgboost on the way.
        hint = f" (RecBole's lookup failed with: {exc})" if isinstance(exc, ImportError) else ""
        raise ValueError(
            f"unknown model '{name}': not a recbole-trsr model ({', '.join(sorted(PLUGIN_MODELS))}) "
            f"nor a RecBole model (e.g. SASRec, GRU4Rec, BPR){hint}"
        ) from None


def get_trainer(model_type, name):
    """Return the trainer class for ``name``, always with the plugin's safe checkpoint format.

    A plugin model may name its own trainer (``<Model>Trainer`` in ``recbole_trsr.trainer``);
    RecBole models get RecBole's trainer with :class:`SafeCheckpointMixin` mixed in.
    """
    from recbole_trsr import trainer as plugin_trainers

    own = getattr(plugin_trainers, f"{name}Trainer", None)
    if own is not None:
        return own
    return plugin_trainers.with_safe_checkpoints(recbole_get_trainer(model_type, name))
