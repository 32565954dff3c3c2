"""The offline follow-up rules (`search.followup.resolve`): what a follow-up becomes, and what stays as asked."""

from __future__ import annotations

import pytest

from contracts.messages import PriorTurn
from search.followup import is_follow_up, resolve

PAYLOAD = PriorTurn(question="What is the maximum payload of the Falcon X?", doc_ids=["falcon", "osprey"])


@pytest.mark.parametrize(
    ("question", "standalone", "method"),
    [
        ("And how much does it weigh?", "How much does the Falcon X weigh?", "carried"),
        ("and how long does its battery last?", "How long does the Falcon X's battery last?", "carried"),
        ("What about the Osprey 2?", "What about the Osprey 2 (maximum payload)?", "ellipsis"),
        ("Is that waterproof?", "Is that waterproof (Falcon X)?", "carried"),
        ("How do I reset the router?", "How do I reset the router?", "standalone"),
        ("What does error E42 mean in this mode?", "What does error E42 mean in this mode?", "standalone"),
        ("How long does the Osprey 2 battery last?", "How long does the Osprey 2 battery last?", "standalone"),
    ],
)
def test_a_follow_up_carries_what_the_previous_turn_was_about(question: str, standalone: str, method: str) -> None:
    resolution = resolve(question, [PAYLOAD])
    assert (resolution.question, resolution.method, resolution.doc_ids) == (standalone, method, None)


def test_an_ordinal_names_a_cited_document_and_the_previous_question_is_searched_there() -> None:
    second = resolve("What about the second one?", [PAYLOAD])
    assert (second.question, second.method, second.doc_ids) == (PAYLOAD.question, "ordinal", ["osprey"])
    assert resolve("and the last one?", [PAYLOAD]).doc_ids == ["osprey"]
    assert resolve("and the first document?", [PAYLOAD]).doc_ids == ["falcon"]
    # "last" that is not a reference to a cited document: carried as usual
    assert resolve("How long does its battery last?", [PAYLOAD]).doc_ids is None
    # an ordinal past the cited documents, or after an answer that cited none: nothing to search, declined
    assert resolve("and the third one?", [PAYLOAD]).method == "unresolved"
    declined = PriorTurn(question="What is the maximum payload of the Falcon X?")
    assert resolve("What about the second one?", [declined]).method == "unresolved"


def test_entities_are_found_in_an_earlier_turn_and_chains_keep_them() -> None:
    history = [PAYLOAD, PriorTurn(question="is it sold with spare propellers")]  # no entity in the last turn
    assert resolve("How much does it cost?", history).question == "How much does the Falcon X cost?"
    no_entity = [PriorTurn(question="how do pumps get primed")]
    assert resolve("and how often?", no_entity).question == "How often (pumps get primed)?"


def test_without_history_nothing_is_rewritten() -> None:
    assert resolve("And how much does it weigh?", []).method == "standalone"
    assert is_follow_up("and the price?") and is_follow_up("weight?")
    assert not is_follow_up("Which pump primes fastest in cold water?")


def test_a_name_keeps_its_model_number_and_the_question_its_capital() -> None:
    history = [PriorTurn(question="What about the Osprey 2 (weigh)?")]
    assert resolve("and its battery?", history).question == "The Osprey 2's battery?"


def test_an_ordinal_is_never_carried_as_a_topic() -> None:
    after_unresolved = [PriorTurn(question="And the third one?")]
    assert resolve("What about the Osprey 2?", after_unresolved).question == "What about the Osprey 2?"
