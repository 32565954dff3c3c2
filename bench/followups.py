"""Follow-up questions in a conversation: how often the follow-up is answered from the right product sheet, asked
alone vs asked in its conversation (offline resolution, `search/followup.py`), on a real `mmrag up`.

    .venv/bin/python bench/followups.py [--products 12]

Corpus: one synthetic product sheet a product (weight, payload, battery, price, altitude, maker), worded alike,
so only the product's name tells them apart. A conversation opens with a question naming the product, then asks
follow-ups that do not name it ("and how much does it weigh?", "how long does its battery last?", "and the
price?") and one that names another product ("what about the <other>?", which means the previous question about
that one). Two figures a follow-up: the right sheet cited (what resolution decides), and the answer right (it
also holds the expected value: the offline answerer's sentence choice decides that part).
Prints the table; asserts nothing. (No LLM here: the LLM rewrite needs a provider.)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine import Engine, sse_events, upload_bytes, wait_status  # noqa: E402

NAMES = ["Falcon X", "Osprey 2", "Kestrel 7", "Harrier Pro", "Merlin S", "Condor 9", "Heron Mini", "Raven XL",
         "Swift 3", "Petrel Max", "Gannet 5", "Tern Air", "Avocet 4", "Plover GT", "Skua 8", "Egret One"]  # fmt: skip
MAKERS = ["Aerotek", "Skyforge", "Nordwind", "Altavia", "Brightwing", "Cumulus Labs", "Vireo", "Stratos"]


def facts(rng: random.Random, name: str) -> dict[str, str]:
    return {
        "weight": f"{rng.randint(8, 60) / 10} kg", "payload": f"{rng.randint(5, 90) / 10} kg",
        "battery": f"{rng.randint(15, 55)} minutes", "price": f"{rng.randint(4, 40) * 100} euros",
        "altitude": f"{rng.randint(10, 60) * 100} metres", "maker": rng.choice(MAKERS),
    }  # fmt: skip


def sheet(name: str, f: dict[str, str]) -> str:
    return (
        f"{name} drone, product sheet.\n\n"
        f"The {name} weighs {f['weight']} without its camera.\n\n"
        f"The {name} carries a maximum payload of {f['payload']}.\n\n"
        f"The {name} battery lasts {f['battery']} in calm air.\n\n"
        f"The {name} costs {f['price']} before tax.\n\n"
        f"The {name} reaches a maximum altitude of {f['altitude']}.\n\n"
        f"The {name} is made by {f['maker']}.\n"
    )


# (kind, follow-up, which fact it asks)
FOLLOW_UPS = [
    ("pronoun", "And how much does it weigh?", "weight"),
    ("possessive", "How long does its battery last?", "battery"),
    ("short", "And the price?", "price"),
    ("pronoun", "How high can it fly?", "altitude"),
    ("pronoun", "Who makes it?", "maker"),
]


async def ask(url: str, question: str, cid: str | None) -> tuple[str, set[str]]:
    body: dict = {"question": question, "top_k": 1}
    if cid is not None:
        body["conversation_id"] = cid
    events = await sse_events(None, url, body)
    text = "".join(d["text"] for e, d in events if e == "token")
    return text, {d["doc_id"] for e, d in events if e == "citation"}


async def measure(engine: Engine, products: int) -> None:
    rng = random.Random(7)
    names = NAMES[:products]
    sheets = {name: facts(rng, name) for name in names}
    ids: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        for name in names:
            resp = await upload_bytes(http, engine.url, sheet(name, sheets[name]).encode(), f"{name}.txt", "text/plain")
            ids[name] = (await resp.json())["doc_id"]
        for doc_id in ids.values():
            await wait_status(http, engine.url, doc_id, {"indexed"}, timeout_s=300)
        right: Counter[tuple[str, str]] = Counter()
        sheet_right: Counter[tuple[str, str]] = Counter()
        total: Counter[str] = Counter()
        for i, name in enumerate(names):
            other = names[(i + 1) % len(names)]
            cases = [(kind, q, name, fact) for kind, q, fact in FOLLOW_UPS]
            cases.append(("other entity", f"What about the {other}?", other, "payload"))
            async with http.post(f"{engine.url}/v1/conversations", json={}) as resp:
                cid = (await resp.json())["id"]
            await ask(engine.url, f"What is the maximum payload of the {name}?", cid)
            for kind, question, about, fact in cases:
                total[kind] += 1
                for mode, conversation in (("alone", None), ("conversation", cid)):
                    text, cited = await ask(engine.url, question, conversation)
                    if cited == {ids[about]}:
                        sheet_right[(kind, mode)] += 1
                        right[(kind, mode)] += sheets[about][fact] in text
    print(f"corpus: {products} product sheets worded alike (one chunk each); top_k 1; offline resolution")
    print()
    print("| follow-up | n | right sheet, alone | right sheet, in conversation | right answer, alone | right answer, in conversation |")
    print("|---|---|---|---|---|---|")
    modes = ("alone", "conversation")
    for kind in [*total, "all"]:
        kinds = list(total) if kind == "all" else [kind]
        n = sum(total[k] for k in kinds)
        cells = [sum(counter[(k, m)] for k in kinds) / n for counter in (sheet_right, right) for m in modes]
        print(f"| {kind} | {n} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=12, choices=range(2, len(NAMES) + 1), metavar="2..16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp) / "data", Path(tmp) / "engine.log").start()
        try:
            asyncio.run(measure(engine, args.products))
        finally:
            engine.stop()


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("followups"):
        main()
