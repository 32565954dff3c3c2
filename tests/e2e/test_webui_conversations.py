"""Conversations in the web UI, in a real browser (Chromium + Playwright) against the shared `mmrag up --auth`
(signed in with the test tenant's key): three turns whose follow-ups are understood, the earlier turns kept above
the answer (their citations open the cited page), thumbs up stored, copy, regenerate, the history after a reload, rename and delete.
The page's problems (console errors, unexpected non-2xx answers) fail the test (`tests/e2e/test_webui.py`'s Watch).
"""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Browser, expect

from tests.e2e.test_conversations import ingest
from tests.e2e.test_webui import browser, open_page, shot  # noqa: F401 - `browser` is a fixture
from tests.engine import TenantEngine

QUESTIONS = [
    ("What is the maximum payload of the Falcon X?", "2.5 kg"),
    ("And how much does it weigh?", "1.2 kg"),
    ("And how long does its battery last?", "40 minutes"),
]


async def ask(page, question: str, fact: str) -> None:  # noqa: ANN001 - a Page
    await page.fill("#question", question)
    await page.click("#ask-button")
    await expect(page.locator("#answer-status")).to_have_text(re.compile("Answered by"), timeout=60_000)
    await expect(page.locator("#answer")).to_contain_text(fact)
    await expect(page.locator("#answer-actions .turn-actions")).to_have_count(1)  # the turn is kept


async def test_three_turns_history_reload_rename_delete(
    engine: TenantEngine, browser: Browser, http: aiohttp.ClientSession  # noqa: F811 - the fixture
) -> None:
    await ingest(http, engine)
    async with open_page(browser, engine.url) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.fill("#api-key", engine.key)
        await page.keyboard.press("Enter")
        await expect(page.locator("#who")).to_have_text(re.compile(f"Tenant {engine.tenant}"))
        await expect(page.locator("#conversations-empty")).to_be_visible()

        for n, (question, fact) in enumerate(QUESTIONS):
            await ask(page, question, fact)
            await expect(page.locator("#transcript .turn")).to_have_count(n)  # the earlier turns, above
        await expect(page.locator("#answer-status")).to_contain_text("Searched: “How long does the Falcon X's battery last?”")
        await expect(page.locator("#transcript .turn").nth(0)).to_contain_text("2.5 kg")
        await expect(page.locator("#transcript .turn").nth(1)).to_contain_text("Searched: How much does the Falcon X weigh?")
        item = page.locator("#conversation-list li.conversation")
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text(QUESTIONS[0][0])
        await expect(item).to_contain_text("3 turns")
        cid = await item.get_attribute("data-id")
        await shot(page, "conversation")

        actions = page.locator("#answer-actions .turn-actions")
        await actions.get_by_role("button", name="Good answer").click()
        await expect(actions.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "true")
        await actions.get_by_role("button", name="Copy the answer").click()
        await expect(actions.locator(".action-status")).to_have_text("Copied.")
        assert "40 minutes" in await page.evaluate("navigator.clipboard.readText()")
        async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
            assert (await resp.json())["turns"][2]["feedback"]["rating"] == "up"

        listed = lambda r: r.request.method == "GET" and r.url.endswith("/v1/conversations")  # noqa: E731
        async with page.expect_response(listed, timeout=60_000):  # the list read again once the answer is kept
            await actions.get_by_role("button", name="Regenerate").click()
        await expect(page.locator("#answer-status")).to_have_text(re.compile("Answered by"))
        await expect(page.locator("#answer")).to_contain_text("40 minutes")
        await expect(page.locator("#transcript .turn")).to_have_count(2)
        await expect(item).to_contain_text("3 turns")  # replaced, not added

        await page.reload()  # the key and the open conversation live in this tab's sessionStorage
        await expect(page.locator("#transcript .turn")).to_have_count(2)
        await expect(page.locator("#answer")).to_contain_text("40 minutes")
        await expect(page.locator("#answer-question")).to_have_text(QUESTIONS[2][0])
        await expect(page.locator("#conversation-title")).to_have_text(QUESTIONS[0][0])
        await expect(page.locator("#conversation-list li.open")).to_have_attribute("data-id", cid or "")
        # A citation of an earlier turn opens its page, as the live answer's do.
        await page.locator("#transcript .turn").nth(1).locator("button.cite[data-cite='1']").first.click()
        await expect(page.locator("#viewer-title")).to_have_text("falcon.txt — page 1")
        await page.keyboard.press("Escape")
        await expect(page.locator("#viewer")).to_be_hidden()

        await item.get_by_role("button", name=re.compile("^Rename")).click()
        await page.locator("#conversation-list input.rename").fill("Drone specs")
        await page.keyboard.press("Enter")
        await expect(item.locator(".conversation-title")).to_have_text("Drone specs")
        await expect(page.locator("#conversation-title")).to_have_text("Drone specs")

        page.once("dialog", lambda dialog: dialog.accept())
        await item.get_by_role("button", name="Delete Drone specs").click()
        await expect(item).to_have_count(0)
        await expect(page.locator("#conversations-empty")).to_be_visible()
        await expect(page.locator("#transcript .turn")).to_have_count(0)
        await expect(page.locator("#answer-area")).to_be_hidden()
    async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
        assert resp.status == 404, "deleted in the API too"
