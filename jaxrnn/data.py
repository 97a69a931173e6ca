"""Corpus resolution and checksum, vocabulary, splits, and truncated-BPTT batches.

Shape legend (see `jaxrnn.types`): ``N`` characters in a text, ``B`` parallel streams (batch),
``T`` characters per window (sequence length), ``W`` windows per stream, ``V`` vocabulary size.

Pipeline::

    path = resolve_corpus("tinyshakespeare")      # or any UTF-8 text file
    text = load_text(path)
    vocab = build_vocab(text)                     # sorted unique characters, a str of length V
    ids = encode(vocab, text)                     # (N,) int32
    train, val, test = split_ids(ids)             # contiguous 90 / 5 / 5 per cent
    streams = make_streams(train, batch_size=B, seq_len=T)    # (B, W*T + 1) int32
    for k in range(num_windows(streams, T)):
        inputs, targets = get_window(streams, k, T)           # (B, T), (B, T) int32

Truncated BPTT needs consecutive windows to continue each other, so the hidden state at the end of
window ``k`` is the right initial state for window ``k + 1``. The text is therefore cut into ``B``
contiguous streams (not into independent random crops); window ``k`` of stream ``b`` reads the
stream's characters ``[k*T, (k+1)*T)`` and its targets are the same slice shifted by one, so window
``k + 1``'s first input is window ``k``'s last target.

Known corpora (only ``tinyshakespeare``) are looked up in ``$JAXRNN_DATA_DIR``, then in the user
cache ``${XDG_CACHE_HOME:-~/.cache}/jaxrnn``, and downloaded there (checksum-verified) as a last
resort. Every problem a user can fix is raised as a one-line `DataError`.
"""
import hashlib
import http.client
import os
import pathlib
import urllib.error
import urllib.request
from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import files
from jaxrnn.errors import ConfigError, DataError

DATA_DIR_ENV = "JAXRNN_DATA_DIR"
DEFAULT_CORPUS = "tinyshakespeare"
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)
DOWNLOAD_TIMEOUT_S = 30.0

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_CHARS = 1_115_394
TINYSHAKESPEARE_SYMBOLS = 65


class KnownCorpus(NamedTuple):
    """A corpus that can be named instead of given as a path: where to fetch it, how to check it."""

    url: str
    sha256: str
    num_chars: int
    num_symbols: int


KNOWN_CORPORA = {
    "tinyshakespeare": KnownCorpus(TINYSHAKESPEARE_URL, TINYSHAKESPEARE_SHA256,
                                   TINYSHAKESPEARE_CHARS, TINYSHAKESPEARE_SYMBOLS),
}


class Corpus(NamedTuple):
    """A loaded, encoded and split corpus.

    text_path: the resolved file. vocab: str of length V, sorted unique characters.
    train, val, test: (N_train,), (N_val,), (N_test,) int32 contiguous slices of the encoded text.
    """

    text_path: pathlib.Path
    vocab: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


# ----------------------------------------------------------------------------------------------
# Finding the corpus file.


def cache_dir() -> pathlib.Path:
    """The user cache folder for downloaded corpora: ``${XDG_CACHE_HOME:-~/.cache}/jaxrnn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jaxrnn"


def file_sha256(path: os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: pathlib.Path, known: KnownCorpus) -> pathlib.Path:
    """Returns `path` if its SHA-256 is the expected one, else raises a `DataError`."""
    actual = file_sha256(path)
    if actual != known.sha256:
        raise DataError(
            f"{path} has SHA-256 {actual[:12]}..., expected {known.sha256[:12]}... (corrupted or a "
            f"different file); delete it so it is downloaded again, or replace it with a good copy")
    return path


def _fetch(url: str, timeout: float) -> bytes:
    """Downloads `url` (one GET). Separate so tests can replace it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _download(name: str, known: KnownCorpus, dest: pathlib.Path) -> pathlib.Path:
    """Downloads a known corpus to `dest` atomically: same-folder temp file, checksum, rename."""
    hint = f"set {DATA_DIR_ENV} to a folder holding {name}.txt or pass --data=PATH"
    try:
        payload = _fetch(known.url, DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"could not download {name} from {known.url} ({reason}); {hint}") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != known.sha256:
        raise DataError(f"the download of {name} from {known.url} has SHA-256 {actual[:12]}..., "
                        f"expected {known.sha256[:12]}...; retry later or {hint}")
    try:
        files.write_atomically(dest, payload)
    except OSError as err:
        raise DataError(f"could not write {dest} ({err.strerror or err}); {hint}") from None
    return dest


def _resolve_known(name: str, known: KnownCorpus) -> pathlib.Path:
    """Env folder, then user cache, then download into the cache; every copy is checksummed."""
    candidates = []
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        root = pathlib.Path(data_dir).expanduser()
        candidates += [root / f"{name}.txt", root / name / "input.txt"]
    cached = cache_dir() / f"{name}.txt"
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            return _verified(path, known)
    return _download(name, known, cached)


def resolve_corpus(corpus: str) -> pathlib.Path:
    """Turns a `--data` value into the path of a text file.

    Args:
      corpus: a known corpus name (``"tinyshakespeare"``) or the path of any UTF-8 text file.
        A known name is looked up as ``$JAXRNN_DATA_DIR/<name>.txt``, then
        ``$JAXRNN_DATA_DIR/<name>/input.txt``, then
        ``${XDG_CACHE_HOME:-~/.cache}/jaxrnn/<name>.txt``, and is otherwise downloaded into
        that cache. Every copy found or fetched is SHA-256 checked.

    Returns:
      The path of an existing file.

    Raises:
      DataError: the file is missing, a known corpus has the wrong checksum, or the download failed.
    """
    if corpus in KNOWN_CORPORA:
        return _resolve_known(corpus, KNOWN_CORPORA[corpus])
    path = pathlib.Path(corpus).expanduser()
    if not path.exists():
        raise DataError(f"corpus file {path} does not exist; pass --data=PATH to a UTF-8 text file "
                        f"or --data={DEFAULT_CORPUS}")
    if not path.is_file():
        raise DataError(f"corpus {path} is not a regular file; pass --data=PATH to a UTF-8 "
                        f"text file")
    return path


def load_text(path: os.PathLike) -> str:
    """Reads a whole file as strict UTF-8.

    Returns:
      The text, N >= 1 characters, newlines kept as they are in the file.

    Raises:
      DataError: the file cannot be read, is empty, or is not valid UTF-8 (the message gives the
        byte offset of the first bad byte).
    """
    try:
        raw = pathlib.Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read corpus {path} ({err.strerror or err}); "
                        f"pass --data=PATH to a readable UTF-8 text file") from None
    if not raw:
        raise DataError(f"corpus {path} is empty; pass --data=PATH to a non-empty UTF-8 text file")
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1].hex()
        raise DataError(f"corpus {path} is not valid UTF-8 (byte 0x{bad} at byte offset "
                        f"{err.start}: {err.reason}); convert it, e.g. `iconv -t UTF-8`, or pick "
                        f"another file") from None


# ----------------------------------------------------------------------------------------------
# Vocabulary.


def build_vocab(text: str) -> str:
    """The vocabulary of `text`: its distinct characters sorted by code point, a str of length V."""
    return "".join(sorted(set(text)))


def _code_points(text: str) -> np.ndarray:
    """(N,) uint32 Unicode code points of `text`, without a Python-level loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def encode(vocab: str, text: str) -> np.ndarray:
    """Maps each character of `text` to its index in `vocab`.

    Args:
      vocab: str of length V with distinct characters (any order; `build_vocab` sorts them).
      text: str of length N.

    Returns:
      ids: (N,) int32, values in [0, V).

    Raises:
      DataError: `text` holds characters missing from `vocab`; the message names them.
    """
    vocab_points = _code_points(vocab)
    order = np.argsort(vocab_points, kind="stable")
    sorted_points = vocab_points[order]
    points = _code_points(text)
    if not len(sorted_points):
        unknown = sorted(set(text))
    else:
        slot = np.clip(np.searchsorted(sorted_points, points), 0, len(sorted_points) - 1)
        known = sorted_points[slot] == points
        if known.all():
            return order[slot].astype(np.int32)
        unknown = [chr(c) for c in np.unique(points[~known])]
    shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
    raise DataError(f"characters not in the vocabulary: {shown}; remove them from the text or "
                    f"train on a corpus that contains them")


def decode(vocab: str, ids) -> str:
    """Inverse of `encode`: ids (N,) integers in [0, V) -> str of length N."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise ValueError(f"ids must lie in [0, {len(vocab)}), got [{ids.min()}, {ids.max()}]")
    return "".join(np.asarray(list(vocab), dtype=object)[ids]) if ids.size else ""


# ----------------------------------------------------------------------------------------------
# Splits and truncated-BPTT windows.


def split_ids(ids: np.ndarray, fractions: Sequence[float] = DEFAULT_FRACTIONS
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cuts `ids` into contiguous train / validation / test parts.

    Args:
      ids: (N,) int32 encoded text.
      fractions: three positive numbers summing to 1 (train, val, test).

    Returns:
      (train, val, test): (N_train,), (N_val,), (N_test,) views of `ids`, in text order, with
      N_train = floor(f0 * N), N_val = floor(f1 * N), N_test the rest.

    Raises:
      ConfigError: bad fractions. DataError: the text is too short for every part to be non-empty.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be three positive numbers summing to 1, got "
                          f"{fractions}; pass e.g. --split=0.9,0.05,0.05")
    n = len(ids)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    parts = (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:])
    if min(len(p) for p in parts) == 0:
        raise DataError(f"corpus of {n} characters is too short to split {fractions}; use a longer "
                        f"text or larger validation/test fractions")
    return parts


def make_streams(ids: np.ndarray, batch_size: int, seq_len: int, *, name: str = "corpus"
                 ) -> np.ndarray:
    """Cuts a text into B contiguous parallel streams for truncated BPTT.

    With S = (N - 1) // B, stream b holds ``ids[b*S : b*S + W*T + 1]`` where W = S // T is the
    number of whole windows; the last character of each stream is only ever a target. Up to
    ``N - (B*W*T + 1)`` characters at stream ends are dropped.

    Args:
      ids: (N,) int32 encoded text (one split).
      batch_size: B >= 1. seq_len: T >= 1.
      name: what to call the text in the error message ("train", "val", ...).

    Returns:
      streams: (B, W*T + 1) int32, W >= 1.

    Raises:
      DataError: N < B*T + 1, i.e. the text is shorter than one window of every stream.
    """
    if batch_size < 1 or seq_len < 1:
        raise ConfigError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}; "
                          f"pass positive --batch_size/--seq_len")
    ids = np.asarray(ids, dtype=np.int32).reshape(-1)
    needed = batch_size * seq_len + 1
    if len(ids) < needed:
        raise DataError(f"{name} has {len(ids)} characters but batch_size={batch_size} x "
                        f"seq_len={seq_len} needs at least {needed}; lower --batch_size/--seq_len "
                        f"or use a longer text")
    stride = (len(ids) - 1) // batch_size
    width = (stride // seq_len) * seq_len + 1
    starts = np.arange(batch_size)[:, None] * stride
    return ids[starts + np.arange(width)[None, :]]


def num_windows(streams: np.ndarray, seq_len: int) -> int:
    """W, the number of whole windows in streams (B, W*T + 1)."""
    return (streams.shape[1] - 1) // seq_len


def get_window_jax(streams: jax.Array, index, seq_len: int, offset=0
                   ) -> Tuple[jax.Array, jax.Array]:
    """Window `index` of every stream, jit-friendly (`index` may be a traced integer scalar).

    Args:
      streams: (B, W*T + 1) int32, from `make_streams`.
      index: integer scalar k in [0, W); out-of-range values are clamped by `lax.dynamic_slice`.
      seq_len: T, a static Python int.
      offset: integer scalar o added to every start (``o + kT + T + 1`` must fit the stream).

    Returns:
      (inputs, targets): (B, T) int32 each; ``inputs = streams[:, o+kT:o+(k+1)T]`` and
      ``targets = streams[:, o+kT+1:o+(k+1)T+1]``.
    """
    streams = jnp.asarray(streams)
    start = jnp.asarray(index, dtype=jnp.int32) * seq_len + jnp.asarray(offset, jnp.int32)
    chunk = jax.lax.dynamic_slice(streams, (jnp.int32(0), start),
                                  (streams.shape[0], seq_len + 1))  # (B, T+1)
    return chunk[:, :-1], chunk[:, 1:]


def get_window(streams, index, seq_len: int):
    """Window `index` of every stream: (inputs (B, T), targets (B, T)) int32.

    NumPy in, NumPy out for a Python/NumPy integer `index` (bounds-checked); a `jax.Array`
    `streams` or `index` (traced or not) goes through `get_window_jax`.
    """
    if isinstance(streams, jax.Array) or isinstance(index, jax.Array):
        return get_window_jax(streams, index, seq_len)
    windows = num_windows(streams, seq_len)
    if not 0 <= index < windows:
        raise IndexError(f"window index {index} out of range [0, {windows})")
    start = int(index) * seq_len
    return (streams[:, start:start + seq_len], streams[:, start + 1:start + seq_len + 1])


def load_corpus(corpus: str = DEFAULT_CORPUS, fractions: Sequence[float] = DEFAULT_FRACTIONS
                ) -> Corpus:
    """`resolve_corpus`, `load_text`, `build_vocab` (whole text), `encode`, then `split_ids`.

    Returns:
      Corpus(text_path, vocab (V chars), train (N_train,), val (N_val,), test (N_test,) int32).
    """
    path = resolve_corpus(corpus)
    text = load_text(path)
    vocab = build_vocab(text)
    train, val, test = split_ids(encode(vocab, text), fractions)
    return Corpus(path, vocab, train, val, test)
