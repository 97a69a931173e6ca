"""Generated text beyond perplexity: real words, diversity, copying, loops and play structure.

Pure NumPy/Python scoring of a batch of texts against the training text (`text_metrics`);
`reference_windows` gives real held-out text of the same shape, whose scores are the row to
compare with. The sampling study built on them, `evaluate_checkpoint`, samples a checkpoint at
every setting of a grid of temperatures, top-p and top-k values (`evaluate_grid`) and scores each
batch; ``python -m experiments.text_quality`` runs it, and `jaxrnn.report.text_quality` shows it.

Tokens. A *word* is a maximal run of letters and apostrophes holding at least one letter
(``WORD_PATTERN``), lower-cased, so "Romeo's", "ROMEO'S" and "romeo's" are one word. A *line* is
a non-empty piece of a text between newlines. Character n-grams are taken over every position of a
text, newlines included.

Metrics of a batch of S texts (`text_metrics`; every value a finite float in [0, 1] except the two
lengths; a metric with nothing to count, e.g. distinct_2 of texts without two words, is 0):

- ``word_validity``: words of the batch that occur as words in the training text / all words.
- ``distinct_1``, ``distinct_2``: distinct words / all words, distinct pairs of consecutive words
  of one text / all such pairs, over the whole batch (Li et al. 2016, "A Diversity-Promoting
  Objective Function for Neural Conversation Models").
- ``copied_8gram_fraction``: character 8-grams of the batch that occur verbatim in the training
  text / all character 8-grams.
- ``longest_copy_median``: per text, the length of its longest substring that occurs verbatim in
  the training text; the median over the S texts, in characters.
- ``repeated_4gram_fraction``: per text, its word 4-grams that already occurred earlier in the same
  text / its word 4-grams (1 - distinct/total), averaged over the texts that have a word 4-gram.
- ``speaker_line_fraction``: lines of the form ``NAME:`` (``SPEAKER_PATTERN``: a capital letter,
  then up to 39 letters, spaces, apostrophes, hyphens or periods, then a colon ending the line) /
  all lines, over the batch; Tiny Shakespeare's speeches start with such a line.
- ``mean_line_length``: mean length of the batch's lines in characters.

Index. The training text is indexed once by `build_index`: its word set and its suffix array
(the start positions of all its suffixes in lexicographic order, built by prefix doubling with
NumPy sorts, O(N log^2 N)). The longest prefix of ``text[i:]`` that occurs in the training text,
``match[i]`` (the *matching statistics*, Chang & Lawler 1994), is then the longer common prefix
of ``text[i:]`` with its two neighbours in suffix order, found by a binary search vectorised over
all positions of the batch. Both copy metrics follow: an 8-gram starting at i is copied iff
``match[i] >= 8``, and a text's longest copy is ``max_i match[i]``. Exact, no hashing.
`get_index` caches the index per corpus (keyed by the SHA-256 of the text).
"""
import collections
import datetime
import hashlib
import re
import statistics
import time
from typing import NamedTuple, Optional, Sequence

import jax
import numpy as np

from jaxrnn import data as data_lib
from jaxrnn import loop, runstate, sample, train
from jaxrnn.errors import CheckpointError, ConfigError

COPY_NGRAM = 8         # copied_8gram_fraction: character n-gram length
REPEAT_NGRAM = 4       # repeated_4gram_fraction: word n-gram length
_LETTER = r"[^\W\d_]"  # a Unicode letter
WORD_PATTERN = re.compile(rf"(?:{_LETTER}|')*{_LETTER}(?:{_LETTER}|')*")
SPEAKER_PATTERN = re.compile(r"[A-Z][A-Za-z' .\-]{0,39}:")
METRICS = ("word_validity", "distinct_1", "distinct_2", "copied_8gram_fraction",
           "longest_copy_median", "repeated_4gram_fraction", "speaker_line_fraction",
           "mean_line_length")
_CACHE_SIZE = 4
_CHUNK = 8            # characters compared per vectorised step (measured best of 1, 4, 8, 16)


class TextIndex(NamedTuple):
    """The training text, indexed for `text_metrics` (N characters, V distinct ones).

    vocab: str of the V distinct characters, sorted; character ``vocab[c]`` has code ``c + 1``.
    codes: (N + 1,) int32 codes in 1..V, then a 0 that ends every suffix (it equals no code).
    suffix_array: (N,) int64 start positions of the suffixes of ``codes[:N]`` in lexicographic
      order (a suffix that is a prefix of another sorts first).
    words: frozenset of the text's words (`words`).
    """

    vocab: str
    codes: np.ndarray
    suffix_array: np.ndarray
    words: frozenset


def words(text: str) -> list:
    """The words of ``text`` in order: runs of letters and apostrophes holding a letter,
    lower-cased."""
    return WORD_PATTERN.findall(text.lower())


def lines(text: str) -> list:
    """The non-empty lines of ``text`` (trailing spaces and carriage returns removed)."""
    return [line for line in (part.rstrip() for part in text.split("\n")) if line]


def is_speaker_line(line: str) -> bool:
    """``NAME:`` alone on a line, e.g. "ROMEO:", "First Citizen:", "KING RICHARD III:"."""
    return SPEAKER_PATTERN.fullmatch(line) is not None


def suffix_array(codes: np.ndarray) -> np.ndarray:
    """Suffix array of codes (N,) integers >= 1, by prefix doubling: (N,) int64 start positions.

    After round k every suffix has a rank among the first 2^k characters of all suffixes; sorting
    by (rank of i, rank of i + 2^k) gives the ranks among the first 2^(k+1). It stops when all N
    ranks differ, after about log2 of the longest repeated substring rounds.
    """
    n = len(codes)
    rank = np.asarray(codes, np.int64)
    order = np.argsort(rank, kind="stable")
    width = 1
    while True:
        following = np.zeros(n, np.int64)                       # rank of i + width, 0 past the end
        if width < n:
            following[:n - width] = rank[width:]
        key = rank * (n + 2) + following                        # < (n + 2)^2, fits int64
        order = order[np.argsort(key[order], kind="stable")]
        sorted_key = key[order]
        new_rank = np.empty(n, np.int64)
        new_rank[order] = np.cumsum(np.concatenate([[1], sorted_key[1:] != sorted_key[:-1]]))
        rank = new_rank
        if rank.max() == n or width >= n:
            return order
        width *= 2


def build_index(train_text: str) -> TextIndex:
    """Index ``train_text`` (N >= 1 characters) for `text_metrics`; about 1.5 s of CPU for the
    1M characters of Tiny Shakespeare's train split."""
    if not train_text:
        raise ConfigError("the training text is empty; score against the text the model was "
                          "trained on")
    vocab = "".join(sorted(set(train_text)))
    codes = _encode(vocab, train_text)
    return TextIndex(vocab, np.concatenate([codes, [0]]).astype(np.int32), suffix_array(codes),
                     frozenset(words(train_text)))


_INDEXES = collections.OrderedDict()


def get_index(train_text: str) -> TextIndex:
    """`build_index`, cached for the last few corpora (keyed by the text's SHA-256)."""
    digest = hashlib.sha256(train_text.encode("utf-8")).hexdigest()
    if digest not in _INDEXES:
        _INDEXES[digest] = build_index(train_text)
        while len(_INDEXES) > _CACHE_SIZE:
            _INDEXES.popitem(last=False)
    _INDEXES.move_to_end(digest)
    return _INDEXES[digest]


def _encode(vocab: str, text: str) -> np.ndarray:
    """Codes (len(text),) int32: ``vocab.index(c) + 1``, or V + 1 for a character not in vocab
    (which therefore matches nothing in the indexed text)."""
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    vocab_points = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)    # sorted, distinct
    slot = np.searchsorted(vocab_points, points)
    known = slot < len(vocab_points)
    known[known] = vocab_points[slot[known]] == points[known]
    return np.where(known, slot + 1, len(vocab) + 1).astype(np.int32)


def _common_prefix(index, query, remaining, starts, positions, known):
    """Length of the common prefix of each query suffix and each indexed suffix.

    query: (Q,) int32 codes of all texts, concatenated; remaining: (Q,) characters from each
    position to the end of its own text; starts: (M,) query positions; positions: (M,) start
    positions in the indexed text; known: (M,) int64 lengths already known to be common (the
    comparison starts there). Returns (M,) int64, at most ``remaining[starts]``.
    """
    length = known.copy()
    active = np.arange(len(starts))
    limit = remaining[starts]
    columns = np.arange(_CHUNK)
    while active.size:                                # compare _CHUNK characters at a time
        offset = length[active][:, None] + columns                                  # (A, C)
        ours = query[np.minimum(starts[active][:, None] + offset, len(query) - 1)]
        theirs = index.codes[np.minimum(positions[active][:, None] + offset,
                                        len(index.codes) - 1)]    # past the end: 0, never equal
        equal = ours == theirs
        run = np.where(equal.all(axis=1), _CHUNK, equal.argmin(axis=1))
        length[active] = np.minimum(length[active] + run, limit[active])
        active = active[(run == _CHUNK) & (length[active] < limit[active])]
    return length


def matching_statistics(index: TextIndex, texts: Sequence[str]) -> list:
    """Per text, (len(text),) int64: ``match[i]``, the length of the longest prefix of
    ``text[i:]`` that occurs in the indexed text.

    A binary search for each suffix of the texts in the suffix array, all at once. It keeps the
    common prefix of the query with the suffixes just outside both ends of its interval; every
    suffix inside shares at least the smaller of the two (they sort between them), so each
    comparison starts there, and at the end the larger of the two is ``match[i]``.
    """
    pieces = [_encode(index.vocab, text) for text in texts]
    lengths = np.asarray([len(piece) for piece in pieces], np.int64)
    if not lengths.sum():
        return [np.zeros(0, np.int64) for _ in texts]
    query = np.concatenate(pieces)                                           # (Q,)
    ends = np.repeat(np.cumsum(lengths), lengths)
    remaining = ends - np.arange(len(query))                                 # (Q,) >= 1
    suffixes = index.suffix_array
    # Lower bound: suffixes before `low` are < the query suffix, those from `high` on are >=.
    low, high = np.zeros(len(query), np.int64), np.full(len(query), len(suffixes), np.int64)
    low_common = np.zeros(len(query), np.int64)    # common prefix with suffix low - 1 (0: none)
    high_common = np.zeros(len(query), np.int64)   # common prefix with suffix high (0: none)
    while True:
        open_ = np.flatnonzero(low < high)
        if not open_.size:
            break
        middle = (low[open_] + high[open_]) // 2
        position = suffixes[middle]
        common = _common_prefix(index, query, remaining, open_, position,
                                np.minimum(low_common[open_], high_common[open_]))
        exhausted = common >= remaining[open_]              # query suffix is a prefix: query <=
        next_query = query[np.minimum(open_ + common, len(query) - 1)]
        next_text = index.codes[np.minimum(position + common, len(index.codes) - 1)]
        text_smaller = ~exhausted & (next_text < next_query)
        moved, kept = open_[text_smaller], open_[~text_smaller]
        low[moved], low_common[moved] = middle[text_smaller] + 1, common[text_smaller]
        high[kept], high_common[kept] = middle[~text_smaller], common[~text_smaller]
    return np.split(np.maximum(low_common, high_common), np.cumsum(lengths)[:-1])


def _ratio(numerator, denominator):
    return float(numerator) / denominator if denominator else 0.0


def text_metrics(samples: Sequence[str], train_text: Optional[str] = None, *,
                 index: Optional[TextIndex] = None) -> dict:
    """The metrics of the module docstring for a batch of texts.

    Args:
      samples: S >= 1 texts (e.g. sampled continuations, without their prime).
      train_text: the training text; indexed through the cache of `get_index`. May be None when
        ``index`` is given.
      index: a prebuilt `build_index`/`get_index` of the training text (takes precedence).

    Returns:
      dict with the keys of ``METRICS``, each a finite float.
    """
    samples = list(samples)
    if not samples:
        raise ConfigError("no texts to score; pass at least one sample")
    if index is None:
        if train_text is None:
            raise ConfigError("text_metrics needs the training text or its index")
        index = get_index(train_text)
    tokens = [words(sample) for sample in samples]
    all_words = [word for text_words in tokens for word in text_words]
    pairs = [pair for text_words in tokens for pair in zip(text_words, text_words[1:])]
    repeated = []
    for text_words in tokens:
        grams = list(zip(*(text_words[k:] for k in range(REPEAT_NGRAM))))
        if grams:
            repeated.append(1.0 - len(set(grams)) / len(grams))
    matches = matching_statistics(index, samples)
    copied = sum(int((match[:len(match) - COPY_NGRAM + 1] >= COPY_NGRAM).sum())
                 for match in matches)
    grams = sum(max(0, len(sample) - COPY_NGRAM + 1) for sample in samples)
    text_lines = [line for sample in samples for line in lines(sample)]
    return {
        "word_validity": _ratio(sum(word in index.words for word in all_words), len(all_words)),
        "distinct_1": _ratio(len(set(all_words)), len(all_words)),
        "distinct_2": _ratio(len(set(pairs)), len(pairs)),
        "copied_8gram_fraction": _ratio(copied, grams),
        "longest_copy_median": float(statistics.median(
            int(match.max()) if match.size else 0 for match in matches)),
        "repeated_4gram_fraction": float(np.mean(repeated)) if repeated else 0.0,
        "speaker_line_fraction": _ratio(sum(map(is_speaker_line, text_lines)), len(text_lines)),
        "mean_line_length": _ratio(sum(map(len, text_lines)), len(text_lines)),
    }


def reference_windows(text: str, count: int, length: int, seed: int = 0) -> list:
    """``count`` windows of ``length`` characters of real text (e.g. the test split), the
    reference row for samples of the same shape.

    Windows start at a line start (just after a newline, like a sample primed with a newline),
    chosen uniformly at random without replacement where there are enough such starts, else at
    any position; seeded by ``seed``.
    """
    if count < 1 or length < 1:
        raise ConfigError(f"need count >= 1 and length >= 1 reference windows, got {count} and "
                          f"{length}")
    if len(text) < length:
        raise ConfigError(f"the reference text has {len(text)} characters, fewer than the "
                          f"{length} of one window; score shorter texts or use a larger test "
                          "split")
    last_start = len(text) - length
    starts = np.asarray([match.end() for match in re.finditer("\n", text)], np.int64)
    starts = starts[starts <= last_start]
    if len(starts) < count:
        starts = np.arange(last_start + 1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(starts, size=count, replace=len(starts) < count)
    return [text[start:start + length] for start in np.sort(chosen)]


# ---------------------------------------------------------------------------------------------
# The sampling study: a checkpoint sampled at every setting of a grid, and scored
# ---------------------------------------------------------------------------------------------
class GridResult(NamedTuple):
    """What `evaluate_checkpoint` measured.

    record: the JSON-ready record (`evaluate_checkpoint`).
    train_characters: length of the train split the samples were scored against.
    test_characters: length of the test split the model's bits/char were measured on.
    """

    record: dict
    train_characters: int
    test_characters: int


def evaluate_grid(params, cell, vocab, settings, *, index, num_samples, length, prime="",
                  seed=0):
    """Sample every setting of a grid and score each batch.

    Args:
      params, cell, vocab: the model (`jaxrnn.sample.sample_text`'s ``params``, ``arch`` and
        ``vocab``).
      settings: dicts of ``temperature``, ``top_p`` and ``top_k``, one per setting.
      index: the training text's `TextIndex` (`get_index`).
      num_samples, length, prime: ``num_samples`` texts of ``length`` characters after ``prime``
        per setting, one batched jitted call; the prime is not scored.
      seed: the key of every setting's samples (the same for all).

    Returns:
      one dict per setting, in order: the setting's keys, ``metrics`` (`text_metrics`),
      ``sample_seconds``, ``score_seconds`` and ``example`` (the first text).
    """
    rows = []
    for setting in settings:
        tick = time.perf_counter()
        texts = sample.sample_text(params, arch=cell, vocab=vocab, key=jax.random.key(seed),
                                   prime=prime, length=length, num_samples=num_samples,
                                   **setting)
        texts = [text[len(prime):] for text in texts]
        sampled = time.perf_counter()
        metrics = text_metrics(texts, index=index)
        rows.append({**setting, "metrics": metrics, "sample_seconds": sampled - tick,
                     "score_seconds": time.perf_counter() - sampled, "example": texts[0]})
    return rows


def model_label(record):
    """``"lstm H=512 L=2 step 20000"``: the model of an `evaluate_checkpoint` record."""
    model = record["model"]
    return (f"{model['arch']} H={model['hidden_size']} L={model['num_layers']} step "
            f"{record['step']}")


def evaluate_checkpoint(checkpoint_path, settings, *, num_samples, length, prime="", seed=0,
                        data=None, command=""):
    """The sampling study of one checkpoint: `evaluate_grid` on its model, the same metrics for
    ``num_samples`` windows of ``length`` characters of the held-out test split (the reference,
    `reference_windows` seeded by ``seed``), and the model's loss on the test split.

    Args:
      checkpoint_path: a checkpoint folder (or its JSON); float64 ones need x64 switched on first.
      settings, num_samples, length, prime, seed: as `evaluate_grid`.
      data: score against this corpus instead of the checkpoint's (it must have the same
        vocabulary); its train split is the text copies are looked up in.
      command: the command line, kept in the record.

    Returns:
      a `GridResult` whose record holds ``command``, ``date``, ``title``, ``checkpoint``, ``step``,
      ``model`` (arch, cell options, hidden_size, num_layers), ``data``, ``test_loss``,
      ``test_bpc``, ``num_samples``, ``length``, ``prime``, ``seed``, ``index_seconds`` (to
      index the train split), ``settings`` (`evaluate_grid`'s rows) and ``reference``
      (``metrics`` and ``example``).
    """
    params, config, vocab, metadata = runstate.load_model(checkpoint_path)
    corpus = data_lib.load_corpus(data or config.data, config.split)
    if corpus.vocab != vocab:
        raise CheckpointError(f"the corpus {corpus.text_path} has a different vocabulary from the "
                              "checkpoint's; score against the text it was trained on")
    train_text = data_lib.decode(vocab, corpus.train)
    tick = time.perf_counter()
    index = get_index(train_text)
    index_seconds = time.perf_counter() - tick
    rows = evaluate_grid(params, config.cell, vocab, settings, index=index,
                         num_samples=num_samples, length=length, prime=prime, seed=seed)
    windows = reference_windows(data_lib.decode(vocab, corpus.test), num_samples, length, seed)
    reference = {"metrics": text_metrics(windows, index=index), "example": windows[0]}
    test = train.loss_report(loop.evaluate_split(config, params, corpus.test, "test"))
    model = {"arch": config.arch, **config.cell.options, "hidden_size": config.hidden_size,
             "num_layers": config.num_layers}
    label = model_label({"model": model, "step": metadata["step"]})
    record = {"command": command,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "title": f"{label}, {num_samples} x {length} characters per setting",
              "checkpoint": str(checkpoint_path), "step": metadata["step"], "model": model,
              "data": data or config.data, "test_loss": test["loss"], "test_bpc": test["bpc"],
              "num_samples": num_samples, "length": length, "prime": prime, "seed": seed,
              "index_seconds": index_seconds, "settings": rows, "reference": reference}
    return GridResult(record, len(train_text), len(corpus.test))
