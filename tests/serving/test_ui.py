"""The web UI in a real headless browser (Debian's Chromium, never a downloaded one): the page
loads, a generation appears, an upload is answered and edited, a chat answer streams in.

``CHEERS_SCREENSHOT=docs/images/serving-ui.png`` also saves the screenshot the docs show.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from live_server import STEPS, png_bytes

from cheers.pipeline.text_requests import TextRequest

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no system Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_page_generates_images_and_streams_an_answer(browser, live, pipe, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 520})
    page.goto(live.url)
    page.wait_for_selector("body[data-ready=true]")
    assert "model cheers" in page.text_content("#status")

    # Text to image: two images appear, 64×64 each.
    page.fill("#generate-form textarea[name=prompt]", "a red circle")
    page.fill("#generate-form input[name=n]", "2")
    page.fill("#generate-form input[name=seed]", "3")
    page.fill("#generate-form input[name=num_inference_steps]", str(STEPS))
    page.click("#generate-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#generate-images img').length === 2")
    page.wait_for_function(
        "[...document.querySelectorAll('#generate-images img')].every(i => i.naturalWidth === 64)"
    )

    # Ask about an uploaded image: the answer the pipeline gives.
    source = pipe("a red circle", num_inference_steps=8, generator=0).images[0]
    upload = tmp_path / "circle.png"
    upload.write_bytes(png_bytes(source))
    page.click("button[data-tab=ask]")
    page.set_input_files("#ask-form input[name=image]", str(upload))
    page.fill("#ask-form input[name=question]", "What color is the shape?")
    page.click("#ask-form button[type=submit]")
    expected = pipe.understand(source, "What color is the shape?", max_new_tokens=64)
    page.wait_for_function(f"document.querySelector('#ask-answer').textContent === {expected!r}")

    # Edit the uploaded image: two edited images appear.
    page.click("button[data-tab=edit]")
    page.set_input_files("#edit-form input[name=image]", str(upload))
    page.fill("#edit-form input[name=num_inference_steps]", str(STEPS + 1))
    page.click("#edit-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#edit-images img').length === 2")
    assert not page.locator("#edit .error").is_visible()

    # Chat: the answer streams in, one chunk per token, and equals the pipeline's.
    page.click("button[data-tab=chat]")
    page.fill("#chat-form input[name=max_tokens]", "12")
    page.fill("#chat-form input[name=seed]", "5")
    page.fill("#chat-form input[name=message]", "Who are you?")
    page.click("#chat-form button[type=submit]")
    page.wait_for_selector("#chat-log .message.assistant.done")
    reply = page.locator("#chat-log .message.assistant").last
    messages = [{"role": "user", "content": "Who are you?"}]
    alone = pipe.answer([TextRequest(messages, max_new_tokens=12, seed=5)])[0]
    assert reply.get_attribute("data-chunks") == str(len(alone.token_ids))  # EOS is not sent
    assert reply.text_content() == pipe.chat(messages, max_new_tokens=12, generator=5)
    assert not page.locator("#chat .error").is_visible()

    page.click("button[data-tab=generate]")
    page.screenshot(path=str(tmp_path / "serving-ui.png"))
    target = os.environ.get("CHEERS_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "serving-ui.png", target)


def test_one_conversation_thread_draws_edits_and_asks(browser, live, pipe, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(live.url)
    page.wait_for_selector("body[data-ready=true]")
    page.click("button[data-tab=chat]")
    page.fill("#chat-form input[name=num_inference_steps]", str(STEPS))
    page.fill("#chat-form input[name=seed]", "4")
    assistant = "#chat-log .message.assistant"

    def turn(text: str, mode: str, done: int) -> None:
        page.fill("#chat-form input[name=message]", text)
        page.click(f"#chat-form button[data-mode={mode}]")
        page.wait_for_function(f"document.querySelectorAll('{assistant}.done').length === {done}")

    # An edit before any image: a clear error, and the thread stays empty.
    page.fill("#chat-form input[name=message]", "make it blue")
    page.click("#chat-form button[data-mode=edit]")
    page.wait_for_selector("#chat .error:not([hidden])")
    assert "holds no image" in page.text_content("#chat .error")
    assert page.locator("#chat-log .message").count() == 0

    turn("a red circle", "draw", 1)
    first = page.locator(f"{assistant} img").first
    assert first.evaluate("i => i.naturalWidth") == 64
    assert int(page.locator(assistant).first.get_attribute("data-steps")) >= STEPS - 1
    turn("make it blue", "edit", 2)
    assert page.locator(f"{assistant} img").count() == 2
    # Asking about the edited image continues the same conversation: three images in its
    # context (drawn, shown again for the edit, edited), so the answer is not the one-turn one.
    turn("What color is the shape?", "send", 3)
    answer = page.locator(assistant).last.text_content()
    assert answer and not page.locator("#chat .error").is_visible()
    assert page.locator("#chat-log .message.user").count() == 3

    # An attached image goes inline with the message and is asked about.
    source = pipe("a red circle", num_inference_steps=8, generator=0).images[0]
    upload = tmp_path / "circle.png"
    upload.write_bytes(png_bytes(source))
    page.click("#chat-reset")
    page.set_input_files("#chat-form input[name=image]", str(upload))
    page.fill("#chat-form input[name=max_tokens]", "64")
    turn("What color is the shape?", "send", 1)
    assert page.locator("#chat-log .message.user img").count() == 1
    expected = pipe.understand(source, "What color is the shape?", max_new_tokens=64)
    assert page.locator(assistant).last.text_content() == expected
