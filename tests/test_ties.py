"""The tie rule and the candidates of record: tied scores ranked by expectation, 1 + N distinct
negatives, and scores that keep their resolution (fp32 answer head) under a bf16 model."""
import numpy as np
import pytest
import torch
from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender
from recbole.utils import InputType

from conftest import DATASET, base_config
from recbole_trsr.evaluation import FixedCandidatesSampler, per_user_metrics, rank_counts
from recbole_trsr.evaluation.ties import expected_hits, tie_counts, topk_values
from recbole_trsr.quick_start import run

CHANCE_NDCG_1_20 = sum(1 / np.log2(r + 1) for r in range(1, 11)) / 21


def test_tied_candidates_rank_by_the_expectation_over_their_order():
    m = per_user_metrics(greater=[0, 2, 0, 9, 30], ties=[1, 1, 21, 2, 1], ks=[3, 10])
    assert m["recall@10"].tolist() == pytest.approx([1, 1, 10 / 21, 0.5, 0])
    assert m["recall@3"].tolist() == pytest.approx([1, 1, 3 / 21, 0, 0])
    assert m["ndcg@10"].tolist() == pytest.approx([1, 0.5, CHANCE_NDCG_1_20, 0.5 / np.log2(11), 0])
    assert m["mrr@10"].tolist() == pytest.approx([1, 1 / 3, sum(1 / r for r in range(1, 11)) / 21, 0.05, 0])
    assert CHANCE_NDCG_1_20 == pytest.approx(0.2163, abs=1e-4)


def test_tie_counts_ignore_index_order_and_refuse_nan():
    scores = torch.tensor([[-np.inf, 0.5, 0.5, 0.9, 0.5], [-np.inf, 0.1, 0.3, 0.3, -np.inf]])
    greater, ties = tie_counts(scores, torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert greater.tolist() == [1, 0] and ties.tolist() == [3, 2]
    assert rank_counts([0.2, 0.7, 0.2], 0) == (1, 2)
    with pytest.raises(ValueError, match="NaN"):
        tie_counts(torch.tensor([[0.1, float("nan")]]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="finite"):
        tie_counts(torch.tensor([[0.1, -np.inf]]), torch.tensor([0]), torch.tensor([1]))


def test_several_positives_get_exact_recall_and_ndcg_and_a_clear_refusal_for_mrr():
    # Two positives tied with two negatives in the first 4 places: each position holds one with p 1/2.
    hits = (expected_hits([0, 0], [4, 4], 4).sum(0, keepdim=True)).numpy()
    assert topk_values("recall", hits, [2])[0].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    discount = 1 / np.log2(np.arange(2, 6))
    assert topk_values("ndcg", hits, [2])[0, 3] == pytest.approx(0.5 * discount.sum() / discount[:2].sum())
    with pytest.raises(ValueError, match="one positive per user"):
        topk_values("mrr", hits, [2])


class ScriptedScores(SequentialRecommender):
    """Scores the test tests ask for: every candidate alike, or the test target strictly first or last."""

    input_type = InputType.POINTWISE
    script = "constant"
    targets = {}  # internal user id -> that user's test target

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.USER_ID = config["USER_ID_FIELD"]

    def calculate_loss(self, interaction):
        return (self.weight ** 2).sum()

    def _target_score(self):
        return {"constant": 0.0, "first": 1.0, "last": -1.0}[self.script]

    def predict(self, interaction):
        users, items = interaction[self.USER_ID].tolist(), interaction[self.ITEM_ID].tolist()
        is_target = torch.tensor([self.targets.get(u) == i for u, i in zip(users, items)], dtype=torch.float32)
        return is_target * self._target_score()

    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID].tolist()
        scores = torch.zeros(len(users), self.n_items)
        for row, u in enumerate(users):
            scores[row, self.targets[u]] = self._target_score()
        return scores


def _test_targets(config):
    """Internal user id -> test target, from the same dataset and split the run builds."""
    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.quick_start import _prepare

    _, _, test, _ = _prepare(TRSRConfig(ScriptedScores, DATASET, config_dict=config))
    feat = test._dataset.inter_feat
    return dict(zip(feat["user_id"].tolist(), feat["item_id"].tolist()))


@pytest.mark.parametrize("mode", ["uni20", "full"])
def test_metrics_of_record_are_exactly_chance_for_equal_scores_one_and_zero_at_the_extremes(data_root, tmp_path, mode):
    config = base_config(data_root, tmp_path, subset_users=12, topk=[10], metrics=["Recall", "MRR", "NDCG", "Hit"],
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": mode})
    ScriptedScores.targets = _test_targets(config)
    results = {}
    for script in ("constant", "first", "last"):
        ScriptedScores.script = script
        results[script] = run(ScriptedScores, DATASET, config_dict=config)
    constant = results["constant"]
    ties = np.asarray(constant["per_user"]["ties"])
    if mode == "full":  # every model masks the user's earlier items: the rest of the catalogue, padding out
        from recbole_trsr.config import TRSRConfig
        from recbole_trsr.data import create_dataset
        data = create_dataset(TRSRConfig(ScriptedScores, DATASET, config_dict=config))
        data.build()
        seen = data.seen_items["test"]
        internal = [int(data.token2id("user_id", str(u))) if not isinstance(u, int) else u
                    for u in constant["per_user"]["users"]]
        assert ties.tolist() == [data.item_num - 1 - len(seen[u]) for u in internal]
    else:
        assert set(ties) == {21}
    chance = per_user_metrics([0] * len(ties), ties, [10])
    for name in ("recall@10", "ndcg@10", "mrr@10"):
        assert constant["test_result"][name] == pytest.approx(float(chance[name].mean()), abs=1e-4)
    assert constant["test_result"]["hit@10"] == pytest.approx(float(np.mean(10 / ties)), abs=1e-4)
    if mode == "uni20":
        assert constant["test_result"]["recall@10"] == pytest.approx(10 / 21, abs=1e-4)
        assert constant["test_result"]["ndcg@10"] == pytest.approx(CHANCE_NDCG_1_20, abs=1e-4)  # 0.21636
    for name in ("recall@10", "ndcg@10", "mrr@10", "hit@10"):
        assert results["first"]["test_result"][name] == 1.0
        assert results["last"]["test_result"][name] == 0.0
    assert results["last"]["per_user"]["greater"] == (ties - 1).tolist()


class _Phase:
    """The parts of RecBole's evaluation sampler that FixedCandidatesSampler reads."""
    phase, item_num, distribution = "test", 30, "uniform"

    def __init__(self, used):
        self.used_ids = used


def test_negatives_are_distinct_never_the_positive_never_seen_and_fixed_by_the_user():
    used = np.array([set(range(1, 8)), {3}, set()])
    sampler = FixedCandidatesSampler(_Phase(used), seed=7)
    np.random.seed(3)
    first = sampler.sample_by_user_ids(np.array([0, 1]), np.array([9, 4]), 20).view(20, 2)
    after = np.random.random()
    np.random.seed(3)
    assert np.random.random() == after  # the global random state is left where it was
    for column, (user, positive) in enumerate([(0, 9), (1, 4)]):
        negatives = first[:, column].tolist()
        assert len(set(negatives)) == 20 and positive not in negatives and 0 not in negatives
        assert not set(negatives) & used[user]
    again = sampler.sample_by_user_ids(np.array([1, 0]), np.array([4, 9]), 20).view(20, 2)  # other batch order
    assert again[:, 1].tolist() == first[:, 0].tolist() and again[:, 0].tolist() == first[:, 1].tolist()
    other_phase = FixedCandidatesSampler(type("Valid", (_Phase,), {"phase": "valid"})(used), seed=7)
    assert other_phase.sample_by_user_ids(np.array([1]), np.array([4]), 20).tolist() != first[:, 1].tolist()
    with pytest.raises(ValueError, match="only 21 items"):  # 29 items, 7 seen, the positive: 21 left
        sampler.sample_by_user_ids(np.array([0]), np.array([9]), 22)


def test_popularity_negatives_are_distinct_and_never_items_without_training_users():
    class Popular(_Phase):
        distribution = "popularity"

    training_users = np.bincount([1] * 50 + [2] * 20 + list(range(3, 15)), minlength=Popular.item_num)
    sampler = FixedCandidatesSampler(Popular(np.array([{5}])), seed=1, item_users=training_users)
    negatives = sampler.sample_by_user_ids(np.array([0]), np.array([1]), 10).tolist()
    assert len(set(negatives)) == 10 and not set(negatives) & {0, 1, 5} and max(negatives) < 15


def test_a_run_ranks_each_user_against_twenty_distinct_negatives(data_root, tmp_path):
    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.evaluation import sampled_candidates
    from recbole_trsr.quick_start import _prepare

    config = base_config(data_root, tmp_path, subset_users=30, eval_args={
        "split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni20"})
    _, valid, test, _ = _prepare(TRSRConfig("SASRec", DATASET, config_dict=config))
    for loader in (valid, test):
        for user, items in sampled_candidates(loader, "user_id", "item_id").items():
            assert len(items) == 21 and len(set(items)) == 21, user  # the positive is not drawn again
            assert not set(items[1:]) & loader._sampler.used_ids[user], user


def test_a_bf16_model_scores_yes_no_in_fp32_with_resolution_to_rank(tiny_llm):
    from transformers import AutoModelForCausalLM

    from recbole_trsr.llm.scoring import AnswerScorer, Group, token_log_probs

    model = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.bfloat16)
    groups = [Group(prefix=list(range(5, 25)), suffixes=[[30 + i, 40 + i] for i in range(21)])]
    scorer = AnswerScorer(model, yes_id=7, no_id=8, pad_id=0)
    with torch.no_grad():
        logits = scorer.yes_no_logits(groups)
        hidden = scorer.answer_hidden(groups)
        rounded = (hidden @ model.get_output_embeddings().weight[[7, 8]].t()).float()  # the old bf16 head
        loglik = scorer.suffix_log_likelihood(groups)
    assert logits.dtype == torch.float32 and loglik.dtype == torch.float32
    assert torch.allclose(logits, hidden.float() @ model.get_output_embeddings().weight[[7, 8]].float().t())
    assert torch.equal(rounded, rounded.bfloat16().float())  # the old head: 8 mantissa bits
    assert (logits != logits.bfloat16().float()).float().mean() > 0.5  # the fp32 head keeps more
    # the chunked fp32 log-likelihood equals a plain fp32 log_softmax over the whole vocabulary
    head = model.get_output_embeddings()
    targets = torch.tensor([3, 9, 11])
    plain = torch.log_softmax(hidden[:3].float() @ head.weight.float().t(), -1).gather(1, targets[:, None])[:, 0]
    with torch.no_grad():
        chunked = token_log_probs(hidden[:3], head, targets, chunk_rows=100)
    assert torch.allclose(chunked, plain, atol=1e-5)


def _confident_logits(margins, given):
    """A yes_no_logits stand-in for a large, sure model: logits near 30-70, each row's margin the next
    of ``margins`` (15 to 40, every one different), as a 7-8B recommender after SFT answers."""
    def yes_no_logits(self, groups):
        n = sum(len(g.suffixes) for g in groups)
        margin = torch.tensor([margins.pop() for _ in range(n)], dtype=torch.float32)
        given.append(margin)
        return torch.stack([30.0 + margin, torch.full_like(margin, 30.0)], dim=1)
    return yes_no_logits


def test_confident_answers_keep_their_margin_and_never_tie(data_root, tmp_path, tiny_llm, monkeypatch):
    from conftest import llm_config
    from recbole_trsr.llm.scoring import AnswerScorer
    from recbole_trsr.model.llmtrsr import LLMTRSR

    margins, given, scored = list(np.random.default_rng(0).permutation(np.linspace(15.0, 40.0, 20000))), [], []
    monkeypatch.setattr(AnswerScorer, "yes_no_logits", _confident_logits(margins, given))
    score = LLMTRSR._score

    def recorded(self, *args):
        scored.append(score(self, *args))
        return scored[-1]
    monkeypatch.setattr(LLMTRSR, "_score", recorded)
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni20"}
    result = run("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, eval_args=eval_args))
    assert result["per_user"]["ties"] == [1] * 6  # no positive ties another candidate
    # the score is the margin itself (rows come back in the batch's order): its ranking is P(Yes)'s
    every_margin = torch.cat(given)
    for out in scored:
        assert len(set(out.tolist())) == len(out)
        assert (out[:, None] - every_margin[None, :]).abs().min(1).values.max() < 1e-5


def test_confident_candidate_log_likelihoods_stay_distinct():
    from recbole_trsr.llm.scoring import token_log_probs

    head = torch.nn.Linear(4, 50, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[7, 0] = 1.0
    margins = torch.linspace(17.0, 40.0, 30)  # the target leads every other token by this much
    hidden = torch.zeros(30, 4)
    hidden[:, 0] = margins
    targets = torch.full((30,), 7)
    old = torch.log_softmax(hidden @ head.weight.t(), -1)[:, 7]
    assert (old == 0).sum() >= 20  # own - logsumexp rounds to 0: they would tie
    for chunk in (50, 16):  # one fp32 pass, and the chunked cast of a low-precision head
        new = token_log_probs(hidden, head, targets, chunk_rows=chunk)
        assert len(set(new.tolist())) == 30
        assert torch.equal(torch.argsort(new), torch.argsort(margins))
        expected = -torch.log1p(49 * torch.exp(-margins.double()))
        assert torch.allclose(new.double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("metric", ["ItemCoverage", "GiniIndex", "AveragePopularity", "ShannonEntropy",
                                    "TailPercentage"])
def test_metrics_of_topk_lists_are_refused_before_the_data_loads(data_root, tmp_path, monkeypatch, metric):
    from recbole_trsr import quick_start

    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was built before the metrics were checked")
    monkeypatch.setattr(quick_start, "create_dataset", no_data)
    with pytest.raises(ValueError, match=rf"\['{metric}'\]: RecBole computes them from top-k lists"):
        run("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, metrics=["Recall", metric]))


def test_gauc_stays_allowed_and_is_exactly_chance_for_equal_scores(data_root, tmp_path):
    config = base_config(data_root, tmp_path, subset_users=12, topk=[10], metrics=["Recall", "GAUC"],
                         valid_metric="Recall@10",
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni20"})
    ScriptedScores.targets, ScriptedScores.script = _test_targets(config), "constant"
    assert run(ScriptedScores, DATASET, config_dict=config)["test_result"]["gauc"] == pytest.approx(0.5, abs=1e-6)


class ScriptedGeneral(GeneralRecommender):
    """:class:`ScriptedScores` as a general model (RecBole masks history for these by itself)."""

    input_type = InputType.POINTWISE
    predict = ScriptedScores.predict
    full_sort_predict = ScriptedScores.full_sort_predict
    calculate_loss = ScriptedScores.calculate_loss
    _target_score = ScriptedScores._target_score

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.USER_ID = config["USER_ID_FIELD"]

    @property
    def script(self):
        return ScriptedScores.script

    @property
    def targets(self):
        return ScriptedScores.targets


def test_full_ranking_masks_the_same_items_for_a_sequential_and_a_general_model(data_root, tmp_path):
    from recbole_trsr.evaluation import report

    config = base_config(data_root, tmp_path, subset_users=12, topk=[10], metrics=["Recall", "NDCG"],
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"})
    ScriptedScores.targets, ScriptedScores.script = _test_targets(config), "constant"
    rows = [dict(run(model, DATASET, config_dict=config), name=model.__name__) for model in (ScriptedScores, ScriptedGeneral)]
    sequential, general = (r["per_user"] for r in rows)
    assert all(c.startswith("full:") for c in sequential["candidates"])
    assert len(report.check_same_candidates(rows)) == 12
    assert dict(zip(sequential["users"], sequential["ties"])) == dict(zip(general["users"], general["ties"]))
    assert rows[0]["test_result"] == rows[1]["test_result"]
    unfingerprinted = dict(rows[1], per_user=dict(general, candidates=[""] * 12))
    with pytest.raises(report.CandidateMismatch, match="without candidate fingerprints"):
        report.check_same_candidates([rows[0], unfingerprinted])


def test_first_stage_ties_enter_the_top_m_in_a_seeded_order_not_by_id():
    from recbole_trsr.model.retriever import rerank_top_m, tie_order

    n_items, m = 101, 10
    first = torch.zeros(2, n_items)
    first[1, 50:53] = 1.0  # row 1: three items above the tie, always kept
    taken = []
    out = rerank_top_m(first, m, lambda top: (taken.append(top.clone()), torch.ones(top.shape))[1], "test",
                       tie_order(n_items, 2020))
    order = tie_order(n_items, 2020).tolist()
    tied_first = [i for i in order if i != 0]
    assert set(taken[0][0].tolist()) == set(tied_first[:m])
    assert set(taken[0][0].tolist()) != set(range(1, m + 1))  # not the lowest ids
    assert {50, 51, 52} <= set(taken[0][1].tolist())
    assert set(taken[0][1].tolist()) - {50, 51, 52} == set([i for i in tied_first if i not in (50, 51, 52)][:m - 3])
    assert (out[0, taken[0][0]] == 1).all() and (out[0] == 1).sum() == m
    other = []
    rerank_top_m(first, m, lambda top: (other.append(top.clone()), torch.ones(top.shape))[1], "test", tie_order(n_items, 7))
    assert set(other[0][0].tolist()) != set(taken[0][0].tolist())  # the seed, not the ids, decides
