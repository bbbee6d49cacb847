"""Persistent summary store: an append-only JSONL file per summarizer setting.

The folder is named by a hash of everything that shapes a summary besides its input (LLM
weights, templates, paradigm, fan-in, block size, generation settings), and each record is
keyed by the content hash of its input (see ``plan.py``), so neither a changed setting nor a
changed dataset can ever read a stale summary. Records are appended and fsync'ed after every
batch: an interrupted run loses at most the batch in flight and resumes from the rest.
Unreadable lines (a write cut off mid-line, a damaged file) are counted, logged and left to be
recomputed; a cut-off last line is trimmed so later appends start on a fresh line.
"""
import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class SummaryStore:
    """Key -> summary text, persisted under ``root/summaries/<hash of settings>/``."""

    def __init__(self, root, settings):
        blob = json.dumps(settings, sort_keys=True, default=str)
        self.dir = Path(os.path.expanduser(str(root))) / "summaries" / hashlib.sha1(blob.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "summaries.jsonl"
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
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = len(data)
        if data and not data.endswith(b"\n"):
            good_end = data.rfind(b"\n") + 1
            logger.warning("summary store %s: last line was cut off mid-write; trimming it", self.path)
            self.n_corrupt += 1
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        for line_no, line in enumerate(data[:good_end].splitlines(), start=1):
            try:
                record = json.loads(line)
                self.texts[record["key"]] = str(record["text"])
            except (ValueError, KeyError, TypeError):
                self.n_corrupt += 1
                logger.warning("summary store %s line %d is unreadable; that summary will be recomputed", self.path, line_no)
        logger.info("summary store %s: %d summaries loaded, %d unreadable", self.dir, len(self.texts), self.n_corrupt)

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
