"""Model lookup: the plugin's models first, then RecBole's (trainers: ``recbole_trsr.trainer.get_trainer``)."""
import importlib

from recbole.utils import get_model as recbole_get_model

from recbole_trsr.compat import import_recbole_sequential_models

#: Plugin models: name -> module holding the class of the same name.
PLUGIN_MODELS = {
    "LLMTRSR": "recbole_trsr.model.llmtrsr",
    "DELRec": "recbole_trsr.model.delrec",
}


def get_model(name):
    """Return the model class called ``name``: a plugin model, else any RecBole model."""
    if name in PLUGIN_MODELS:
        return getattr(importlib.import_module(PLUGIN_MODELS[name]), name)
    import_recbole_sequential_models()  # before RecBole's lookup imports them with anomaly mode on
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError) as exc:
        # RecBole probes its exlib models last, importing lightgbm/xgboost on the way.
        hint = f" (RecBole's lookup failed with: {exc})" if isinstance(exc, ImportError) else ""
        raise ValueError(
            f"unknown model '{name}': not a recbole-trsr model ({', '.join(sorted(PLUGIN_MODELS))}) "
            f"nor a RecBole model (e.g. SASRec, GRU4Rec, BPR){hint}"
        ) from None
