"""DELRec (Zhang et al., arXiv 2406.11156): distil a conventional SR model's patterns into soft
prompts, then fine-tune the LLM with AdaLoRA to recommend with them."""
import logging
import math
import warnings

import torch
from peft import get_peft_model
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from safetensors.torch import load_file, save_file

from recbole_trsr.data import HISTORY_POSITION_FIELD, ItemTextTable
from recbole_trsr.llm.adapters import adalora_config, is_adapter_parameter, trains
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.memory import prepare_for_training
from recbole_trsr.llm.scoring import AnswerScorer, Group
from recbole_trsr.known_warnings import silenced
from recbole_trsr.model.describe import OneLineDescription
from recbole_trsr.model.own_weights import OwnWeightsCheckpointMixin
from recbole_trsr.model.retriever import rerank_top_m, tie_order
from recbole_trsr.prompt import PromptBuilder


logger = logging.getLogger(__name__)


class DELRec(OneLineDescription, OwnWeightsCheckpointMixin, SequentialRecommender):
    """Soft prompts distilled from an SR model (stage 1), AdaLoRA-tuned LLM (stage 2).

    Stage 1 trains only ``soft_prompt`` (the LLM frozen) on Temporal Analysis (predict the
    held-out next item of a history) and Recommendation Pattern Simulating (predict the SR
    model's top item for that history). Stage 2 freezes the soft prompt and trains AdaLoRA
    adapters to generate the user's next item given the history and the SR model's top items.
    ``predict`` scores a candidate by the mean log-likelihood of its text as the answer: every
    candidate of RecBole's sampled protocol gets a comparable score without listing 100
    candidates in one prompt, and the user's prompt is computed once for all of them.
    The SR model is attached by the run (``recbole_trsr.sr_model.attach_sr_models``: loaded from
    ``delrec_sr_checkpoint``, or trained first when it is empty).
    """

    input_type = InputType.POINTWISE
    ATTACHED_MODELS = ("sr_model",)  # frozen, but part of what its scores depend on (evaluation journal key)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if not hasattr(dataset, "user_histories"):
            raise TypeError("DELRec needs recbole_trsr's dataset (run it through run_recbole_trsr)")
        self.histories = dataset.user_histories
        self.history_items = config["delrec_history_items"]
        self.sr_top_k = config["delrec_sr_top_k"]
        self.ta_weight, self.rps_weight = config["delrec_ta_weight"], config["delrec_rps_weight"]
        self.soft_len = config["soft_prompt_length"]
        self.full_sort_top_m = config["full_sort_top_m"]
        self.tie_order = tie_order(self.n_items, config["seed"])  # first-stage ties enter the top M in it
        self.llm_name, self.llm_quantization = config["llm_path"], config["llm_quantization"]
        self.sr_model = None
        self.stage = "recommend"

        backbone = load_backbone(config["llm_path"], config["trsr_cache_dir"], config["llm_dtype"], config["device"],
                                 config["llm_quantization"])
        item_texts = ItemTextTable.from_dataset(dataset)
        self.item_text_fallbacks = item_texts.n_fallback
        texts = item_texts.texts
        common = dict(item_max_tokens=config["item_max_tokens"], prompt_max_tokens=config["prompt_max_tokens"],
                      use_chat_template=config["use_chat_template"], list_slots=("history", "sr_items"), text_slots=(),
                      trim_slot="history", candidate_as_answer=True, soft_prompt_length=self.soft_len)
        self.prompts = PromptBuilder(backbone.tokenizer, config["delrec_prompt_template"], texts, **common)
        shared = dict(common, item_ids=self.prompts.item_ids)
        self.ta_prompts = PromptBuilder(backbone.tokenizer, config["delrec_ta_template"], **shared)
        self.rps_prompts = PromptBuilder(backbone.tokenizer, config["delrec_rps_template"], **shared)

        embeddings = backbone.model.get_input_embeddings().weight
        picks = torch.randint(0, embeddings.shape[0], (self.soft_len,), generator=torch.Generator().manual_seed(config["seed"]))
        self.soft_prompt = torch.nn.Parameter(embeddings[picks].detach().float().clone())

        steps = math.ceil(len(dataset) / config["train_batch_size"] / max(1, config["gradient_accumulation_steps"] or 1))
        adalora = adalora_config(config, steps * config["epochs"])
        with silenced("peft-is-gradient-checkpointing"):
            self.llm = get_peft_model(prepare_for_training(backbone.model, config["gradient_checkpointing"]), adalora)
        self.scorer = AnswerScorer(self.llm, 0, 0, backbone.tokenizer.pad_token_id, mode=config["scoring_mode"],
                                   pack_max_tokens=config["pack_max_tokens"], batch_max_tokens=config["batch_max_tokens"],
                                   soft_prompt=self.soft_prompt)
        self.global_step = 0
        self.skipped_ta = 0
        self.set_stage("recommend")

    # --- stages -------------------------------------------------------------------------
    def set_stage(self, stage):
        """``distill``: only the soft prompt trains; ``recommend``: only the adapters train."""
        if stage not in ("distill", "recommend"):
            raise ValueError(f"unknown DELRec stage {stage!r}")
        self.stage = stage
        for name, p in self.named_parameters():
            if name == "soft_prompt":
                p.requires_grad_(stage == "distill")
            elif name.startswith("llm.") and is_adapter_parameter(name):
                p.requires_grad_(stage == "recommend" and trains(name))
            else:
                p.requires_grad_(False)

    def attach_sr_model(self, sr_model):
        self.sr_model = sr_model.eval()
        for p in self.sr_model.parameters():
            p.requires_grad_(False)

    def after_optimizer_step(self):
        """AdaLoRA's rank budget update, once per optimizer step of stage 2."""
        if self.stage == "recommend":
            self.global_step += 1
            self.llm.base_model.update_and_allocate(self.global_step)

    # --- prompts ------------------------------------------------------------------------
    def _history(self, user, position):
        return self.histories.items_before(user, position)[-self.history_items:].tolist()

    @torch.no_grad()
    def _sr_top(self, interaction, k):
        if self.sr_model is None:
            raise RuntimeError("DELRec has no SR model attached (recbole_trsr.sr_model.attach_sr_models does it "
                               "in every run)")
        scores = self.sr_model.full_sort_predict(interaction).clone()
        scores[:, 0] = -torch.inf
        return scores.topk(k, dim=1).indices.tolist()

    def _rows(self, interaction):
        return interaction[self.USER_ID].tolist(), interaction[HISTORY_POSITION_FIELD].long().tolist()

    def distill_loss(self, interaction):
        """Stage 1: Temporal Analysis + Recommendation Pattern Simulating, soft prompt only."""
        users, positions = self._rows(interaction)
        sr_top1 = self._sr_top(interaction, 1)
        ta, rps = [], []
        for u, p, top in zip(users, positions, sr_top1):
            history = self._history(u, p)
            if len(history) >= 2:
                ta.append(Group(*self.ta_prompts.build(candidates=[history[-1]], history=history[:-1])))
            else:
                self.skipped_ta += 1  # one item: nothing to hold out as "next"
            rps.append(Group(*self.rps_prompts.build(candidates=[top[0]], history=history)))
        loss = -self.rps_weight * self.scorer.suffix_log_likelihood(rps).mean()
        if ta:
            loss = loss - self.ta_weight * self.scorer.suffix_log_likelihood(ta).mean()
        return loss

    def _groups(self, interaction, candidates_per_row):
        users, positions = self._rows(interaction)
        sr_items = self._sr_top(interaction, self.sr_top_k)
        rows_of = {}
        for row, key in enumerate(zip(users, positions)):
            rows_of.setdefault(key, []).append(row)
        groups, order = [], []
        for (u, p), rows in rows_of.items():
            cands = [c for r in rows for c in candidates_per_row[r]]
            groups.append(Group(*self.prompts.build(candidates=cands, history=self._history(u, p),
                                                    sr_items=sr_items[rows[0]])))
            order += rows
        return groups, order

    def calculate_loss(self, interaction):
        """Stage 2: negative mean log-likelihood of the target item's text."""
        if self.stage == "distill":
            return self.distill_loss(interaction)
        groups, _ = self._groups(interaction, [[t] for t in interaction[self.POS_ITEM_ID].tolist()])
        return -self.scorer.suffix_log_likelihood(groups).mean()

    def _likelihoods(self, interaction, candidates_per_row):
        """[rows, candidates] log-likelihood scores, in row order."""
        groups, order = self._groups(interaction, candidates_per_row)
        scores = self.scorer.suffix_log_likelihood(groups).view(len(order), -1)
        return torch.empty_like(scores).index_copy_(0, torch.tensor(order, device=scores.device), scores)

    @torch.no_grad()
    def predict(self, interaction):
        return self._likelihoods(interaction, [[i] for i in interaction[self.ITEM_ID].tolist()]).view(-1)

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """The SR model's top ``full_sort_top_m`` items, reranked by their likelihood as the answer."""
        return rerank_top_m(self.sr_model.full_sort_predict(interaction), self.full_sort_top_m,
                            lambda top: self._likelihoods(interaction, top.tolist()), f"SR model {type(self.sr_model).__name__}",
                            self.tie_order)

    def decision_counts(self):
        """Every logged, counted decision of this run (prompt cuts, text fallbacks, skipped TA examples)."""
        counts = {"item_text_fallback": self.item_text_fallbacks, "temporal_analysis_skipped_short_history": self.skipped_ta}
        for builder in (self.prompts, self.ta_prompts, self.rps_prompts):
            for key, n in builder.counters.items():
                counts[key] = counts.get(key, 0) + n
        return counts

    def own_weight_names(self):
        """What checkpoints hold: the soft prompt and the AdaLoRA weights."""
        return [n for n, _ in self.named_parameters()
                if n == "soft_prompt" or (n.startswith("llm.") and is_adapter_parameter(n))]

    def save_soft_prompt(self, path):
        """The stage-1 artifact: the soft prompt as a safetensors file (``load_soft_prompt`` reads it)."""
        save_file({"soft_prompt": self.soft_prompt.detach().cpu().contiguous()}, str(path))

    def load_soft_prompt(self, path):
        with torch.no_grad():
            self.soft_prompt.copy_(load_file(str(path))["soft_prompt"])

    def save_adapter(self, folder):
        """The AdaLoRA adapter as a peft folder, and the soft prompt beside it."""
        ranks = self.llm.peft_config["default"].rank_pattern or {}
        pruned = sum(not any(keep) for keep in ranks.values())
        with warnings.catch_warnings():
            # A module AdaLoRA pruned to rank 0 is saved as zero-sized tensors, which peft takes for
            # ungathered ZeRO-3/FSDP shards. They are not (the folder reloads, tests/test_delrec.py):
            # the warning would mislead, so it is replaced by the count below.
            warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
            self.llm.save_pretrained(folder)
        if pruned:
            logger.info("AdaLoRA adapter: %d of %d adapted modules were pruned to rank 0 (saved empty)",
                        pruned, len(ranks))
        self.save_soft_prompt(f"{folder}/soft_prompt.safetensors")
