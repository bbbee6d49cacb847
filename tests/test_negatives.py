"""Training negatives: never an item the user had seen; popular ones follow training popularity."""
import numpy as np
import pytest

from recbole_trsr.data.negatives import TrainingNegatives

N_ITEMS = 50
# item 1 has 1000 training users, items 2..48 one each, item 49 none (id 0 is padding)
ITEM_USERS = np.array([0, 1000] + [1] * 47 + [0])


def _share_of_item_1(uniform, popular, draws=300):
    negatives = TrainingNegatives(N_ITEMS, ITEM_USERS, uniform, popular, seed=0)
    drawn = [i for _ in range(draws) for i in negatives.draw({5, 6})]
    assert len(drawn) == draws * (uniform + popular)
    return np.mean(np.array(drawn) == 1), drawn


def test_negatives_avoid_the_users_items_and_padding():
    _, drawn = _share_of_item_1(uniform=2, popular=2)
    assert not {0, 5, 6} & set(drawn)


def test_popular_negatives_follow_training_popularity_and_uniform_ones_do_not():
    popular_share, popular = _share_of_item_1(uniform=0, popular=1)
    uniform_share, uniform = _share_of_item_1(uniform=1, popular=0)
    assert popular_share > 0.9           # 1000 of 1047 training users
    assert uniform_share < 0.1           # 1 of 47 items the user has not seen
    assert 49 not in popular and 49 in uniform   # an item nobody trained on is never a popular negative


def test_same_seed_same_negatives():
    a = TrainingNegatives(N_ITEMS, ITEM_USERS, 2, 2, seed=3)
    b = TrainingNegatives(N_ITEMS, ITEM_USERS, 2, 2, seed=3)
    assert [a.draw({1}) for _ in range(20)] == [b.draw({1}) for _ in range(20)]


def test_no_popular_negative_left_is_an_error_not_a_hang():
    negatives = TrainingNegatives(N_ITEMS, ITEM_USERS, 0, 1, seed=0)
    with pytest.raises(ValueError, match="every item that has training users"):
        negatives.draw(set(range(1, 49)))
    with pytest.raises(ValueError, match="every item"):
        TrainingNegatives(N_ITEMS, ITEM_USERS, 1, 0, seed=0).draw(set(range(1, 50)))
