"""The tokenizer, vocabulary and padding for review text, and the atomic output helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlzoo.data.text import OOV_ID, PAD_ID, SPECIAL_TOKENS, START_ID, Vocabulary, pad, tokenize
from dlzoo.store import atomic_directory, save_npz

# --- tokenize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", ["hello", "world"]),
        ("GREAT film.<br /><br />Loved it!", ["great", "film", "loved", "it"]),
        ("one<br/>two<br />three", ["one", "two", "three"]),
        ("I don't think it's bad", ["i", "don't", "think", "it's", "bad"]),
        ("Wow!!! Such, a; film: (really) - 10/10?", ["wow", "such", "a", "film", "really", "10", "10"]),
        ("'quoted' words", ["quoted", "words"]),
        ("  \t\n ", []),
        ("", []),
        ("...!?", []),
    ],
)
def test_tokenize(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_keeps_br_tags_from_gluing_words() -> None:
    assert tokenize("end.<br />Start") == ["end", "start"]
    assert "br" not in tokenize("a<br />b<BR>c")


# --- Vocabulary ----------------------------------------------------------------------------------

TEXTS = ["the cat sat", "The dog sat on the mat", "a cat! a dog<br />the end"]
# Counts: the 4, a 2, cat 2, dog 2, sat 2, end 1, mat 1, on 1.
RANKED = ("the", "a", "cat", "dog", "sat", "end", "mat", "on")


def test_build_ranks_by_frequency_then_alphabetically() -> None:
    assert Vocabulary.build(TEXTS, max_words=100).words == RANKED


def test_build_does_not_depend_on_text_order() -> None:
    assert Vocabulary.build(reversed(TEXTS), max_words=100).words == RANKED


@pytest.mark.parametrize("max_words", [0, 1, 3, 5, 8, 9])
def test_build_keeps_the_max_words_most_frequent(max_words: int) -> None:
    vocabulary = Vocabulary.build(TEXTS, max_words=max_words)

    assert vocabulary.words == RANKED[:max_words]
    assert len(vocabulary) == min(max_words, len(RANKED))


def test_index_offsets_ranks_by_the_special_tokens() -> None:
    vocabulary = Vocabulary(RANKED)

    assert vocabulary.index == {word: rank + 3 for rank, word in enumerate(RANKED)}
    assert (PAD_ID, START_ID, OOV_ID) == (0, 1, 2)
    assert len(SPECIAL_TOKENS) == 3


def test_encode_starts_with_start_and_maps_words_to_rank_plus_3() -> None:
    vocabulary = Vocabulary(RANKED)

    assert vocabulary.encode("The cat sat on the mat", vocab_size=100) == [1, 3, 5, 7, 10, 3, 9]
    assert vocabulary.encode("", vocab_size=100) == [START_ID]


def test_encode_maps_unknown_words_to_oov() -> None:
    vocabulary = Vocabulary(RANKED)

    assert vocabulary.encode("the zebra sat", vocab_size=100) == [START_ID, 3, OOV_ID, 7]


def test_encode_maps_ids_at_or_past_vocab_size_to_oov() -> None:
    # vocab_size counts ids including 0-2 (as an Embedding's input_dim): ids 3..5 survive size 6.
    vocabulary = Vocabulary(RANKED)
    text = "the a cat dog sat end"

    assert vocabulary.encode(text, vocab_size=6) == [START_ID, 3, 4, 5, OOV_ID, OOV_ID, OOV_ID]
    assert vocabulary.encode(text, vocab_size=7) == [START_ID, 3, 4, 5, 6, OOV_ID, OOV_ID]
    assert vocabulary.encode(text, vocab_size=4) == [START_ID, 3, OOV_ID, OOV_ID, OOV_ID, OOV_ID, OOV_ID]
    assert max(vocabulary.encode(" ".join(RANKED), vocab_size=5)) < 5


def test_encode_tokenizes_like_tokenize() -> None:
    vocabulary = Vocabulary(("don't", "film"))

    assert vocabulary.encode("DON'T watch this FILM!<br />", vocab_size=10) == [
        START_ID,
        3,
        OOV_ID,
        OOV_ID,
        4,
    ]


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocabulary = Vocabulary.build([*TEXTS, "don't caf\u00e9"], max_words=6)
    path = tmp_path / "vocabulary.json"

    vocabulary.save(path)
    loaded = Vocabulary.load(path)

    assert loaded == vocabulary
    assert loaded.encode("the dog ate", 100) == vocabulary.encode("the dog ate", 100)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload == {"special_tokens": ["<pad>", "<start>", "<oov>"], "words": list(vocabulary.words)}


def test_save_is_deterministic(tmp_path: Path) -> None:
    Vocabulary(RANKED).save(tmp_path / "a.json")
    Vocabulary(RANKED).save(tmp_path / "b.json")

    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


@pytest.mark.parametrize(
    "special_tokens",
    [["<pad>", "<oov>", "<start>"], ["<pad>", "<start>"], None, "<pad><start><oov>"],
)
def test_load_rejects_other_special_tokens(tmp_path: Path, special_tokens) -> None:
    path = tmp_path / "vocabulary.json"
    payload = {"words": list(RANKED)}
    if special_tokens is not None:
        payload["special_tokens"] = special_tokens
    path.write_text(json.dumps(payload), encoding="utf-8")

    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary.load(path)


# --- pad -----------------------------------------------------------------------------------------

SEQUENCES = [[1, 2, 3, 4, 5], [6, 7], [], [8, 9, 10]]


@pytest.mark.parametrize(
    ("padding", "truncating", "expected"),
    [
        ("pre", "pre", [[3, 4, 5], [0, 6, 7], [0, 0, 0], [8, 9, 10]]),
        ("pre", "post", [[1, 2, 3], [0, 6, 7], [0, 0, 0], [8, 9, 10]]),
        ("post", "pre", [[3, 4, 5], [6, 7, 0], [0, 0, 0], [8, 9, 10]]),
        ("post", "post", [[1, 2, 3], [6, 7, 0], [0, 0, 0], [8, 9, 10]]),
    ],
)
def test_pad_by_hand(padding: str, truncating: str, expected: list[list[int]]) -> None:
    out = pad(SEQUENCES, 3, padding, truncating)

    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.int32))


def test_pad_longer_than_every_sequence() -> None:
    np.testing.assert_array_equal(pad([[1, 2], [3]], 4, "pre", "pre"), [[0, 0, 1, 2], [0, 0, 0, 3]])
    np.testing.assert_array_equal(pad([[1, 2], [3]], 4, "post", "post"), [[1, 2, 0, 0], [3, 0, 0, 0]])


def test_pad_of_no_sequences_and_of_length_one() -> None:
    assert pad([], 5, "pre", "pre").shape == (0, 5)
    np.testing.assert_array_equal(pad([[1, 2, 3], [4]], 1, "pre", "pre"), [[3], [4]])
    np.testing.assert_array_equal(pad([[1, 2, 3], [4]], 1, "post", "post"), [[1], [4]])


def test_pad_does_not_modify_its_input() -> None:
    sequences = [list(sequence) for sequence in SEQUENCES]

    pad(sequences, 2, "pre", "pre")

    assert sequences == SEQUENCES


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_pad_matches_keras_pad_sequences(padding: str, truncating: str) -> None:
    keras_utils = pytest.importorskip("keras.utils")
    rng = np.random.default_rng(7)
    sequences = [rng.integers(1, 1000, size=rng.integers(0, 25)).tolist() for _ in range(40)]

    expected = keras_utils.pad_sequences(
        sequences, maxlen=12, dtype="int32", padding=padding, truncating=truncating, value=PAD_ID
    )

    got = pad(sequences, 12, padding, truncating)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# --- store: atomic_directory and save_npz --------------------------------------------------------


def _leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


def test_atomic_directory_creates_the_target_on_success(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"

    with atomic_directory(target) as staging:
        assert staging.is_dir()
        assert staging.parent == target.parent
        assert staging.name.startswith(".out.tmp-")
        assert not target.exists()
        (staging / "result.txt").write_text("done")

    assert (target / "result.txt").read_text() == "done"
    assert _leftovers(target.parent, "out") == []


def test_atomic_directory_replaces_an_existing_target_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")

    with atomic_directory(target) as staging:
        assert (target / "old.txt").read_text() == "old"  # still in place while the block runs
        (staging / "new.txt").write_text("new")

    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert _leftovers(tmp_path, "out") == []


def test_atomic_directory_leaves_an_existing_target_untouched_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "old.txt").write_text("old")

    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("boom")

    assert sorted(str(path.relative_to(target)) for path in target.rglob("*")) == ["sub", "sub/old.txt"]
    assert (target / "sub" / "old.txt").read_text() == "old"
    assert _leftovers(tmp_path, "out") == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_creates_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"

    with pytest.raises(KeyboardInterrupt), atomic_directory(target):
        raise KeyboardInterrupt

    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_save_npz_loads_with_numpy(tmp_path: Path) -> None:
    arrays = {
        "x": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "y": np.array([1, 0], dtype=np.int64),
        "ids": np.array([[1, 5, 2]], dtype=np.int32),
        "empty": np.zeros((0, 7), dtype=np.uint8),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    }
    path = tmp_path / "arrays.npz"

    save_npz(path, **arrays)

    with np.load(path, allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for name, expected in arrays.items():
            assert loaded[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(loaded[name], expected, err_msg=name)


def test_save_npz_is_byte_identical_across_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    arrays = {"a": np.arange(100, dtype=np.float64), "b": np.eye(3, dtype=np.uint8)}
    real_localtime = time.localtime

    monkeypatch.setattr(time, "time", lambda: 1_000_000_000)
    monkeypatch.setattr(
        time, "localtime", lambda secs=None: real_localtime(1_000_000_000 if secs is None else secs)
    )
    save_npz(tmp_path / "first.npz", **arrays)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000)
    monkeypatch.setattr(
        time, "localtime", lambda secs=None: real_localtime(1_700_000_000 if secs is None else secs)
    )
    save_npz(tmp_path / "second.npz", **arrays)

    assert (tmp_path / "first.npz").read_bytes() == (tmp_path / "second.npz").read_bytes()


def test_save_npz_rejects_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_npz(tmp_path / "objects.npz", bad=np.array([{"a": 1}, None], dtype=object))
