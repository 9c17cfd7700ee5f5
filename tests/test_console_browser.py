"""The console in a real headless Chromium (Debian's), against the app served on loopback.

Set GATEWAY_SCREENSHOTS=docs to refresh docs/console.md's screenshots (docs/console-*.png).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.handoffs import catalog, handoff
from gateway.storage import store
from tests.console_support import PASSWORD, PASSWORD_HASH, serve
from tests.support import ACME, CONFIG_KEY, call_params, post_signed

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


# --- mid-shift: search, live pages, transcript, overview, narrow screens ----------------------

LIVE_CALL = "CA" + "7" * 32
CRM_ID = "CRM-20931"


def signed_in(page, base_url: str, path: str) -> None:
    page.goto(f"{base_url}/console/login?next={path}")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{path}")


def call_step(client, path: str, **form) -> None:
    """A signed Twilio callback about LIVE_CALL, as Twilio would post it."""
    params = {"CallSid": LIVE_CALL, "AccountSid": "AC" + "0" * 32, **form}
    assert post_signed(client, path, params).status_code in (200, 204)


@pytest.fixture
def shift(make_app, session):
    """The gateway re-reading its live pages every second, served on 127.0.0.1."""
    app = make_app(console_password_hash=PASSWORD_HASH)
    app.config["CONSOLE_LIVE_SECONDS"] = 1
    with serve(app) as base_url:
        yield app, base_url


def test_the_list_and_a_conversation_follow_a_call_live(shift, page, shoot, session):
    app, base_url = shift
    webhook = app.test_client()
    signed_in(page, base_url, "/console/conversations")
    first_stamp = page.inner_text("#live-status")
    assert "Updated" in first_stamp and page.locator("tr[data-id]").count() == 0

    # The call arrives: its row appears by itself, and the stamp moves on.
    post_signed(webhook, "/voice/call", call_params(call_sid=LIVE_CALL, to="+14155550197", From="+14155559876"))
    call = store.conversation_by_call_sid(session, LIVE_CALL)
    row = page.locator(f"tr[data-id='{call.id}']")
    row.wait_for()
    assert "handoff_initiated" in row.inner_text() and "Billing" in row.inner_text()
    assert page.inner_text("#live-status") != first_stamp

    # Open it, and watch Billing fail, the fallback answer, and the call end.
    row.locator("a").click()
    page.wait_for_url(f"{base_url}/console/conversations/{call.id}")
    call_step(webhook, f"/voice/dial-status?conversation_id={call.id}&attempt=1", DialCallStatus="busy", DialSipResponseCode="486")
    # A locator, not wait_for_function: the console's CSP forbids the eval that one needs.
    page.locator("#meta-attempts >> text=/^\\s*2\\s*$/").wait_for()
    assert page.inner_text("#meta-destination") == "Tier 2"
    call_step(webhook, f"/voice/dial-status?conversation_id={call.id}&attempt=2", ReferCallStatus="in-progress", ReferSipResponseCode="202")
    page.locator("#meta-state >> text=handoff_completed").wait_for()
    call_step(webhook, "/voice/status", CallStatus="completed", CallDuration="187", SequenceNumber="3")
    page.locator("#meta-call-status >> text=completed (3 min 07 s)").wait_for()
    steps = [step.splitlines()[1] for step in page.locator("#timeline li").all_inner_texts()]
    assert steps == ["Handoff initiated → Billing", "Handoff failed → Billing", "Handoff initiated → Tier 2", "Handoff completed → Tier 2"]
    shoot(page, "conversation-live")

    # When the gateway cannot be reached, the page says so instead of going quietly stale.
    page.route("**/console/conversations/**", lambda route: route.abort())
    page.locator("#live-status.stale").wait_for()
    assert "could not update" in page.inner_text("#live-status")


def test_one_search_box_opens_the_only_match(shift, page, shoot, session):
    app, base_url = shift
    webhook = app.test_client()
    for index, caller in enumerate(["+14155551234", "+14155551234", "+14155559876"]):
        post_signed(webhook, "/voice/call", call_params(call_sid=f"CA{index:032d}", From=caller))
    key = {"x-api-key": CONFIG_KEY}
    chat = webhook.post("/v1/acme/frontdesk/chat/create", json={"shared_id": CRM_ID}, headers=key).get_json()
    webhook.post("/v1/acme/frontdesk/chat/respond", json={"conversation_id": chat["conversation_id"],
                 "message": "My card was charged twice for order 5521"}, headers=key)
    webhook.post("/v1/acme/frontdesk/chat/respond", json={"conversation_id": chat["conversation_id"],
                 "message": "Can I talk to a human about it?"}, headers=key)
    signed_in(page, base_url, "/console/conversations")
    assert page.locator("tr[data-id]").count() == 4
    assert "My card was charged twice for order 5521" in page.inner_text(f"tr[data-id='{chat['conversation_id']}']")
    shoot(page, "conversations")

    page.fill("#q", "(415) 555-9876")
    page.press("#q", "Enter")
    only = store.conversation_by_call_sid(session, f"CA{2:032d}")
    page.wait_for_url(f"{base_url}/console/conversations/{only.id}")

    page.goto(f"{base_url}/console/conversations")
    page.fill("#q", "+1 415 555 1234")
    page.press("#q", "Enter")
    page.wait_for_url("**q=%2B1+415+555+1234**")
    assert page.locator("tr[data-id]").count() == 2

    # The CRM's id opens the chat, whose transcript sits beside its handoff timeline.
    page.fill("#q", CRM_ID)
    page.press("#q", "Enter")
    page.wait_for_url(f"{base_url}/console/conversations/{chat['conversation_id']}")
    turns = page.locator("#transcript li").all_inner_texts()
    assert turns[0].startswith("Customer") and turns[0].endswith("My card was charged twice for order 5521")
    assert [turn.split()[0] for turn in turns] == ["Customer", "Assistant", "Customer", "Assistant"]
    assert page.locator("#timeline li").all_inner_texts()[0].splitlines()[1] == "Handoff initiated → Front desk"
    transcript_box = page.locator("section[aria-label=Transcript]").bounding_box()
    timeline_box = page.locator("section[aria-label=Timeline]").bounding_box()
    assert transcript_box["x"] + transcript_box["width"] <= timeline_box["x"]  # side by side at 1280 px
    assert abs(transcript_box["y"] - timeline_box["y"]) < 1
    shoot(page, "conversation-chat")


def test_the_overview_and_the_transfer_table_read_at_a_glance(shift, page, shoot, session):
    app, base_url = shift
    webhook = app.test_client()
    post_signed(webhook, "/voice/call", call_params(call_sid=LIVE_CALL, to="+14155550197"))
    call = store.conversation_by_call_sid(session, LIVE_CALL)
    call_step(webhook, f"/voice/dial-status?conversation_id={call.id}&attempt=1", DialCallStatus="busy")
    call_step(webhook, f"/voice/dial-status?conversation_id={call.id}&attempt=2", ReferCallStatus="in-progress")
    post_signed(webhook, "/voice/call", call_params(call_sid="CA" + "8" * 32, to="+14155550196"))

    signed_in(page, base_url, "/console/overview")
    assert page.inner_text("#tile-handoffs .figure") == "2"
    assert page.inner_text("#tile-handoff_completed .figure") == "1"
    assert page.inner_text("#tile-failover .figure") == "50%"
    assert page.inner_text("tr[data-destination='Tier 2']").split() == ["Tier", "2", "2", "1", "0"]
    shoot(page, "overview")

    page.click("nav >> text=Call Handoffs")
    assert "25 s" in page.inner_text("tr[data-name='Billing'] td.ring")
    assert page.locator("tr[data-number='+14155550197'] ol.order li").all_inner_texts() == ["Billing", "Tier 2", "Secure desk"]

    # A route that is neither a number nor a SIP URI is refused beside the field.
    page.click("text=Add Handoff")
    page.fill("#name", "Escalations")
    page.fill("#route", "call bob")
    page.click("button[value=save]")
    assert "is not a route" in page.inner_text("#route-error")
    assert page.get_attribute("#route", "aria-invalid") == "true"
    shoot(page, "handoff-route-error")


NARROW = {"width": 390, "height": 844}
WIDE = {"width": 1280, "height": 800}


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280x800", "390x844"])
def test_every_page_fits_the_screen(shift, browser, session, viewport, shoot):
    app, base_url = shift
    post_signed(app.test_client(), "/voice/call", call_params(call_sid=LIVE_CALL, to="+14155550197"))
    call = store.conversation_by_call_sid(session, LIVE_CALL)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        signed_in(page, base_url, "/console/handoffs")
        for path in ["/console/overview", "/console/handoffs", "/console/handoffs/new", "/console/numbers",
                     "/console/conversations", f"/console/conversations/{call.id}"]:
            page.goto(base_url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} is {overflow} px wider than a {viewport['width']} px screen"
            assert page.locator("nav >> text=Conversations").is_visible()
        if viewport is NARROW:
            page.goto(base_url + "/console/conversations")
            shoot(page, "conversations-narrow")
    finally:
        context.close()
