"""trainer/data/parallel.py: TSV reading, toy corpora, tokenization and vocabularies."""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import parallel
from trainer.data.parallel import END, PAD, START, UNK
from trainer.errors import DataError


def _write(tmp_path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


# ---- read_tsv -------------------------------------------------------------------


def test_read_tsv_tatoeba_format(tmp_path):
    path = _write(tmp_path, "spa.txt",
                  "\ufeffGo.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\r\n"
                  "Hi.\tHola.\textra\tcolumns\n"
                  "  Run!  \t¡Corre!\n")
    assert parallel.read_tsv(path) == [("Go.", "Ve."), ("Hi.", "Hola."), ("Run!", "¡Corre!")]
    assert parallel.read_tsv(path, reverse=True)[0] == ("Ve.", "Go.")
    assert parallel.read_tsv(path, limit=2) == [("Go.", "Ve."), ("Hi.", "Hola.")]


@pytest.mark.parametrize("content,message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("a\tb\n\nc\td\n", "line 2 is empty"),
    ("a\tb\nc\td\nno tab here\n", "line 3 has no tab: 'no tab here'"),
    ("a\tb\n\tonly target\n", "line 2 has an empty source"),
    ("a\t \n", "line 1 has an empty target"),
    (b"a\tb\nc\t\xe9t\xe9\n", "is not valid utf-8: line 2, byte offset 6"),
])
def test_read_tsv_errors_name_file_and_line(tmp_path, content, message):
    path = _write(tmp_path, "bad.tsv", content)
    with pytest.raises(DataError, match="bad.tsv") as info:
        parallel.read_tsv(path)
    assert message in str(info.value)


def test_read_tsv_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.path"):
        parallel.read_tsv(str(tmp_path / "nope.tsv"))


def test_split_pairs_holds_out_whole_sources_deterministically():
    pairs = [(f"s{i % 30}", f"t{i}") for i in range(100)]
    train, evals = parallel.split_pairs(pairs, 0.2, seed=3)
    assert len(train) + len(evals) == 100 and 15 <= len(evals) <= 30
    assert not {s for s, _ in train} & {s for s, _ in evals}
    assert parallel.split_pairs(pairs, 0.2, seed=3) == (train, evals)
    assert parallel.split_pairs(pairs, 0.2, seed=4) != (train, evals)


# ---- toy corpora -------------------------------------------------------------------


def test_toy_dates_are_deterministic_distinct_and_correct():
    pairs = parallel.toy_pairs("dates", 500, seed=7)
    assert pairs == parallel.toy_pairs("dates", 500, seed=7)
    assert pairs != parallel.toy_pairs("dates", 500, seed=8)
    assert len({s for s, _ in pairs}) == 500
    for source, target in pairs:
        day = datetime.date.fromisoformat(target)
        assert str(day.day) in source and (str(day.year) in source or
                                           f"{day.year % 100:02d}" in source)
    # Surface forms: digit runs -> 9, letter runs -> a. The ten formats give 8
    # shapes ("3 May 2001" and "2001 May 3" share one, as do 03.05.01 and 03.05.2001).
    shapes = {re.sub(r"[^\W\d_]+", "a", re.sub(r"\d+", "9", s)) for s, _ in pairs}
    assert len(shapes) == 8, shapes


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (99, "ninety-nine"),
    (105, "one hundred and five"), (1000, "one thousand"), (2005, "two thousand and five"),
    (71345, "seventy-one thousand three hundred and forty-five"),
])
def test_number_words(n, words):
    assert parallel.number_words(n) == words


def test_toy_numbers_match_their_digits():
    for source, target in parallel.toy_pairs("numbers", 300, seed=1):
        assert source.replace(" and ", " ") == parallel.number_words(int(target), use_and=False)


# ---- tokenization ------------------------------------------------------------------

TEXTS = ["Hello, world!", "  ¿Qué   tal?  ", "Don't stop\u00a0believing...",
         "«Oui» (dit-il).", "a\u202fb\tc", "", "Straße ÉTÉ", "[PAD] x"]


@pytest.mark.parametrize("mode", ["char", "word"])
@pytest.mark.parametrize("lowercase", [False, True])
def test_tf_tokenizer_matches_python(mode, lowercase):
    tf_tokens = parallel.tf_tokenize(tf.constant(TEXTS), mode, lowercase).to_list()
    for text, got in zip(TEXTS, tf_tokens):
        expected = parallel.tokenize(text, mode, lowercase)
        assert [t.decode("utf-8") for t in got] == expected, text
        joined = parallel.tf_detokenize(tf.ragged.constant([expected], dtype=tf.string), mode)
        assert joined.numpy()[0].decode("utf-8") == parallel.detokenize(expected, mode)


def test_word_tokens_and_detokenize():
    tokens = parallel.tokenize("¿Qué tal?  Don't (stop)...", "word")
    assert tokens == ["¿", "Qué", "tal", "?", "Don't", "(", "stop", ")", ".", ".", "."]
    assert parallel.detokenize(tokens, "word") == "¿Qué tal? Don't (stop)..."
    assert parallel.tokenize("A b", "char", lowercase=True) == ["a", " ", "b"]


# ---- vocabularies and encoding ---------------------------------------------------------


def test_vocab_specials_order_limits_and_unknowns():
    vocab = parallel.Vocab.fit([list("abca"), list("ab"), list("z")], max_size=6, min_count=1)
    assert vocab.tokens[:4] == ("[PAD]", "[START]", "[END]", "[UNK]")
    assert (PAD, START, END, UNK) == (0, 1, 2, 3)
    assert vocab.tokens[4:] == ("a", "b")  # by count, then by token; capped at 6
    assert vocab.encode(["a", "z", "q"]) == [4, UNK, UNK]
    assert vocab.decode([START, 4, 5, UNK, END, 4]) == ["a", "b", "[UNK]"]
    rare = parallel.Vocab.fit([list("abca"), list("ab"), list("z")], max_size=100, min_count=2)
    assert rare.tokens[4:] == ("a", "b")


def test_encode_pairs_is_right_padded():
    vocab = parallel.Vocab.fit([list("abc")], 100, 1)
    features, labels = parallel.encode_pairs([(list("ab"), list("c")), (list("abc"), list("ba"))],
                                             vocab, vocab, source_length=4, target_length=3)
    a, b, c = vocab.encode("abc")
    np.testing.assert_array_equal(features["source"], [[a, b, 0, 0], [a, b, c, 0]])
    np.testing.assert_array_equal(features["target_in"], [[START, c, 0, 0], [START, b, a, 0]])
    np.testing.assert_array_equal(labels, [[c, END, 0, 0], [b, a, END, 0]])
    assert features["source"].dtype == labels.dtype == np.int32
