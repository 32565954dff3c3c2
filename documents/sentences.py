"""Where a sentence ends, in the text's own language: the one rule the chunker, the reranker and the answerers use.

``sentences(text)`` returns the sentences of ``text``, stripped, in order; a line break ends one (headings, list
items and table rows are lines). A full stop is not an end after an abbreviation or an ordinal of the
text's language: "vom 3. bis 21. Mai" and "z. B. bei Dr. Müller" are one German sentence each, "Call Dr. Smith
at 5 p.m." one English sentence. The rules are sentencex's (Wikimedia's segmenter, ~300 languages, a Rust core:
microseconds a line); the language is guessed once per text by py3langid (langid.py's model inside the wheel,
about 50 microseconds a text). A guess below ``MIN_CONFIDENCE``, or a text shorter than ``MIN_CHARS`` (too
short to tell), is read as English, the engine's default language.
"""

from __future__ import annotations

import functools

from sentencex import segment

DEFAULT_LANGUAGE = "en"
MIN_CHARS = 40  # below this a language guess is noise ("warmup" reads as Hausa)
MIN_CONFIDENCE = 0.8  # langid's normalised probability of its guess


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


def sentences(text: str, language: str | None = None, *, lines_end: bool = True) -> list[str]:
    """The sentences of `text` (see the module docstring); `language` skips the guess. With `lines_end` False a
    single line break does not end a sentence (an empty line does): the chunker keeps a code block's lines."""
    language = language or language_of(text)
    lines = text.splitlines() if lines_end else [text]
    return [s.strip() for line in lines for s in segment(language, line) if s.strip()]
