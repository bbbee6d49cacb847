"""Precomputing the summaries a dataset's examples need, and looking them up by example.

:func:`precompute_summaries` is the one place ``summary_paradigm`` is dispatched: ``none``, the LLM
summarizer's ``hierarchical`` / ``recurrent``, or a reference summary no LLM writes (the research
diagnostics of ``recbole_trsr/analysis/``, reached by name through :data:`REFERENCE_SUMMARIES` so
that the product path never imports that package).
"""
import gc
import importlib
import logging

import torch

from recbole_trsr.data.dataset import training_positions
from recbole_trsr.data import ItemTextTable
from recbole_trsr.distributed import is_distributed
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.generation import LLMGenerator
from recbole_trsr.prompt import CutItemTexts, chat_frame, head_starts_with_bos
from recbole_trsr.summarize.engines import RayEngine
from recbole_trsr.summarize.segment import summary_block_count
from recbole_trsr.summarize.store import SummaryStore
from recbole_trsr.summarize.summarizer import MissingSummaries, Summarizer

logger = logging.getLogger(__name__)

STORE_VERSION = 1

#: ``summary_paradigm`` -> "module:function" building a reference summary (a research diagnostic) from
#: ``(config, dataset, item_text)``.
REFERENCE_SUMMARIES = {
    "field_counts": "recbole_trsr.analysis.field_counts:from_config",
    "co_watched": "recbole_trsr.analysis.co_watched:from_config",
}


class SummaryLookup:
    """(user, target position) -> preference summary text; "" when no block precedes the window."""

    def __init__(self, store, roots, recent_items, block_size):
        self.store = store
        self.roots = roots
        self.recent_items = recent_items
        self.block_size = block_size
        self.prompts_cut = 0  # summarizer prompts cut to summary_prompt_max_tokens

    @property
    def unreadable_records(self):
        return self.store.n_corrupt

    def blocks_covered(self, position):
        return summary_block_count(position, self.recent_items, self.block_size)

    def text(self, user, position):
        m = self.blocks_covered(position)
        if m == 0:
            return ""
        key = self.roots.get((int(user), m))
        if key is None or key not in self.store:
            raise KeyError(f"no precomputed summary for user {user} at position {position} ({m} blocks); "
                           "the example was not in the dataset the summaries were computed for")
        return self.store[key]


class NoSummaries:
    """``summary_paradigm: none``, the no-summary ablation (TALLRec-style: the prompt holds the recent
    items alone): every example's summary is empty and nothing is generated."""

    prompts_cut = 0
    unreadable_records = 0

    def text(self, user, position):
        return ""


def needed_positions(dataset):
    """Per user, the target positions the model will see: its training examples, plus the valid and
    test examples the dataset's splits hold (``eval_positions``, after ``test_users`` / ``valid_users``
    draws; see :class:`~recbole_trsr.data.dataset.TRSRSequentialDataset`)."""
    wanted = {u: set(ps) for u, ps in training_positions(dataset).items()}
    for u, ps in dataset.eval_positions.items():
        wanted.setdefault(u, set()).update(ps)
    return wanted


def summarizer_settings(config, backbone_identity, header_has_bos=False):
    settings = {
        "version": STORE_VERSION,
        "llm": backbone_identity,
        "paradigm": config["summary_paradigm"],
        "fanin": config["summary_fanin"],
        "block_size": config["block_size"],
        "templates": {k: config[f"summary_{k}_template"] for k in ("block", "merge", "recurrent")},
        "max_new_tokens": config["summary_max_new_tokens"],
        "max_prompt_tokens": config["summary_prompt_max_tokens"],
        "item_max_tokens": config["summary_item_max_tokens"] or config["item_max_tokens"],  # what blocks show
        "chat_template": config["use_chat_template"],
    }
    if config["summary_item_fields"]:  # only when set, so the stores made before the key existed still match
        settings["item_fields"] = list(config["summary_item_fields"])
    if header_has_bos:  # Llama-2/3, Mistral, Gemma: their prompts had two BOS before; SmolLM2's and Qwen's keep their keys
        settings["frame"] = "one-bos"
    return settings


def summarizer_path(config):
    """The summarizer's model: ``summary_llm_path``, or the recommender's ``llm_path`` when unset."""
    return config["summary_llm_path"] or config["llm_path"]


def writes_with_an_llm(config):
    return config["summary_paradigm"] not in ("none", *REFERENCE_SUMMARIES)


def block_item_texts(config, tokenizer, dataset, item_texts):
    """What a block prompt shows for an item: ``summary_item_fields`` (default: the recommender's
    fields) cut to ``summary_item_max_tokens`` (default: ``item_max_tokens``) tokens of the
    summarizer's own tokenizer."""
    if config["summary_item_fields"]:
        item_texts = ItemTextTable.from_dataset(dataset, fields=config["summary_item_fields"])
    return CutItemTexts(tokenizer, item_texts.texts, config["summary_item_max_tokens"] or config["item_max_tokens"])


def model_summaries(config, dataset, item_texts, load_recommender):
    """``(summaries, recommender backbone)`` for a model, in the order memory allows.

    A summarizer of its own (``summary_llm_path``, e.g. the paper's 30B beside a 7B recommender) is
    loaded, writes the missing summaries, and is freed before ``load_recommender()`` runs; otherwise
    the recommender's backbone writes them. ``summaries.block_texts_cut`` counts the block texts cut."""
    own = writes_with_an_llm(config) and summarizer_path(config) != config["llm_path"]
    if not own:
        recommender = load_recommender()
        blocks = block_item_texts(config, recommender.tokenizer, dataset, item_texts)
        summaries = precompute_summaries(config, recommender, blocks, dataset)
    else:
        summarizer = load_backbone(summarizer_path(config), config["trsr_cache_dir"],
                                   config["summary_llm_dtype"] or config["llm_dtype"], config["device"],
                                   config["summary_llm_quantization"])
        blocks = block_item_texts(config, summarizer.tokenizer, dataset, item_texts)
        summaries = precompute_summaries(config, summarizer, blocks, dataset)
        logger.info("summarizer %s freed before the recommender %s loads", summarizer.identity, config["llm_path"])
        del summarizer
        _free_device_memory(config["device"])
        recommender = load_recommender()
    summaries.block_texts_cut = blocks.n_cut
    return summaries, recommender


def _free_device_memory(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def precompute_summaries(config, backbone, item_text, dataset, generate=None):
    """Generate (or resume) every summary ``dataset``'s examples need; return a :class:`SummaryLookup`
    (:class:`NoSummaries` for ``summary_paradigm: none``; a reference summary for the diagnostics of
    :data:`REFERENCE_SUMMARIES`)."""
    if config["summary_paradigm"] == "none":
        logger.info("summary_paradigm: none: no summaries (the prompt shows the recent items only)")
        return NoSummaries()
    if "{summary}" not in config["prompt_template"]:
        # Summaries nobody reads would cost the summarizer's whole run.
        raise ValueError(f"summary_paradigm: {config['summary_paradigm']} but prompt_template has no {{summary}}"
                         " slot: add one, or set summary_paradigm: none")
    if config["summary_paradigm"] in REFERENCE_SUMMARIES:
        module, builder = REFERENCE_SUMMARIES[config["summary_paradigm"]].split(":")
        return getattr(importlib.import_module(module), builder)(config, dataset, item_text)
    # Several processes only read the store: one rank summarizing for hours while the others wait in
    # a collective would end the run after dist_timeout seconds.
    return _precompute(config, backbone, item_text, dataset, generate, generate_missing=not is_distributed())


def _precompute(config, backbone, item_text, dataset, generate, generate_missing=True):
    recent, block_size = int(config["recent_items"]), int(config["block_size"])
    header = chat_frame(backbone.tokenizer, config["use_chat_template"])[0]
    store = SummaryStore(config["trsr_cache_dir"], summarizer_settings(
        config, backbone.identity, header_has_bos=head_starts_with_bos(backbone.tokenizer, header)))
    if generate is None:
        generate = summary_engine(config, backbone)
    templates = {k: config[f"summary_{k}_template"] for k in ("block", "merge", "recurrent")}
    summarizer = Summarizer(generate, store, item_text, config["summary_paradigm"], block_size, templates,
                            config["summary_fanin"], config["summary_batch_size"], bool(config["summary_progress"]))
    histories = dataset.user_histories
    only = None
    if config["summary_users"]:  # e.g. the explain command: one user's summaries, not the dataset's
        known = set(dataset.field2id_token[dataset.uid_field][1:])
        missing = [str(u) for u in config["summary_users"] if str(u) not in known]
        if missing:
            raise ValueError(f"summary_users: {missing} not in dataset {config['dataset']} (after its filters and "
                             "subset_users)")
        only = {int(dataset.token2id(dataset.uid_field, str(u))) for u in config["summary_users"]}
    requests = []
    for user, positions in needed_positions(dataset).items():
        if only is not None and user not in only:
            continue
        prefixes = {summary_block_count(p, recent, block_size) for p in positions}
        requests.append((user, histories.items_before(user, histories.length(user)), prefixes))
    try:
        roots = summarizer.summarize(requests, generate_missing=generate_missing)
    except MissingSummaries as exc:
        raise MissingSummaries(exc.missing, exc.needed, exc.users, advice=(
            f" ({store.dir}): a run of several processes does not summarize (its ranks would wait on one past "
            f"dist_timeout). Precompute them first, with the same settings in one process: python -m "
            f"recbole_trsr.summarize --model={config['model']} --dataset={config['dataset']} [the run's other "
            f"--key=value and --config_files] (summary_workers / ray_address spread it over Ray actors)")) from None
    finally:
        summarizer.engine.close()
    lookup = SummaryLookup(store, roots, recent, block_size)
    lookup.written_by = backbone.identity  # which summarizer (explain.py shows it)
    lookup.prompts_cut = summarizer.engine.prompts_cut
    lookup.summarizer = summarizer  # its plan() tells which summaries make up an example's (explain.py)
    return lookup


def summary_engine(config, backbone):
    """The LLM in this process (``summary_workers: 1``), or ``summary_workers`` Ray actors (``ray_address``)."""
    kwargs = dict(max_new_tokens=config["summary_max_new_tokens"], use_chat_template=config["use_chat_template"],
                  max_prompt_tokens=config["summary_prompt_max_tokens"], decoder=config["summary_decoder"] or "loop",
                  batch_max_tokens=config["summary_batch_max_tokens"] or 24576)
    workers = int(config["summary_workers"] or 1)
    if workers <= 1:
        return LLMGenerator(backbone.model, backbone.tokenizer, **kwargs)  # Summarizer runs it in a LocalEngine
    dtype = str(next(backbone.model.parameters()).dtype).replace("torch.", "")
    return RayEngine(workers, backbone.path, config["trsr_cache_dir"], dtype, config["device"], kwargs,
                     address=config["ray_address"], quantization=backbone.quantization)
