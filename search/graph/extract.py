"""Deterministic, offline entity and relation extraction: no model, no network, the same output on every run.

No NER model ships in any package here (spaCy installs, its models do not), so entities are found by surface
rules that suit technical documents and manuals:

- **names**: runs of capitalised words ("Project Falcon", "Bank of England"), joined by a few lower-case
  connectors (of, the, de, von, van, der, la, du); a leading function word ("The", "Who", "In") is dropped; a
  single capitalised word counts only when it does not open its sentence (there it is usually just
  capitalised, not a name).
- **acronyms**: two or more capitals, digits allowed ("NATS", "HNSW", "PDFs" -> "PDF"), skipped in sentences
  written in capitals.
- **code identifiers**: snake_case, CamelCase and camelCase, dotted names ("bus.topology.ensure_topology"),
  calls ("open()"), error and issue codes ("E1234", "HTTP-404", "CVE-2024-1234").
- **quoted terms**: "double", curly and `backtick` quotes, up to six words.

Every mention is normalised to a key (Unicode NFKC, case-folded, whitespace collapsed, possessive and plural-
acronym "s" removed, surrounding punctuation stripped): "Dana Smith's" and "DANA SMITH" both become
"dana smith". The first surface form seen is kept as the entity's label.

Relations are co-occurrence in one sentence (weight 1 per sentence); when the words between two consecutive
mentions are a copula ("X is a Y") or a use verb ("X uses Y", "X depends on Y"), the relation is typed
(`is_a`, `uses`) and directed, and weighs 2. A table row counts as a sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

EntityKind = Literal["name", "acronym", "code", "quoted"]
RelationKind = Literal["co_occurs", "is_a", "uses"]

MAX_KEY_CHARS = 100
MAX_NAME_WORDS = 6
# Co-occurrence pairs grow with the square of the entities in a sentence: only the first few take part.
MAX_PAIRED_PER_SENTENCE = 12

# Capitalised words that are function words, question words or document furniture, never a name on their own.
_STOP_CAPS = frozenset(
    """a an the this that these those there here then thus hence also however therefore moreover
    who what when where which why how whose whom is are was were be been do does did has have had
    can could should would will shall may might must in on at for of and or but if it its we you he she
    they i our your their his her my me us them to from by with as after before during since until
    into onto over under about above below between each every all any some no not none both either
    neither one two three figure fig table page section chapter see note step example yes ok please
    let first second next last new use using check make ensure open close press click select set run
    install remove turn add enter type""".split()
)
_CONNECTORS = frozenset({"of", "the", "de", "von", "van", "der", "la", "du", "da", "del", "&"})

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*(?:[|*•#-]|\d+[.)]\s))|\|\s*\n")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’_.&-]*[A-Za-z0-9]|[A-Za-z0-9&]")
_QUOTED = re.compile(r'"([^"\n]{2,80})"|“([^”\n]{2,80})”|`([^`\n]{2,80})`')
_SNAKE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")
_DOTTED = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?:\(\))?")
_CALL = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\(\)")
_CAMEL = re.compile(r"\b[A-Za-z][A-Za-z0-9]*[a-z][A-Z][A-Za-z0-9]*\b")
_CODE = re.compile(r"\b[A-Z]{1,5}-?\d{2,}(?:-\d+)*[A-Z]?\b")
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9&]*[A-Z][A-Z0-9]*(?:s\b)?")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
_CAP_WORD = re.compile(r"^[A-Z][A-Za-z0-9'’-]*$")
_IS_A = re.compile(r"^\s*(?:is|are|was|were)\s+(?:(?:a|an|the|one|kind|type|sort|of)\s+)*$", re.IGNORECASE)
_USES = re.compile(
    r"^\s*(?:uses|use|used|using|relies\s+on|depends\s+on|requires|calls|runs\s+on|is\s+built\s+on|imports)"
    r"(?:\s+(?:a|an|the))?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Mention:
    """One entity mention in a sentence: its key, its surface form, its kind, and where it is."""

    key: str
    label: str
    kind: EntityKind
    start: int
    end: int


@dataclass(slots=True)
class ChunkExtraction:
    """What one chunk yields: entity keys (with label and kind) and weighted relations between them."""

    entities: dict[str, tuple[str, EntityKind]] = field(default_factory=dict)
    relations: dict[tuple[str, str, RelationKind], float] = field(default_factory=dict)


def normalise(text: str) -> str:
    """The key of a mention: NFKC, case-folded, single spaces, no possessive, no surrounding punctuation."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    text = re.sub(r"\s+", " ", text).strip(" \t\"'`.,;:!?()[]{}<>“”‘")
    text = re.sub(r"'s$", "", text)
    return text.casefold()[:MAX_KEY_CHARS].strip()


def sentences(text: str) -> list[tuple[int, str]]:
    """The sentences of a text (table rows and list items count as sentences), with their offsets."""
    out, pos = [], 0
    for match in _SENTENCE_SPLIT.finditer(text):
        out.append((pos, text[pos : match.start()]))
        pos = match.end()
    out.append((pos, text[pos:]))
    return [(start, s) for start, s in out if s.strip()]


def _names(sentence: str) -> Iterable[Mention]:
    words = list(_WORD.finditer(sentence))
    i = 0
    while i < len(words):
        if not _CAP_WORD.match(words[i].group()):
            i += 1
            continue
        run = [words[i]]
        j = i + 1
        while j < len(words):
            w = words[j].group()
            gap = sentence[run[-1].end() : words[j].start()]
            if gap.strip() not in ("", "&"):  # punctuation (a comma, a bracket) ends a name
                break
            if _CAP_WORD.match(w):
                run.append(words[j])
                j += 1
            elif w.lower() in _CONNECTORS and j + 1 < len(words) and _CAP_WORD.match(words[j + 1].group()):
                run.append(words[j])
                j += 1
            else:
                break
        i = j
        # Drop leading function words and trailing connectors; a name never starts or ends with them.
        while run and (run[0].group().lower() in _STOP_CAPS or run[0].group().lower() in _CONNECTORS):
            run.pop(0)
        while run and run[-1].group().lower() in _CONNECTORS:
            run.pop()
        if not run or len(run) > MAX_NAME_WORDS:
            continue
        opens_sentence = not sentence[: run[0].start()].strip(" \t\n\"'“(*-•#0123456789.)|")
        if len(run) == 1 and (opens_sentence or run[0].group().isupper() or _CAMEL.fullmatch(run[0].group())):
            continue  # a capitalised first word is not a name; all-caps is an acronym, CamelCase code (above)
        surface = sentence[run[0].start() : run[-1].end()]
        yield Mention(normalise(surface), re.sub(r"'s$|’s$", "", surface), "name", run[0].start(), run[-1].end())


def _mentions(sentence: str) -> list[Mention]:
    """Every mention in one sentence, in order of position; overlapping mentions of different kinds are kept."""
    found: list[Mention] = []
    for m in _QUOTED.finditer(sentence):
        inner = next(g for g in m.groups() if g is not None)
        if 1 <= len(inner.split()) <= MAX_NAME_WORDS:
            kind: EntityKind = "code" if m.group(3) is not None else "quoted"
            found.append(Mention(normalise(inner), inner.strip(), kind, m.start(), m.end()))
    for pattern in (_SNAKE, _DOTTED, _CALL, _CAMEL, _CODE):
        for m in pattern.finditer(sentence):
            surface = m.group()
            if pattern is _DOTTED and all(len(p) <= 1 for p in surface.rstrip("()").split(".")):
                continue  # "e.g", "i.e"
            found.append(Mention(normalise(surface), surface, "code", m.start(), m.end()))
    upper, lower = len(_UPPER.findall(sentence)), len(_LOWER.findall(sentence))
    shouting = upper + lower >= 12 and upper > 0.6 * (upper + lower)  # a sentence in capitals names no acronym
    if not shouting:
        for m in _ACRONYM.finditer(sentence):
            surface = m.group()
            stem = surface[:-1] if surface.endswith("s") else surface
            if sum(c.isupper() for c in stem) >= 2 and not _CODE.fullmatch(stem):
                found.append(Mention(normalise(stem), stem, "acronym", m.start(), m.start() + len(stem)))
        found.extend(_names(sentence))
    found = [m for m in found if m.key and len(m.key) >= 2]
    found.sort(key=lambda m: (m.start, -m.end, m.key))
    return found


def mentions(text: str) -> list[Mention]:
    """Every mention in a text (offsets relative to the text)."""
    out = []
    for offset, sentence in sentences(text):
        out.extend(Mention(m.key, m.label, m.kind, m.start + offset, m.end + offset) for m in _mentions(sentence))
    return out


def entity_keys(text: str) -> set[str]:
    """The keys of the entities a text (e.g. a question) mentions."""
    return {m.key for m in mentions(text)}


def _typed(between: str) -> RelationKind | None:
    if _IS_A.match(between):
        return "is_a"
    if _USES.match(between):
        return "uses"
    return None


def extract(text: str) -> ChunkExtraction:
    """Entities and relations of one chunk's text. Deterministic: the same text always gives the same result."""
    out = ChunkExtraction()
    for _, sentence in sentences(text):
        found = _mentions(sentence)
        for m in found:
            out.entities.setdefault(m.key, (m.label, m.kind))
        keys = sorted(list(dict.fromkeys(m.key for m in found))[:MAX_PAIRED_PER_SENTENCE])
        for a_i, a in enumerate(keys):
            for b in keys[a_i + 1 :]:
                out.relations[(a, b, "co_occurs")] = out.relations.get((a, b, "co_occurs"), 0.0) + 1.0
        # Typed relations between consecutive, non-overlapping mentions.
        for a, b in zip(found, found[1:], strict=False):
            if a.key == b.key or b.start < a.end:
                continue
            kind = _typed(sentence[a.end : b.start])
            if kind is not None:
                out.relations[(a.key, b.key, kind)] = out.relations.get((a.key, b.key, kind), 0.0) + 2.0
    return out
