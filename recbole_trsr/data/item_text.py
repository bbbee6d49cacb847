"""Item-id -> text table read from the ``.item`` atomic file, aligned with RecBole's internal ids."""
import bisect
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

TEXT_TYPES = {"token", "token_seq", "float", "float_seq"}


class ItemTextTable:
    """Text of every item, indexed by RecBole's remapped item id (id 0, the padding id, is "").

    Built from the configured ``ITEM_TEXT_FIELDS`` of ``<data_path>/<dataset>.item``. Multiple
    fields are joined as ``"first value (field2: value2; field3: value3)"``, or by
    ``item_text_format`` (a ``str.format`` template over the field names) when set. An item
    with no row or only empty fields gets the fallback ``"item <raw id>"``; such items are
    listed in :attr:`fallback_ids`, counted in :attr:`n_fallback` and logged.
    """

    def __init__(self, texts, fallback_ids=(), n_malformed_rows=0):
        self.texts = list(texts)
        self.fallback_ids = frozenset(int(i) for i in fallback_ids)
        self.n_malformed_rows = n_malformed_rows

    @property
    def n_fallback(self):
        return len(self.fallback_ids)

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, item_id):
        return self.texts[int(item_id)]

    @classmethod
    def from_dataset(cls, dataset, fields=None, text_format=None):
        """Build the table for ``dataset`` (a RecBole Dataset) from its ``.item`` file."""
        config = dataset.config
        fields = list(fields or config["ITEM_TEXT_FIELDS"] or [])
        text_format = text_format or config["item_text_format"]
        path = os.path.join(config["data_path"], f"{config['dataset']}.item")
        if not fields:
            fields = default_text_fields(path, dataset.iid_field, config["field_separator"], config["encoding"] or "utf-8")
        raw_tokens = dataset.field2id_token[dataset.iid_field]
        return cls.from_file(
            path, raw_tokens, fields, dataset.iid_field, text_format,
            field_separator=config["field_separator"], seq_separator=config["seq_separator"],
            encoding=config["encoding"] or "utf-8",
        )

    @classmethod
    def from_file(cls, path, raw_tokens, fields, id_field="item_id", text_format=None,
                  field_separator="\t", seq_separator=" ", encoding="utf-8"):
        """Build the table from an ``.item`` file; ``raw_tokens[i]`` is the raw id of internal id i."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"item text needs {path}, which does not exist")
        with open(path, encoding=encoding, errors="replace") as f:
            typed = parse_header(f.readline(), field_separator)
            names, types = [n for n, _ in typed], dict(typed)
            missing = [fld for fld in fields + [id_field] if fld not in names]
            if missing:
                raise KeyError(f"{path} has no field(s) {missing}; its fields are {names}")
            bad_type = [fld for fld in fields if types[fld] not in TEXT_TYPES]
            if bad_type:
                raise ValueError(f"fields {bad_type} of {path} are not token/token_seq/float fields")
            col = {name: i for i, name in enumerate(names)}
            by_raw_id, malformed = {}, 0
            for line_no, line in enumerate(f, start=2):
                row = line.rstrip("\r\n").split(field_separator)
                if len(row) != len(names):
                    malformed += 1
                    logger.warning("%s line %d: %d columns, expected %d; row skipped", path, line_no, len(row), len(names))
                    continue
                values = {fld: _clean(row[col[fld]], types[fld], seq_separator) for fld in fields}
                by_raw_id[row[col[id_field]]] = values
        texts, fallback_ids = [""], []
        for item_id, raw in enumerate(list(raw_tokens)[1:], start=1):
            text = _render(by_raw_id.get(raw), fields, text_format)
            if not text:
                fallback_ids.append(item_id)
                text = f"item {raw}"
            texts.append(text)
        if fallback_ids:
            logger.warning("item text: %d of %d items have no text in %s and use the fallback 'item <id>'",
                           len(fallback_ids), len(texts) - 1, path)
        if malformed:
            logger.warning("item text: %d malformed rows in %s were skipped", malformed, path)
        return cls(texts, fallback_ids, malformed)


#: Words for an item's training popularity, from its percentile among all items (ties share one).
POPULARITY_LEVELS = ("very low", "low", "medium", "high", "very high")
POPULARITY_PERCENTILES = (0.5, 0.75, 0.9, 0.97)


def popularity_levels(item_users):
    """A word of :data:`POPULARITY_LEVELS` per internal item id (id 0, padding: ""), from how many users
    interacted with the item in training: the share of items with strictly fewer users decides it."""
    counts = np.asarray(item_users)[1:]
    below = np.searchsorted(np.sort(counts), counts, side="left") / max(len(counts), 1)
    return [""] + [POPULARITY_LEVELS[bisect.bisect_right(POPULARITY_PERCENTILES, p)] for p in below]


def parse_header(line, field_separator="\t"):
    """An atomic file's header line as [(field name, type)]; an untyped column counts as token."""
    cells = line.rstrip("\r\n").split(field_separator)
    return [(c.split(":")[0], c.split(":")[1] if ":" in c else "token") for c in cells]


def read_header(path, field_separator="\t", encoding="utf-8"):
    """:func:`parse_header` of the first line of the atomic file at ``path``."""
    with open(path, encoding=encoding, errors="replace") as f:
        return parse_header(f.readline(), field_separator)


def default_text_fields(path, id_field, field_separator="\t", encoding="utf-8"):
    """With ITEM_TEXT_FIELDS unset: every token/token_seq field of the ``.item`` file but the id, in
    file order (logged). No such file or field: an error that names the key to set."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"item text needs {path}, which does not exist (an LLM model reads item text "
                                "from the .item file; set ITEM_TEXT_FIELDS once the file exists)")
    typed = read_header(path, field_separator, encoding)
    fields = [name for name, ftype in typed if name != id_field and ftype in ("token", "token_seq")]
    if not fields:
        raise ValueError(f"ITEM_TEXT_FIELDS is not set and {path} has no token/token_seq field besides "
                         f"'{id_field}' (its fields: {typed}): set ITEM_TEXT_FIELDS")
    logger.warning("ITEM_TEXT_FIELDS is not set: using every text field of %s: %s (set ITEM_TEXT_FIELDS, "
                   "and item_text_format, to choose)", path, fields)
    return fields


def _clean(value, ftype, seq_separator):
    value = value.strip()
    if ftype.endswith("_seq"):
        value = " ".join(v for v in value.split(seq_separator) if v)
    return value


def _render(values, fields, text_format):
    if not values or not any(values.values()):
        return ""
    if text_format:
        return text_format.format(**values).strip()
    first, rest = values[fields[0]], [f"{f}: {values[f]}" for f in fields[1:] if values[f]]
    if not first:
        return "; ".join(rest)
    return f"{first} ({'; '.join(rest)})" if rest else first
