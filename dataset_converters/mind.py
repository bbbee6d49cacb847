"""MIND (news.tsv, behaviors.tsv) -> RecBole atomic files.

    python -m dataset_converters.mind --input MINDsmall_train --output dataset --name mind

An interaction is one (user, news) pair: the user's click history (repeated in every impression
of that user) is taken once, and clicked impressions ("N123-1") are added unless already in the
history or clicked earlier. History clicks have no time of their own: they get timestamps one
second apart, in order, ending one second before the user's first impression.
"""
import argparse
import calendar
import logging
import os
from datetime import datetime

from dataset_converters.common import Problems, add_common_args, clean_text, finish, read_lines

NEWS_COLUMNS = 8  # id, category, subcategory, title, abstract, url, title_entities, abstract_entities
BEHAVIOR_COLUMNS = 5  # impression_id, user_id, time, history, impressions
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def parse_time(text):
    return float(calendar.timegm(datetime.strptime(text.strip(), TIME_FORMAT).timetuple()))


def read_news(path, problems):
    """news id -> (title, abstract, category, subcategory)."""
    news = {}
    for line_no, line in read_lines(path, problems, "news.tsv"):
        cols = line.split("\t")
        if len(cols) != NEWS_COLUMNS:
            problems("news.tsv: wrong column count", f"news.tsv line {line_no}", f"{len(cols)} columns")
            continue
        nid, category, subcategory, title, abstract = cols[:5]
        if nid in news:
            problems("news.tsv: duplicate news id", f"news.tsv line {line_no}", nid)
            continue
        news[nid] = (clean_text(title), clean_text(abstract), clean_text(category), clean_text(subcategory))
    return news


def read_behaviors(path, news, problems):
    """user -> {"first": first impression time, "history": [news], "clicks": {news: time}}."""
    users = {}
    merged = 0
    for line_no, line in read_lines(path, problems, "behaviors.tsv"):
        where = f"behaviors.tsv line {line_no}"
        cols = line.split("\t")
        if len(cols) != BEHAVIOR_COLUMNS:
            problems("behaviors.tsv: wrong column count", where, f"{len(cols)} columns")
            continue
        _, user, time_text, history, impressions = cols
        try:
            ts = parse_time(time_text)
        except ValueError:
            problems("behaviors.tsv: unparsable time", where, repr(time_text))
            continue
        state = users.setdefault(user, {"first": ts, "history": [], "seen": set(), "clicks": {}})
        state["first"] = min(state["first"], ts)
        for nid in history.split():
            if nid in state["seen"]:
                continue
            if nid not in news:
                problems("history item missing from news.tsv", where, nid)
                state["seen"].add(nid)
                continue
            state["seen"].add(nid)
            state["history"].append(nid)
        for token in impressions.split():
            nid, sep, label = token.rpartition("-")
            if not sep or label not in ("0", "1") or not nid:
                problems("behaviors.tsv: malformed impression", where, token)
                continue
            if label == "0":
                continue
            if nid not in news:
                problems("clicked item missing from news.tsv", where, nid)
                continue
            if nid in state["clicks"]:
                merged += 1
                state["clicks"][nid] = min(state["clicks"][nid], ts)
                continue
            state["clicks"][nid] = ts
    return users, merged


def to_sequences(users):
    sequences, in_history = {}, 0
    for user, state in users.items():
        history = state["history"]
        seq = [(nid, state["first"] - (len(history) - k)) for k, nid in enumerate(history)]
        hist_set = set(history)
        for nid, ts in state["clicks"].items():
            if nid in hist_set:
                in_history += 1
                continue
            seq.append((nid, ts))
        if seq:
            sequences[user] = seq
    return sequences, in_history


def convert(input_dir, output, name="mind", strict=False, user_core=0, item_core=0):
    problems = Problems(strict)
    news = read_news(os.path.join(input_dir, "news.tsv"), problems)
    users, merged = read_behaviors(os.path.join(input_dir, "behaviors.tsv"), news, problems)
    sequences, in_history = to_sequences(users)

    def item_rows():
        for nid, (title, abstract, category, subcategory) in news.items():
            yield nid, title, abstract, category, subcategory

    header = ["item_id:token", "title:token_seq", "abstract:token_seq", "category:token", "subcategory:token"]
    extra = {"clicks already in the history (kept once)": in_history, "repeated clicks (kept once)": merged}
    return finish(output, name, sequences, header, item_rows, problems, extra, user_core, item_core)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--name", default="mind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    convert(args.input, args.output, args.name, args.strict, args.user_core, args.item_core)


if __name__ == "__main__":
    main()
