"""What a run builds from the same files, as digests: run under each pandas major, the two outputs must
be equal (``tests/test_pandas_versions.py``). Not a test module itself.

    python tests/pandas_probe.py OUT.json WORKDIR

Two datasets: a 60-user cut of ml-100k with RecBole loading its item features (token_seq title and
genres, a float year), and a small text-rich shop whose text, token and float cells are partly empty.
For each: every field of every feature table and split RecBole builds (after remapping), the id
tables, the seen items of the sampled evaluation, SASRec's test metrics at a fixed seed, and (for the
shop) LLMTRSR's with a tiny random LLM.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import ML100K, base_config, write_small_ml100k, write_tiny_llm  # noqa: E402

UNI19 = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni19"}


def write_shop(root, name="empty-cells-shop"):
    """30 users, 40 items; a fifth of titles, brands, ratings and prices empty, one float_seq field."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(30):
        for t, i in enumerate(rng.choice(40, size=12, replace=False)):
            rating = "" if rng.random() < 0.2 else str(int(rng.integers(1, 6)))
            lines.append(f"u{u}\ti{int(i)}\t{rating}\t{t}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = ["item_id:token\ttitle:token_seq\tbrand:token\tprice:float\tsize:float_seq"]
    for i in range(40):
        empty = rng.random(4) < 0.2
        title = "" if empty[0] else f"Drill bit set number {i} for steel"
        brand = "" if empty[1] else f"Brand{i % 5}"
        price = "" if empty[2] else f"{i}.5"
        size = "" if empty[3] else f"{i % 7} {i % 3}.5"
        items.append(f"i{i}\t{title}\t{brand}\t{price}\t{size}")
    (folder / f"{name}.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    return name


def digest(value):
    return hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]


def interaction_digest(inter, dataset=None):
    """Each field's dtype, shape and content hash (a DataFrame is converted as RecBole converts it)."""
    if not hasattr(inter, "numpy") and dataset is not None:
        inter = dataset._dataframe_to_interaction(inter)
    return {field: [str(inter[field].dtype), list(inter[field].shape), digest(inter[field].numpy())]
            for field in sorted(inter.columns)}


def dataset_digest(config_dict, model, dataset):
    from recbole.data import data_preparation

    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.data import create_dataset

    config = TRSRConfig(model, dataset, config_dict=config_dict)
    data = create_dataset(config)
    out = {"inter_feat": interaction_digest(data.inter_feat, data),
           "item_feat": interaction_digest(data.item_feat, data) if data.item_feat is not None else None,
           "id_tokens": {f: digest(np.asarray(t, dtype=str)) for f, t in sorted(data.field2id_token.items())}}
    splits = data_preparation(config, data)
    out["splits"] = [interaction_digest(s._dataset.inter_feat) for s in splits]
    out["seen_items"] = {phase: hashlib.sha1(repr([sorted(s) for s in sets]).encode()).hexdigest()[:16]
                         for phase, sets in data.seen_items.items()}
    return out


def main(out_path, workdir):
    import pandas

    from recbole_trsr.quick_start import run

    workdir = Path(workdir)
    root = workdir / "data"
    write_small_ml100k(root, name="ml-mini")
    shop = write_shop(root)
    tiny = write_tiny_llm(workdir / "tiny_llm", (ML100K / "ml-100k.item").read_text(encoding="utf-8").splitlines()[:300])
    movies = base_config(root, workdir, subset_users=None, eval_args=UNI19,
                         load_col={"inter": ["user_id", "item_id", "rating", "timestamp"],
                                   "item": ["item_id", "movie_title", "release_year", "class"]})
    shop_config = base_config(root, workdir, eval_args=UNI19, load_col={"inter": "*", "item": "*"},
                              normalize_all=True, ITEM_TEXT_FIELDS=["title", "brand"])
    sasrec = dict(hidden_size=16, inner_size=32, n_layers=1, epochs=2)
    result = {"pandas_major": int(pandas.__version__.split(".")[0])}
    for name, config in (("ml-mini", movies), (shop, shop_config)):
        result[name] = dataset_digest(config, "SASRec", name)
        result[name]["SASRec"] = dict(run("SASRec", name, config_dict=dict(config, **sasrec))["test_result"])
    llm = dict(shop_config, llm_path=str(tiny), llm_dtype="float32", block_size=4, recent_items=3,
               summary_max_new_tokens=4, train_targets_per_user=1, test_users=6, item_max_tokens=16)
    result[shop]["LLMTRSR"] = dict(run("LLMTRSR", shop, config_dict=llm)["test_result"])
    Path(out_path).write_text(json.dumps(result, indent=1, sort_keys=True, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:3])
