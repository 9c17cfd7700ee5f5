"""The console in a real headless Chromium (Debian's), against the app served on loopback.

Set GATEWAY_SCREENSHOTS=docs to refresh docs/console.md's screenshots (docs/console-*.png).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway import catalog, handoff, store
from tests.console_support import PASSWORD, PASSWORD_HASH, serve
from tests.support import ACME, call_params, post_signed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CALL_SID = "CA" + "e" * 32


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}; .ci/run installs it with apt-get")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def shoot(tmp_path, database_url):
    """Save a full-page screenshot; also into $GATEWAY_SCREENSHOTS (once, from the SQLite run)."""
    target = os.environ.get("GATEWAY_SCREENSHOTS")

    def take(page, name: str) -> None:
        path = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if target and database_url.startswith("sqlite"):
            shutil.copy(path, Path(target) / path.name)

    return take


@pytest.fixture
def live(make_app, session):
    """The gateway with one failed call to review, served on 127.0.0.1."""
    app = make_app(console_password_hash=PASSWORD_HASH)
    post_signed(app.test_client(), "/voice/call", call_params(call_sid=CALL_SID, to="+14155550197"))
    call = store.conversation_by_call_sid(session, CALL_SID)
    handoff.transition(session, call, handoff.FAILED, detail="busy (SIP 486)")
    call.data = {"account_number": "A-77"}
    session.add(call)
    session.commit()
    handoff.set_topic(session, call, "customer_refund")
    session.commit()
    with serve(app) as base_url:
        yield app, base_url, call


def test_operator_signs_in_adds_a_handoff_and_reviews_a_conversation(live, page, shoot, session):
    app, base_url, call = live

    page.goto(f"{base_url}/console/handoffs")
    assert page.url.startswith(f"{base_url}/console/login")
    shoot(page, "login")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/console/handoffs")
    assert page.locator("tr[data-name='Front desk']").count() == 1

    # Add a destination with two SIP headers; the second row comes from "Add SIP Header".
    page.click("text=Add Handoff")
    page.fill("#name", "Escalations")
    page.fill("#description", "Customers who ask for a manager")
    page.check("input[name=method][value=refer]")
    page.fill("#route", "sip:escalations@pbx.acme.test")
    page.locator("input[name=header_name]").nth(0).fill("X-Caller-ID")
    page.locator("input[name=header_value]").nth(0).fill("$caller_id")
    page.click("#add-header")
    assert page.locator("input[name=header_name]").count() == 2
    page.locator("input[name=header_name]").nth(1).fill("X-Reason")
    page.locator("input[name=header_value]").nth(1).fill("$reason")
    shoot(page, "handoff-form")
    page.click("button[value=save]")
    page.wait_for_url(f"{base_url}/console/handoffs")
    assert "Added Escalations." in page.inner_text("main")
    assert "console / API" in page.inner_text("tr[data-name='Escalations']")
    shoot(page, "handoffs")
    session.expire_all()
    entry = catalog.find(session, app.extensions["gateway"].config.project_by_key(ACME), "Escalations")
    assert entry.source == "database"
    assert entry.destination.sip_headers == {"X-Caller-ID": "$caller_id", "X-Reason": "$reason"}

    # BYE hides the route; a header name without X- is explained beside the headers.
    page.click("text=Add Handoff")
    page.check("input[name=method][value=bye]")
    assert page.locator("#route").is_hidden()
    page.check("input[name=method][value=refer]")
    assert page.locator("#route").is_visible()
    page.fill("#name", "Broken")
    page.fill("#route", "2001")
    page.locator("input[name=header_name]").nth(0).fill("Caller")
    page.locator("input[name=header_value]").nth(0).fill("$caller_id")
    page.click("button[value=save]")
    error = page.locator("#sip_headers-error")
    assert error.inner_text() == "header name 'Caller' must start with X- (for example X-Caller)"
    assert page.locator("#name").input_value() == "Broken"
    shoot(page, "handoff-error")

    # Numbers, and a route test of the number the reviewed call went to.
    page.click("nav >> text=Numbers")
    assert "registered" in page.inner_text("tr[data-number='+14155550199']")
    shoot(page, "numbers")
    page.locator("tr[data-number='+14155550197'] button").click()
    assert "<Sip>sip:billing@pbx.acme.test?" in page.inner_text("#twiml")
    shoot(page, "route-test")

    # Review the failed call: its reason and its timeline.
    page.click("nav >> text=Conversations")
    page.select_option("#state", "handoff_failed")
    page.click("text=Filter")
    assert page.locator("table.list tbody tr").count() == 1
    shoot(page, "conversations")
    page.locator("table.list tbody a").first.click()
    page.wait_for_url(f"{base_url}/console/conversations/{call.id}")
    assert page.inner_text("#meta-reason") == "billing_question"
    assert page.inner_text("#meta-state") == "handoff_failed"
    steps = page.locator("#timeline li").all_inner_texts()
    assert [step.splitlines()[1] for step in steps] == [
        "Handoff initiated → Billing",
        "Handoff failed → Billing",
        "Topic: customer_refund → Billing",
    ]
    assert "busy (SIP 486)" in steps[1]
    shoot(page, "conversation")
