"""Greedy batched text generation with a causal LM (the summarizer's LLM calls)."""
import logging

import torch

from recbole_trsr.prompt import chat_frame

logger = logging.getLogger(__name__)


class LLMGenerator:
    """Greedy batched generation: a list of prompt strings -> a list of completions."""

    def __init__(self, model, tokenizer, max_new_tokens=64, use_chat_template=True, max_prompt_tokens=1024):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.head, self.tail = chat_frame(tokenizer, use_chat_template, plain_tail="\nSummary:")
        self.n_calls = 0
        self.n_truncated = 0

    @torch.no_grad()
    def __call__(self, prompts):
        tok = self.tokenizer
        texts = [self.head + p + self.tail for p in prompts]
        side, cut_side = tok.padding_side, tok.truncation_side
        tok.padding_side = "left"
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True)
            over = int((enc["attention_mask"].sum(dim=1) > self.max_prompt_tokens).sum())
            if over:  # rare: tokenize again, cut to the budget (keeps the instruction at the end)
                tok.truncation_side = "left"
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True,
                          truncation=True, max_length=self.max_prompt_tokens)
        finally:
            tok.padding_side, tok.truncation_side = side, cut_side
        if over:
            self.n_truncated += over
            logger.warning("summarizer: %d prompts over %d tokens were cut (counted)", over, self.max_prompt_tokens)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(
            **{k: v.to(device) for k, v in enc.items()}, max_new_tokens=self.max_new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id, use_cache=True,
        )
        self.model.train(was_training)
        self.n_calls += len(prompts)
        new = out[:, enc["input_ids"].shape[1]:]
        return [tok.decode(row, skip_special_tokens=True).strip() for row in new]
