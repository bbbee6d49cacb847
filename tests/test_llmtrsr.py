"""LLMTRSR with a tiny random Llama: scoring equivalence, training, checkpoints, leakage, runs."""
import numpy as np
import pytest
import torch
from recbole.data import data_preparation

from conftest import DATASET, base_config, llm_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import HISTORY_POSITION_FIELD, create_dataset
from recbole_trsr.data.item_text import popularity_levels
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.llm.scoring import AnswerScorer, Group
from recbole_trsr.model.llmtrsr import LLMTRSR
from recbole_trsr.prompt import CutItemTexts
from recbole_trsr.quick_start import run
from recbole_trsr.summarize.pipeline import precompute_summaries
from recbole_trsr.summarize.segment import recent_window
from recbole_trsr.trainer.checkpoint import load_checkpoint, save_checkpoint
from recbole_trsr.trainer.resume import model_generators


def _random_groups(vocab, n_groups=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = []
    for n in range(n_groups):
        prefix = torch.randint(5, vocab, (20 + 7 * n,), generator=g).tolist()
        suffixes = [torch.randint(5, vocab, (3 + (k % 4),), generator=g).tolist() for k in range(5 + n)]
        groups.append(Group(prefix, suffixes))
    return groups


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-4), ("bfloat16", 0.1)])
def test_shared_prefix_scores_equal_naive(tiny_llm, dtype, atol):
    backbone = load_backbone(str(tiny_llm), dtype=dtype)
    tok = backbone.tokenizer
    groups = _random_groups(len(tok))
    yes, no = tok("Yes", add_special_tokens=False)["input_ids"][0], tok("No", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        naive = AnswerScorer(backbone.model, yes, no, tok.pad_token_id, mode="naive").yes_no_logits(groups)
        naive_ll = AnswerScorer(backbone.model, yes, no, tok.pad_token_id, mode="naive").suffix_log_likelihood(groups)
        # small budgets also split one user's candidates over several packed rows / cache batches
        for mode, pack in (("packed", 4096), ("packed", 40), ("kv", 4096)):
            scorer = AnswerScorer(backbone.model, yes, no, tok.pad_token_id, mode=mode, pack_max_tokens=pack,
                                  batch_max_tokens=20)
            shared = scorer.yes_no_logits(groups)
            assert shared.shape == (sum(len(g.suffixes) for g in groups), 2)
            torch.testing.assert_close(shared.float(), naive.float(), atol=atol, rtol=0)
            torch.testing.assert_close(scorer.suffix_log_likelihood(groups), naive_ll, atol=atol, rtol=0)
    # and the logits are those of the full LM head at the answer position
    g = groups[0]
    full = backbone.model(input_ids=torch.tensor([g.prefix + g.suffixes[0]])).logits[0, -1, [yes, no]]
    torch.testing.assert_close(naive[0].float(), full.float(), atol=atol, rtol=0)


def _build(data_root, tmp_path, tiny_llm, **overrides):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, **overrides))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    return config, model, train, valid, test


@pytest.fixture
def built(data_root, tmp_path, tiny_llm):
    return _build(data_root, tmp_path, tiny_llm)


def test_loss_falls_and_only_lora_trains(data_root, tmp_path, tiny_llm):
    config, model, train, _, _ = _build(data_root, tmp_path, tiny_llm, lora_dropout=0.0)
    batch = next(iter(train))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.Adam(trainable, lr=0.02)
    losses = []
    for _ in range(20):
        model.negatives.rng = np.random.default_rng(0)  # same negatives every step
        loss = model.calculate_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * losses[0]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n])


def test_popular_negatives_are_part_of_neg_num(data_root, tmp_path, tiny_llm):
    with pytest.raises(ValueError, match="neg_popular_num=3 must be between 0 and neg_num=2"):
        _build(data_root, tmp_path, tiny_llm, neg_num=2, neg_popular_num=3)
    _, model, train, _, _ = _build(data_root, tmp_path, tiny_llm, neg_num=3, neg_popular_num=2)
    assert (model.negatives.uniform, model.negatives.popular) == (1, 2)
    assert model_generators(model)["negatives.rng"] is model.negatives.rng  # saved with a resumable state
    assert torch.isfinite(model.calculate_loss(next(iter(train))))


def test_predict_one_finite_score_per_pair(built):
    _, model, _, valid, _ = built
    model.eval()
    batch = next(iter(valid))[0]
    scores = model.predict(batch)
    assert scores.shape == (len(batch),)
    # scores are logit margins yes - no: finite, and a random model's margins differ per pair
    assert torch.isfinite(scores).all() and scores.unique().numel() > 1
    # row order is kept: scoring the rows reversed gives the reversed scores
    rev = batch[torch.arange(len(batch) - 1, -1, -1)]
    torch.testing.assert_close(model.predict(rev), scores.flip(0), atol=1e-5, rtol=0)


def test_checkpoint_reload_gives_identical_scores_and_is_small(built, data_root, tmp_path, tiny_llm):
    config, model, train, valid, _ = built
    batch = next(iter(valid))[0]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    before = model.predict(batch)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, model, opt, config, epoch=0, cur_step=0, best_valid_score=0.5)
    model.save_adapter(str(path) + ".adapter")

    _, fresh, _, _, _ = _build(data_root, tmp_path, tiny_llm)
    fresh.eval()
    assert not torch.equal(fresh.predict(batch), before)
    fresh.load_checkpoint_state_dict(load_checkpoint(path)["state_dict"])
    torch.testing.assert_close(fresh.predict(batch), before, atol=0, rtol=0)

    state = load_checkpoint(path)["state_dict"]
    assert state and all("lora_" in k for k in state)
    base_bytes = (tiny_llm / "model.safetensors").stat().st_size
    lora_bytes = sum(t.numel() * t.element_size() for t in state.values())
    assert lora_bytes < 0.2 * base_bytes

    # the adapter folder loads with plain peft onto a fresh base model
    from peft import PeftModel
    base = load_backbone(str(tiny_llm), dtype="float32").model
    peft_model = PeftModel.from_pretrained(base, str(path) + ".adapter")
    ids = torch.tensor([list(range(5, 40))])
    torch.testing.assert_close(peft_model(input_ids=ids).logits, model.llm(input_ids=ids).logits, atol=1e-5, rtol=0)


class EchoSummaries:
    """Summaries that list the item ids they were given, so coverage can be checked exactly."""

    def __call__(self, prompts):
        return [" ".join(w for w in p.split() if w.startswith("<") and w.endswith(">")) for p in prompts]


def test_summaries_never_see_the_target_or_later_items(data_root, tmp_path, tiny_llm):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, subset_users=12, subset_history=60, train_targets_per_user=8))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    backbone = type("B", (), {"identity": "echo", "model": None, "tokenizer": None})
    lookup = precompute_summaries(config, backbone, lambda i: f"<{i}>", train._dataset, generate=EchoSummaries())
    hist = dataset.user_histories
    checked = nonempty = 0
    for part in (train._dataset, valid._dataset, test._dataset):
        feat = part.inter_feat
        for u, p in zip(feat["user_id"].tolist(), feat[HISTORY_POSITION_FIELD].long().tolist()):
            items = hist.items_before(u, hist.length(u))
            summary = lookup.text(u, p)
            seen = [int(w[1:-1]) for w in summary.split()]
            start, end = recent_window(p, config["recent_items"], config["block_size"])
            assert end == p and start <= max(0, p - config["recent_items"]) or start == 0
            assert seen == items[:start].tolist()  # exactly the items before the recent window
            later = set(items[start:].tolist()) - set(items[:start].tolist())
            assert not later & set(seen)  # never the recent window, the target or anything after
            checked += 1
            nonempty += bool(seen)
    assert checked > 100 and nonempty > checked // 2


def _block_lines_shown(data_root, tmp_path, tiny_llm, monkeypatch, **overrides):
    """Build LLMTRSR with a summarizer that records its prompts: (model, config, the items' lines of
    every block prompt, as the summarizer was shown them)."""
    from recbole_trsr.summarize import pipeline
    shown = []

    def recording_engine(config, backbone):
        def generate(prompts):
            shown.extend(prompts)
            return ["likes these"] * len(prompts)
        return generate

    monkeypatch.setattr(pipeline, "summary_engine", recording_engine)
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, **overrides))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = LLMTRSR(config, train._dataset)
    lines = [line[2:] for p in shown if p.startswith("A user interacted") for line in p.splitlines()
             if line.startswith("- ")]
    return model, config, lines


def test_block_prompts_get_their_own_item_budget(data_root, tmp_path, tiny_llm, monkeypatch):
    from recbole_trsr.summarize import pipeline
    model, config, block_lines = _block_lines_shown(data_root, tmp_path, tiny_llm, monkeypatch,
                                                    item_max_tokens=3, summary_item_max_tokens=12)
    tok = model.prompts.tokenizer
    lengths = [len(tok(line, add_special_tokens=False)["input_ids"]) for line in block_lines]
    assert block_lines and max(lengths) > 3 + 1  # more of an item than the recommender's prompt shows
    assert all(n <= 12 + 1 for n in lengths)  # re-tokenizing decoded text may merge or split one token
    assert all(len(ids) <= 3 for ids in model.prompts.item_ids)
    assert model.decision_counts()["summary_item_text_truncated"] > 0  # the blocks' own cuts are counted
    # another block budget is another store: summaries made with the old budget are never read
    settings = [pipeline.summarizer_settings(dict(config.final_config_dict, summary_item_max_tokens=n), "x")
                for n in (None, 12)]
    assert settings[0] != settings[1]
    with pytest.raises(ValueError, match="summary_item_max_tokens must be at least 1"):
        CutItemTexts(tok, ["", "a b c"], -4)


def test_block_prompts_show_their_own_item_fields(data_root, tmp_path, tiny_llm, monkeypatch):
    from recbole_trsr.summarize import pipeline
    model, config, block_lines = _block_lines_shown(data_root, tmp_path, tiny_llm, monkeypatch,
                                                    summary_item_fields=["class"])
    genres = {"Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
              "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown"}
    assert block_lines and all(set(line.split()) <= genres for line in block_lines)  # genres, no title
    recent = model.prompts.build("s", [1], [2])[0]
    assert "(class: " in model.prompts.tokenizer.decode(recent)  # the recommender still reads "title (class: ...)"
    settings = [pipeline.summarizer_settings(dict(config.final_config_dict, summary_item_fields=f), "x")
                for f in (None, ["class"])]
    assert settings[0] != settings[1] and "item_fields" not in settings[0]


def test_end_to_end_run_sampled_and_full(data_root, tmp_path, tiny_llm):
    result = run("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm))
    for metric in ("recall@10", "mrr@10", "ndcg@10"):
        assert 0.0 <= result["test_result"][metric] <= 1.0
    assert load_checkpoint(result["checkpoint"])["config"]["model"] == "LLMTRSR"
    assert {"item_text_fallback", "summary_prompts_cut", "summary_store_unreadable_records"} <= set(result["decisions"])
    full = run("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, full_sort_top_m=15,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}))
    assert 0.0 <= full["test_result"]["recall@10"] <= 1.0


def test_full_sort_with_a_trained_sasrec_retriever(data_root, tmp_path, tiny_llm):
    from conftest import base_config

    sasrec = run("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, subset_users=6, subset_history=30,
                                                           hidden_size=16, inner_size=32))
    full = run("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, full_sort_top_m=10,
        full_sort_retriever={"model": "SASRec", "checkpoint": sasrec["checkpoint"]},
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}))
    assert 0.0 <= full["test_result"]["recall@10"] <= 1.0
    log = next((tmp_path / "log" / "LLMTRSR").glob("*.log")).read_text()
    assert "retriever SASRec:" in log and "reranks them" in log


def test_popularity_retriever_counts_training_interactions_only(built):
    from collections import Counter

    from recbole_trsr.model.retriever import PopularityRetriever

    _, model, train, _, _ = built
    hist = model.histories
    expected = Counter()
    for u in hist.users():
        expected.update(hist.items_before(u, hist.length(u) - 2).tolist())  # valid and test items excluded
    counts = PopularityRetriever(train._dataset).counts
    assert {i: int(counts[i]) for i in expected} == dict(expected)
    assert int(counts[1:].sum()) == sum(expected.values())


def test_training_popularity_ignores_user_draws_and_eval_items(data_root, tmp_path, tiny_llm):
    """The popularity a prompt may show counts every user's training items, also when train_users /
    train_targets_per_user shrink the training examples, and never a valid or test item."""
    _, model, train, _, _ = _build(data_root, tmp_path, tiny_llm, train_users=2, train_targets_per_user=1,
                                   candidate_popularity=True)
    hist = model.histories
    expected = np.zeros(model.n_items, dtype=int)
    for u in hist.users():
        for item in set(hist.items_before(u, hist.length(u) - 2).tolist()):
            expected[item] += 1
    assert np.array_equal(train._dataset.train_item_users, expected)
    assert len({u for u in train._dataset.inter_feat["user_id"].tolist()}) == 2
    levels = popularity_levels(expected)
    top, never = int(np.argmax(expected)), int(np.flatnonzero(expected[1:] == 0)[0]) + 1
    assert levels[top] == "very high" and levels[never] == "very low"
    assert model.prompts.suffix(top)[:len(model.prompts.item_ids[top])] == model.prompts.item_ids[top]
    assert "(popularity: very high)" in model.prompts.tokenizer.decode(model.prompts.suffix(top))


def test_popularity_levels_follow_percentiles():
    counts = np.r_[0, np.arange(100)]  # item i+1 has i users: percentile i/100
    levels = popularity_levels(counts)
    assert levels[0] == "" and levels[1] == "very low" and levels[50] == "very low"
    assert (levels[51], levels[76], levels[91], levels[98]) == ("low", "medium", "high", "very high")
    assert popularity_levels(np.r_[0, 3, 3, 3]) == ["", "very low", "very low", "very low"]  # ties share


def test_over_long_summarizer_prompts_are_cut_and_counted(tiny_llm):
    from recbole_trsr.llm.generation import LLMGenerator

    backbone = load_backbone(str(tiny_llm), dtype="float32")
    gen = LLMGenerator(backbone.model, backbone.tokenizer, max_new_tokens=3, max_prompt_tokens=12)
    side = backbone.tokenizer.truncation_side
    out = gen(["short", "a much longer prompt " * 10])
    assert len(out) == 2 and gen.n_truncated == 1 and gen.n_calls == 2
    assert backbone.tokenizer.truncation_side == side


def test_summaries_are_planned_for_the_drawn_users_only(data_root, tmp_path):
    """With train_users / test_users draws, the summarizer plans the training targets of the drawn
    training users and the valid/test positions of the drawn test users: nothing for anyone else."""
    from recbole.data import data_preparation

    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.data import create_dataset
    from recbole_trsr.data.dataset import HISTORY_POSITION_FIELD, training_positions
    from recbole_trsr.summarize.pipeline import needed_positions

    config = TRSRConfig("LLMTRSR", DATASET, config_dict=base_config(
        data_root, tmp_path, train_users=5, test_users=4, valid_users=2, train_targets_per_user=2,
        llm_path="unused", eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                      "mode": "uni19"}))
    train, valid, test = (loader._dataset for loader in data_preparation(config, create_dataset(config)))
    wanted = needed_positions(train)
    split_positions = {}
    for split in (train, valid, test):
        for u, p in zip(split.inter_feat[split.uid_field].tolist(), split.inter_feat[HISTORY_POSITION_FIELD].tolist()):
            split_positions.setdefault(u, set()).add(int(p))
    assert wanted == split_positions
    assert len(training_positions(train)) == 5 and len(wanted) <= 5 + 4
    for u in set(test.inter_feat[test.uid_field].tolist()):
        assert train.user_histories.length(u) - 1 in wanted[u]  # each drawn user's test position
