"""A comparison a reviewer can trust: bootstrap statistics, identical candidates, per-user records."""
import numpy as np
import pytest

from conftest import DATASET, base_config, llm_config
from recbole_trsr.evaluation import PROTOCOL, bootstrap_ci, paired_bootstrap, per_user_metrics
from recbole_trsr.evaluation import report
from recbole_trsr.quick_start import run


def test_per_user_metrics_without_ties():
    m = per_user_metrics(greater=[0, 2, 10, 9], ties=[1, 1, 1, 1], ks=[3, 10])
    assert m["recall@3"].tolist() == [1, 1, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 0, 1]
    assert m["mrr@3"].tolist() == pytest.approx([1, 1 / 3, 0, 0])
    assert m["ndcg@10"].tolist() == pytest.approx([1, 0.5, 0, 1 / np.log2(11)])


def test_bootstrap_ci_covers_the_known_mean_at_the_stated_rate():
    """Bernoulli(0.3) samples of 400 users: the 95% interval holds 0.3 in about 95% of 200 repetitions,
    and its width is close to the normal approximation's 2 * 1.96 * sqrt(p(1-p)/n)."""
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for rep in range(200):
        values = (rng.random(400) < 0.3).astype(float)
        mean, low, high = bootstrap_ci(values, n_boot=500, seed=rep)
        assert low <= mean <= high
        covered += low <= 0.3 <= high
        widths.append(high - low)
    assert 0.89 <= covered / 200 <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / 400), rel=0.1)


def test_paired_bootstrap_finds_a_real_difference_and_no_fake_one():
    rng = np.random.default_rng(1)
    difficulty = rng.random(600)  # shared per-user variation cancels in a paired test
    base = (difficulty < 0.4).astype(float)
    better = np.where(rng.random(600) < 0.15, 1.0, base)  # +~0.09 on the same users
    d, low, high, p = paired_bootstrap(better, base, n_boot=2000)
    assert low > 0 and p < 0.01 and d == pytest.approx(better.mean() - base.mean())
    noise = np.where(rng.random(600) < 0.02, 1 - base, base)  # flips ~2% both ways: no real difference
    d, low, high, p = paired_bootstrap(noise, base, n_boot=2000)
    assert low <= 0 <= high and report.verdict(low, high) == "no difference"
    with pytest.raises(ValueError):
        paired_bootstrap(base[:10], base[:11])


def _row(name, users, ranks, candidates, **extra):
    """A recorded row whose positives stand at ``ranks`` (0: below the top 10), without ties."""
    greater = [r - 1 if r else 10 for r in ranks]
    return {"name": name, "per_user": {"users": users, "greater": greater, "ties": [1] * len(ranks),
                                       "candidates": candidates, "k": 10, "protocol": PROTOCOL}, **extra}


def test_a_row_recorded_under_the_old_tie_rule_is_refused_and_read_only_for_its_shift():
    old = {"name": "old", "per_user": {"users": [1, 2], "ranks": [3, 0], "candidates": ["x", "y"], "k": 10}}
    with pytest.raises(report.OldProtocol, match="evaluate it again"):
        report.outcomes(old)
    greater, ties = report.legacy_outcomes(old)
    assert greater.tolist() == [2, 10] and ties.tolist() == [1, 1]


def test_report_refuses_rows_ranked_against_other_candidates():
    a = _row("A", [1, 2, 3], [1, 0, 2], ["x", "y", "z"])
    b = _row("B", [3, 1, 2], [1, 1, 0], ["z", "x", "y"])  # same candidates, other order of users
    assert report.check_same_candidates([a, b]) == [1, 2, 3]
    with pytest.raises(report.CandidateMismatch):
        report.check_same_candidates([a, _row("C", [1, 2, 3], [1, 1, 1], ["x", "y", "other"])])
    with pytest.raises(report.CandidateMismatch):
        report.check_same_candidates([a, _row("D", [1, 2], [1, 1], ["x", "y"])])
    summary = report.summarize([a, b], "A", ["recall@10"], [10], n_boot=200)
    assert summary["rows"][1]["metrics"]["recall@10"][0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("n", [3, 10, 14, 21, 40])
def test_every_row_of_a_chart_gets_its_own_colour(n):
    assert len(set(report.bar_colors(n))) == n


def test_a_chart_too_crowded_for_distinct_colours_is_refused():
    with pytest.raises(ValueError, match="41 rows in one chart; at most 40"):
        report.bar_colors(41)


def test_every_model_is_ranked_against_the_same_candidates(data_root, tmp_path, tiny_llm):
    """SASRec, GRU4Rec, Pop and LLMTRSR in one process (each leaves numpy's global RNG elsewhere, the
    LLM uses another eval_batch_size and trains on 2 users only, Pop is a general model whose splits
    hold no item lists): identical candidate sets per user, and per-user ranks that average to
    RecBole's own metrics."""
    shared = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni19"},
              "topk": [3, 10], "test_users": 5}
    rows = []
    for model, extra in (("SASRec", dict(hidden_size=16, inner_size=32, n_layers=1)),
                         ("GRU4Rec", dict(embedding_size=16, hidden_size=16, eval_batch_size=40)),
                         ("Pop", dict(epochs=1, eval_step=0))):
        result = run(model, DATASET, config_dict=base_config(data_root, tmp_path, subset_users=6, subset_history=30,
                                                             **shared, **extra))
        rows.append(dict(result, name=model))
    llm = run("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, eval_batch_size=20,
                                                         train_users=2, **shared))
    rows.append(dict(llm, name="LLMTRSR"))
    assert llm["trained_on"]["users"] == 2
    users = report.check_same_candidates(rows)
    assert len(users) == 5 and all(len(set(r["per_user"]["candidates"])) == 5 for r in rows)
    for row in rows:
        report.check_matches_recbole(row, [3, 10])
        assert row["trained_on"]["examples"] > 0


def test_a_checkpoint_reevaluated_on_validation_gives_the_runs_validation(data_root, tmp_path):
    """How a lever is chosen without test data: evaluate_checkpoint(split="valid") of a finished run
    reproduces the validation result the run itself computed for those weights (same users and
    candidates); the test split gives the test result."""
    from recbole_trsr.quick_start import evaluate_checkpoint

    config = base_config(data_root, tmp_path, subset_users=20, hidden_size=16, inner_size=32, n_layers=1,
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                    "mode": "uni19"}, topk=[10], valid_metric="NDCG@10", valid_users=8)
    result = run("SASRec", DATASET, config_dict=config)
    valid = evaluate_checkpoint("SASRec", DATASET, result["checkpoint"], config_dict=config, split="valid")
    test = evaluate_checkpoint("SASRec", DATASET, result["checkpoint"], config_dict=config)
    assert len(valid["per_user"]["users"]) == 8 and len(test["per_user"]["users"]) == 20
    for name, value in result["best_valid_result"].items():
        assert valid["test_result"][name] == pytest.approx(value, abs=1e-4)
    assert test["test_result"] == pytest.approx(dict(result["test_result"]), abs=1e-4)
    with pytest.raises(ValueError, match="split must be"):
        evaluate_checkpoint("SASRec", DATASET, result["checkpoint"], config_dict=config, split="train")


def _write_plain_dataset(root, name="plain-shop"):
    """A dataset no YAML describes: user_id, item_id, timestamp and a text-rich .item file."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(30):
        items = rng.choice(np.arange(40), size=12, replace=False)
        lines += [f"u{u}\ti{int(i)}\t{t}" for t, i in enumerate(items)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    item_lines = ["item_id:token\ttitle:token_seq\tbrand:token\tprice:float"]
    item_lines += [f"i{i}\tDrill bit set number {i}\tBrand{i % 5}\t{i}.5" for i in range(40)]
    (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n")
    return name


def test_a_dataset_without_yaml_runs_for_a_baseline_and_for_llmtrsr(tmp_path, tiny_llm):
    root = tmp_path / "data"
    name = _write_plain_dataset(root)
    plain = {"data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1}
    with pytest.raises(ValueError, match="99 distinct negatives"):  # the default uni99 on 40 items
        run("SASRec", name, config_dict=dict(plain, hidden_size=16, inner_size=32, n_layers=1))
    plain["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni9"}
    result = run("SASRec", name, config_dict=dict(plain, hidden_size=16, inner_size=32, n_layers=1))
    assert result["test_result"]["ndcg@10"] >= 0
    llm = run("LLMTRSR", name, config_dict=dict(plain, llm_path=str(tiny_llm), llm_dtype="float32",
                                                trsr_cache_dir=str(tmp_path / "cache"), summary_progress=False,
                                                block_size=4, recent_items=3, summary_max_new_tokens=4,
                                                train_targets_per_user=1, test_users=4))
    assert len(llm["per_user"]["users"]) == 4


def test_a_dataset_without_a_time_column_says_which_key_to_set(tmp_path):
    folder = tmp_path / "data" / "no-time"
    folder.mkdir(parents=True)
    (folder / "no-time.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"u{i % 5}\ti{i}\n" for i in range(50)))
    with pytest.raises(ValueError, match="TIME_FIELD"):
        run("SASRec", "no-time", config_dict={"data_path": str(tmp_path / "data"), "epochs": 1})
