"""The plugin's sequential dataset: RecBole's, plus each example's absolute history position."""
import os

import numpy as np
import torch
from recbole.data.dataset import Dataset, SequentialDataset
from recbole.data.interaction import Interaction
from recbole.data.utils import create_dataset as recbole_create_dataset
from recbole.utils import FeatureSource, FeatureType, ModelType, set_color

from recbole_trsr.compat import patch_recbole_for_pandas3
from recbole_trsr.data.item_text import read_header

patch_recbole_for_pandas3()  # before any dataset is built (a no-op under pandas 2; see compat.py)

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
    """``{user: sorted history positions of its examples}`` for a split's dataset (any of the three)."""
    users = dataset.inter_feat[dataset.uid_field].tolist()
    positions = dataset.inter_feat[HISTORY_POSITION_FIELD].long().tolist()
    out = {}
    for u, p in zip(users, positions):
        out.setdefault(int(u), []).append(int(p))
    return {u: sorted(ps) for u, ps in out.items()}


class UserDraws:
    """Mixin for RecBole datasets: the plugin's seeded user draws, the same for every model type.

    * ``subset_users`` / ``subset_history``: a deterministic subset for CPU-sized runs (``subset_users``
      users drawn with ``seed``; the last ``subset_history`` interactions of each). Every model sees less.
    * ``test_users`` / ``valid_users``: evaluate only N of the users that have a test example (drawn
      with ``seed``; the valid users are the first ones of the same draw, a subset of the test users).
      Training data is untouched: every model still learns from every user.
    * ``train_users``: train on the examples of N users only (drawn with ``seed + 1``); meant to cap an
      LLM's training cost, never for the baselines of a comparison (their data must stay whole).

    Every split also carries ``train_item_users`` (:func:`training_item_users`, before any draw).
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

    def build(self):
        datasets = super().build()
        # Before any draw shrinks a split: the sampled-evaluation exclusions must not depend on
        # train_users or on the model type (see recbole_trsr.evaluation.candidates).
        self.seen_items = seen_items_by_phase(self, datasets)
        item_users = training_item_users(self, datasets[0])  # every user's, before train_users shrinks it
        datasets = restrict_users(self, datasets)
        for split in datasets:
            split.train_item_users = item_users
        return datasets


class TRSRSequentialDataset(UserDraws, SequentialDataset):
    """``SequentialDataset`` that keeps what a text-rich sequential model needs.

    * ``history_position``: RecBole's augmentation truncates ``item_id_list`` to
      ``MAX_ITEM_LIST_LENGTH``, so the list length cannot tell where an example sits in a long
      history. The position is written onto each interaction before augmentation and is
      carried to the example through the target's features.
    * ``user_histories``: the full history of every user, shared by the train/valid/test copies.
    * ``train_targets_per_user``: keep only each user's most recent N training examples.
    * ``eval_positions``: ``{user: positions}`` of the valid and test examples, on every split, so
      a model built on the training split precomputes what evaluation will ask for, and no more.
    * the user draws of :class:`UserDraws`.
    """

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
        eval_positions = {}
        for split in datasets[1:]:
            for u, ps in training_positions(split).items():
                eval_positions.setdefault(u, set()).update(ps)
        for split in datasets:  # what the model (built on the train split) must precompute for
            split.eval_positions = eval_positions
        return datasets


class TRSRGeneralDataset(UserDraws, Dataset):
    """RecBole's ``Dataset`` (general and traditional models such as Pop or BPR) with the user draws
    of :class:`UserDraws`, so a non-sequential baseline is ranked on the same users as every other
    row of a comparison."""


def _user_item_codes(dataset, split):
    """``user * n_items + item`` of every (user, item) a split holds: its examples' targets and, for a
    sequential split, their item lists (so a user's first item, never a target, is counted too)."""
    uid, iid, n_items = dataset.uid_field, dataset.iid_field, dataset.item_num
    users, items = split.inter_feat[uid].numpy(), split.inter_feat[iid].numpy()
    codes = [users.astype(np.int64) * n_items + items]
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field and list_field in split.inter_feat:
        lists = split.inter_feat[list_field].numpy()
        rows, cols = np.nonzero(lists)
        codes.append(users[rows].astype(np.int64) * n_items + lists[rows, cols])
    return np.concatenate(codes)


def seen_items_by_phase(dataset, datasets):
    """``{"valid": sets, "test": sets}``: per user (an array indexed by internal user id), the items of
    the training split, plus the valid split for "test": RecBole's general-model exclusions, the same
    for a sequential split (see :func:`_user_item_codes`)."""
    n_items = dataset.item_num
    out, seen_codes = {}, np.empty(0, dtype=np.int64)
    for phase, split in zip(("train", "valid", "test"), datasets):
        if phase != "train":
            sets = np.array([set() for _ in range(dataset.user_num)])
            for code in seen_codes:
                sets[code // n_items].add(int(code % n_items))
            out[phase] = sets
        seen_codes = np.unique(np.concatenate([seen_codes, _user_item_codes(dataset, split)]))
    return out


def training_item_users(dataset, train_split):
    """Per internal item id, how many users interacted with it in the training split (never the
    valid or test items): the popularity that training may show a model."""
    codes = np.unique(_user_item_codes(dataset, train_split))
    return np.bincount(codes % dataset.item_num, minlength=dataset.item_num)


def restrict_users(dataset, datasets):
    """Apply ``valid_users`` / ``test_users`` (a seeded draw of the test split's users; the valid users
    are the first ones of the same draw) and ``train_users`` (a seed+1 draw) to RecBole's splits."""
    config, uid = dataset.config, dataset.uid_field
    order = None
    for index, key in ((1, "valid_users"), (2, "test_users")):
        n = config[key]
        if n:
            if order is None:
                test_users = np.unique(datasets[2].inter_feat[uid].numpy())
                order = np.random.default_rng(config["seed"]).permutation(test_users)
            datasets[index] = _only_users(dataset, datasets[index], order[:int(n)], key)
    if config["train_users"]:
        train_uids = np.unique(datasets[0].inter_feat[uid].numpy())
        drawn = np.random.default_rng(config["seed"] + 1).permutation(train_uids)[:int(config["train_users"])]
        datasets[0] = _only_users(dataset, datasets[0], drawn, "train_users")
    return datasets


def _only_users(dataset, split, users, key):
    uids = split.inter_feat[dataset.uid_field].numpy()
    keep = np.isin(uids, users)
    dataset.logger.info(set_color(key, "pink") + f"={len(users)}: {int(keep.sum())} of {len(uids)} examples "
                        f"({len(np.unique(uids[keep]))} users) kept")
    return split.copy(split.inter_feat[torch.from_numpy(keep)])


def check_interaction_file(config):
    """Stop before RecBole builds the dataset when the ``.inter`` file cannot serve the config,
    naming the setting to change (RecBole would fail later, deep in its augmentation)."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: set data_path to the folder holding {config['dataset']}/")
    columns = [name for name, _ in read_header(path, config["field_separator"], config["encoding"] or "utf-8")]
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        if config[key] not in columns:
            raise ValueError(f"{path} has no column '{config[key]}' ({key}); its columns are {columns}: "
                             f"set {key} to one of them")
    loaded = "*" if config["load_col"] is None else config["load_col"].get("inter", [])
    time_field, order = config["TIME_FIELD"], (config["eval_args"] or {}).get("order")
    if order == "TO":
        if time_field not in columns:
            raise ValueError(f"eval_args.order: TO needs a time column; {path} has no '{time_field}' "
                             f"(TIME_FIELD), its columns are {columns}: set TIME_FIELD, or order: RO")
        if loaded != "*" and time_field not in loaded:
            raise ValueError(f"eval_args.order: TO needs '{time_field}', which load_col.inter {loaded} leaves out: "
                             f"add it, or set load_col: {{inter: '*'}}")


def create_dataset(config):
    """The plugin's dataset factory: sequential models get :class:`TRSRSequentialDataset`, general
    and traditional ones :class:`TRSRGeneralDataset`; other model types get RecBole's own dataset.
    A plugin key that the chosen dataset cannot honour is an error, not a silent no-op."""
    check_interaction_file(config)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return TRSRSequentialDataset(config)
    general = config["MODEL_TYPE"] in (ModelType.GENERAL, ModelType.TRADITIONAL)
    unsupported = ["train_targets_per_user"] + ([] if general else
                                                ["test_users", "valid_users", "train_users", "subset_users", "subset_history"])
    asked = [k for k in unsupported if config[k]]
    if asked:
        raise ValueError(f"{asked} not supported for {config['model']} ({config['MODEL_TYPE'].name} model): unset them")
    return TRSRGeneralDataset(config) if general else recbole_create_dataset(config)
