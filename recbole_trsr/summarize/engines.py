"""Where summary generation runs: in this process, or on Ray actors (a local Ray or a cluster); the
OpenAI-compatible server engine has its own module (:mod:`recbole_trsr.summarize.server`).

An engine takes the batches of one depth (independent calls) and yields ``(index, texts)`` as each
batch finishes, in any order; the :class:`~recbole_trsr.summarize.summarizer.Summarizer` writes each
finished batch to the store at once, so the store (on the driver) stays the single writer and an
interrupted run keeps every batch that came back.
"""
import logging

from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.generation import LLMGenerator

logger = logging.getLogger(__name__)


class LocalEngine:
    """Batches run one after another through ``generate`` (a list of prompts -> a list of texts)."""

    def __init__(self, generate):
        self.generate = generate
        self._cut_before_close = 0

    @property
    def prompts_cut(self):
        return getattr(self.generate, "n_truncated", self._cut_before_close)

    def map(self, batches):
        for index, batch in enumerate(batches):
            yield index, self.generate(batch)

    def close(self):
        # Let go of the model: a summarizer of its own is freed before the recommender loads.
        self._cut_before_close, self.generate = self.prompts_cut, None


class LazyEngine:
    """An engine built by ``make()`` on the first batch: a run whose summaries are all stored loads no
    summarizer, starts no actor and asks no server."""

    def __init__(self, make):
        self.make, self.engine = make, None
        self._cut = 0

    @property
    def prompts_cut(self):
        return self.engine.prompts_cut if self.engine is not None else self._cut

    @property
    def calls_per_batch(self):
        return getattr(self._built(), "calls_per_batch", None)

    def _built(self):
        if self.engine is None:
            made = self.make()
            self.engine = made if hasattr(made, "map") else LocalEngine(made)
        return self.engine

    def map(self, batches):
        return self._built().map(batches)

    def close(self):
        if self.engine is not None:
            self.engine.close()
            self._cut, self.engine = self.engine.prompts_cut, None


class _SummaryActor:
    """A Ray actor holding its own copy of the summarizer LLM."""

    def __init__(self, llm_path, cache_dir, dtype, device, generator_kwargs, quantization=None):
        backbone = load_backbone(llm_path, cache_dir, dtype, device, quantization)
        self.generate = LLMGenerator(backbone.model, backbone.tokenizer, **generator_kwargs)

    def run(self, index, prompts):
        before = self.generate.n_truncated
        return index, self.generate(prompts), self.generate.n_truncated - before


class RayEngine:
    """``workers`` Ray actors, each with its own LLM (one GPU each on a CUDA device). Batches go to the
    actors round-robin; results come back as they finish. ``address``: ``None`` starts a local Ray
    (or joins the one this process already has), ``"auto"`` or ``"ray://host:10001"`` joins a cluster."""

    def __init__(self, workers, llm_path, cache_dir, dtype, device, generator_kwargs, address=None, quantization=None):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("summary_workers > 1 runs on Ray: pip install 'recbole-trsr[ray]' "
                              "(or pip install 'ray>=2.31')") from exc
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"ignore_reinit_error": True}))
        gpus = 1 if str(device).startswith("cuda") else 0
        actor = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1)(_SummaryActor)
        # On a GPU actor Ray sets CUDA_VISIBLE_DEVICES to its own GPU: it sees it as cuda:0.
        where = "cuda" if gpus else "cpu"
        self.actors = [actor.remote(llm_path, cache_dir, dtype, where, generator_kwargs, quantization)
                       for _ in range(int(workers))]
        self.prompts_cut = 0
        logger.info("summaries on %d Ray actors (%s each)", len(self.actors), "1 GPU" if gpus else "1 CPU")

    def map(self, batches):
        pending = [self.actors[i % len(self.actors)].run.remote(i, b) for i, b in enumerate(batches)]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            index, texts, cut = self.ray.get(done[0])
            self.prompts_cut += cut
            yield index, texts

    def close(self):
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
