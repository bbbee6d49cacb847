"""MIND and Amazon-M2 converters on small raw files in the exact formats, dirty rows included."""
import random

import pytest

from conftest import base_config, llm_config
from dataset_converters import amazon_m2, mind
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import ItemTextTable, create_dataset
from recbole_trsr.quick_start import run

NEWS = [
    "N1\tsports\tfootball\tTitle One\tAbstract one\thttps://x/1\t[]\t[]",
    "N2\tnews\tpolitics\tTitle Two\tAbstract two\thttps://x/2\t[]\t[]",
    "N3\tnews\tworld\tTitle Three\t\thttps://x/3\t[]\t[]",
    "N4\tfood\trecipes\tTitle Four\tAbstract four\thttps://x/4\t[]\t[]",
    "N5\tautos\tcars\tTitle Five\tAbstract five\thttps://x/5\t[]\t[]",
    "BAD\tonly three",
]
BEHAVIORS = [
    "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2\tN3-1 N4-0",
    "2\tU1\t11/15/2019 9:10:00 AM\tN1 N2\tN4-1 N2-1",  # N2 clicked but already in history
    "3\tU2\t11/14/2019 7:00:00 PM\tN9 N3\tN1-1",  # N9 is not in news.tsv
    "4\tU2\tnot a time\tN3\tN2-1",
    "5\tU3\t11/15/2019 10:00:00 AM\t\tN5-1 N5-1 Nx-y",
    "6\tonly\ttwo",
]


# The synthetic catalogues hold a few dozen items: too few for the default 99 distinct negatives.
UNI19 = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni19"}

def write_mind(folder, news=NEWS, behaviors=BEHAVIORS, bad_bytes=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    with open(folder / "behaviors.tsv", "wb") as f:
        f.write(("\n".join(behaviors) + "\n").encode("utf-8"))
        if bad_bytes:
            f.write(b"7\tU4\t11/15/2019 8:00:00 AM\tN1\tN2-1 \xff\xfe\n")


def read_inter(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [(u, i, float(t)) for u, i, t in rows]


def test_mind_counts_order_and_dirt(tmp_path):
    write_mind(tmp_path / "raw")
    (users, items, inters), problems = mind.convert(tmp_path / "raw", tmp_path / "out", "mind")
    assert (users, items, inters) == (3, 5, 7)
    assert problems == {
        "bad encoding": 1, "behaviors.tsv: malformed impression": 1, "behaviors.tsv: unparsable time": 1,
        "behaviors.tsv: wrong column count": 1, "history item missing from news.tsv": 1,
        "news.tsv: wrong column count": 1,
    }
    rows = read_inter(tmp_path / "out" / "mind" / "mind.inter")
    by_user = {}
    for u, i, t in rows:
        by_user.setdefault(u, []).append((t, i))
    assert [i for _, i in sorted(by_user["U1"])] == ["N1", "N2", "N3", "N4"]
    first_impression = mind.parse_time("11/15/2019 8:55:22 AM")
    assert sorted(by_user["U1"])[1][0] < first_impression  # history precedes the first impression
    assert [i for _, i in sorted(by_user["U2"])] == ["N3", "N1"]
    assert [i for _, i in sorted(by_user["U3"])] == ["N5"]
    with pytest.raises(ValueError, match="news.tsv line 6.*strict"):
        mind.convert(tmp_path / "raw", tmp_path / "strict", "mind", strict=True)


def test_mind_output_loads_in_recbole_with_text(tmp_path):
    write_mind(tmp_path / "raw")
    mind.convert(tmp_path / "raw", tmp_path / "out", "mind")
    config = TRSRConfig("SASRec", "mind", config_dict={"data_path": str(tmp_path / "out"),
                                                      "checkpoint_dir": str(tmp_path / "saved")})
    dataset = create_dataset(config)
    assert dataset.inter_num == 7 and dataset.user_num == 4  # + padding id
    table = ItemTextTable.from_dataset(dataset)
    internal = dataset.token2id("item_id", "N1")
    assert table[internal] == "Title One (sports, football)"
    dataset.build()
    u1 = dataset.token2id("user_id", "U1")
    assert dataset.id2token("item_id", dataset.user_histories.items_before(u1, 4)).tolist() == ["N1", "N2", "N3", "N4"]


def synthetic_mind(folder, n_users=24, n_news=40, seed=0):
    rng = random.Random(seed)
    news = [f"N{k}\tcat{k % 4}\tsub{k % 7}\tHeadline number {k}\tAbstract {k}\turl\t[]\t[]" for k in range(n_news)]
    behaviors, imp = [], 0
    for u in range(n_users):
        history = " ".join(f"N{rng.randrange(n_news)}" for _ in range(6))
        for day in range(5):
            imp += 1
            clicks = " ".join(f"N{rng.randrange(n_news)}-{rng.randint(0, 1)}" for _ in range(4))
            behaviors.append(f"{imp}\tU{u}\t11/{10 + day}/2019 {1 + u % 11}:0{day}:00 PM\t{history}\t{clicks}")
    behaviors.append("999\tU0\tgarbage time\t\tN1-1")
    write_mind(folder, news, behaviors, bad_bytes=False)


def test_mind_converted_data_runs_sasrec_and_llmtrsr(tmp_path, tiny_llm):
    synthetic_mind(tmp_path / "raw")
    mind.convert(tmp_path / "raw", tmp_path / "out", "mind", user_core=5)
    cfg = base_config(tmp_path / "out", tmp_path, load_col={"inter": ["user_id", "item_id", "timestamp"]},
                      ITEM_TEXT_FIELDS=["title", "category", "subcategory"], epochs=1, eval_args=UNI19)
    sasrec = run("SASRec", "mind", config_dict=cfg)
    assert 0 <= sasrec["test_result"]["ndcg@10"] <= 1
    llm = llm_config(tmp_path / "out", tmp_path, tiny_llm, subset_users=None, subset_history=None,
                     load_col={"inter": ["user_id", "item_id", "timestamp"]},
                     ITEM_TEXT_FIELDS=["title", "category", "subcategory"], item_text_format=None)
    result = run("LLMTRSR", "mind", config_dict=llm)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


PRODUCTS = (
    "id,locale,title,price,brand,color,size,model,material,author,desc\n"
    "B1,UK,Red Kettle,19.99,Acme,red,1L,K1,steel,,\"A kettle,\nwith a newline\"\n"
    "B1,DE,Roter Wasserkocher,21.5,Acme,rot,1L,K1,steel,,Ein Kessel\n"
    "B2,UK,Blue Mug,abc,Acme,blue,,M2,ceramic,,A mug\n"
    "B3,UK,Green Tea,4.5,Leaf,green,,T3,,,Tea\n"
    "B4,JP,Rice Cooker,80,Zo,white,,R4,,,\n"
    "B5,UK,too,few,columns\n"
)
SESSIONS = (
    "prev_items,next_item,locale\n"
    "\"['B1' 'B2']\",B3,UK\n"
    "\"['B1']\",B9,DE\n"  # B9 is not a product
    "\"['B1' 'B2'\",B3,UK\n"  # broken list syntax
    "\"['B2'\n 'B3']\",B1,UK\n"  # a list spanning two lines, as in the real file
    "\"['B4']\",B4,JP\n"
)


def write_amazon(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "products_train.csv").write_text(PRODUCTS, encoding="utf-8")
    (folder / "sessions_train.csv").write_text(SESSIONS, encoding="utf-8")


def test_amazon_m2_locales_keys_order_and_dirt(tmp_path):
    write_amazon(tmp_path / "raw")
    (users, items, inters), problems = amazon_m2.convert(tmp_path / "raw", tmp_path / "out", "amazon-m2")
    assert problems == {
        "products_train.csv: unparsable price (left empty)": 1, "products_train.csv: wrong column count": 1,
        "session item missing from products_train.csv": 1, "sessions_train.csv: broken list syntax": 1,
    }
    rows = read_inter(tmp_path / "out" / "amazon-m2" / "amazon-m2.inter")
    seqs = {}
    for u, i, t in rows:
        seqs.setdefault(u, []).append((t, i))
    assert [[i for _, i in sorted(s)] for _, s in sorted(seqs.items(), key=lambda kv: min(kv[1]))] == [
        ["UK_B1", "UK_B2", "UK_B3"], ["DE_B1"], ["UK_B2", "UK_B3", "UK_B1"], ["JP_B4", "JP_B4"]]
    assert (users, inters) == (4, 9)
    item_text = (tmp_path / "out" / "amazon-m2" / "amazon-m2.item").read_text().splitlines()
    assert any(l.startswith("UK_B1\tRed Kettle") and "A kettle, with a newline" in l for l in item_text)
    assert any(l.startswith("DE_B1\tRoter Wasserkocher") for l in item_text)

    (users, _, _), _ = amazon_m2.convert(tmp_path / "raw", tmp_path / "uk", "amazon-m2", locales=["UK"])
    assert users == 2
    config = TRSRConfig("SASRec", "amazon-m2", config_dict={"data_path": str(tmp_path / "out"),
                                                           "checkpoint_dir": str(tmp_path / "saved")})
    dataset = create_dataset(config)
    table = ItemTextTable.from_dataset(dataset)
    assert table[dataset.token2id("item_id", "UK_B1")] == "Red Kettle (brand: Acme; color: red)"
    assert dataset.inter_num == 9


def test_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
    write_mind(tmp_path / "raw")
    calls = []

    def boom(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        mind.convert(tmp_path / "raw", tmp_path / "out", "mind")
    assert calls and list((tmp_path / "out" / "mind").iterdir()) == []


def test_amazon_converted_data_runs_sasrec_and_llmtrsr(tmp_path, tiny_llm):
    rng = random.Random(1)
    products = "id,locale,title,price,brand,color,size,model,material,author,desc\n" + "".join(
        f"P{k},UK,Product {k},{k}.5,Brand{k % 5},color{k % 3},,,,,desc {k}\n" for k in range(30))
    sessions = "prev_items,next_item,locale\n" + "".join(
        "\"[" + " ".join(f"'P{rng.randrange(30)}'" for _ in range(6)) + f"]\",P{rng.randrange(30)},UK\n" for _ in range(25))
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "products_train.csv").write_text(products)
    (raw / "sessions_train.csv").write_text(sessions)
    amazon_m2.convert(raw, tmp_path / "out", "amazon-m2")
    cfg = base_config(tmp_path / "out", tmp_path, load_col={"inter": ["user_id", "item_id", "timestamp"]},
                      ITEM_TEXT_FIELDS=["title", "brand", "color"], eval_args=UNI19)
    assert 0 <= run("SASRec", "amazon-m2", config_dict=cfg)["test_result"]["ndcg@10"] <= 1
    llm = llm_config(tmp_path / "out", tmp_path, tiny_llm, subset_users=None, subset_history=None,
                     load_col={"inter": ["user_id", "item_id", "timestamp"]},
                     ITEM_TEXT_FIELDS=["title", "brand", "color"], item_text_format=None)
    assert 0 <= run("LLMTRSR", "amazon-m2", config_dict=llm)["test_result"]["ndcg@10"] <= 1
