"""Entry points: :func:`run` (one model, RecBole's result dict), :func:`compare` (a table)."""
import logging
import os
import time

from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.distributed import gather_objects, is_distributed, is_main_process
from recbole_trsr.known_warnings import quiet_known_log_records, silenced
from recbole_trsr.progress import resolve_progress
from recbole_trsr.distributed.data_parallel import gather_lists, weights_digest
from recbole_trsr.distributed.launch import check_batch, is_multi_process, launch_settings, spawn
from recbole_trsr.evaluation import PerUserRecorder, fix_eval_candidates, fix_full_ranking
from recbole_trsr.evaluation.ties import check_metrics
from recbole_trsr.sr_model import attach_sr_models
from recbole_trsr.trainer import get_trainer

METRIC_COLUMNS = ("recall", "mrr", "ndcg")


def run(model, dataset, config_file_list=None, config_dict=None, argv=None, saved=True,
        nproc=None, world_size=None, ip=None, port=None, offset=None):
    """Train and test ``model`` (a name, or a model class as RecBole's ``Config`` takes) on ``dataset``
    like RecBole's ``run_recbole``.

    ``nproc`` / ``world_size`` / ``ip`` / ``port`` / ``offset`` (arguments, config keys or
    ``--key=value``) mean what they mean in RecBole's ``run``: with ``nproc`` > 1 or ``world_size``
    > 1 the run is spawned over that many data-parallel processes and rank 0's result is returned
    (``None`` on a machine that does not hold rank 0); ``rank_weights`` then lists each rank's
    trainable-weights digest (all equal, or the run fails).

    Returns RecBole's result dict (``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``) plus ``model``, ``wall_time_s`` and ``checkpoint``
    (and ``sr_checkpoint`` when DELRec trained its SR model first).
    ``argv`` holds ``--key=value`` overrides (highest priority); sys.argv is never read here.
    ``per_user`` holds each test user's outcome (see :class:`PerUserRecorder`), for confidence
    intervals and paired comparisons. Sampled evaluation candidates depend only on ``seed`` and the
    user (:class:`FixedCandidatesSampler`), so every model run with the same data settings is
    ranked against the same negatives.
    """
    started = time.perf_counter()
    quiet_known_log_records()
    given = dict(nproc=nproc, world_size=world_size, ip=ip, port=port, offset=offset)
    config_dict = dict(config_dict or {}, **{k: v for k, v in given.items() if v is not None})
    config = TRSRConfig(model, dataset, config_file_list, config_dict, argv)
    check_metrics(config["metrics"])  # before the data, the summaries and the training
    settings = launch_settings(config)
    if "local_rank" not in config_dict and is_multi_process(settings):
        check_batch(config["train_batch_size"], settings)
        return spawn(run, model, dataset, config_file_list, config_dict, argv, saved, settings)
    init_seed(config["seed"], config["reproducibility"])
    _reset_root_logger()
    if is_main_process():
        init_logger(config)  # other ranks log errors to stderr only: one log file per run
    else:
        logging.basicConfig(level=logging.ERROR)
    logger = logging.getLogger()
    resolve_progress(config)
    logger.info(config)

    train_data, valid_data, test_data, net = _prepare(config)
    train_set = train_data._dataset
    trained = config["epochs"] != 0
    result = {"model": config["model"], "checkpoint": None,
              "trained_on": {"examples": len(train_set) if trained else 0,
                             "users": int(train_set.inter_feat[train_set.uid_field].unique().numel()) if trained else 0}}
    if config["summarize_only"]:
        logger.info(set_color("summarize_only", "yellow") + ": summaries are precomputed, skipping training")
        result["wall_time_s"] = time.perf_counter() - started
        return result

    sr_checkpoint = attach_sr_models(config, net, train_data, valid_data)
    if sr_checkpoint:
        result["sr_checkpoint"] = sr_checkpoint
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    if config["resume"] and str(config["resume"]).lower() not in ("false", "none", "0") \
            and not getattr(trainer, "supports_resume", False):
        raise ValueError(f"resume: {config['model']} has no resumable training here (the LLM models' trainers "
                         "do; RecBole's baselines retrain in minutes): run it without resume")
    with silenced("recbole-cuda-amp-gradscaler"):
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    recorder = PerUserRecorder(trainer, config["USER_ID_FIELD"], max(config["topk"])).attach()
    if config["epochs"] == 0:
        logger.info(set_color("epochs: 0", "yellow") + ": no training, no checkpoint: testing the untrained model")
        saved = False
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    if hasattr(net, "decision_counts"):
        result["decisions"] = net.decision_counts()
        logger.info(set_color("decisions", "yellow") + f" (truncations, fallbacks, skips): {result['decisions']}")
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result.update(
        best_valid_score=best_valid_score,
        valid_score_bigger=config["valid_metric_bigger"],
        best_valid_result=best_valid_result,
        test_result=test_result,
        checkpoint=trainer.saved_model_file if saved else None,
        per_user=gather_lists(recorder.result()),
        wall_time_s=time.perf_counter() - started,
    )
    if getattr(trainer, "state_saves", None):
        result["state_saves"] = {"count": len(trainer.state_saves), "path": str(trainer.state_path),
                                 "seconds": [s for s, _ in trainer.state_saves], "bytes": [b for _, b in trainer.state_saves]}
    if is_distributed():
        digests = gather_objects(weights_digest(net))
        if len(set(digests)) > 1:
            raise RuntimeError(f"the ranks' trainable weights diverged: digests {digests}")
        result["rank_weights"] = digests
    return result


def _prepare(config):
    """Dataset, RecBole's three loaders (evaluation candidates fixed per user) and the model."""
    logger = logging.getLogger()
    with silenced("recbole-read-only-array", "recbole-pandas-inplace", "recbole-numpy-array-wrap"):
        data = create_dataset(config)
        logger.info(data)
        train_data, valid_data, test_data = data_preparation(config, data)
    fix_eval_candidates(config["seed"], valid_data, test_data, seen_items=data.seen_items)
    fix_full_ranking(valid_data, test_data, seen_items=data.seen_items)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = config.model_class(config, train_data._dataset).to(config["device"])  # a name or a class was given
    logger.info(net)
    return train_data, valid_data, test_data, net


def evaluate_checkpoint(model, dataset, checkpoint, config_file_list=None, config_dict=None, argv=None, split="test"):
    """Evaluate the weights of ``checkpoint`` (written by :func:`run`) on ``dataset``'s ``split``
    ("test" or "valid", the one to choose settings on), in this process, with the same data
    settings; returns ``{"test_result", "per_user"}`` (the result of that split)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
    config = TRSRConfig(model, dataset, config_file_list, config_dict, argv)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data, net = _prepare(config)
    if config["model"] == "DELRec" and not config["delrec_sr_checkpoint"]:
        raise ValueError("evaluating a DELRec checkpoint needs delrec_sr_checkpoint: the SR model its run used "
                         "(run() returns it as 'sr_checkpoint' when it trained one)")
    attach_sr_models(config, net, train_data, valid_data)
    return evaluate_weights(config, net, valid_data if split == "valid" else test_data, checkpoint)


def evaluate_weights(config, net, data, checkpoint):
    """Load ``checkpoint``'s weights into ``net`` and evaluate it on ``data`` (one of :func:`_prepare`'s
    loaders); returns ``{"test_result", "per_user"}``."""
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    recorder = PerUserRecorder(trainer, config["USER_ID_FIELD"], max(config["topk"])).attach()
    result = trainer.evaluate(data, load_best_model=True, model_file=str(checkpoint))
    return {"test_result": result, "per_user": recorder.result()}


def compare(models, dataset, config_file_list=None, config_dict=None, argv=None, k=10):
    """Run each model on the same dataset, split and protocol; return (results, markdown table).

    A config file path containing ``{model}`` is per model: it is formatted with the model's
    name and used only where that file exists (e.g. ``properties/demo/{model}.yaml``).
    """
    results, checkpoints = [], {}
    for m in models:
        files = [f.format(model=m) for f in config_file_list or []]
        files = [f for f in files if os.path.isfile(f) or f in (config_file_list or [])]
        results.append(run(m, dataset, files, _reuse_sr_checkpoint(m, dataset, files, config_dict, argv, checkpoints), argv))
        checkpoints[m] = results[-1]["checkpoint"]
    return results, format_table(results, k)


def _reuse_sr_checkpoint(model, dataset, files, config_dict, argv, checkpoints):
    """DELRec in a comparison distils the SR model trained earlier in the same comparison (same
    split and data), unless a checkpoint is configured; otherwise it trains its own."""
    if model != "DELRec":
        return config_dict
    config = TRSRConfig(model, dataset, files, config_dict, argv)
    if config["delrec_sr_checkpoint"] or not checkpoints.get(config["delrec_sr_model"]):
        return config_dict
    return dict(config_dict or {}, delrec_sr_checkpoint=checkpoints[config["delrec_sr_model"]])


def format_table(results, k=10, n_boot=2000):
    """Markdown: each model's test recall/MRR/NDCG@k with 95% bootstrap CIs over test users, then
    each model's paired difference from the first one (same users, same candidates), what it
    trained on and its wall time. Without per-user outcomes (a run that did not test) only means."""
    from recbole_trsr.evaluation import report

    names = [f"{m}@{k}" for m in METRIC_COLUMNS]
    rows = [dict(r, name=r["model"]) for r in results if r.get("per_user")]
    if len(rows) == len(results) and rows:
        summary = report.summarize(rows, rows[0]["name"], names, [k], n_boot=n_boot)
        return report.markdown(summary, names, [f"ndcg@{k}", f"recall@{k}"])
    lines = ["| model | " + " | ".join(names) + " | wall time (s) |", "|" + "---|" * (len(names) + 2)]
    for r in results:
        test = r.get("test_result") or {}
        cells = [f"{test[n]:.4f}" if n in test else "n/a" for n in names]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['wall_time_s']:.1f} |")
    return "\n".join(lines)


def main(argv):
    """The command line of ``run_recbole_trsr.py`` (RecBole's conventions, see its docstring)."""
    import argparse

    parser = argparse.ArgumentParser(description="Run recbole-trsr or RecBole models (RecBole's command line).")
    parser.add_argument("--model", "-m", default="LLMTRSR", help="model name, or a comma-separated list to compare")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help='space-separated YAML files, e.g. "a.yaml b.yaml"')
    args, _ = parser.parse_known_args(argv)
    own = ("--model", "-m", "--dataset", "-d", "--config_files")
    overrides = [a for a in argv if a.split("=")[0] not in own]
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    models = [m for m in args.model.split(",") if m]
    if len(models) == 1:
        run(models[0], args.dataset, config_files, argv=overrides)
        return
    _, table = compare(models, args.dataset, config_files, argv=overrides)
    print(table)


def _reset_root_logger():
    # RecBole's init_logger uses logging.basicConfig, which is a no-op once the root logger
    # has handlers: without this, a second run in the same process logs to the first's file.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
