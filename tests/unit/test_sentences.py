"""Sentence ends in the text's own language (documents/sentences.py): what the offline answer quotes whole and the
reranker scores."""

from __future__ import annotations

from contracts.messages import Hit
from documents.sentences import DEFAULT_LANGUAGE, language_of, sentences
from models.extractive import extractive_answer

GERMAN = (
    "Die Frühjahrsmesse findet vom 3. bis 21. Mai in Halle 4 statt. Anmeldungen nimmt z. B. Dr. Müller im Büro "
    "Nr. 5 entgegen. Der Eintritt ist für Aussteller frei."
)
ENGLISH = "Book a stand before the end of March, e.g. by phone. Entry is free for exhibitors. (Parking is not.)"


def test_an_ordinal_or_an_abbreviation_does_not_end_a_german_sentence() -> None:
    assert language_of(GERMAN) == "de"
    assert sentences(GERMAN) == [
        "Die Frühjahrsmesse findet vom 3. bis 21. Mai in Halle 4 statt.",
        "Anmeldungen nimmt z. B. Dr. Müller im Büro Nr. 5 entgegen.",
        "Der Eintritt ist für Aussteller frei.",
    ]


def test_english_keeps_the_calibrated_rule_and_a_line_break_ends_a_sentence() -> None:
    assert language_of(ENGLISH) == "en"
    assert sentences(ENGLISH) == [
        "Book a stand before the end of March, e.g. by phone.", "Entry is free for exhibitors.", "(Parking is not.)"
    ]  # fmt: skip
    assert sentences("Opening hours\nDaily from 9 to 5. Closed on Sundays.") == [
        "Opening hours", "Daily from 9 to 5.", "Closed on Sundays."
    ]  # fmt: skip


def test_a_text_too_short_to_tell_is_read_in_the_default_language() -> None:
    assert language_of("warmup") == DEFAULT_LANGUAGE  # langid alone guesses Hausa here


def test_the_offline_answer_quotes_the_whole_german_sentence() -> None:
    hit = Hit(chunk_id="c", doc_id="d", filename="messe.pdf", page=1, modality="text", text=GERMAN, score=0.9)
    answer = extractive_answer("Wann findet die Frühjahrsmesse statt?", [hit])
    assert "Die Frühjahrsmesse findet vom 3. bis 21. Mai in Halle 4 statt. [1]" in answer.text
