"""Our own tokenizer and vocabulary for raw review text.

Shared by preprocessing and (later) the server, so that raw text sent to a served model is
encoded exactly as the training data were. Ids follow Keras' IMDB convention: 0 pads, 1 starts
a review, 2 stands for any word outside the vocabulary, and words start at 3 in frequency order.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlzoo.errors import InvalidInput
from dlzoo.store import load_json, save_json

PAD_ID, START_ID, OOV_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<start>", "<oov>")
_HTML_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; HTML line breaks (`<br />` is common in IMDB) count as spaces."""
    return _WORD.findall(_HTML_TAG.sub(" ", text.lower()))


@dataclass(frozen=True)
class Vocabulary:
    """Words in rank order (most frequent first); word i has id i + len(SPECIAL_TOKENS)."""

    words: tuple[str, ...]

    @classmethod
    def build(cls, texts: Iterable[str], max_words: int) -> Vocabulary:
        """The `max_words` most frequent words (ties broken alphabetically, so it is stable)."""
        counts = Counter(word for text in texts for word in tokenize(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(tuple(word for word, _ in ranked[:max_words]))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, vocab_size: int) -> list[int]:
        """Ids of `text` with a start id; words ranked at or past `vocab_size` become OOV."""
        index = self.index
        ids = [START_ID]
        for word in tokenize(text):
            word_id = index.get(word, OOV_ID)
            ids.append(word_id if word_id < vocab_size else OOV_ID)
        return ids

    @functools.cached_property
    def index(self) -> dict[str, int]:
        offset = len(SPECIAL_TOKENS)
        return {word: rank + offset for rank, word in enumerate(self.words)}

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to words (padding dropped), to show what a model saw."""
        words = (*SPECIAL_TOKENS, *self.words)
        return " ".join(words[i] if i < len(words) else SPECIAL_TOKENS[OOV_ID] for i in ids if i != PAD_ID)

    def save(self, path: Path) -> None:
        save_json(path, {"special_tokens": list(SPECIAL_TOKENS), "words": list(self.words)})

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        payload = load_json(path)
        if payload.get("special_tokens") != list(SPECIAL_TOKENS):
            raise InvalidInput(
                f"{path}: special tokens {payload.get('special_tokens')} != {list(SPECIAL_TOKENS)}"
            )
        return cls(tuple(payload["words"]))


def pad(sequences: Sequence[Sequence[int]], length: int, padding: str, truncating: str) -> np.ndarray:
    """Pads with PAD_ID / truncates to `length`, 'pre' or 'post', like Keras' pad_sequences."""
    out = np.full((len(sequences), length), PAD_ID, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        kept = sequence[-length:] if truncating == "pre" else sequence[:length]
        if not kept:
            continue
        if padding == "pre":
            out[row, -len(kept) :] = kept
        else:
            out[row, : len(kept)] = kept
    return out
