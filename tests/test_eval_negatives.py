"""Sampled evaluation negatives: checked for every user before anything trains, and popularity
negatives weighted by the training split only, the same for every model type."""
import numpy as np
import pytest

from conftest import DATASET, base_config
from recbole_trsr import quick_start
from recbole_trsr.config import TRSRConfig
from recbole_trsr.evaluation import report
from recbole_trsr.quick_start import run

SEQ = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}


def _write_small_catalogue(root, name="small-shop"):
    """25 items; 30 users with 6 items each, and user ``heavy`` with 20 of them."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(30):
        lines += [f"u{u}\ti{int(i)}\t{t}" for t, i in enumerate(rng.choice(25, size=6, replace=False))]
    lines += [f"heavy\ti{int(i)}\t{t}" for t, i in enumerate(rng.choice(25, size=20, replace=False))]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return name


def test_too_few_negatives_is_an_error_before_training(tmp_path, monkeypatch):
    root = tmp_path / "data"
    name = _write_small_catalogue(root)

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the negatives were checked")
    monkeypatch.setattr(quick_start, "get_trainer", no_training)
    config = {"data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1,
              "hidden_size": 16, "inner_size": 32, "n_layers": 1, "eval_args": dict(SEQ, mode="uni10")}
    # heavy's test target: 19 items seen before it + the positive leave 5 of 25 to draw 10 from
    with pytest.raises(ValueError, match=r"valid: 1 users have fewer than 10 items .*heavy \(6\)"):
        run("SASRec", name, config_dict=config)
    config["eval_args"] = dict(SEQ, mode={"valid": "uni5", "test": "uni10"})
    with pytest.raises(ValueError, match=r"test: 1 users have fewer than 10 items .*heavy \(5\)"):
        run("SASRec", name, config_dict=config)


def test_popularity_negatives_weigh_training_users_only(data_root, tmp_path):
    config = TRSRConfig("SASRec", DATASET, config_dict=base_config(
        data_root, tmp_path, subset_users=20, eval_args=dict(SEQ, mode="pop19")))
    _, valid, test, _ = quick_start._prepare(config)
    train_users = test._dataset.train_item_users
    everything = np.bincount(test._dataset.inter_feat[test._dataset.iid_field].numpy(), minlength=len(train_users))
    assert (everything[train_users == 0] > 0).any()  # some test targets have no training user
    for loader in (valid, test):
        weights = loader._sampler._weights
        assert weights[0] == 0 and np.array_equal(weights[1:], train_users[1:].astype(float))
        drawn = np.concatenate([loader._sampler.negatives(u, p, 19) for u, p in zip(
            loader._dataset.inter_feat[loader._dataset.uid_field].numpy(),
            loader._dataset.inter_feat[loader._dataset.iid_field].numpy())])
        assert (train_users[drawn] > 0).all()


def test_popularity_negatives_are_the_same_for_a_general_and_a_sequential_model(data_root, tmp_path):
    shared = dict(subset_users=12, subset_history=30, eval_args=dict(SEQ, mode="pop19"), topk=[10])
    rows = [dict(run("Pop", DATASET, config_dict=base_config(data_root, tmp_path, eval_step=0, **shared)), name="Pop"),
            dict(run("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, hidden_size=16, inner_size=32,
                                                               n_layers=1, **shared)), name="SASRec")]
    assert len(report.check_same_candidates(rows)) == 12
