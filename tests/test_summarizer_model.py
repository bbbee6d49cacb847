"""A summarizer of its own (summary_llm_path): loaded, run and freed before the recommender loads; its
tokenizer cuts the block texts; its identity, not the recommender's, keys the summaries."""
import weakref

from recbole.data import data_preparation

from conftest import DATASET, ML100K, llm_config, write_tiny_llm
from recbole_trsr.config import TRSRConfig
from recbole_trsr.data import create_dataset
from recbole_trsr.llm.backbone import load_backbone
from recbole_trsr.model import llmtrsr
from recbole_trsr.summarize import pipeline


def _model(data_root, tmp_path, llm, **overrides):
    config = TRSRConfig("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, llm, **overrides))
    train, _, _ = data_preparation(config, create_dataset(config))
    return llmtrsr.LLMTRSR(config, train._dataset)


def test_a_summarizer_of_its_own_is_freed_first_and_keys_the_store(data_root, tmp_path, tiny_llm, tmp_path_factory,
                                                                   monkeypatch):
    corpus = (ML100K / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    summarizer_llm = write_tiny_llm(tmp_path_factory.mktemp("summarizer"), corpus[:80], seed=1)  # its own tokenizer
    other_recommender = write_tiny_llm(tmp_path_factory.mktemp("recommender"), corpus, seed=2)
    loaded = []

    def watched(*args, **kwargs):
        backbone = load_backbone(*args, **kwargs)
        loaded.append((args[0], weakref.ref(backbone.model)))
        return backbone

    def recommender_load(*args, **kwargs):
        assert all(ref() is None for _, ref in loaded), "the summarizer is still in memory"
        return load_backbone(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_backbone", watched)
    monkeypatch.setattr(llmtrsr, "load_backbone", recommender_load)
    settings = dict(summary_llm_path=str(summarizer_llm), summary_item_max_tokens=6)
    model = _model(data_root, tmp_path, tiny_llm, **settings)
    summaries = model.summaries
    assert [path for path, _ in loaded] == [str(summarizer_llm)]
    assert summaries.written_by == load_backbone(str(summarizer_llm)).identity != load_backbone(str(tiny_llm)).identity
    cut = summaries.summarizer.item_text  # block texts cut by the summarizer's tokenizer
    assert len(cut.tokenizer) == len(load_backbone(str(summarizer_llm)).tokenizer) != len(model.prompts.tokenizer)
    written = summaries.store.path.read_text().count("\n")
    assert written > 0

    # Another recommender reads the same summaries: nothing generated again.
    monkeypatch.setattr(llmtrsr, "load_backbone", load_backbone)
    again = _model(data_root, tmp_path, other_recommender, **settings).summaries
    assert again.store.dir == summaries.store.dir and again.store.path.read_text().count("\n") == written
    # The recommender's own backbone as summarizer (no summary_llm_path): another store.
    own = _model(data_root, tmp_path, tiny_llm).summaries
    assert own.store.dir != summaries.store.dir and own.written_by == load_backbone(str(tiny_llm)).identity
