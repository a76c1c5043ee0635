"""Parallel text (source -> target pairs): readers, toy corpora, vocabularies.

Three things live here, all host side and deterministic:

* `read_tsv`: a `source<TAB>target` corpus (the Tatoeba / ManyThings format;
  columns after the second are ignored), local or gs:// via `storage`.
* `toy_pairs`: learnable toy corpora generated from a seed (human-written dates
  -> ISO dates, numbers in words -> digits).
* Tokenization and `Vocab`: char- or word-level tokens with pad/start/end/unk
  ids. `tokenize` has a TensorFlow twin, `tf_tokenize`, used inside exported
  SavedModels; the two must agree (tests/data/test_parallel_data.py checks it).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import re
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from trainer import storage
from trainer.data import tables
from trainer.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("[PAD]", "[START]", "[END]", "[UNK]")

# Whitespace of any kind collapses to one space. Written as literal characters
# so Python's `re` and TensorFlow's RE2 read the same class.
_WS = "[ \t\n\r\f\v\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
# Word mode splits these off as tokens of their own; apostrophes and hyphens
# stay inside words ("don't", "twenty-one").
_PUNCT = "[.,!?;:¿¡\"()\\[\\]«»…]"
_CLOSING = " ([.,!?;:)\\]»…])"
_OPENING = "([¿¡(\\[«]) "


# ----------------------------------------------------------------------------
# Reading corpora.
# ----------------------------------------------------------------------------


def read_tsv(path: str, *, reverse: bool = False, limit: int = 0, encoding: str = "utf-8",
             max_field_bytes: int = 1 << 20) -> list[tuple[str, str]]:
    """Reads `source<TAB>target` lines (extra tab-separated columns are ignored).

    Args:
      path: local or gs:// file.
      reverse: swap the two columns (translate the second into the first).
      limit: keep only the first `limit` pairs; 0 keeps all.

    Raises:
      DataError: missing or empty file, non-UTF-8 bytes, a blank line, a line
        without a tab, or an empty source/target; the message names the file
        and line number.
    """
    raw = storage.read_input(
        path, f"parallel corpus {path!r}", error=DataError,
        missing="Set data.path to a UTF-8 text file with one 'source<TAB>target' pair per "
                "line (local or gs://), or use data.source=toy.",
        directory="point data.path at a file of 'source<TAB>target' lines.",
        empty="expected one 'source<TAB>target' pair per line.")
    text = tables.decode(raw, encoding, path)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    pairs = []
    for number, line in enumerate(lines, start=1):
        pairs.append(pair_of_line(path, number, line, reverse=reverse,
                                  max_field_bytes=max_field_bytes))
        if limit and len(pairs) >= limit:
            break
    return pairs


def pair_of_line(path: str, number: int, line: str, *, reverse: bool,
                 max_field_bytes: int) -> tuple[str, str]:
    """(source, target) of line `number` of a parallel corpus (without its "\n").

    The one line parser of `read_tsv` and the streaming preparation
    (trainer/data/prepare_parallel.py).

    Raises:
      DataError: a line too long, blank, without a tab or with an empty side.
    """
    line = line.rstrip("\r")
    if len(line) > max_field_bytes:
        raise too_long(path, number, len(line), max_field_bytes)
    if not line.strip():
        raise DataError(
            f"parallel corpus {path!r} line {number} is empty. Every line must be "
            "'source<TAB>target'; delete blank lines."
        )
    columns = line.split("\t")
    if len(columns) < 2:
        raise DataError(
            f"parallel corpus {path!r} line {number} has no tab: {line[:80]!r}. Every "
            "line must be 'source<TAB>target' (further tab-separated columns are ignored)."
        )
    source, target = columns[0].strip(), columns[1].strip()
    if not source or not target:
        side = "source (1st column)" if not source else "target (2nd column)"
        raise DataError(
            f"parallel corpus {path!r} line {number} has an empty {side}: {line[:80]!r}."
        )
    return (target, source) if reverse else (source, target)


def too_long(path: str, number: int, length: int, max_field_bytes: int) -> DataError:
    return DataError(
        f"parallel corpus {path!r} line {number} is {length} characters long, over "
        f"data.max_field_bytes={max_field_bytes}. Raise data.max_field_bytes if that is "
        "right, or fix the line.")


def split_pairs(
    pairs: Sequence[tuple[str, str]], eval_fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Holds out about `eval_fraction` of the pairs, by source sentence.

    All pairs that share a source land on the same side, so eval sources are
    never seen in training. Deterministic in `seed`; keeps file order within
    each side.
    """
    held = held_sources(collections.Counter(s for s, _ in pairs), len(pairs), eval_fraction,
                        seed)
    train = [p for p in pairs if p[0] not in held]
    evals = [p for p in pairs if p[0] in held]
    return train, evals


def held_sources(count: collections.Counter, n_pairs: int, eval_fraction: float,
                 seed: int) -> set[str]:
    """The sources `split_pairs` holds out, from each distinct source's pair count.

    The distinct sources in sorted order are drawn in a seeded permutation until their
    pairs reach `max(1, round(eval_fraction * n_pairs))`.
    """
    sources = sorted(count)
    held = held_indices(np.array([count[s] for s in sources], np.int64), n_pairs,
                        eval_fraction, seed)
    return {sources[i] for i in held}


def held_indices(counts: np.ndarray, n_pairs: int, eval_fraction: float,
                 seed: int) -> np.ndarray:
    """Positions (sorted) of the held-out sources among the distinct sources in sorted
    order, `counts` being their pair counts in that order. The streaming preparation
    (trainer/data/prepare_parallel.py) gets the counts in that order from a bounded
    counter and calls this, so its split is `held_sources`' own."""
    order = np.random.default_rng(seed).permutation(len(counts))
    wanted = max(1, round(eval_fraction * n_pairs))
    # Drawn until the pairs reach `wanted`: the draws before the running total does.
    reached = np.cumsum(counts[order]) >= wanted
    stop = int(np.argmax(reached)) + 1 if reached.any() else len(order)
    return np.sort(order[:stop])


# ----------------------------------------------------------------------------
# Toy corpora.
# ----------------------------------------------------------------------------

_MONTHS = ("january", "february", "march", "april", "may", "june", "july",
           "august", "september", "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_FIRST_DAY = datetime.date(1950, 1, 1)  # two-digit years are unambiguous in 1950-2049
_DAYS = (datetime.date(2049, 12, 31) - _FIRST_DAY).days + 1


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


_DATE_FORMATS = (
    lambda d: f"the {_ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{_MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",
    lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    lambda d: f"{_WEEKDAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.year} {_MONTHS[d.month - 1]} {d.day}",
    lambda d: f"{d.day}-{_MONTHS[d.month - 1][:3]}-{d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
)


def _date_pair(rng: np.random.Generator) -> tuple[str, str]:
    day = _FIRST_DAY + datetime.timedelta(days=int(rng.integers(_DAYS)))
    text = _DATE_FORMATS[int(rng.integers(len(_DATE_FORMATS)))](day)
    case = rng.random()
    if case < 0.2:
        text = text.upper()
    elif case < 0.5:
        text = text.title()
    return text, day.isoformat()


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int, use_and: bool = True) -> str:
    """English words for 0 <= n < 1_000_000 ("three hundred and five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        head = _ONES[n // 100] + " hundred"
        if not rest:
            return head
        return head + (" and " if use_and else " ") + number_words(rest, use_and)
    head = number_words(n // 1000, use_and) + " thousand"
    rest = n % 1000
    if not rest:
        return head
    joiner = " and " if (use_and and rest < 100) else " "
    return head + joiner + number_words(rest, use_and)


def _number_pair(rng: np.random.Generator) -> tuple[str, str]:
    # Log-uniform magnitudes, so short and long numbers are equally common.
    digits = int(rng.integers(1, 6))
    n = int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10**digits))
    return number_words(n, use_and=bool(rng.random() < 0.5)), str(n)


_TOY = {"dates": _date_pair, "numbers": _number_pair}


def toy_pairs(kind: str, size: int, seed: int) -> list[tuple[str, str]]:
    """`size` pairs with distinct sources, a deterministic function of `seed`.

    kind "dates": dates in ten human formats and three casings -> "YYYY-MM-DD".
    kind "numbers": 0..99999 in English words -> digits.
    """
    make = _TOY[kind]
    rng = np.random.default_rng([seed, 17])
    pairs, seen = [], set()
    for _ in range(size * 20):
        source, target = make(rng)
        if source not in seen:
            seen.add(source)
            pairs.append((source, target))
            if len(pairs) == size:
                return pairs
    raise DataError(
        f"the {kind!r} toy corpus has fewer than data.toy_size={size} distinct examples; "
        "lower data.toy_size."
    )


# ----------------------------------------------------------------------------
# Tokenization: a Python version (training data) and a TF twin (SavedModel).
# ----------------------------------------------------------------------------


def normalize(text: str, lowercase: bool) -> str:
    text = re.sub(_WS, " ", text).strip(" ")
    return text.lower() if lowercase else text


def tokenize(text: str, mode: str, lowercase: bool = False) -> list[str]:
    """Char- or word-level tokens of `text`, after whitespace normalization."""
    text = normalize(text, lowercase)
    if mode == "char":
        return list(text)
    return [t for t in re.sub(f"({_PUNCT})", r" \1 ", text).split(" ") if t]


def detokenize(tokens: Iterable[str], mode: str) -> str:
    if mode == "char":
        return "".join(tokens)
    text = " ".join(t for t in tokens if t)
    text = re.sub(_CLOSING, r"\1", text)
    return re.sub(_OPENING, r"\1", text)


def tf_tokenize(texts: tf.Tensor, mode: str, lowercase: bool) -> tf.RaggedTensor:
    """TensorFlow twin of `tokenize` on a batch of strings -> ragged tokens."""
    import tensorflow as tf  # here: the preparation (trainer/data/prepare_parallel.py) runs without it

    texts = tf.strings.regex_replace(texts, _WS, " ")
    texts = tf.strings.regex_replace(texts, "^ +| +$", "")
    if lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    if mode == "char":
        return tf.strings.unicode_split(texts, "UTF-8")
    texts = tf.strings.regex_replace(texts, f"({_PUNCT})", r" \1 ")
    texts = tf.strings.regex_replace(texts, " +", " ")
    texts = tf.strings.regex_replace(texts, "^ +| +$", "")
    tokens = tf.strings.split(texts, sep=" ")
    return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)


def tf_detokenize(tokens: tf.RaggedTensor, mode: str) -> tf.Tensor:
    """TensorFlow twin of `detokenize` on a ragged batch of tokens -> strings."""
    import tensorflow as tf

    if mode == "char":
        return tf.strings.reduce_join(tokens, axis=-1)
    text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    text = tf.strings.regex_replace(text, _CLOSING, r"\1")
    return tf.strings.regex_replace(text, _OPENING, r"\1")


# ----------------------------------------------------------------------------
# Vocabularies and fixed-shape encoding.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Tokens by id: the four SPECIALS first, then by descending frequency."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def fit(cls, token_lists: Iterable[Sequence[str]], max_size: int, min_count: int) -> "Vocab":
        return cls.from_counts(collections.Counter(t for tokens in token_lists for t in tokens),
                               max_size, min_count)

    @classmethod
    def from_counts(cls, counts: collections.Counter, max_size: int, min_count: int) -> "Vocab":
        """The vocabulary of token `counts` (the streaming preparation counts as it reads)."""
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        return cls(SPECIALS + tuple(ranked[: max(0, max_size - len(SPECIALS))]))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self._index.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first END, skipping PAD and START."""
        out = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i not in (PAD, START):
                out.append(self.tokens[i])
        return out


def encode_pairs(
    token_pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    source_vocab: Vocab,
    target_vocab: Vocab,
    source_length: int,
    target_length: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Right-padded int32 arrays: features {source, target_in} and labels.

    `target_in` is START + target and the labels are target + END, both
    `target_length + 1` long; padding is PAD (0) on the right only.
    """
    n = len(token_pairs)
    source = np.zeros([n, source_length], np.int32)
    target_in = np.zeros([n, target_length + 1], np.int32)
    labels = np.zeros([n, target_length + 1], np.int32)
    for row, (src, tgt) in enumerate(token_pairs):
        s = source_vocab.encode(src)
        t = target_vocab.encode(tgt)
        source[row, : len(s)] = s
        target_in[row, : len(t) + 1] = [START] + t
        labels[row, : len(t) + 1] = t + [END]
    return {"source": source, "target_in": target_in}, labels
