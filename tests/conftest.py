"""Shared fixtures: a 60-user slice of ml-100k written to a temp dir, and a tiny random LLM."""
from pathlib import Path

import pytest
import torch

ML100K = Path(__import__("recbole").__file__).resolve().parent / "dataset_example" / "ml-100k"
DATASET = "ml-mini"


def write_small_ml100k(root, n_users=60, name=DATASET):
    """The first ``n_users`` users of ml-100k (all their interactions) and the full item file."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(ML100K / "ml-100k.inter", encoding="utf-8") as src, open(folder / f"{name}.inter", "w", encoding="utf-8") as dst:
        header = src.readline()
        dst.write(header)
        keep = {str(u) for u in range(1, n_users + 1)}
        for line in src:
            if line.split("\t", 1)[0] in keep:
                dst.write(line)
    (folder / f"{name}.item").write_text((ML100K / "ml-100k.item").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def write_tiny_llm(folder, corpus, seed=0):
    """A byte-level BPE tokenizer trained on ``corpus`` and a 2-layer random Llama, saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus) + ["Yes", "No", "Answer: Yes", "Answer: No"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_small_ml100k(root)
    return root


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    corpus = (ML100K / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    corpus += [open(Path(__file__).resolve().parent.parent / "properties" / "model" / "LLMTRSR.yaml").read()]
    return write_tiny_llm(tmp_path_factory.mktemp("tiny_llm"), corpus)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # RecBole writes ./log, ./log_tensorboard and ./saved relative to the working directory.
    monkeypatch.chdir(tmp_path)
    yield


def base_config(data_root, tmp_path, **overrides):
    config = {
        "data_path": str(data_root),
        "checkpoint_dir": str(tmp_path / "saved"),
        "trsr_cache_dir": str(tmp_path / "cache"),
        "epochs": 1,
        "seed": 2020,
        "summary_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "ITEM_TEXT_FIELDS": ["movie_title", "class"],
    }
    config.update(overrides)
    return config


def llm_config(data_root, tmp_path, tiny_llm, **overrides):
    config = base_config(
        data_root, tmp_path,
        llm_path=str(tiny_llm), llm_dtype="float32", subset_users=6, subset_history=30,
        train_targets_per_user=2, block_size=4, recent_items=3, summary_max_new_tokens=6,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni19"},
        item_max_tokens=16, learning_rate=0.01,
    )
    config.update(overrides)
    return config
