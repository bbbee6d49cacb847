"""Memory levers (recbole_trsr/llm/memory.py): the same gradients with per-micro-batch backward and
with gradient checkpointing; 4- and 8-bit loading through bitsandbytes, and what reaches
``from_pretrained`` for a GPU."""
import pytest
import torch
from peft import LoraConfig, get_peft_model
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.llm import backbone as backbone_module
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.memory import checkpointing_enabled, prepare_for_training, quantization_config
from recbole_trsr.llm.scoring import AnswerScorer, Group
from recbole_trsr.model.llmtrsr import LLMTRSR

bnb = pytest.importorskip("bitsandbytes")  # in requirements.lock; the '.[quant]' extra elsewhere


def _adapted(tiny_llm, gradient_checkpointing=False, quantization=None, dropout=0.1):
    backbone = load_backbone(str(tiny_llm), dtype="float32", quantization=quantization)
    torch.manual_seed(0)
    model = get_peft_model(prepare_for_training(backbone.model, gradient_checkpointing),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"],
                                      task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # LoRA's B starts at 0: give both factors a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.train()
    return backbone, model


def _groups(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Group(torch.randint(5, vocab, (18 + 5 * n,), generator=g).tolist(),
                  [torch.randint(5, vocab, (2 + k % 3,), generator=g).tolist() for k in range(4)]) for n in range(3)]


def _same(a, b):
    """Equal up to fp32 summation order (micro-batches summed in another order): 1e-5 of the gradient's scale."""
    assert (a - b).abs().max() <= 1e-5 * b.abs().max(), (a - b).abs().max()


def _grads(model, scorer, groups, labels, backward_scale):
    model.zero_grad()
    torch.manual_seed(1)  # the same LoRA dropout masks in every way of computing the loss
    loss = scorer.answer_loss(groups, labels, backward_scale)
    if backward_scale is None:
        (loss * 0.5).backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["packed", "naive"])
def test_per_micro_batch_backward_and_checkpointing_give_the_same_gradients(tiny_llm, mode):
    backbone, model = _adapted(tiny_llm)
    tok = backbone.tokenizer
    groups = _groups(len(tok))
    labels = torch.randint(5, len(tok), (sum(len(g.suffixes) for g in groups),), generator=torch.Generator().manual_seed(2))
    scorer = AnswerScorer(model, 5, 6, tok.pad_token_id, mode=mode, pack_max_tokens=40, batch_max_tokens=60)
    assert len(list(scorer._batches(scorer._rows(groups)))) >= 3  # several micro-batches, or nothing is tested
    graph_loss, graph = _grads(model, scorer, groups, labels, None)
    each_loss, each = _grads(model, scorer, groups, labels, 0.5)
    assert each_loss == pytest.approx(graph_loss, rel=1e-6)
    assert all(g.abs().sum() > 0 for g in graph.values())
    for name in graph:
        _same(each[name], graph[name])

    _, checkpointed_model = _adapted(tiny_llm, gradient_checkpointing=True)
    assert checkpointing_enabled(checkpointed_model) and not checkpointing_enabled(model)
    scorer.model = checkpointed_model
    for backward_scale in (None, 0.5):
        _, ckpt = _grads(checkpointed_model, scorer, groups, labels, backward_scale)
        for name in graph:
            _same(ckpt[name], graph[name])


def test_the_models_loss_backpropagates_per_micro_batch_to_the_same_gradients(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, batch_max_tokens=300))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    model.train()
    interaction = next(iter(train))
    state = model.negatives.rng.bit_generator.state

    def grads(backward_scale):
        model.zero_grad()
        model.negatives.rng.bit_generator.state = state  # the same negatives both times
        torch.manual_seed(3)
        loss = model.calculate_loss(interaction, backward_scale=backward_scale)
        if backward_scale is None:
            loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    graph_loss, graph = grads(None)
    each_loss, each = grads(1.0)
    assert each_loss == pytest.approx(graph_loss, rel=1e-6)
    assert any(g.abs().sum() > 0 for g in graph.values())
    for name in graph:
        _same(each[name], graph[name])


def test_a_model_whose_loss_runs_no_backward_of_its_own_refuses_the_lever(data_root, tmp_path, tiny_llm):
    from recbole_trsr.trainer.trainer import LLMTrainer

    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm,
                                                                  backward_per_micro_batch=True))
    model = type("Plain", (torch.nn.Module,), {})()
    with pytest.raises(ValueError, match="backward_per_micro_batch"):
        LLMTrainer(config, model)


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_k_bit_backbones_load_train_and_are_keyed_apart(tiny_llm, quantization, layer):
    full = load_backbone(str(tiny_llm), dtype="float32")
    backbone, model = _adapted(tiny_llm, quantization=quantization, gradient_checkpointing=True)
    assert type(backbone.model.model.layers[0].self_attn.q_proj).__name__ == layer
    assert backbone.identity == full.identity + f"|{quantization}"  # summaries of other weights stored apart
    tok = backbone.tokenizer
    groups = _groups(len(tok))
    labels = torch.full((sum(len(g.suffixes) for g in groups),), 5)
    scorer = AnswerScorer(model, 5, 6, tok.pad_token_id, mode="packed", batch_max_tokens=60)
    loss, grads = _grads(model, scorer, groups, labels, 1.0)
    assert torch.isfinite(torch.tensor(loss)) and grads and all(g.abs().sum() > 0 for g in grads.values())
    with torch.no_grad():  # scores stay fp32 on a k-bit model too
        assert scorer.yes_no_logits(groups).dtype == torch.float32


def test_what_a_gpu_run_passes_to_from_pretrained(tiny_llm, monkeypatch):
    """No GPU here: the CUDA choices are pinned at the call into transformers."""
    seen = {}
    real = backbone_module.AutoModelForCausalLM.from_pretrained

    def spy(folder, **kwargs):
        seen.update(kwargs)
        return real(folder, dtype=torch.float32)  # a CPU model stands in for the quantized one

    monkeypatch.setattr(backbone_module.AutoModelForCausalLM, "from_pretrained", spy)
    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a) or self)
    load_backbone(str(tiny_llm), dtype="bfloat16", device="cuda:1", quantization="4bit")
    q = seen["quantization_config"]
    assert seen["device_map"] == {"": "cuda:1"} and seen["dtype"] == torch.bfloat16 and not moved
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    seen.clear()  # each rank's weights straight onto its GPU, no host copy first
    load_backbone(str(tiny_llm), dtype="bfloat16", device="cuda:1")
    assert "quantization_config" not in seen and seen["device_map"] == {"": "cuda:1"} and not moved
    load_backbone(str(tiny_llm), dtype="float32", device="cpu")
    assert moved == [("cpu",)]
    assert quantization_config("8bit", torch.bfloat16).load_in_8bit
    with pytest.raises(ValueError, match="llm_quantization must be one of"):
        quantization_config("3bit", torch.float32)


def test_a_run_logs_what_sizes_it(data_root, tmp_path, tiny_llm, capfd):
    import re

    from recbole_trsr.quick_start import run

    run("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, summary_paradigm="hierarchical"))
    log = capfd.readouterr().err  # RecBole's logger writes to the terminal and its log file
    speed = re.search(r"epoch 0 speed: ([\d.]+) examples/s, (\d+) tokens/s, peak RSS ([\d.]+) GiB", log)
    assert speed and float(speed[1]) > 0 and int(speed[2]) > 0 and float(speed[3]) > 0, log[-3000:]
    calls = re.search(r"summaries: (\d+) calls for (\d+) users in [\d.]+ s \(([\d.]+) calls/s\)", log)
    assert calls and int(calls[1]) > 0 and float(calls[3]) > 0


def test_the_memory_plan_traces_the_levers_and_counts_the_model(tiny_llm, capsys):
    from transformers import AutoModelForCausalLM

    from recbole_trsr import memory_plan

    run = dict(llm_dtype="float32", lora_layers=None, lora_target_modules=["q_proj", "v_proj"], lora_r=4, lora_alpha=8,
               lora_dropout=0.05, prompt_max_tokens=256, neg_num=4, item_max_tokens=16, train_batch_size=8,
               batch_max_tokens=256, pack_max_tokens=2048, summary_batch_max_tokens=1024, summary_max_new_tokens=16,
               summary_prompt_max_tokens=128, summary_paradigm="hierarchical",
               eval_args={"mode": {"valid": "uni19", "test": "uni19"}})
    p = memory_plan.plan(tiny_llm / "config.json", run)
    # the summarizer's largest batch: 12 rows of 64 + 16 positions of key/value buffers, and more
    assert memory_plan.summarizer_batches(run) == [(7, 128), (12, 64)]
    assert p["summarizing"] > 12 * 80 / 1024 * p["kv_cache"]
    # whether a summarizer shares the GPU is decided before any trace: the estimate path shows it
    server = memory_plan.plan(tiny_llm / "config.json", dict(run, summary_engine="server"), trace=False)
    assert server["summarizing"] is None and all(lv["summarize"] is None for lv in server["levers"])
    assert p["traced"] and p["shapes"][1][1] == [24] * 20  # one user's 1 + 19 candidates
    real = AutoModelForCausalLM.from_pretrained(tiny_llm)
    assert p["parameters"] == sum(t.numel() for t in real.parameters())
    none, micro, ckpt, int8, nf4 = p["levers"]
    assert none["weights"] == 4 * p["parameters"] and nf4["weights"] < int8["weights"] < none["weights"]
    lora = get_peft_model(real, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainable = [t for t in lora.parameters() if t.requires_grad]
    adam = 3 * 4 * sum(t.numel() for t in trainable) + 4 * len(trainable)  # weights, m, v, step counts
    labels = 8 * 5 * 8  # the batch's int64 labels
    assert none["state"] == adam + labels
    assert none["train_step"] > micro["train_step"] > ckpt["train_step"] > 0  # 8 prompts, 256-token micro-batches
    assert all(lv["peak"] >= max(lv["train"], lv["evaluate"], lv["summarize"]) for lv in p["levers"])
    estimate = memory_plan.plan(tiny_llm / "config.json", run, trace=False)
    assert not estimate["traced"] and [lv["train"] for lv in estimate["levers"]] == [lv["estimate_train"] for lv in p["levers"]]
    memory_plan.main(["--llm_path", str(tiny_llm), "--train_batch_size=2", "--workers=1"])
    out = capsys.readouterr().out
    assert "traced on fake tensors" in out and "24 GB: fits with none" in out
    assert memory_plan.fits(10 * 2 ** 30, 24) and not memory_plan.fits(21 * 2 ** 30, 24)  # 21 x 1.1 + 1 > 24


def test_the_gpu_check_runs_in_its_reduced_mode_on_cpu(tiny_llm, tmp_path):
    import json
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import gpu_check

    shape = tmp_path / "gpu" / "smollm2-shape"
    shape.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llm / name, shape / name)
    (tmp_path / "gpu" / "prompts.json").write_text(json.dumps([f"A user watched item {i}." for i in range(8)]))
    result = gpu_check.check(tmp_path / "out", reduced=True, gpu_dir=tmp_path / "gpu")
    assert result["device"] == "cpu" and all(v > 0 for v in result["summaries"].values())
    for levers in result["training"].values():
        assert set(levers) == {"today", "micro", "ckpt", "4bit"}
        assert all(r["steps_per_s"] > 0 and r["peak_gib"] > 0 for r in levers.values())
        traced = [levers[k]["traced_step_gib"] for k in ("today", "ckpt")]  # the plan's trace of each step
        assert traced[0] > traced[1] > 0
    assert result["scoring"]["kv"] > 0
    kv = result["scoring"]["kv_memory"]  # on CPU the trace is the allocator's count of the same scoring
    assert kv["measured_gib"] > 0 and abs(kv["traced_gib"] / kv["measured_gib"] - 1) <= 0.05, kv
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert written["training"] == result["training"] and "| kv |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_the_plan_reads_the_longest_prompts_the_dataset_makes(data_root, tmp_path, tiny_llm):
    from recbole_trsr import memory_plan

    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, train_batch_size=3,
                                                                  neg_num=2, summary_paradigm="none"))
    train_shapes, (eval_prefix, eval_suffixes) = memory_plan.dataset_prompt_shapes(config, 3, 2, 20)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    inter = train._dataset.inter_feat
    prefixes = sorted((len(model._group(u, p, [t]).prefix) for u, p, t in zip(
        inter["user_id"].tolist(), inter["history_position"].long().tolist(), inter["item_id"].tolist())), reverse=True)
    assert [p for p, _ in train_shapes] == prefixes[:3]  # the model's own prompts, longest first
    longest = max(len(s) for s in model._group(1, 0, list(range(1, train._dataset.item_num))).suffixes)
    assert all(s[1:] == [longest, longest] for _, s in train_shapes) and eval_suffixes == [longest] * 20
    p = memory_plan.plan(tiny_llm / "config.json", {k: config[k] for k in memory_plan.PLAN_KEYS},
                         shapes=(train_shapes, (eval_prefix, eval_suffixes)))
    assert p["traced"] and p["shapes"][0] == train_shapes


def test_traces_in_several_processes_give_the_same_plan(tiny_llm):
    from recbole_trsr import memory_plan

    run = dict(llm_dtype="float32", lora_layers=None, lora_target_modules=["q_proj", "v_proj"], lora_r=4, lora_alpha=8,
               lora_dropout=0.0, prompt_max_tokens=64, neg_num=2, item_max_tokens=8, train_batch_size=2,
               batch_max_tokens=96, pack_max_tokens=2048, summary_batch_max_tokens=256, summary_max_new_tokens=4,
               summary_prompt_max_tokens=32, summary_paradigm="hierarchical", eval_args={"mode": "uni9"})
    serial = memory_plan.plan(tiny_llm / "config.json", run)
    spawned = memory_plan.plan(tiny_llm / "config.json", run, workers=2)
    assert serial["traced"] and spawned["traced"] and spawned["workers"] == 2
    assert spawned["summarizing"] == serial["summarizing"] != serial["kv_cache"]  # traced, not the computed fallback
    assert spawned["levers"] == serial["levers"]
    assert serial["levers"][0]["train_step"] > serial["levers"][2]["train_step"]  # the levers differ: a real comparison
