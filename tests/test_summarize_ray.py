"""Summaries on Ray actors: the same store as one worker, and a resume that repeats no call."""
import json

import pytest

from conftest import DATASET, llm_config
from recbole_trsr.quick_start import run
from recbole_trsr.summarize import engines
from recbole_trsr.summarize.store import SummaryStore

ray = pytest.importorskip("ray", reason="Ray is the optional extra recbole-trsr[ray]")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def stored(cache):
    """{key: text} of the single summary store under ``cache``."""
    files = list(cache.glob("summaries/*/summaries.jsonl"))
    assert len(files) == 1
    return {r["key"]: r["text"] for r in map(json.loads, files[0].read_text().splitlines())}


def summarize(data_root, tmp_path, tiny_llm, cache, workers):
    return run("LLMTRSR", DATASET, config_dict=llm_config(
        data_root, tmp_path, tiny_llm, trsr_cache_dir=str(cache), summarize_only=True, summary_workers=workers,
        summary_engine="ray" if workers > 1 else "local",
        summary_batch_size=4, subset_users=10))


def test_two_ray_actors_write_what_one_worker_writes(data_root, tmp_path, tiny_llm):
    summarize(data_root, tmp_path, tiny_llm, tmp_path / "one", workers=1)
    summarize(data_root, tmp_path, tiny_llm, tmp_path / "two", workers=2)
    one, two = stored(tmp_path / "one"), stored(tmp_path / "two")
    assert len(one) > 8  # several batches of 4, so both actors had work
    assert two == one  # same keys, same text (fp32, greedy)


def test_an_interrupted_ray_run_resumes_without_repeating_a_call(data_root, tmp_path, tiny_llm, monkeypatch):
    sent = []
    original_map = engines.RayEngine.map

    def counting_map(self, batches):
        sent.extend(p for batch in batches for p in batch)
        return original_map(self, batches)

    monkeypatch.setattr(engines.RayEngine, "map", counting_map)
    original_add = SummaryStore.add_many
    writes = []

    def add_then_fail(self, records):
        original_add(self, records)
        writes.append(len(records))
        if len(writes) == 2:
            raise KeyboardInterrupt("interrupted after two batches")

    monkeypatch.setattr(SummaryStore, "add_many", add_then_fail)
    cache = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        summarize(data_root, tmp_path, tiny_llm, cache, workers=2)
    kept = stored(cache)
    assert len(kept) == sum(writes) > 0

    monkeypatch.setattr(SummaryStore, "add_many", original_add)
    sent.clear()
    summarize(data_root, tmp_path, tiny_llm, cache, workers=2)
    done = stored(cache)
    assert len(sent) == len(done) - len(kept)  # only the missing summaries were asked for
    assert all(v == done[k] for k, v in kept.items())
    with open(next(cache.glob("summaries/*/summaries.jsonl"))) as f:
        keys = [json.loads(line)["key"] for line in f]
    assert len(keys) == len(set(keys))  # every summary written once
