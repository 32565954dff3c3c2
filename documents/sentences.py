"""Where a sentence ends, in the text's own language: the one rule of the reranker's and the answerers' units.

``sentences(text)`` returns the sentences of ``text``, stripped, in order; a line break ends one (headings, list
items and table rows are lines). The language is guessed once per text by py3langid (langid.py's model inside the
wheel, about 50 microseconds a text); a guess below ``MIN_CONFIDENCE``, or a text shorter than ``MIN_CHARS`` (too
short to tell), is read as English, the engine's default language.

- English: a full stop, "!" or "?" followed by a capital, a digit, a quote or a bracket ends a sentence
  (``_ENGLISH_END``): the rule the reranker's sentence scorer and the offline answerer were calibrated with
  (decisions 79, 85). sentencex's English rules (no end after "Fig.", "e.g.", "Dr.") were measured on the
  paraphrase bench and lost on its tuning part (decision 89).
- Every other language: sentencex's rules (Wikimedia's segmenter, a Rust core, ~300 languages' abbreviations
  and ordinals: microseconds a line): "vom 3. bis 21. Mai" and "z. B. bei Dr. Müller" are one German sentence
  each, where the English rule cuts before "Mai" and "Müller".

The chunker does not use it: to cut a block too long for one chunk, any full stop is a cut point
(`documents.chunks`), and re-chunking English manuals with this rule moved the paraphrase bench (decision 89).
"""

from __future__ import annotations

import functools
import re

from sentencex import segment

DEFAULT_LANGUAGE = "en"
MIN_CHARS = 40  # below this a language guess is noise ("warmup" reads as Hausa)
MIN_CONFIDENCE = 0.8  # langid's normalised probability of its guess
_ENGLISH_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@functools.cache
def _identifier():  # noqa: ANN202 - py3langid's LanguageIdentifier; its model loads once (about 0.5 s)
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def load() -> None:
    """Load the language model now (about 0.5 s, once per process): an agent on the query path calls it at start,
    so its first question does not wait for it."""
    _identifier()


@functools.lru_cache(maxsize=4096)
def language_of(text: str) -> str:
    """The ISO 639-1 code of `text`'s language, or `DEFAULT_LANGUAGE` where it cannot be told."""
    if len(text) < MIN_CHARS:
        return DEFAULT_LANGUAGE
    language, confidence = _identifier().classify(text)
    return language if confidence >= MIN_CONFIDENCE else DEFAULT_LANGUAGE


def sentences(text: str, language: str | None = None) -> list[str]:
    """The sentences of `text` (see the module docstring); `language` skips the guess."""
    language = language or language_of(text)
    split = _ENGLISH_END.split if language == "en" else functools.partial(segment, language)
    return [s.strip() for line in text.splitlines() for s in split(line) if s.strip()]
