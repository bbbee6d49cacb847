"""The explain command: one user's blocks, every summary made from them, the recent items, the prompt
and (with a checkpoint) the candidates ranked by P(Yes)."""
import pytest
import yaml

from conftest import DATASET, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.explain import explain_user, main
from recbole_trsr.quick_start import run


def first_user(config):
    data = create_dataset(TRSRConfig("LLMTRSR", DATASET, config_dict=config))
    return data.field2id_token[data.uid_field][1]


def test_explain_a_trained_users_summaries_and_candidates(data_root, tmp_path, tiny_llm, capsys):
    config = llm_config(data_root, tmp_path, tiny_llm)
    result = run("LLMTRSR", DATASET, config_dict=config)
    user = first_user(config)
    e = explain_user(user, DATASET, config_dict=config, checkpoint=result["checkpoint"], top=5)

    block, recent = config["block_size"], config["recent_items"]
    m = len(e["blocks"])
    assert e["position"] == e["history_length"] - 1 and m == (e["position"] - recent) // block and m > 1
    assert all(len(b) == block for b in e["blocks"])
    # No leakage: the summaries cover whole blocks that end where the verbatim recent items begin.
    assert e["recent_positions"] == [m * block, e["position"]] and len(e["recent"]) == e["position"] - m * block
    assert all(0 <= s["blocks"][0] < s["blocks"][1] <= m and s["text"] is not None for s in e["summaries"])
    assert sum(s["kind"] == "block" for s in e["summaries"]) == m  # hierarchical: every block summarized
    assert any(s["kind"] == "merge" and s["level"] >= 1 for s in e["summaries"])
    (root,) = [s for s in e["summaries"] if s["root"]]
    assert root["blocks"] == [0, m] and root["text"] == e["summary"]
    assert e["recent"][-1] in e["prompt"] and e["target"] not in e["recent"][-1:]
    # Candidates: the test's 1 + 19, ranked by P(Yes).
    p = [c["p_yes"] for c in e["candidates"]]
    assert e["n_candidates"] == 20 and len(p) == 5 and p == sorted(p, reverse=True) and all(0 < x < 1 for x in p)
    greater, ties = e["target_rank"]["greater"], e["target_rank"]["ties"]
    assert 0 <= greater < greater + ties <= 20
    if ties == 1:  # an untied target is listed exactly when it ranks in the top 5 shown
        assert (greater < 5) == any(c["target"] for c in e["candidates"])

    # The command line prints the same for a person.
    files = tmp_path / "explain.yaml"
    files.write_text(yaml.safe_dump(config))
    main([f"--dataset={DATASET}", f"--user={user}", f"--checkpoint={result['checkpoint']}", "--top=5",
          f"--config_files={files}"])
    shown = capsys.readouterr().out
    assert f"user {user}:" in shown and "block 0 (positions 0-3)" in shown and "<- the summary in the prompt" in shown
    assert "[merge, level 1]" in shown and "by P(Yes)" in shown and root["text"] in shown


def test_explain_recurrent_summaries_without_a_checkpoint(data_root, tmp_path, tiny_llm):
    config = llm_config(data_root, tmp_path, tiny_llm, summary_paradigm="recurrent")
    e = explain_user(first_user(config), DATASET, config_dict=config)
    m = len(e["blocks"])
    assert [s["blocks"] for s in e["summaries"]] == [[0, j + 1] for j in range(m)]  # one step per block
    assert [s["root"] for s in e["summaries"]] == [False] * (m - 1) + [True]
    assert "candidates" not in e


@pytest.mark.parametrize("paradigm,keys,start", [
    ("field_counts", {"summary_count_field": "class"}, "class of the {n} earlier items"),
    ("co_watched", {}, "Often chosen by users who chose the {n} earlier items: "),
])
def test_explain_shows_a_summary_no_llm_wrote(data_root, tmp_path, tiny_llm, paradigm, keys, start):
    from recbole_trsr.explain import format_explanation

    config = llm_config(data_root, tmp_path, tiny_llm, summary_paradigm=paradigm, **keys)
    e = explain_user(first_user(config), DATASET, config_dict=config)
    assert e["summaries"] == [] and e["summary"].startswith(start.format(n=len(e["blocks"]) * 4))
    assert f"[{paradigm}] the summary in the prompt:\n  {e['summary']}" in format_explanation(e)
