"""Precomputing the summaries a dataset's examples need, and looking them up by example.

:func:`precompute_summaries` is the one place ``summary_paradigm`` is dispatched: ``none``, the LLM
summarizer's ``hierarchical`` / ``recurrent``, or a reference summary no LLM writes (the research
diagnostics of ``recbole_trsr/analysis/``, reached by name through :data:`REFERENCE_SUMMARIES` so
that the product path never imports that package).
"""
import gc
import hashlib
import importlib
import logging

import torch

from recbole_trsr.data.dataset import training_positions
from recbole_trsr.data import ItemTextTable
from recbole_trsr.distributed import is_distributed
from recbole_trsr.llm.backbone import backbone_identity, load_backbone, load_tokenizer
from recbole_trsr.llm.generation import LLMGenerator
from recbole_trsr.prompt import CutItemTexts, chat_frame, head_starts_with_bos
from recbole_trsr.summarize.engines import LazyEngine, LocalEngine, RayEngine
from recbole_trsr.summarize.server import ServerEngine, api_key
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


ENGINES = ("local", "ray", "server")


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
    if (config["summary_engine"] or "local") == "server":
        settings["server"] = {"model": config["summary_server_model"], "prompt": config["summary_server_prompt"]}
    sampling = sampling_settings(config)
    if sampling:  # greedy (the default) adds nothing: greedy stores keep their keys
        settings["sampling"] = sampling
    return settings


def sampling_settings(config):
    """``{temperature, top_p, seed}`` when the summarizer samples, ``{}`` when it is greedy."""
    temperature = float(config["summary_temperature"] or 0.0)
    if temperature <= 0:
        return {}
    return {"temperature": temperature, "top_p": float(config["summary_top_p"] or 1.0), "seed": config["summary_seed"]}


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


class SummarizerSource:
    """A summarizer that is not the recommender's loaded backbone: its tokenizer (block texts, prompt
    frames) and identity (the store's key) are read without its weights, which :meth:`load` reads only
    when a call must be made (never when every summary is stored, nor for ``summary_engine: server``)."""

    model = None

    def __init__(self, config):
        self.path = summarizer_path(config)
        self.quantization = config["summary_llm_quantization"]
        self.dtype = config["summary_llm_dtype"] or config["llm_dtype"]
        self.cache_dir, self.device = config["trsr_cache_dir"], config["device"]
        self.tokenizer = load_tokenizer(self.path, self.cache_dir)
        if (config["summary_engine"] or "local") == "server":
            # The served weights are the server's: the store is keyed on the served model's name
            # (summarizer_settings' "server") and the tokenizer that frames the prompts.
            self.identity = f"server-tokenizer:{backbone_identity(self.path, self.cache_dir)}"
        else:
            self.identity = backbone_identity(self.path, self.cache_dir, self.quantization)

    def load(self):
        return load_backbone(self.path, self.cache_dir, self.dtype, self.device, self.quantization)


def model_summaries(config, dataset, item_texts, load_recommender):
    """``(summaries, recommender backbone)`` for a model, in the order memory allows.

    A summarizer of its own (``summary_llm_path``, e.g. the paper's 30B beside a 7B recommender; or an
    inference server, ``summary_engine: server``) writes the missing summaries, and its weights (if this
    process loaded them) are freed before ``load_recommender()`` runs; otherwise the recommender's
    backbone writes them. ``summaries.block_texts_cut`` counts the block texts cut."""
    engine = config["summary_engine"] or "local"
    own = writes_with_an_llm(config) and (summarizer_path(config) != config["llm_path"] or engine != "local")
    if not own:
        recommender = load_recommender()
        blocks = block_item_texts(config, recommender.tokenizer, dataset, item_texts)
        summaries = precompute_summaries(config, recommender, blocks, dataset)
    else:
        source = SummarizerSource(config)
        blocks = block_item_texts(config, source.tokenizer, dataset, item_texts)
        summaries = precompute_summaries(config, source, blocks, dataset)
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
    settings = summarizer_settings(config, backbone.identity,
                                   header_has_bos=head_starts_with_bos(backbone.tokenizer, header))
    shard = parse_shard(config["summary_shard"], config["summary_shards"])
    if shard and not config["summarize_only"]:
        raise ValueError(f"summary_shard={shard[0]} of summary_shards={shard[1]} makes one shard's summaries only: "
                         "run it with python -m recbole_trsr.summarize, then train on the merged store without "
                         "summary_shard")
    store = SummaryStore(config["trsr_cache_dir"], settings, part=shard and f"shard-{shard[0]}-of-{shard[1]}")
    if generate is None:
        generate = LazyEngine(lambda: summary_engine(config, backbone))
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
        if only is not None and user not in only or shard and not in_shard(dataset, user, shard):
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
    lookup.written_by = written_by(config, backbone)  # which summarizer (explain.py shows it)
    lookup.prompts_cut = summarizer.engine.prompts_cut
    lookup.summarizer = summarizer  # its plan() tells which summaries make up an example's (explain.py)
    return lookup


def written_by(config, backbone):
    if (config["summary_engine"] or "local") == "server":
        return f"{config['summary_server_model']} on {config['summary_server_url']} ({config['summary_server_prompt']})"
    return backbone.identity


def parse_shard(index, count):
    """``summary_shard`` (i) and ``summary_shards`` (N) -> ``(i, N)``; ``None`` when both are unset. Two
    integer keys, not one ``i/N`` string: RecBole's config evaluates ``0/4`` to the number 0.0."""
    if index is None and count is None:
        return None
    if isinstance(index, bool) or isinstance(count, bool) or not isinstance(index, int) \
            or not isinstance(count, int):
        raise ValueError(f"summary_shard must be an integer i and summary_shards an integer N, 0 <= i < N "
                         f"(e.g. --summary_shard=0 --summary_shards=4), not {index!r} and {count!r}")
    if not 0 <= index < count:
        raise ValueError(f"summary_shard={index} of summary_shards={count}: i must be in [0, N)")
    return index, count


def in_shard(dataset, user, shard):
    """Shard ``i`` of ``N`` takes the users whose raw id hashes to ``i``: the same users on every machine,
    whatever order the dataset holds them in. A summary two shards' users share is made by both (same
    key; the store keeps one)."""
    token = dataset.id2token(dataset.uid_field, user)
    return int(hashlib.sha1(str(token).encode()).hexdigest()[:8], 16) % shard[1] == shard[0]


def summary_engine(config, backbone):
    """Where the summarizer's calls run (``summary_engine``): ``local``, this process's LLM; ``ray``,
    ``summary_workers`` Ray actors (``ray_address``); ``server``, an OpenAI-compatible server
    (:mod:`recbole_trsr.summarize.server`). ``backbone`` is the recommender's loaded one or a
    :class:`SummarizerSource`."""
    engine = config["summary_engine"] or "local"
    if engine not in ENGINES:
        raise ValueError(f"summary_engine must be one of {ENGINES}, not {engine!r}")
    workers = int(config["summary_workers"] or 1)
    if workers > 1 and engine != "ray":
        raise ValueError(f"summary_workers={workers} runs that many Ray actors: set summary_engine: ray")
    if sampling_settings(config) and engine != "server":
        raise ValueError("summary_temperature > 0 samples on summary_engine: server; the local and Ray decoders are "
                         "greedy")
    if engine == "server":
        return ServerEngine(
            config["summary_server_url"], config["summary_server_model"], backbone.tokenizer,
            prompt_mode=config["summary_server_prompt"] or "tokens", max_new_tokens=config["summary_max_new_tokens"],
            max_prompt_tokens=config["summary_prompt_max_tokens"], use_chat_template=config["use_chat_template"],
            concurrency=config["summary_server_concurrency"] or 32, timeout=config["summary_server_timeout"] or 600,
            retries=config["summary_server_retries"] if config["summary_server_retries"] is not None else 5,
            backoff=config["summary_server_backoff"] or 1.0, sampling=sampling_settings(config),
            api_key=api_key(config))
    kwargs = dict(max_new_tokens=config["summary_max_new_tokens"], use_chat_template=config["use_chat_template"],
                  max_prompt_tokens=config["summary_prompt_max_tokens"], decoder=config["summary_decoder"] or "loop",
                  batch_max_tokens=config["summary_batch_max_tokens"] or 24576)
    if engine == "ray":
        dtype = backbone.dtype if backbone.model is None else str(next(backbone.model.parameters()).dtype)
        return RayEngine(workers, backbone.path, config["trsr_cache_dir"], str(dtype).replace("torch.", ""),
                         config["device"], kwargs, address=config["ray_address"], quantization=backbone.quantization)
    if backbone.model is None:  # a summarizer of its own: its weights now, freed when the engine closes
        loaded = backbone.load()
        logger.info("summarizer %s loaded (freed before the recommender loads)", loaded.identity)
        return LocalEngine(LLMGenerator(loaded.model, loaded.tokenizer, **kwargs))
    return LLMGenerator(backbone.model, backbone.tokenizer, **kwargs)  # Summarizer runs it in a LocalEngine
