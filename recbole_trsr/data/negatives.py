"""Training negatives of the Yes/No recommender: drawn uniformly, or partly in proportion to popularity."""
import numpy as np


class TrainingNegatives:
    """Draws a training target's "No" items among the items its user had not seen up to the target.

    ``uniform`` of them are drawn uniformly over the catalogue, ``popular`` of them in proportion to
    the number of users that interacted with each item in training (``train_item_users``). Uniform
    negatives are mostly long-tail items, which the candidate's popularity alone tells apart from a
    target; negatives as popular as targets leave the item's content and the user's history to decide.
    Draws are with replacement across a target's negatives, as RecBole's samplers do.
    """

    def __init__(self, n_items, item_users, uniform, popular, seed):
        if uniform < 0 or popular < 0:
            raise ValueError(f"negative counts must be >= 0, got uniform={uniform} popular={popular}")
        self.n_items, self.uniform, self.popular = n_items, int(uniform), int(popular)
        self.rng = np.random.default_rng(seed)
        weights = np.asarray(item_users, dtype=np.float64).copy()
        weights[0] = 0.0  # the padding id
        if self.popular and weights.sum() <= 0:
            raise ValueError("popular negatives need training interactions: every item has 0 training users")
        self.popularity = weights / weights.sum() if weights.sum() > 0 else weights

    def draw(self, seen):
        """``uniform`` + ``popular`` item ids not in ``seen`` (a set of the user's items so far)."""
        if len(seen) >= self.n_items - 1:
            raise ValueError("the user interacted with every item: no negative to sample")
        negatives = []
        while len(negatives) < self.uniform:
            item = int(self.rng.integers(1, self.n_items))
            if item not in seen:
                negatives.append(item)
        if self.popular:
            unseen_mass = 1.0 - self.popularity[list(seen)].sum() if seen else 1.0
            if unseen_mass <= 1e-12:
                raise ValueError("the user interacted with every item that has training users: "
                                 "no popular negative to sample")
            while len(negatives) < self.uniform + self.popular:
                item = int(self.rng.choice(self.n_items, p=self.popularity))
                if item not in seen:
                    negatives.append(item)
        return negatives
