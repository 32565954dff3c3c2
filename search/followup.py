"""Follow-up questions of a conversation: the standalone question to search, made from the earlier turns.

"And how much does it weigh?" searched alone finds whatever weighs something; asked after "What is the payload
of the Falcon X?" it means "How much does the Falcon X weigh?". The retriever resolves every question that
carries its conversation's history (`QueryRequest.history`) before it searches, and passes the standalone
question on as the request's `query` (the reranker scores it, the generator answers it, the `retrieval` event
shows it as `searched`).

Offline (`resolve`), deterministic, in this order:

1. A question that reads as standalone is searched as is: it has no anaphora (it, its, they, them, their, this,
   that, these, those, one, ones) or names its own entity, does not start as a continuation ("and", "also", "what about", "how
   about", ...), and has more than one content word.
2. An ordinal reference ("the second one", "the first document", "the last one") names a document the
   previous answer cited, in citation order: the search is scoped to that document (`doc_ids`) and the previous
   question is searched, with the follow-up's own content words. When the previous answer cited no such document
   ("the third one" after two sources, or after a "not found"), the follow-up is `unresolved`: the retriever
   searches nothing and the answer declines, rather than answer about whatever the words match.
3. A follow-up that names its own entity ("what about the Osprey 2?") is an ellipsis: the previous question's
   content words (less its entities) are carried.
4. Otherwise the entities of the latest earlier turn that has some (`search.graph.extract.mentions`: names,
   acronyms, codes) are carried: the first personal pronoun is replaced by them ("it" -> "the Falcon X",
   "its" -> "the Falcon X's"), else they are appended; an earlier turn without entities gives its content words.

With an LLM configured (`rewrite_with_llm`), the first provider of the chain that answers rewrites the question
from the turns (questions and the start of their answers); an empty, overlong or failed rewrite falls back to the
offline rules.

A question asked without a conversation gets, with an LLM configured, a search query in the words a document
would use (`search_query_with_llm`): the user's own wording often shares no term with the page that answers it.
The retriever searches it beside the question (as one more part, `search.hybrid.interleave`) and the reranker
keeps its best candidate (`search.rerank.rerank(..., rewrites=)`); the question itself stays what is shown,
scored and answered. Nothing is searched for it when the LLM fails or answers nothing usable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contracts.messages import PriorTurn
from models.lexical import STOPWORDS
from models.llm import Completed, Failed, ProviderChain, Text
from search.graph.extract import mentions

log = logging.getLogger(__name__)

Method = Literal["standalone", "ordinal", "ellipsis", "carried", "llm", "unresolved"]

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
ANAPHORA = frozenset("it its it's itself they them their theirs this that these those one ones".split())
# Replaced in place by the carried entity ("its" -> "X's"); demonstratives are left alone ("that" is often a
# relative pronoun) and get the entity appended instead.
_PERSONAL = {"it": "{}", "itself": "{}", "its": "{}'s", "it's": "{} is", "they": "{}", "them": "{}", "their": "{}'s"}
CONTINUATIONS = ("and ", "also ", "what about ", "how about ", "and what", "and how", "so ", "then ", "but ",
                 "what else", "same for ", "and the ")  # fmt: skip
ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "last": -1, "former": 0, "latter": -1}
_REFERENT = frozenset("one ones document doc file source result answer manual".split())
# Words of a question that say how it asks, not what about: never carried into another question.
_QUESTION_WORDS = STOPWORDS | frozenset(
    "who whom whose what which when where why how much many long does do did is are was were can could "
    "please show give list find tell know".split()
)
SHORT_WORDS = 1  # a question with this many content words or fewer ("the price?") is elliptic
MAX_LLM_REWRITE_CHARS = 1000


@dataclass(frozen=True)
class Resolution:
    """What to search: the standalone question, how it was made, and the documents it is scoped to (or None)."""

    question: str
    method: Method
    doc_ids: list[str] | None = None


def _words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """The words of a question that say what it is about, in order, once each (an ordinal refers, it is not a topic)."""
    return list(dict.fromkeys(w for w in _words(text) if w not in _QUESTION_WORDS and w not in ANAPHORA
                              and w not in ORDINALS))  # fmt: skip


_MODEL_NUMBER = re.compile(r"\s+(\d[\w.-]*)\b")


def _entities(text: str) -> list[str]:
    """The names, acronyms and codes a question mentions; a name keeps the model number after it ("Osprey 2")."""
    out = []
    for m in mentions(text):
        number = _MODEL_NUMBER.match(text, m.end) if m.kind == "name" else None
        out.append(f"{m.label} {number.group(1)}" if number else m.label)
    return list(dict.fromkeys(out))


def _ordinal(words: list[str]) -> int | None:
    for i, word in enumerate(words):
        # "the second one", "the last document", "the latter": never "how long does the battery last"
        if word in ORDINALS and i > 0 and words[i - 1] == "the" and (i + 1 == len(words) or words[i + 1] in _REFERENT):
            return ORDINALS[word]
    return None


def _continues(words: list[str]) -> bool:
    return (" ".join(words) + " ").startswith(CONTINUATIONS)


def is_follow_up(question: str) -> bool:
    words = _words(question)
    short = len(content_words(question)) <= SHORT_WORDS
    if _continues(words) or short:
        return True
    # "What does error E42 mean in this mode?": a question that names its own entity stands alone
    return any(w in ANAPHORA for w in words) and not _entities(question)


def _strip_continuation(question: str) -> str:
    stripped = re.sub(r"^\s*(?:and|also|so|then|but)\s*,?\s+", "", question, flags=re.IGNORECASE)
    return stripped[:1].upper() + stripped[1:] if stripped else question


def _replace_pronoun(question: str, entity: str) -> str | None:
    """The question with its first personal pronoun replaced by `entity`; None when it has none."""
    for match in _WORD.finditer(question):
        form = _PERSONAL.get(match.group().lower().replace("’", "'"))
        if form is not None:
            replaced = question[: match.start()] + form.format(entity) + question[match.end() :]
            return replaced[:1].upper() + replaced[1:]
    return None


def _with(question: str, carried: Sequence[str], sep: str = " ") -> str:
    body = question.rstrip().rstrip("?.!").rstrip()
    return f"{body} ({sep.join(carried)})?" if carried else question


def resolve(question: str, history: Sequence[PriorTurn]) -> Resolution:
    """The standalone form of `question` given the earlier turns (oldest first), by the offline rules above."""
    if not history or not is_follow_up(question):
        return Resolution(question, "standalone")
    previous = history[-1]
    words = _words(question)
    ordinal = _ordinal(words)
    if ordinal is not None and not _entities(question):
        if not -len(previous.doc_ids) <= ordinal < len(previous.doc_ids):
            return Resolution(question, "unresolved")
        own = [w for w in content_words(question) if w not in ORDINALS and w not in _REFERENT]
        return Resolution(_with(previous.question, own), "ordinal", [previous.doc_ids[ordinal]])
    own_entities = _entities(question)
    if own_entities:  # "what about the Osprey 2?": the previous question, about this entity (short or continuing)
        known = {w for e in _entities(previous.question) for w in _words(e)}
        carried = [w for w in content_words(previous.question) if w not in known]
        return Resolution(_with(_strip_continuation(question), carried[:6]), "ellipsis")
    for turn in reversed(history):
        entities = _entities(turn.question)
        if entities:
            entity = " and ".join(entities[:2])
            replaced = _replace_pronoun(_strip_continuation(question), f"the {entity}" if len(entities) == 1 else entity)
            if replaced is not None:
                return Resolution(replaced, "carried")
            return Resolution(_with(_strip_continuation(question), entities[:3], ", "), "carried")
    carried = [w for w in content_words(previous.question) if w not in set(content_words(question))]
    return Resolution(_with(_strip_continuation(question), carried[:6]), "carried")


REWRITE_PROMPT = (
    "You rewrite the last question of a conversation with a document search engine as ONE standalone question "
    "that can be searched without the conversation: replace pronouns and references (it, they, the second one, "
    "that) with what they refer to in the earlier turns, keep the user's language and wording otherwise, add "
    "nothing else. If the question already stands alone, repeat it unchanged. Reply with the question only."
)


def rewrite_messages(question: str, history: Sequence[PriorTurn]) -> list[dict[str, str]]:
    turns = "\n".join(
        f"Q{i}: {t.question}\nA{i}: {t.answer or '(no answer kept)'}" for i, t in enumerate(history, start=1)
    )
    return [
        {"role": "system", "content": REWRITE_PROMPT},
        {"role": "user", "content": f"Conversation so far:\n{turns}\n\nLast question: {question}\n\nStandalone question:"},
    ]


def _clean(text: str) -> str | None:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:standalone question|question)\s*:\s*", "", line, flags=re.IGNORECASE).strip().strip('"“”\'`')
    if not line or len(line) > MAX_LLM_REWRITE_CHARS or not any(c.isalnum() for c in line) or "\x00" in line:
        return None
    return line


async def rewrite_with_llm(chain: ProviderChain, question: str, history: Sequence[PriorTurn]) -> Resolution:
    """The LLM's standalone question (the first provider that answers completely), else the offline rules'."""
    if not history:
        return Resolution(question, "standalone")
    pieces: list[str] = []
    async for item in chain.stream(rewrite_messages(question, history)):
        if isinstance(item, Text):
            pieces.append(item.text)
        elif isinstance(item, Failed):
            pieces = []
        elif isinstance(item, Completed):
            rewritten = _clean("".join(pieces))
            if rewritten is not None:
                return Resolution(rewritten, "llm")
            log.info("llm provider %r gave no usable rewrite; resolving the follow-up offline", item.provider)
            break
    return resolve(question, history)


SEARCH_QUERY_PROMPT = (
    "You turn a user's question to a document search engine into ONE search query written the way the documents "
    "that answer it would say it: their technical terms, names of commands, options, parts or settings, and the "
    "likely wording of the answer. Keep the question's language. Reply with the query only, one line."
)


def search_query_messages(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SEARCH_QUERY_PROMPT},
        {"role": "user", "content": f"Question: {question}\n\nSearch query:"},
    ]


async def search_query_with_llm(chain: ProviderChain, question: str) -> str | None:
    """The LLM's search query for `question` (the first provider that answers completely; one line, at most
    `MAX_LLM_REWRITE_CHARS`), or None when every provider fails or the answer is empty, overlong or the question
    itself."""
    pieces: list[str] = []
    async for item in chain.stream(search_query_messages(question)):
        if isinstance(item, Text):
            pieces.append(item.text)
        elif isinstance(item, Failed):
            pieces = []
        elif isinstance(item, Completed):
            query = _clean(re.sub(r"^\s*search query\s*:\s*", "", "".join(pieces), flags=re.IGNORECASE))
            if query is not None and query.casefold() != question.strip().casefold():
                return query
            log.info("llm provider %r gave no usable search query; the question is searched alone", item.provider)
            break
    return None
