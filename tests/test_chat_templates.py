"""Exactly one BOS in every prompt, the recommender's and the summarizer's, whatever the chat template
(Llama-3, Mistral and Gemma write ``{{ bos_token }}`` themselves; ChatML-style SmolLM2 and Qwen do not),
and over-long summarizer prompts cut inside their own text, never through the header."""
import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import AutoModelForCausalLM, AutoTokenizer

from recbole_trsr.llm.generation import LLMGenerator
from recbole_trsr.prompt import PromptBuilder, encode

TEMPLATES = {
    "llama-3": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "mistral": "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
    "gemma": ("{{ bos_token }}{% for m in messages %}<start_of_turn>user\n{{ m['content'] }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "chatml": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
}


def _tokenizer(tiny_llm, kind, adds_bos=True):
    """The tiny test tokenizer with a chat template of ``kind``; Llama-style: it adds BOS by default."""
    tok = AutoTokenizer.from_pretrained(tiny_llm)
    if adds_bos:
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
    tok.chat_template = TEMPLATES[kind]
    assert (tok("a")["input_ids"][0] == tok.bos_token_id) == adds_bos
    return tok


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_the_recommender_prompt_holds_one_bos_first(tiny_llm, kind):
    tok = _tokenizer(tiny_llm, kind)
    builder = PromptBuilder(tok, "Recent:\n{recent}\nItem: {candidate}", ["", "a drill", "a saw", "a file"])
    prefix, suffixes = builder.build("", [1, 2], [3])
    ids = prefix + suffixes[0]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_the_summarizer_prompt_holds_one_bos_and_keeps_its_frame_when_cut(tiny_llm, kind):
    tok = _tokenizer(tiny_llm, kind)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    frame = LLMGenerator(model, tok)
    head, tail = encode(tok, frame.frames.head), encode(tok, frame.frames.tail)
    limit = len(head) + len(tail) + 41
    gen = LLMGenerator(model, tok, max_new_tokens=2, max_prompt_tokens=limit)
    short, long = "Summarize: a drill and a saw.", "Items: " + ", ".join(f"drill number {i}" for i in range(60)) + ". Summarize them."
    rows = gen.frames([short, long])
    for row in rows:
        assert row.count(tok.bos_token_id) == 1 and row[0] == tok.bos_token_id
    assert len(rows[0]) < limit and len(rows[1]) == limit and gen.n_truncated == 1
    start = head if head[:1] == [tok.bos_token_id] else [tok.bos_token_id] + head
    assert rows[1][:len(start)] == start and rows[1][-len(tail):] == tail  # the frame is whole
    assert tok.decode(rows[1]).rstrip().endswith(tok.decode(tail).rstrip())
    assert "Summarize them." in tok.decode(rows[1])  # the instruction at the end of the text stays
    with pytest.raises(ValueError, match="leaves no room"):
        LLMGenerator(model, tok, max_prompt_tokens=len(start) + len(tail)).frames([long])


def test_a_tokenizer_without_default_bos_gets_the_templates_only(tiny_llm):
    tok = _tokenizer(tiny_llm, "llama-3", adds_bos=False)
    builder = PromptBuilder(tok, "Recent:\n{recent}\nItem: {candidate}", ["", "a drill", "a saw"])
    prefix, _ = builder.build("", [1], [2])
    assert prefix.count(tok.bos_token_id) == 1
    plain = _tokenizer(tiny_llm, "chatml", adds_bos=False)  # neither adds one: none is invented
    prefix, _ = PromptBuilder(plain, "Recent:\n{recent}\nItem: {candidate}", ["", "a drill", "a saw"]).build("", [1], [2])
    assert plain.bos_token_id not in prefix


def test_a_header_with_bos_keys_its_summaries_apart_from_the_double_bos_ones():
    from recbole_trsr.summarize.pipeline import summarizer_settings

    config = {k: None for k in ("summary_paradigm", "summary_fanin", "block_size", "summary_max_new_tokens",
                                "summary_prompt_max_tokens", "summary_item_max_tokens", "item_max_tokens",
                                "use_chat_template", "summary_item_fields", "summary_engine", "summary_temperature")}
    config.update({f"summary_{k}_template": "t" for k in ("block", "merge", "recurrent")})
    assert "frame" not in summarizer_settings(config, "m")  # SmolLM2-style: the keys of existing stores
    assert summarizer_settings(config, "m", header_has_bos=True)["frame"] == "one-bos"
