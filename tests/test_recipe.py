"""The LLMTRSR recipe file is what the benchmark measured, and a template that cannot show a summary is refused."""
from pathlib import Path

import pytest
import yaml

from conftest import DATASET, base_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.summarize.pipeline import precompute_summaries

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "properties" / "recipe" / "LLMTRSR.yaml"


def _profile_rows(profile_name):
    profile = yaml.safe_load((ROOT / "benchmarks" / "profiles" / f"{profile_name}.yaml").read_text())
    return {row["name"]: row["config"] for row in profile["rows"]}


@pytest.mark.parametrize("profile,row,extra", [
    ("amazon-industrial", "LLMTRSR-no-summary-popularity-allusers", {}),
    ("amazon-industrial", "LLMTRSR-no-summary-popularity-allusers-fp32", {"llm_dtype": "float32"}),
    ("ml-100k", "LLMTRSR-no-summary-popularity-allusers", {}),
    ("ml-100k-plot", "LLMTRSR-no-summary", {}),
])
def test_the_benchmarked_rows_are_the_recipe_file(profile, row, extra):
    recipe = yaml.safe_load(RECIPE.read_text())
    assert _profile_rows(profile)[row] == dict(recipe, **extra)


def test_the_recipe_file_reaches_the_config(data_root, tmp_path):
    config = TRSRConfig("LLMTRSR", DATASET, config_file_list=[str(RECIPE)],
                        config_dict=base_config(data_root, tmp_path, llm_path="unused"))
    assert config["train_users"] is None and config["candidate_popularity"] is True
    assert config["summary_paradigm"] == "none" and "{summary}" not in config["prompt_template"]
    assert (config["block_size"], config["recent_items"], config["neg_num"], config["lora_layers"]) == (5, 3, 4, 10)


def test_a_summary_paradigm_with_no_summary_slot_is_refused():
    config = {"summary_paradigm": "hierarchical", "prompt_template": "Recent: {recent}\nItem: {candidate}"}
    with pytest.raises(ValueError, match="set summary_paradigm: none"):
        precompute_summaries(config, backbone=None, item_text=None, dataset=None)
