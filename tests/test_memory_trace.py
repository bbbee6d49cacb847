"""The memory trace (recbole_trsr/llm/memory_trace.py) against the CPU allocator: a step traced on fake
tensors, with no weights, holds what the same real step holds at its peak, for every lever."""
import pytest
import torch
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.llm import memory_trace
from recbole_trsr.llm.adapters import lora_config
from recbole_trsr.model.llmtrsr import LLMTRSR
from recbole_trsr.trainer import get_trainer

LEVERS = {"none": dict(backward_per_micro_batch=False, gradient_checkpointing=False),
          "micro": dict(backward_per_micro_batch=True, gradient_checkpointing=False),
          "ckpt": dict(backward_per_micro_batch=True, gradient_checkpointing=True)}


def _wider(tiny_llm, folder):
    """The tiny model's tokenizer with a Llama of 4 layers x 256 (activations well above the allocator's
    small bookkeeping)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                 pad_token_id=tok.pad_token_id, max_position_embeddings=4096)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_the_trace_of_the_trainers_step_is_the_allocators_peak(data_root, tmp_path, tiny_llm, lever):
    llm = _wider(tiny_llm, tmp_path / "llm")
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, llm, batch_max_tokens=400, train_batch_size=6, lora_layers=3, **LEVERS[lever]))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "LLMTRSR")(config, model)
    model.train()
    interaction = next(iter(train))
    state = model.negatives.rng.bit_generator.state

    def real_step():  # the trainer's own forward/backward, then its optimizer step
        model.negatives.rng.bit_generator.state = state
        trainer._forward_backward(model.calculate_loss, interaction)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    real_step()  # the optimizer's state exists from here on, as in every later step
    real = memory_trace.allocator_peak(real_step)

    model.negatives.rng.bit_generator.state = state  # the same prompts, their lengths given to the trace
    groups = [model._group(u, p, [t] + model._sample_negatives(u, p)) for u, p, t in zip(
        interaction[model.USER_ID].tolist(), interaction["history_position"].long().tolist(),
        interaction[model.POS_ITEM_ID].tolist())]
    shapes = [(len(g.prefix), [len(s) for s in g.suffixes]) for g in groups]
    fake = memory_trace.fake_llm(model.llm.config, torch.float32, lora_config(config, 4),
                                 config["gradient_checkpointing"])
    labels = [model.yes_id] + [model.no_id] * model.neg_num
    traced = memory_trace.trace_training(
        fake, memory_trace.synthetic_groups(shapes, model.llm.config.vocab_size), labels * len(groups),
        dict(answer_ids=(model.yes_id, model.no_id), mode="packed", pack_max_tokens=config["pack_max_tokens"],
             batch_max_tokens=config["batch_max_tokens"]), config["backward_per_micro_batch"])
    assert real > 1e6  # activations dominate what is compared
    assert traced.step == pytest.approx(real, rel=0.05), (lever, traced.step, real)
    print(f"{lever}: traced {traced.step} bytes, allocator {real} bytes, ratio {traced.step / real:.4f}")
    trainable = [p for p in model.llm.parameters() if p.requires_grad]
    lora = sum(p.numel() * 4 for p in trainable)
    buffers = sum(b.numel() * b.element_size() for b in model.llm.buffers())
    # weights and buffers, LoRA, Adam's m and v and step count (an fp32 scalar a tensor), the labels (int64);
    # no gradients (zero_grad)
    assert traced.resident == (fake.weight_bytes + buffers + 3 * lora + 4 * len(trainable)
                               + 8 * len(labels) * len(groups))


def test_levers_order_and_evaluation_is_traced_too():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=4000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    settings = dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, lora_target_modules=["q_proj", "v_proj"], lora_layers=None)
    groups = memory_trace.synthetic_groups([(600, [20] * 5)] * 4, 4000)
    kw = dict(answer_ids=(5, 6), mode="packed", batch_max_tokens=700)
    steps = {}
    for name, lever in LEVERS.items():
        fake = memory_trace.fake_llm(config, torch.bfloat16, lora_config(settings, 4), lever["gradient_checkpointing"])
        steps[name] = memory_trace.trace_training(fake, groups, [5, 6, 6, 6, 6] * 4, kw,
                                                  lever["backward_per_micro_batch"]).step
    assert steps["none"] > 2 * steps["micro"] > 2 * steps["ckpt"] > 0
    evaluation = memory_trace.trace_evaluation(fake, groups[0], dict(kw, mode="kv"))
    assert 0 < evaluation.step < steps["ckpt"]


def test_the_live_byte_count_follows_real_tensors():
    live = memory_trace.LiveBytes()
    with live:
        a = torch.ones(1000)  # 4,000 bytes
        b = a.view(10, 100)  # a view: no new storage
        c = torch.zeros(500, dtype=torch.float64)
        assert live.current == 8000 and live.peak == 8000
        del a, b
        assert live.current == 4000
        live.reset_peak()
        d = c * 2
        assert live.peak == 8000
    del c, d
    assert live.current == 0


def test_the_fake_model_trains_what_the_real_one_trains():
    """The traced optimizer holds state for exactly the parameters a run trains, AdaLoRA's included (peft
    hands a meta model a trainable ``ranknum``; a run never trains it)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from recbole_trsr.llm.adapters import adalora_config, trains

    config = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    run = dict(adalora_init_r=4, adalora_target_r=2, lora_alpha=16, lora_dropout=0.0, lora_target_modules=["q_proj"])
    fake = memory_trace.fake_llm(config, torch.float32, adalora_config(run, 10)).model
    real = get_peft_model(AutoModelForCausalLM.from_config(config), adalora_config(run, 10))
    trained = lambda m: sorted(n for n, p in m.named_parameters() if p.requires_grad)  # noqa: E731
    assert trained(fake) == trained(real) == sorted(n for n, _ in real.named_parameters() if trains(n))
    assert any("lora_E" in n for n in trained(fake)) and not any("ranknum" in n for n in trained(fake))


def test_an_adalora_step_is_traced_as_it_runs():
    """DELRec's adapters (AdaLoRA): the trace against the allocator on a real step of the same model. AdaLoRA's
    ``ranknum`` must stay frozen on the meta model too (peft re-wraps it as trainable when it moves it off the
    CPU; traced that way, the step was 7% over: the gradient through its division keeps an activation per
    adapted layer, and Adam holds state for it)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from recbole_trsr.llm.adapters import adalora_config

    config = LlamaConfig(vocab_size=4000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    config._attn_implementation = "sdpa"
    run = dict(adalora_init_r=12, adalora_target_r=8, lora_alpha=16, lora_dropout=0.05,
               lora_target_modules=["q_proj", "v_proj"])
    groups = memory_trace.synthetic_groups([(300, [20] * 5)] * 3, 4000)
    labels = [5, 6, 6, 6, 6] * 3
    kw = dict(answer_ids=(5, 6), mode="packed", batch_max_tokens=700)
    traced = memory_trace.trace_training(memory_trace.fake_llm(config, torch.float32, adalora_config(run, 100)),
                                         groups, labels, kw, True)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(config), adalora_config(run, 100))
    model.config.use_cache = False
    real = memory_trace.measured_training(model, groups, labels, kw)
    assert real > 1e6 and abs(traced.step / real - 1) <= 0.01, (traced.step, real)


@pytest.mark.parametrize("settings", [dict(attention=None, key_layout="positions"), dict()], ids=["cuda-path", "cpu-path"])
def test_the_summarizers_decode_batch_is_traced_as_it_runs(settings):
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from recbole_trsr.llm.generation import LLMGenerator

    config = LlamaConfig(vocab_size=2000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    rows, prompt_tokens, new = 12, 90, 24
    settings = dict(settings, sync_every=new + 1)  # CUDA's: no host check within the traced steps
    generator = LLMGenerator(model, SimpleNamespace(pad_token_id=0, eos_token_id=1), max_new_tokens=new,
                             use_chat_template=False, share_prefix=False, drop_finished=False, **settings)
    ids = [[2 + (r * 7 + i) % 1990 for i in range(prompt_tokens)] for r in range(rows)]
    generator.generate_batch(ids, decode_steps=2)  # warm-up
    two_steps = memory_trace.allocator_peak(lambda: generator.generate_batch(ids, decode_steps=2))
    every_step = memory_trace.allocator_peak(lambda: generator.generate_batch(ids))
    traced = memory_trace.trace_summarizing(memory_trace.fake_llm(config, torch.float32), rows, prompt_tokens, new,
                                            settings)
    assert traced.step == pytest.approx(two_steps, rel=0.05)
    assert every_step <= two_steps * 1.05  # the later steps repeat the first ones' shapes: two hold the peak
    cache = 2 * 4 * 2 * 64 * 4 * rows * (prompt_tokens + new)  # k and v, layers, heads, head_dim, fp32
    assert traced.step > cache  # the buffers for every new token are in it


def _kv_evaluation(layers, real):
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=2000, hidden_size=256, intermediate_size=512, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=2)
    config._attn_implementation = "sdpa"
    group = memory_trace.synthetic_groups([(800, [12] * 40)], 2000)[0]
    kw = dict(answer_ids=(5, 6), mode="kv", batch_max_tokens=4096)
    if not real:
        return memory_trace.trace_evaluation(memory_trace.fake_llm(config, torch.float32), group, kw).step
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    scorer = memory_trace._scorer(model, kw)
    with torch.no_grad():
        return memory_trace.allocator_peak(lambda: scorer.yes_no_logits([group]))


def test_kv_scoring_holds_one_layers_candidate_keys_at_a_time():
    """Candidates scored against a shared 800-token prefix: the full-width keys (prefix + suffix per row) live
    for one layer's attention, so 8 layers hold about what 2 do (kept for every layer, 2.0x), and the
    trace is the allocator's peak."""
    two, eight = _kv_evaluation(2, real=False), _kv_evaluation(8, real=False)
    assert 0 < eight < 1.3 * two, (two, eight)
    real = _kv_evaluation(2, real=True)
    assert abs(two / real - 1) <= 0.05, (two, real)
