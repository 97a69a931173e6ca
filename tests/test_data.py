"""Tests for jaxrnn.data: corpus resolution, vocabulary, splits and truncated-BPTT windows."""
import hashlib
import os
import pathlib
import urllib.error

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import data
from jaxrnn.errors import ConfigError, DataError

# The real corpus, where the environment provides one (JAXRNN_DATA_DIR, as the library finds it).
SHARED_COPY = pathlib.Path(os.environ.get(data.DATA_DIR_ENV, ""), "tinyshakespeare.txt")


@pytest.fixture
def fake_known(monkeypatch):
    """Replaces tinyshakespeare's checksum by that of a tiny text; returns that text's bytes."""
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    known = data.KnownCorpus("https://example.invalid/input.txt",
                             hashlib.sha256(payload).hexdigest(), len(payload), 0)
    monkeypatch.setitem(data.KNOWN_CORPORA, "tinyshakespeare", known)
    return payload


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """Empty env data dir and cache; any real network access fails the test."""
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, timeout):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(data, "_fetch", no_network)
    return tmp_path


# ---------------------------------------------------------------- resolution and loading


def test_found_in_env_dir(isolated_env, fake_known):
    path = isolated_env / "env" / "tinyshakespeare.txt"
    path.parent.mkdir()
    path.write_bytes(fake_known)
    assert data.resolve_corpus("tinyshakespeare") == path


def test_found_in_env_dir_subfolder(isolated_env, fake_known):
    path = isolated_env / "env" / "tinyshakespeare" / "input.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(fake_known)
    assert data.resolve_corpus("tinyshakespeare") == path


def test_found_in_cache(isolated_env, fake_known):
    path = isolated_env / "cache" / "jaxrnn" / "tinyshakespeare.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(fake_known)
    assert data.resolve_corpus("tinyshakespeare") == path


def test_checksum_mismatch_names_file(isolated_env, fake_known):
    path = isolated_env / "env" / "tinyshakespeare.txt"
    path.parent.mkdir()
    path.write_bytes(fake_known + b"tampered")
    with pytest.raises(DataError, match="SHA-256") as err:
        data.resolve_corpus("tinyshakespeare")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_offline_without_copy(isolated_env, fake_known):
    with pytest.raises(DataError, match="could not download") as err:
        data.resolve_corpus("tinyshakespeare")
    message = str(err.value)
    assert data.DATA_DIR_ENV in message and "--data=PATH" in message and "\n" not in message


def test_download_goes_to_cache_atomically(isolated_env, fake_known, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url, timeout: fake_known)
    path = data.resolve_corpus("tinyshakespeare")
    assert path == isolated_env / "cache" / "jaxrnn" / "tinyshakespeare.txt"
    assert path.read_bytes() == fake_known
    assert os.listdir(path.parent) == ["tinyshakespeare.txt"]  # no temp file left


def test_bad_download_is_not_cached(isolated_env, fake_known, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url, timeout: b"<html>rate limited</html>")
    with pytest.raises(DataError, match="SHA-256"):
        data.resolve_corpus("tinyshakespeare")
    cache = isolated_env / "cache" / "jaxrnn"
    assert not cache.exists() or not os.listdir(cache)


def test_plain_path_and_missing_path(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello\n", encoding="utf-8")
    assert data.resolve_corpus(str(path)) == path
    with pytest.raises(DataError, match="does not exist"):
        data.resolve_corpus(str(tmp_path / "nope.txt"))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        data.load_text(path)


def test_non_utf8_gives_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc caf\u00e9 ok".encode("latin-1"))  # 0xe9 at byte offset 7
    with pytest.raises(DataError, match="byte offset 7") as err:
        data.load_text(path)
    assert str(path) in str(err.value) and "0xe9" in str(err.value)


def test_utf8_text_loads_exactly(tmp_path):
    text = "na\u00efve \u2014 caf\u00e9\r\nend"
    path = tmp_path / "u.txt"
    path.write_bytes(text.encode("utf-8"))
    assert data.load_text(path) == text


# ---------------------------------------------------------------- vocabulary


def test_vocab_round_trip():
    text = "hello, w\u00f6rld! \u2603\n"
    vocab = data.build_vocab(text)
    assert vocab == "".join(sorted(set(text)))
    ids = data.encode(vocab, text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert [vocab[i] for i in ids] == list(text)
    assert data.decode(vocab, ids) == text
    assert data.decode(vocab, jnp.asarray(ids)) == text
    assert data.decode(vocab, []) == ""


def test_encode_with_unsorted_vocab():
    vocab = "cab"
    assert data.encode(vocab, "abcc").tolist() == [1, 2, 0, 0]


def test_unknown_characters_are_named():
    vocab = data.build_vocab("abc")
    with pytest.raises(DataError, match="characters not in the vocabulary: 'é', 'ü'"):
        data.encode(vocab, "abüéa")


# ---------------------------------------------------------------- splits


def test_split_fractions():
    ids = np.arange(100, dtype=np.int32)
    train, val, test = data.split_ids(ids, (0.8, 0.1, 0.1))
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    np.testing.assert_array_equal(np.concatenate([train, val, test]), ids)  # contiguous, in order


@pytest.mark.parametrize("fractions",
                         [(0.9, 0.1, 0.0), (0.5, 0.5), (0.9, 0.2, 0.1), (1.2, -0.1, -0.1)])
def test_bad_split_fractions(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        data.split_ids(np.arange(100, dtype=np.int32), fractions)


def test_split_too_short():
    with pytest.raises(DataError, match="too short"):
        data.split_ids(np.arange(5, dtype=np.int32), (0.9, 0.05, 0.05))


# ---------------------------------------------------------------- truncated-BPTT windows


def test_streams_layout():
    ids = np.arange(50, dtype=np.int32)
    streams = data.make_streams(ids, batch_size=3, seq_len=4)
    # S = 49 // 3 = 16, W = 4 windows, width 17.
    assert streams.shape == (3, 17) and streams.dtype == np.int32
    np.testing.assert_array_equal(streams[:, 0], [0, 16, 32])
    np.testing.assert_array_equal(np.diff(streams, axis=1), 1)  # each stream is contiguous text
    assert data.num_windows(streams, 4) == 4


def test_windows_are_contiguous_across_k():
    ids = np.arange(200, dtype=np.int32)
    batch, seq = 4, 7
    streams = data.make_streams(ids, batch, seq)
    windows = [data.get_window(streams, k, seq) for k in range(data.num_windows(streams, seq))]
    for inputs, targets in windows:
        assert inputs.shape == targets.shape == (batch, seq)
        np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])  # shifted by one
        np.testing.assert_array_equal(targets, inputs + 1)  # ids are the positions themselves
    for (_, prev_targets), (next_inputs, _) in zip(windows, windows[1:]):
        np.testing.assert_array_equal(next_inputs[:, 0], prev_targets[:, -1])
    with pytest.raises(IndexError):
        data.get_window(streams, len(windows), seq)


def test_jit_traced_index_matches_numpy():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, size=301).astype(np.int32)
    batch, seq = 3, 5
    streams = data.make_streams(ids, batch, seq)
    window = jax.jit(lambda s, k: data.get_window(s, k, seq))
    device_streams = jnp.asarray(streams)
    for k in range(data.num_windows(streams, seq)):
        expected = data.get_window(streams, k, seq)
        got = window(device_streams, jnp.int32(k))
        for e, g in zip(expected, got):
            assert g.dtype == jnp.int32
            np.testing.assert_array_equal(np.asarray(g), e)


def test_too_short_says_how_many_characters():
    with pytest.raises(DataError, match=r"needs at least 41") as err:
        data.make_streams(np.arange(40, dtype=np.int32), batch_size=4, seq_len=10, name="val")
    assert "val has 40 characters" in str(err.value) and "--batch_size" in str(err.value)
    assert data.make_streams(np.arange(41, dtype=np.int32), 4, 10).shape == (4, 11)


# ---------------------------------------------------------------- end to end


def test_load_corpus(tmp_path):
    path = tmp_path / "c.txt"
    text = "to be or not to be, that is the question\n" * 10
    path.write_text(text, encoding="utf-8")
    corpus = data.load_corpus(str(path), (0.8, 0.1, 0.1))
    assert corpus.text_path == path and corpus.vocab == data.build_vocab(text)
    joined = np.concatenate([corpus.train, corpus.val, corpus.test])
    assert data.decode(corpus.vocab, joined) == text


@pytest.mark.skipif(not (os.environ.get(data.DATA_DIR_ENV) and SHARED_COPY.is_file()),
                    reason="JAXRNN_DATA_DIR holds no tinyshakespeare.txt")
def test_real_tinyshakespeare(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(SHARED_COPY.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = data.resolve_corpus(data.DEFAULT_CORPUS)
    assert path == SHARED_COPY
    text = data.load_text(path)
    assert len(text) == data.TINYSHAKESPEARE_CHARS
    assert len(data.build_vocab(text)) == data.TINYSHAKESPEARE_SYMBOLS
