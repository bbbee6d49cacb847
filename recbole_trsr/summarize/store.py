"""Persistent summary store: an append-only JSONL file per summarizer setting.

The folder is named by a hash of everything that shapes a summary besides its input (LLM
weights, templates, paradigm, fan-in, block size, generation settings), and each record is
keyed by the content hash of its input (see ``plan.py``), so neither a changed setting nor a
changed dataset can ever read a stale summary. Records are appended and fsync'ed after every
batch: an interrupted run loses at most the batch in flight and resumes from the rest.
Unreadable lines (a write cut off mid-line, a damaged file) are counted, logged and left to be
recomputed; a cut-off last line is trimmed so later appends start on a fresh line.

A shard of a sharded run (``summary_shard: i``, ``summary_shards: N``) appends to its own file in the same folder,
``summaries.shard-i-of-N.jsonl``, so shards on several machines never write one file; every run
reads all of the folder's files, which is the merge.
"""
import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class SummaryStore:
    """Key -> summary text, persisted under ``root/summaries/<hash of settings>/``; ``part`` (e.g.
    ``shard-0-of-4``): the file this process appends to (every file of the folder is read)."""

    def __init__(self, root, settings, part=None):
        blob = json.dumps(settings, sort_keys=True, default=str)
        self.dir = Path(os.path.expanduser(str(root))) / "summaries" / hashlib.sha1(blob.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / (f"summaries.{part}.jsonl" if part else "summaries.jsonl")
        meta = self.dir / "settings.json"
        if meta.exists():
            try:
                stored = json.loads(meta.read_text(encoding="utf-8"))
            except ValueError:
                stored = None
            if stored != json.loads(blob):
                raise RuntimeError(f"summary store {self.dir} holds settings that do not match its name; "
                                   "the cache is damaged: delete that folder to rebuild it")
        else:
            meta.write_text(blob, encoding="utf-8")
        self.texts = {}
        self.n_corrupt = 0
        self._load()

    def __contains__(self, key):
        return key in self.texts

    def __getitem__(self, key):
        return self.texts[key]

    def __len__(self):
        return len(self.texts)

    def _load(self):
        files = sorted(self.dir.glob("summaries*.jsonl"))
        for path in files:
            self._load_file(path, trim=path == self.path)
        logger.info("summary store %s: %d summaries loaded from %d files, %d unreadable", self.dir, len(self.texts),
                    len(files), self.n_corrupt)

    def _load_file(self, path, trim):
        data = path.read_bytes()
        good_end = len(data)
        if data and not data.endswith(b"\n"):
            good_end = data.rfind(b"\n") + 1
            self.n_corrupt += 1
            if trim:  # only the file this process appends to: another shard may be writing its own
                logger.warning("summary store %s: last line was cut off mid-write; trimming it", path)
                with open(path, "r+b") as f:
                    f.truncate(good_end)
            else:
                logger.warning("summary store %s: last line is incomplete (cut off, or being written); "
                               "that summary will be recomputed", path)
        for line_no, line in enumerate(data[:good_end].splitlines(), start=1):
            try:
                record = json.loads(line)
                self.texts.setdefault(record["key"], str(record["text"]))
            except (ValueError, KeyError, TypeError):
                self.n_corrupt += 1
                logger.warning("summary store %s line %d is unreadable; that summary will be recomputed", path, line_no)

    def add_many(self, records):
        """Persist ``{key: text}`` durably, then make it visible."""
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for key, text in records.items():
                f.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.texts.update(records)
