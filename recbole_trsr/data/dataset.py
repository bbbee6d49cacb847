"""The plugin's sequential dataset: RecBole's, plus each example's absolute history position."""
import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.data.utils import create_dataset as recbole_create_dataset
from recbole.utils import FeatureSource, FeatureType, ModelType, set_color

#: Interaction field holding the target's 0-based position in its user's full, time-ordered history.
HISTORY_POSITION_FIELD = "history_position"


class UserHistories:
    """Every user's full time-ordered item sequence (internal ids), stored as one CSR array."""

    def __init__(self, user_ids, item_ids, n_users):
        # user_ids must be sorted (RecBole sorts by user then time before augmentation).
        counts = np.bincount(user_ids, minlength=n_users)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.items = np.asarray(item_ids, dtype=np.int64)

    def __len__(self):
        return len(self.offsets) - 1

    def length(self, user):
        return int(self.offsets[user + 1] - self.offsets[user])

    def items_before(self, user, position):
        """Items of ``user`` strictly before ``position`` (0-based) in time order."""
        start = self.offsets[user]
        return self.items[start:start + position]

    def users(self):
        return [u for u in range(len(self)) if self.length(u) > 0]


def training_positions(dataset):
    """``{user: sorted history positions of its examples}`` for a (training) split's dataset."""
    users = dataset.inter_feat[dataset.uid_field].tolist()
    positions = dataset.inter_feat[HISTORY_POSITION_FIELD].long().tolist()
    out = {}
    for u, p in zip(users, positions):
        out.setdefault(int(u), []).append(int(p))
    return {u: sorted(ps) for u, ps in out.items()}


class TRSRSequentialDataset(SequentialDataset):
    """``SequentialDataset`` that keeps what a text-rich sequential model needs.

    * ``history_position``: RecBole's augmentation truncates ``item_id_list`` to
      ``MAX_ITEM_LIST_LENGTH``, so the list length cannot tell where an example sits in a long
      history. The position is written onto each interaction before augmentation and is
      carried to the example through the target's features.
    * ``user_histories``: the full history of every user, shared by the train/valid/test copies.
    * ``subset_users`` / ``subset_history``: optional deterministic subset for CPU-sized runs
      (``subset_users`` users drawn with ``seed``; the last ``subset_history`` interactions of each).
    * ``train_targets_per_user``: keep only each user's most recent N training examples.
    """

    def _data_filtering(self):
        super()._data_filtering()
        n_users, n_history = self.config["subset_users"], self.config["subset_history"]
        if not n_users and not n_history:
            return
        inter = self.inter_feat
        before = len(inter)
        if n_users:
            users = np.sort(inter[self.uid_field].unique())
            if n_users < len(users):
                rng = np.random.default_rng(self.config["seed"])
                keep = set(rng.choice(users, size=int(n_users), replace=False).tolist())
                inter = inter[inter[self.uid_field].isin(keep)]
        if n_history:
            inter = inter.sort_values([self.uid_field, self.time_field], kind="stable")
            inter = inter.groupby(self.uid_field, sort=False).tail(int(n_history))
        self.inter_feat = inter
        self.logger.info(
            set_color("subset", "pink")
            + f": subset_users={n_users} subset_history={n_history} kept {len(inter)} of {before} interactions "
            f"of {inter[self.uid_field].nunique()} users"
        )
        self._reset_index()

    def data_augmentation(self):
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        uids = self.inter_feat[self.uid_field].numpy()
        starts = np.r_[0, np.flatnonzero(np.diff(uids)) + 1]
        run_lengths = np.diff(np.r_[starts, len(uids)])
        positions = np.arange(len(uids)) - np.repeat(starts, run_lengths)
        self.user_histories = UserHistories(uids, self.inter_feat[self.iid_field].numpy(), self.user_num)
        self.set_field_property(HISTORY_POSITION_FIELD, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)
        self.inter_feat.update(Interaction({HISTORY_POSITION_FIELD: torch.from_numpy(positions).long()}))
        super().data_augmentation()

    def build(self):
        datasets = super().build()
        cap = self.config["train_targets_per_user"]
        if cap:
            train = datasets[0]
            uids = train.inter_feat[self.uid_field].numpy()
            pos = train.inter_feat[HISTORY_POSITION_FIELD].numpy()
            order = np.lexsort((-pos, uids))  # per user, most recent first
            sorted_uids = uids[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_uids)) + 1]
            rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            keep = np.sort(order[rank < int(cap)])
            self.logger.info(
                set_color("train_targets_per_user", "pink")
                + f"={cap}: kept {len(keep)} of {len(uids)} training examples (each user's most recent)"
            )
            datasets[0] = train.copy(train.inter_feat[torch.from_numpy(keep)])
        return datasets


def create_dataset(config):
    """The plugin's dataset factory: sequential models get :class:`TRSRSequentialDataset`."""
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return TRSRSequentialDataset(config)
    return recbole_create_dataset(config)
