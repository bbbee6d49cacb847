"""Foundation: runner, baselines, config layering, item text, dataset positions, checkpoints."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATASET, ML100K, base_config
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import HISTORY_POSITION_FIELD, ItemTextTable, create_dataset
from recbole_trsr.quick_start import format_table, run
from recbole_trsr.registry import get_model
from recbole_trsr.trainer.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_baseline_runs_to_test_evaluation(model, data_root, tmp_path):
    result = run(model, DATASET, config_dict=base_config(data_root, tmp_path))
    for metric in ("recall@10", "mrr@10", "ndcg@10"):
        assert 0.0 <= result["test_result"][metric] <= 1.0
    assert result["test_result"]["recall@10"] >= result["test_result"]["mrr@10"]
    # the best checkpoint was written in the safe format and reloaded for the test evaluation
    state = load_checkpoint(result["checkpoint"])
    assert state["config"]["model"] == model
    assert "| " + model + " |" in format_table([result])


def test_command_line_conventions(data_root, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("epochs: 1\nhidden_size: 16\nload_col:\n  inter: [user_id, item_id, timestamp]\n")
    out = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_trsr.py"), "--model=GRU4Rec", f"--dataset={DATASET}",
         f"--config_files={extra}", f"--data_path={data_root}", "--embedding_size=16",
         f"--checkpoint_dir={tmp_path / 'saved'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = next((tmp_path / "log" / "GRU4Rec").glob("*.log")).read_text()
    assert "hidden_size = 16" in log and "embedding_size = 16" in log
    assert "test result" in log


def test_config_layering_order(tmp_path, monkeypatch):
    layers = {}
    for name in ("overall", "model", "dataset", "user"):
        path = tmp_path / f"{name}.yaml"
        keys = ["overall", "model", "dataset", "user"]
        # each layer sets the probes of its own level and every level above it
        body = {f"probe_{k}": name for k in keys[keys.index(name):]}
        path.write_text("".join(f"{k}: {v}\n" for k, v in body.items()) + "probe_dict: " + name + "\nprobe_cmd: " + name + "\n")
        layers[name] = path
    monkeypatch.setattr(TRSRConfig, "plugin_yaml_files",
                        staticmethod(lambda m, d: [layers["overall"], layers["model"], layers["dataset"]]))
    config = TRSRConfig("SASRec", "ml-100k", [str(layers["user"])], {"probe_cmd": "dict", "probe_dict": "dict"},
                        argv=["--probe_cmd=cmd"])
    assert config["probe_overall"] == "overall"
    assert config["probe_model"] == "model"
    assert config["probe_dataset"] == "dataset"
    assert config["probe_user"] == "user"
    assert config["probe_dict"] == "dict"
    assert config["probe_cmd"] == "cmd"


def test_plugin_yamls_override_recbole_internal_ones():
    config = TRSRConfig("SASRec", "ml-100k")
    # RecBole's quick-start sequential.yaml says mode: full; the plugin's overall.yaml uni99
    assert config["eval_args"]["mode"] == {"valid": "uni99", "test": "uni99"} or config["eval_args"]["mode"] == "uni99"
    # RecBole's dataset/ml-100k.yaml sets load_col; the plugin's is applied after it
    assert config["ITEM_TEXT_FIELDS"] == ["movie_title", "class"]
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE loss: SASRec runs unchanged
    assert Path(config["data_path"]) == ML100K.resolve() or Path(config["data_path"]).resolve() == ML100K.resolve()
    llm = TRSRConfig("LLMTRSR", "ml-100k")
    assert llm["lora_r"] == 8 and llm["summary_paradigm"] == "hierarchical"


def test_config_ignores_host_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=99"])
    assert TRSRConfig("SASRec", "ml-100k")["epochs"] != 99


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'NoSuchModel'.*LLMTRSR"):
        get_model("NoSuchModel")


def _dataset(data_root, tmp_path, **overrides):
    config = TRSRConfig("SASRec", DATASET, config_dict=base_config(data_root, tmp_path, **overrides))
    return create_dataset(config)


def _raw_items():
    rows = {}
    with open(ML100K / "ml-100k.item", encoding="utf-8") as f:
        f.readline()
        for line in f:
            iid, title, year, cls = line.rstrip("\n").split("\t")
            rows[iid] = (title, cls)
    return rows


def test_item_text_aligned_with_internal_ids(data_root, tmp_path):
    dataset = _dataset(data_root, tmp_path)
    table = ItemTextTable.from_dataset(dataset, fields=["movie_title", "class"])
    raw = _raw_items()
    assert table[0] == ""
    tokens = dataset.field2id_token["item_id"]
    checked = 0
    for internal in (1, 2, 17, 100, len(tokens) - 1):
        title, cls = raw[tokens[internal]]
        assert table[internal] == f"{title} (class: {cls})"
        checked += 1
    assert checked == 5 and len(table) == dataset.item_num
    formatted = ItemTextTable.from_dataset(dataset, fields=["movie_title"], text_format="<{movie_title}>")
    assert formatted[1] == f"<{raw[tokens[1]][0]}>"


def test_missing_text_field_lists_existing_fields(data_root, tmp_path):
    dataset = _dataset(data_root, tmp_path)
    with pytest.raises(KeyError, match=r"no field\(s\) \['plot'\].*movie_title.*class"):
        ItemTextTable.from_dataset(dataset, fields=["movie_title", "plot"])


def test_items_without_text_fall_back_and_are_counted(tmp_path):
    item_file = tmp_path / "x.item"
    item_file.write_text("item_id:token\ttitle:token_seq\n1\tAlpha Movie\n2\t\n3\ttoo\tmany\n")
    table = ItemTextTable.from_file(item_file, ["[PAD]", "1", "2", "3", "4"], ["title"])
    assert table.texts == ["", "Alpha Movie", "item 2", "item 3", "item 4"]
    assert table.n_fallback == 3 and table.n_malformed_rows == 1
    assert table.fallback_ids == {2, 3, 4}


def test_history_position_is_the_targets_absolute_index(data_root, tmp_path):
    dataset = _dataset(data_root, tmp_path, MAX_ITEM_LIST_LENGTH=5)
    train, valid, test = dataset.build()
    hist = dataset.user_histories
    for part in (train, valid, test):
        feat = part.inter_feat
        for row in range(0, len(feat), max(1, len(feat) // 50)):
            u = int(feat["user_id"][row])
            p = int(feat[HISTORY_POSITION_FIELD][row])
            items = hist.items_before(u, hist.length(u))
            assert items[p] == int(feat["item_id"][row])
            n = int(feat["item_length"][row])
            assert feat["item_id_list"][row][:n].tolist() == items[max(0, p - 5):p].tolist()
    # test targets are each user's last item
    lengths = [hist.length(int(u)) for u in test.inter_feat["user_id"]]
    assert test.inter_feat[HISTORY_POSITION_FIELD].tolist() == [n - 1 for n in lengths]


def test_train_targets_per_user_keeps_most_recent(data_root, tmp_path):
    dataset = _dataset(data_root, tmp_path, train_targets_per_user=3)
    train, _, _ = dataset.build()
    users = train.inter_feat["user_id"].tolist()
    pos = train.inter_feat[HISTORY_POSITION_FIELD].tolist()
    per_user = {}
    for u, p in zip(users, pos):
        per_user.setdefault(u, []).append(p)
    hist = dataset.user_histories
    for u, ps in per_user.items():
        n = hist.length(u)
        assert sorted(ps) == list(range(n - 5, n - 2))  # 3 most recent before valid (n-2) and test (n-1)


class PickledConfig:
    """Stands for RecBole's Config, which plain RecBole pickles into its checkpoints."""


def test_foreign_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"config": PickledConfig(), "state_dict": {}}, path)
    with pytest.raises(RuntimeError, match="cannot|not a recbole-trsr checkpoint"):
        load_checkpoint(path)


def _package_imports():
    """``{module: modules of the package it imports}``, function-level imports included; a module's
    own package ``__init__`` (loaded first by Python anyway) is not an edge."""
    import ast

    root = REPO / "recbole_trsr"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recbole_trsr"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("recbole_trsr")}
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def test_the_package_has_no_import_cycles():
    graph = _package_imports()
    assert graph["recbole_trsr.quick_start"] >= {"recbole_trsr.config", "recbole_trsr.sr_model"}  # it parsed
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_product_path_never_imports_the_research_diagnostics():
    """``recbole_trsr/analysis/`` holds the diagnostics; what decides a published number must not
    depend on them. The reference summaries are reached by name only, and every name resolves."""
    import importlib

    from recbole_trsr.summarize.pipeline import REFERENCE_SUMMARIES

    graph = _package_imports()
    assert "recbole_trsr.analysis.co_watched" in graph  # the walk sees the package
    offenders = {m: sorted(d for d in deps if d.startswith("recbole_trsr.analysis"))
                 for m, deps in graph.items() if not m.startswith("recbole_trsr.analysis")}
    assert {m: d for m, d in offenders.items() if d} == {}
    for target in REFERENCE_SUMMARIES.values():
        module, name = target.split(":")
        assert module.startswith("recbole_trsr.analysis.") and callable(getattr(importlib.import_module(module), name))
