"""Conventional SR models (RecBole's SASRec, GRU4Rec, ...) inside an LLM model's run.

DELRec distils one (its *teacher*), and LLMTRSR's full-sort ranking can rerank one's top items
(``full_sort_retriever: {model, checkpoint}``). Models never build other models: they declare
what they need (``attach_sr_model`` / ``attach_retriever``) and the run gives it to them here,
loaded from a plugin checkpoint or, for DELRec without one, trained first on the run's own
training data. This module sits above config, registry and trainers, so none of them imports
another model's machinery.
"""
import logging

from recbole_trsr.config import TRSRConfig
from recbole_trsr.known_warnings import silenced
from recbole_trsr.model.retriever import CheckpointRetriever
from recbole_trsr.registry import get_model
from recbole_trsr.trainer import get_trainer
from recbole_trsr.trainer.checkpoint import architecture_overrides, load_checkpoint, restore_model_state

logger = logging.getLogger(__name__)

#: Settings an SR model shares with the run it serves (same split, protocol, seed and device).
SHARED_KEYS = ("seed", "device", "eval_args", "metrics", "topk", "valid_metric", "checkpoint_dir",
               "MAX_ITEM_LIST_LENGTH")


def load_sr_model(name, config, dataset, checkpoint, overrides=None):
    """``name`` built on ``dataset`` with the architecture and weights of ``checkpoint``, frozen."""
    state = load_checkpoint(checkpoint, config["device"])
    settings = {k: config[k] for k in SHARED_KEYS}
    settings.update(overrides or {})
    settings.update(architecture_overrides(state["config"], name))
    model = get_model(name)(TRSRConfig(name, config["dataset"], config_dict=settings), dataset).to(config["device"])
    restore_model_state(model, state["state_dict"])
    return _frozen(model)


def train_sr_model(name, config, train_data, valid_data, overrides=None):
    """Train ``name`` with RecBole's trainer on the run's own loaders; returns (frozen model, checkpoint)."""
    settings = {k: config[k] for k in SHARED_KEYS}
    settings.update(overrides or {})
    sr_config = TRSRConfig(name, config["dataset"], config_dict=settings)
    model = get_model(name)(sr_config, train_data._dataset).to(config["device"])
    trainer = get_trainer(sr_config["MODEL_TYPE"], name)(sr_config, model)
    with silenced("recbole-cuda-amp-gradscaler"):
        trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    restore_model_state(model, load_checkpoint(trainer.saved_model_file, config["device"])["state_dict"])
    return _frozen(model), trainer.saved_model_file


def attach_sr_models(config, model, train_data, valid_data):
    """Give ``model`` the SR models it declares; returns the checkpoint of one trained here, else None."""
    trained = None
    if hasattr(model, "attach_sr_model"):
        name, path = config["delrec_sr_model"], config["delrec_sr_checkpoint"]
        overrides = config["delrec_sr_config"] or {}
        if path:
            teacher = load_sr_model(name, config, train_data._dataset, path, overrides)
            logger.info(f"DELRec: SR model {name} loaded from {path}")
        else:
            logger.info(f"DELRec: training the SR model {name} first (no delrec_sr_checkpoint given)")
            teacher, trained = train_sr_model(name, config, train_data, valid_data, overrides)
            logger.info(f"DELRec: SR model checkpoint {trained} (set delrec_sr_checkpoint to reuse it)")
        model.attach_sr_model(teacher)
    spec = config["full_sort_retriever"]
    if hasattr(model, "attach_retriever") and isinstance(spec, dict):
        sr = load_sr_model(spec["model"], config, train_data._dataset, spec["checkpoint"])
        model.attach_retriever(CheckpointRetriever(sr, f"{spec['model']}:{spec['checkpoint']}"))
    return trained


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
