"""Amazon-M2 (products_train.csv, sessions_train.csv) -> RecBole atomic files.

    python -m dataset_converters.amazon_m2 --input amazon-m2 --output dataset --name amazon-m2 --locales UK DE

Each session becomes one user (``s<line>``) whose items are ``prev_items`` then ``next_item``,
with synthetic timestamps increasing by one across the whole file, so sequences keep their
order. Products are keyed by (locale, id): the item token is ``<locale>_<id>``, so the same id
sold in two locales stays two items.
"""
import argparse
import csv
import io
import logging
import os
import re

from dataset_converters.common import Problems, add_common_args, clean_text, finish, read_lines

PRODUCT_COLUMNS = ["id", "locale", "title", "price", "brand", "color", "size", "model", "material", "author", "desc"]
SESSION_COLUMNS = ["prev_items", "next_item", "locale"]
TEXT_FIELDS = ["title", "brand", "color", "size", "model", "material", "author", "desc"]
_ITEM = re.compile(r"'([^'\s]+)'")
_LIST = re.compile(r"^\[\s*('[^'\s]+'[\s,]*)*\]$")


def parse_item_list(text):
    """Parse ``"['B0A' 'B0B']"`` (numpy repr, possibly with commas/newlines); None if malformed."""
    text = text.strip()
    if not _LIST.match(text.replace("\n", " ")):
        return None
    return _ITEM.findall(text)


def csv_rows(path, problems, name, columns):
    """Stream CSV records (quoted fields may span lines); yield (line number, dict)."""
    lines = (line for _, line in read_lines(path, problems, name))
    buffer = _LineCounter(lines)
    reader = csv.reader(buffer)
    try:
        header = next(reader)
    except StopIteration:
        return
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; header is {header}")
    index = {c: header.index(c) for c in columns}
    while True:
        start = buffer.line_no + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems(f"{name}: unparsable CSV", f"{name} line {start}", str(exc))
            continue
        if len(row) != len(header):
            problems(f"{name}: wrong column count", f"{name} line {start}", f"{len(row)} columns")
            continue
        yield start, {c: row[i] for c, i in index.items()}


class _LineCounter(io.TextIOBase):
    """Feeds csv.reader line by line while tracking the physical line number."""

    def __init__(self, lines):
        self.lines = lines
        self.line_no = 0

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.lines)
        self.line_no += 1
        return line + "\n"


def convert(input_dir, output, name="amazon-m2", locales=None, strict=False, user_core=0, item_core=0):
    problems = Problems(strict)
    wanted = set(locales) if locales else None
    products, filtered = {}, {"products": 0, "sessions": 0}
    for line_no, row in csv_rows(os.path.join(input_dir, "products_train.csv"), problems, "products_train.csv",
                                 PRODUCT_COLUMNS):
        if wanted and row["locale"] not in wanted:
            filtered["products"] += 1
            continue
        key = f"{row['locale']}_{row['id']}"
        if key in products:
            problems("products_train.csv: duplicate (locale, id)", f"products_train.csv line {line_no}", key)
            continue
        try:
            price = repr(float(row["price"])) if row["price"].strip() else ""
        except ValueError:
            problems("products_train.csv: unparsable price (left empty)", f"products_train.csv line {line_no}", row["price"])
            price = ""
        products[key] = [clean_text(row[f]) for f in TEXT_FIELDS] + [price]

    sequences, clock = {}, 0
    for line_no, row in csv_rows(os.path.join(input_dir, "sessions_train.csv"), problems, "sessions_train.csv",
                                 SESSION_COLUMNS):
        where = f"sessions_train.csv line {line_no}"
        if wanted and row["locale"] not in wanted:
            filtered["sessions"] += 1
            continue
        prev = parse_item_list(row["prev_items"])
        if prev is None:
            problems("sessions_train.csv: broken list syntax", where, row["prev_items"][:60])
            continue
        seq = []
        for pid in prev + [row["next_item"].strip()]:
            key = f"{row['locale']}_{pid}"
            if key not in products:
                problems("session item missing from products_train.csv", where, key)
                continue
            clock += 1
            seq.append((key, float(clock)))
        if seq:
            sequences[f"s{line_no}"] = seq
        else:
            problems("session with no known item", where)
    def item_rows():
        for key, values in products.items():
            yield [key] + values

    header = ["item_id:token"] + [f"{f}:token_seq" for f in TEXT_FIELDS] + ["price:float"]
    extra = {"products outside --locales": filtered["products"], "sessions outside --locales": filtered["sessions"]}
    return finish(output, name, sequences, header, item_rows, problems, extra, user_core, item_core)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--name", default="amazon-m2")
    parser.add_argument("--locales", nargs="+", help="keep only these locales (e.g. UK DE JP)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    convert(args.input, args.output, args.name, args.locales, args.strict, args.user_core, args.item_core)


if __name__ == "__main__":
    main()
