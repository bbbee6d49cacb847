"""LLM-TRSR (Zheng et al., WWW 2024): block summaries + a LoRA-tuned LLM answering Yes/No."""
import torch
from peft import get_peft_model
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_trsr.data import HISTORY_POSITION_FIELD, ItemTextTable
from recbole_trsr.data.item_text import popularity_levels
from recbole_trsr.data.negatives import TrainingNegatives
from recbole_trsr.llm.adapters import lora_config
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.memory import prepare_for_training
from recbole_trsr.llm.scoring import AnswerScorer, Group
from recbole_trsr.known_warnings import silenced
from recbole_trsr.model.describe import OneLineDescription
from recbole_trsr.model.own_weights import OwnWeightsCheckpointMixin
from recbole_trsr.model.retriever import build_retriever, rerank_top_m, tie_order
from recbole_trsr.prompt import PromptBuilder, answer_token_id
from recbole_trsr.summarize.pipeline import model_summaries
from recbole_trsr.summarize.segment import recent_window


def prompt_builder(config, dataset, tokenizer, item_texts):
    """The recommender's :class:`PromptBuilder` for ``config`` (the memory plan builds the same prompts)."""
    notes = None
    if config["candidate_popularity"]:
        notes = [f" (popularity: {level})" if level else "" for level in popularity_levels(dataset.train_item_users)]
    return PromptBuilder(tokenizer, config["prompt_template"], item_texts.texts, item_max_tokens=config["item_max_tokens"],
                         summary_max_tokens=config["summary_max_tokens"], prompt_max_tokens=config["prompt_max_tokens"],
                         use_chat_template=config["use_chat_template"], candidate_notes=notes)


class LLMTRSR(OneLineDescription, OwnWeightsCheckpointMixin, SequentialRecommender):
    """Text-rich sequential recommendation with an LLM recommender.

    Each example's prompt holds the precomputed summary of the user's history before its
    recent window, the recent items verbatim, and one candidate; the score is log P("Yes")
    from the answer position (restricted to {Yes, No}). Training is SFT on "Yes" for the
    target and "No" for ``neg_num`` sampled items, through LoRA adapters only.
    """

    input_type = InputType.POINTWISE
    ATTACHED_MODELS = ("retriever",)  # frozen, but part of what its scores depend on (evaluation journal key)
    supports_backward_per_micro_batch = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if not hasattr(dataset, "user_histories"):
            raise TypeError("LLMTRSR needs recbole_trsr's dataset (run it through run_recbole_trsr / recbole_trsr.quick_start)")
        self.recent_items = config["recent_items"]
        self.block_size = config["block_size"]
        self.neg_num = config["neg_num"]
        neg_popular_num = config["neg_popular_num"] or 0
        if not 0 <= neg_popular_num <= self.neg_num:
            raise ValueError(f"neg_popular_num={neg_popular_num} must be between 0 and neg_num={self.neg_num}")
        self.full_sort_top_m = config["full_sort_top_m"]
        self.tie_order = tie_order(self.n_items, config["seed"])  # first-stage ties enter the top M in it
        self.llm_name, self.llm_quantization = config["llm_path"], config["llm_quantization"]
        self.histories = dataset.user_histories
        self.negatives = TrainingNegatives(self.n_items, dataset.train_item_users, self.neg_num - neg_popular_num,
                                           neg_popular_num, config["seed"])

        item_texts = ItemTextTable.from_dataset(dataset)
        self.item_text_fallbacks = item_texts.n_fallback
        self.summaries, backbone = model_summaries(config, dataset, item_texts, lambda: load_backbone(
            config["llm_path"], config["trsr_cache_dir"], config["llm_dtype"], config["device"],
            config["llm_quantization"]))
        self.prompts = prompt_builder(config, dataset, backbone.tokenizer, item_texts)

        lora = lora_config(config, backbone.model.config.num_hidden_layers)
        with silenced("peft-is-gradient-checkpointing"):
            self.llm = get_peft_model(prepare_for_training(backbone.model, config["gradient_checkpointing"]), lora)
        self.yes_id = answer_token_id(backbone.tokenizer, config["answer_yes"])
        self.no_id = answer_token_id(backbone.tokenizer, config["answer_no"])
        if self.yes_id == self.no_id:
            raise ValueError("answer_yes and answer_no start with the same token")
        self.scorer = AnswerScorer(self.llm, self.yes_id, self.no_id, backbone.tokenizer.pad_token_id,
                                   mode=config["scoring_mode"], pack_max_tokens=config["pack_max_tokens"],
                                   batch_max_tokens=config["batch_max_tokens"])
        self.retriever = build_retriever(config["full_sort_retriever"], dataset)

    def _group(self, user, position, candidates):
        start, end = recent_window(position, self.recent_items, self.block_size)
        recent = self.histories.items_before(user, end)[start:]
        prefix, suffixes = self.prompts.build(self.summaries.text(user, position), recent, candidates)
        return Group(prefix, suffixes)

    def _sample_negatives(self, user, position):
        # Only what the user had seen up to this target: excluding later items (the valid and test
        # targets among them) would tell training which items the user picks in the future.
        try:
            return self.negatives.draw(set(self.histories.items_before(user, position + 1).tolist()))
        except ValueError as e:
            raise ValueError(f"user {user}: {e}") from e

    def calculate_loss(self, interaction, backward_scale=None):
        """SFT loss: "Yes" for the target, "No" for each negative. With ``backward_scale``
        (``backward_per_micro_batch``), each micro-batch is backpropagated as it is computed."""
        users = interaction[self.USER_ID].tolist()
        positions = interaction[HISTORY_POSITION_FIELD].long().tolist()
        targets = interaction[self.POS_ITEM_ID].tolist()
        groups = [self._group(u, p, [t] + self._sample_negatives(u, p))
                  for u, p, t in zip(users, positions, targets)]
        labels = torch.tensor([self.yes_id] + [self.no_id] * self.neg_num, device=self.device).repeat(len(groups))
        return self.scorer.answer_loss(groups, labels, backward_scale)

    def _score(self, users, positions, items):
        """The answer's log-odds ``logit(Yes) - logit(No)`` for each (user, position, item) row, rows of
        one user scored together: monotone in P(Yes | Yes or No) = sigmoid(score), and unlike
        ``log_softmax(...)[Yes]`` it never rounds to 0 for a confident answer (margins past ~14 in fp32)."""
        rows_of = {}
        for row, key in enumerate(zip(users, positions)):
            rows_of.setdefault(key, []).append(row)
        groups = [self._group(u, p, [items[r] for r in rows]) for (u, p), rows in rows_of.items()]
        order = torch.tensor([r for rows in rows_of.values() for r in rows])
        logits = self.scorer.yes_no_logits(groups).float()
        scores = logits[:, 0] - logits[:, 1]
        return torch.empty_like(scores).index_copy_(0, order.to(scores.device), scores)

    @torch.no_grad()
    def predict(self, interaction):
        return self._score(interaction[self.USER_ID].tolist(), interaction[HISTORY_POSITION_FIELD].long().tolist(),
                           interaction[self.ITEM_ID].tolist())

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID].tolist()
        positions = interaction[HISTORY_POSITION_FIELD].long().tolist()

        def score_top(top):
            m = top.shape[1]
            rows = [(u, p) for u, p in zip(users, positions) for _ in range(m)]
            return self._score([u for u, _ in rows], [p for _, p in rows], top.flatten().tolist()).view_as(top)

        if self.retriever is None:
            raise RuntimeError("full_sort_retriever names a checkpoint that was never attached "
                               "(recbole_trsr.sr_model.attach_sr_models does it in every run)")
        return rerank_top_m(self.retriever(interaction), self.full_sort_top_m, score_top, f"retriever {self.retriever.name}",
                            self.tie_order)

    def attach_retriever(self, retriever):
        """The full-sort first stage named by ``full_sort_retriever: {model, checkpoint}``."""
        self.retriever = retriever

    def decision_counts(self):
        """Every logged, counted decision of this run (prompt cuts, text fallbacks, cache repairs)."""
        return {**self.prompts.counters, "item_text_fallback": self.item_text_fallbacks,
                "summary_store_unreadable_records": self.summaries.unreadable_records,
                "summary_prompts_cut": self.summaries.prompts_cut,
                "summary_item_text_truncated": getattr(self.summaries, "block_texts_cut", 0)}

    def own_weight_names(self):
        """What checkpoints hold: the LoRA weights."""
        return [n for n, _ in self.named_parameters() if "lora_" in n]

    def save_adapter(self, folder):
        """Write the LoRA adapter as a peft folder (``PeftModel.from_pretrained(base, folder)``)."""
        self.llm.save_pretrained(folder)
