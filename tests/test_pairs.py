"""Relation-pair registry: built-in tasks from installed packages, user files, split by pair."""

from __future__ import annotations

import json

import pytest

from featuregeo.core.errors import InputError
from featuregeo.io.pairs import (
    BUILTIN_TASKS,
    builtin_task,
    load_tasks,
    make_task,
    read_pair_file,
    split_pairs,
)


def test_builtin_tasks_are_real_and_recorded():
    tasks = {t.name: t for t in load_tasks()}
    assert set(tasks) == set(BUILTIN_TASKS)
    assert ("Greece", "Athens") in tasks["country-capital"].pairs
    assert ("France", "Paris") in tasks["country-capital"].pairs
    assert ("king", "queen") in tasks["male-female"].pairs
    assert ("dance", "danced") in tasks["present-past"].pairs  # lemma from lemminflect, past from Google
    assert ("bad", "worse") in tasks["comparative"].pairs
    assert ("Albania", "Albanian") in tasks["nationality"].pairs
    for t in tasks.values():
        assert t.n_pairs >= 20 and len(set(t.pairs)) == t.n_pairs
        assert "questions-words" in t.source
        assert all(a != b for a, b in t.pairs)
    # countryinfo repeats many Google capitals: duplicates removed and counted
    assert "countryinfo" in tasks["country-capital"].source and tasks["country-capital"].n_duplicates > 50


def test_docs_name_the_real_source_of_every_builtin_task():
    # the atoms page's table of built-in tasks must match what the code reads (it once credited
    # singular-plural, comparative and superlative to lemminflect; they come from the analogy set)
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = {}
    for line in (root / "docs" / "analyses" / "atoms.md").read_text().splitlines():
        m = re.match(r"\| `([a-z-]+)` \| (\d+) \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), m.group(3))
    assert set(rows) == set(BUILTIN_TASKS)
    for name in BUILTIN_TASKS:
        t = builtin_task(name)
        n, source = rows[name]
        assert n == t.n_pairs, name
        sections = re.findall(r"\[([^\]]+)\]", t.source)[0].split(",")
        assert all(f"`{sec}`" in source for sec in sections), (name, source)
        assert ("lemminflect" in source) == ("lemminflect" in t.source), name
        assert ("countryinfo" in source) == ("countryinfo" in t.source), name
    readme = (root / "README.md").read_text()
    assert not re.search(r"lemminflect[^\n]*(plural|comparative|superlative)", readme + "\n".join(
        p.read_text() for p in (root / "docs").rglob("*.md")))


def test_duplicates_and_self_pairs_are_counted():
    t = make_task("x", [("a", "b"), ("a", "b"), (" a ", "b"), ("c", "c"), ("c", "d")], "test")
    assert t.pairs == (("a", "b"), ("c", "d")) and t.n_duplicates == 3


def test_split_is_by_pair_and_deterministic():
    t = builtin_task("country-capital")
    tr, te = split_pairs(t, 0.3, seed=0)
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == t.n_pairs
    assert 0.2 < len(te) / t.n_pairs < 0.4
    assert split_pairs(t, 0.3, seed=0) == (tr, te)
    # a pair's side does not depend on the other pairs or their order
    sub = make_task("sub", list(reversed(t.pairs[:60])), "test")
    tr2, te2 = split_pairs(sub, 0.3, seed=0)
    assert set(te2) == set(te) & set(sub.pairs)
    assert set(split_pairs(t, 0.3, seed=1)[1]) != set(te)
    small = make_task("s", [("a", "b"), ("c", "d")], "test")
    assert all(len(side) == 1 for side in split_pairs(small, 0.3, seed=0))


def test_user_files_csv_and_todd_json(tmp_path):
    csv = tmp_path / "antonyms.csv"
    csv.write_text("input,output\nhot,cold\nup,down\nhot,cold\nbig,small,size\n")
    tasks = {t.name: t for t in read_pair_file(csv)}
    assert tasks["antonyms"].pairs == (("hot", "cold"), ("up", "down")) and tasks["antonyms"].n_duplicates == 1
    assert tasks["size"].pairs == (("big", "small"),)
    js = tmp_path / "english-french.json"
    js.write_text(json.dumps([{"input": "cat", "output": "chat"}, {"input": "dog", "output": ["chien"]}]))
    (t,) = read_pair_file(js)
    assert t.name == "english-french" and t.pairs == (("cat", "chat"), ("dog", "chien")) and t.source == str(js)
    both = load_tasks(["male-female"], [js])
    assert [x.name for x in both] == ["male-female", "english-french"]


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match=r"unknown task\(s\) \['colour'\]; valid names are \[.*'country-capital'"):
        load_tasks(["colour"])
    with pytest.raises(InputError, match="no such file"):
        read_pair_file(tmp_path / "missing.csv")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"in": 1}]')
    with pytest.raises(InputError, match="lacks 'input'/'output'"):
        read_pair_file(bad)
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d\n")
    with pytest.raises(InputError, match="4 columns; expected input,output"):
        read_pair_file(rows)
    (tmp_path / "x.txt").write_text("a,b\n")
    with pytest.raises(InputError, match="defined twice"):
        load_tasks([], [tmp_path / "x.txt", tmp_path / "x.txt"])
    with pytest.raises(InputError, match="test_fraction"):
        split_pairs(builtin_task("male-female"), 1.5)


def test_unreadable_files_are_one_line_errors(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("caf\xe9,caf\xe9s\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"--pairs .*latin1.csv: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_pair_file(latin1)
    js = tmp_path / "latin1.json"
    js.write_bytes('[{"input": "caf\xe9", "output": "x"}]'.encode("latin-1"))
    with pytest.raises(InputError, match=r"--pairs .*latin1.json: not UTF-8 text"):
        read_pair_file(js)
