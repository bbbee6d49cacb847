"""DELRec with a tiny random Llama: stage 1 trains only the soft prompt, stage 2 only the adapter."""
import shutil
import warnings

import pytest
import torch
from recbole.data import data_preparation

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.model.delrec import DELRec
from recbole_trsr.quick_start import run
from recbole_trsr.registry import get_model
from recbole_trsr.trainer.checkpoint import load_checkpoint, save_checkpoint


def delrec_config(data_root, tmp_path, tiny_llm, **overrides):
    config = llm_config(data_root, tmp_path, tiny_llm, delrec_history_items=6, soft_prompt_length=4,
                        delrec_sr_top_k=3, delrec_sr_config={"epochs": 1}, lora_dropout=0.0)
    config.update(overrides)
    return config


@pytest.fixture
def built(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("DELRec", DATASET, config_dict=delrec_config(data_root, tmp_path, tiny_llm))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = DELRec(config, train._dataset)
    sr_config = TRSRConfig("SASRec", DATASET, config_dict={"hidden_size": 16, "inner_size": 32})
    model.attach_sr_model(get_model("SASRec")(sr_config, train._dataset))
    return config, model, train, valid


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _steps(model, batch, loss_fn, n=4, lr=0.05, after_step=None):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(n):
        loss = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step:
            after_step()
        losses.append(loss.item())
    return losses


def test_stage1_trains_only_the_soft_prompt(built):
    _, model, train, _ = built
    model.set_stage("distill")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["soft_prompt"]
    before = _snapshot(model)
    losses = _steps(model, next(iter(train)), model.distill_loss)
    after = _snapshot(model)
    assert not torch.equal(before["soft_prompt"], after["soft_prompt"])
    for name in before:
        if name != "soft_prompt":
            assert torch.equal(before[name], after[name]), name  # byte for byte
    assert losses[-1] < losses[0]


def test_stage2_trains_only_the_adapter(built):
    _, model, train, _ = built
    model.set_stage("recommend")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = _snapshot(model)
    _steps(model, next(iter(train)), model.calculate_loss)
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= set(trainable)
    assert "soft_prompt" not in changed


def test_predictions_finite_and_checkpoint_roundtrip(built, data_root, tmp_path, tiny_llm):
    config, model, train, valid = built
    model.eval()
    batch = next(iter(valid))[0]
    with torch.no_grad():
        model.soft_prompt.add_(0.1)
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.add_(0.05 * torch.randn_like(p))
    scores = model.predict(batch)
    assert scores.shape == (len(batch),) and torch.isfinite(scores).all()
    path = tmp_path / "delrec.pth"
    save_checkpoint(path, model, torch.optim.Adam([model.soft_prompt]), config, 0, 0, 0.0)
    state = load_checkpoint(path)["state_dict"]
    assert "soft_prompt" in state and all(k == "soft_prompt" or "lora_" in k or "ranknum" in k for k in state)

    config2 = TRSRConfig("DELRec", DATASET, config_dict=delrec_config(data_root, tmp_path, tiny_llm))
    fresh = DELRec(config2, train._dataset)
    fresh.attach_sr_model(model.sr_model)
    fresh.eval()
    assert not torch.equal(fresh.predict(batch), scores)
    fresh.load_checkpoint_state_dict(state)
    torch.testing.assert_close(fresh.predict(batch), scores, atol=0, rtol=0)


def test_delrec_end_to_end_trains_its_sr_model(data_root, tmp_path, tiny_llm):
    from recbole_trsr.quick_start import evaluate_checkpoint

    config = delrec_config(data_root, tmp_path, tiny_llm)
    result = run("DELRec", DATASET, config_dict=config)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    # its checkpoint, with the SR model the run trained, tests the same again in a fresh model
    with pytest.raises(ValueError, match="needs delrec_sr_checkpoint"):
        evaluate_checkpoint("DELRec", DATASET, result["checkpoint"], config_dict=config)
    again = evaluate_checkpoint("DELRec", DATASET, result["checkpoint"],
                                config_dict=dict(config, delrec_sr_checkpoint=result["sr_checkpoint"]))
    assert again["test_result"] == pytest.approx(dict(result["test_result"]), abs=1e-4)
    assert (again["per_user"]["greater"], again["per_user"]["ties"]) == (result["per_user"]["greater"],
                                                                       result["per_user"]["ties"])
    full = run("DELRec", DATASET, config_dict=delrec_config(
        data_root, tmp_path / "full", tiny_llm, full_sort_top_m=8,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}))
    assert 0.0 <= full["test_result"]["recall@10"] <= 1.0
    saved = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert any(n.startswith("SASRec-") for n in saved)  # stage 0 trained and saved the SR model
    adapter = next(p for p in (tmp_path / "saved").iterdir() if p.name.endswith(".adapter"))
    assert (adapter / "soft_prompt.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    stage1 = next(p for p in (tmp_path / "saved").iterdir() if p.name.endswith(".soft_prompt.safetensors"))
    assert stage1.stat().st_size < 10_000  # L x hidden floats, nothing of the LLM


def test_soft_prompt_file_roundtrip(built, tmp_path):
    _, model, _, _ = built
    with torch.no_grad():
        model.soft_prompt.mul_(3.0)
    model.save_soft_prompt(tmp_path / "sp.safetensors")
    expected = model.soft_prompt.detach().clone()
    with torch.no_grad():
        model.soft_prompt.zero_()
    model.load_soft_prompt(tmp_path / "sp.safetensors")
    assert torch.equal(model.soft_prompt, expected)


def test_compare_hands_the_trained_sasrec_to_delrec(data_root, tmp_path, tiny_llm):
    from recbole_trsr.quick_start import compare

    cfg = delrec_config(data_root, tmp_path, tiny_llm, hidden_size=16, inner_size=32)
    results, table = compare(["SASRec", "DELRec"], DATASET, config_dict=cfg)
    assert [r["model"] for r in results] == ["SASRec", "DELRec"] and "| DELRec |" in table
    sasrec_ckpts = [p for p in (tmp_path / "saved").iterdir() if p.name.startswith("SASRec-") and p.suffix == ".pth"]
    assert len(sasrec_ckpts) == 1  # DELRec reused it instead of training another
    log = next((tmp_path / "log" / "DELRec").glob("*.log")).read_text()
    assert f"loaded from {results[0]['checkpoint']}" in log


def test_adapter_folder_reloads_with_plain_peft(built, tmp_path, tiny_llm):
    from peft import PeftModel

    from recbole_trsr.llm.backbone import load_backbone

    _, model, train, _ = built
    model.set_stage("recommend")
    # AdaLoRA's budget update runs after each step, as in the trainer
    _steps(model, next(iter(train)), model.calculate_loss, n=3, after_step=model.after_optimizer_step)
    model.eval()
    ranks = model.llm.peft_config["default"].rank_pattern
    assert ranks and not all(all(keep) for keep in ranks.values())  # the budget pruned some ranks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save_adapter(tmp_path / "delrec.adapter")
    assert not [w for w in caught if "invalid shape" in str(w.message)]  # rank-0 modules are not broken shards
    base = load_backbone(str(tiny_llm), dtype="float32").model
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "delrec.adapter"))
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, model.llm(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_another_sr_model_never_reads_an_old_evaluation_journal(data_root, tmp_path, tiny_llm, monkeypatch):
    """DELRec's SR model is frozen, so its weights are not among the trainable ones; the journal of a
    killed evaluation (kept here by not discarding it) must still be named after it."""
    from recbole_trsr.evaluation.journal import ScoreJournal

    checkpoints = [run("SASRec", DATASET, config_dict=llm_config(data_root, tmp_path / f"sr{lr}", tiny_llm, learning_rate=lr,
                                                                 hidden_size=16, inner_size=32, n_layers=1))["checkpoint"]
                   for lr in (0.01, 0.002)]
    reused = []
    monkeypatch.setattr(ScoreJournal, "discard", lambda self: reused.append(self.reused))
    teacher = tmp_path / "teacher.pth"  # one path, as a user retraining their SR model in place has

    def evaluate(checkpoint):  # no training: the same DELRec weights (seeded) beside either SR model
        shutil.copyfile(checkpoint, teacher)
        run("DELRec", DATASET, config_dict=delrec_config(data_root, tmp_path, tiny_llm, epochs=0, delrec_stage1_epochs=0,
                                                         delrec_sr_checkpoint=str(teacher)))
        return reused[-1]
    assert evaluate(checkpoints[0]) == 0
    assert evaluate(checkpoints[0]) > 0  # the same SR model: the journal serves the run again
    assert evaluate(checkpoints[1]) == 0  # another SR model at the same path scores every batch anew
