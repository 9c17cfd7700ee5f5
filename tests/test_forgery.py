"""A corpus of forged and tampered Twilio webhooks: every one refused (403), nothing stored.

The corpus is derived from genuine requests by changing one thing at a time: a form field, the
set of fields, the URL that was signed, the path it is sent to, or the signature itself. The
same genuine requests are then sent through TLS-terminating proxies and must all be accepted.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

from sqlmodel import func, select
from werkzeug.datastructures import MultiDict

from gateway.storage.models import Conversation, HandoffEvent
from tests.support import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, call_params, sign

MINIMUM_CORPUS = 200


@dataclass
class Webhook:
    """One request as the test client sends it; `signed_url` is the URL its signature covers."""

    description: str
    path: str
    form: list[tuple[str, str]]
    signed_url: str
    signed_form: list[tuple[str, str]] | None = None
    signature: str | None = None  # None: computed over signed_url and signed_form
    headers: dict[str, str] = field(default_factory=dict)
    body: tuple[str, str] | None = None  # (content type, raw body) instead of the form

    def send(self, client):
        signature = self.signature
        if signature is None:
            signature = sign(self.signed_url, MultiDict(self.form if self.signed_form is None else self.signed_form))
        headers = {"X-Twilio-Signature": signature, **self.headers}
        if signature == "":
            headers.pop("X-Twilio-Signature")
        if self.body is not None:
            content_type, raw = self.body
            return client.post(self.path, data=raw, content_type=content_type, headers=headers)
        return client.post(self.path, data=MultiDict(self.form), headers=headers)


def genuine_webhooks(base_url: str = BASE_URL) -> list[Webhook]:
    """Inbound calls as Twilio sends them: plain PSTN, over SIP with custom headers, awkward values."""
    pstn = call_params(call_sid="CA" + "a1" * 16, CallerName="Jane Roe", FromCountry="US", ForwardedFrom="+14155550111")
    sip = call_params(
        call_sid="CA" + "b2" * 16,
        to="+14155550197",
        SipDomain="acme.sip.twilio.com",
        SipCallId="4f1c@10.0.0.1",
        **{"SipHeader_X-Shared-Id": "crm-4711", "SipHeader_X-Reason": "billing & refunds"},
    )
    awkward = call_params(
        call_sid="CA" + "c3" * 16, to="+14155550196", CallerName="Zoë Ünïcode =+&%", From="sip:alice@example.com"
    )
    return [
        Webhook(f"genuine {name}", "/voice/call", list(params.items()), base_url + "/voice/call")
        for name, params in (("pstn", pstn), ("sip", sip), ("awkward", awkward))
    ]


def _value_changes(value: str) -> list[tuple[str, str]]:
    changes = [
        ("appended", value + "0"),
        ("emptied", ""),
        ("leading space", " " + value),
        ("trailing space", value + " "),
        ("trailing newline", value + "\n"),
        ("replaced", "+14155550197" if value != "+14155550197" else "+14155550199"),
    ]
    if len(value) > 1:
        changes.append(("truncated", value[:-1]))
    if value.upper() != value:
        changes.append(("upper-cased", value.upper()))
    if value.lower() != value:
        changes.append(("lower-cased", value.lower()))
    return [(how, new) for how, new in changes if new != value]


def tampered_forms(genuine: Webhook) -> list[Webhook]:
    """The genuine signature over a form that differs in one field, key or value."""
    form = genuine.form
    signed = dict(signed_url=genuine.signed_url, signed_form=form)
    out = []
    for index, (name, value) in enumerate(form):
        others = form[:index] + form[index + 1:]
        for how, new in _value_changes(value):
            changed = form[:index] + [(name, new)] + form[index + 1:]
            out.append(Webhook(f"{genuine.description}: {name} {how}", "/voice/call", changed, **signed))
        out.append(Webhook(f"{genuine.description}: {name} removed", "/voice/call", others, **signed))
        for renamed in {name.lower(), name.upper(), name + " "} - {name}:
            out.append(
                Webhook(f"{genuine.description}: {name} renamed {renamed!r}", "/voice/call",
                        form[:index] + [(renamed, value)] + form[index + 1:], **signed)
            )
        forged = value + "9"
        out.append(Webhook(f"{genuine.description}: {name} repeated after", "/voice/call", form + [(name, forged)], **signed))
        out.append(Webhook(f"{genuine.description}: {name} repeated before", "/voice/call", [(name, forged)] + form, **signed))
    for extra in (
        ("Digits", "1"),
        ("SipHeader_X-Shared-Id", "forged-id"),
        ("SipHeader_X-Conversation-Id", "forged"),
        ("ParentCallSid", "CA" + "f" * 32),
        ("conversation_id", "forged"),
        ("bodySHA256", hashlib.sha256(b"").hexdigest()),
        ("X-Twilio-Signature", "anything"),
    ):
        out.append(Webhook(f"{genuine.description}: extra field {extra[0]}", "/voice/call", form + [extra], **signed))
    return out


def other_signed_urls(genuine: Webhook, signed_paths: list[str]) -> list[Webhook]:
    """A genuine-looking signature over another URL: scheme, host, port, path or query changed."""
    host_variants = [
        "https://localhost/voice/call",
        "https://localhost:443/voice/call",
        "http://localhost:8080/voice/call",
        "http://localhost:5000/voice/call",
        "http://127.0.0.1/voice/call",
        "http://evil.example.com/voice/call",
        "http://localhost.evil.example.com/voice/call",
        "http://LOCALHOST/voice/call",
        "http://localhost/voice/call/",
        "http://localhost/voice//call",
        "http://localhost/Voice/Call",
        "http://localhost/voice/call?",
        "http://localhost/voice/call?x=1",
        "http://localhost/voice/call#fragment",
        "http://localhost",
        "http://localhost/",
        "http://localhost/voice/dial-status",
        "http://localhost/voice/dial-status?conversation_id=0b5f8a4e-0000-0000-0000-000000000000",
        "http://localhost/voice/status",
        "http://localhost/voice/whisper?conversation_id=x",
        "http://localhost/sms/inbound",
        "http://localhost/sms/status",
        "http://localhost/v1/ws-acme/PROJECT-frontdesk/conversations",
    ] + [BASE_URL + path for path in signed_paths]
    out = [
        Webhook(f"{genuine.description}: signed for {url}", "/voice/call", genuine.form, url)
        for url in dict.fromkeys(host_variants)  # the app's own paths may repeat the fixed ones
        if url != genuine.signed_url
    ]
    # The genuine signature, sent with a query string it did not cover (or without one it did).
    for query in ("x=1", "conversation_id=abc", "CallSid=CA" + "f" * 32, "bodySHA256=" + "0" * 64, "To=%2B14155550197"):
        out.append(Webhook(f"{genuine.description}: query {query} added", f"/voice/call?{query}",
                           genuine.form, genuine.signed_url))
    out.append(Webhook(f"{genuine.description}: query dropped", "/voice/call", genuine.form, genuine.signed_url + "?x=1"))
    out.append(Webhook(f"{genuine.description}: query reordered", "/voice/call?b=2&a=1", genuine.form,
                       genuine.signed_url + "?a=1&b=2"))
    # Replays of the /voice/call signature to every other Twilio-signed path of this app.
    for path in signed_paths:
        for query in ("", "?conversation_id=0b5f8a4e-0000-0000-0000-000000000000"):
            out.append(Webhook(f"{genuine.description}: replayed to {path}{query}", path + query,
                               genuine.form, genuine.signed_url))
    # The client names another host: the URL we check is no longer the one signed. (Another port
    # alone is not a forgery: twilio's validator also tries our URL with its port removed.)
    for host in ("evil.example.com", "127.0.0.1", "localhost.evil", "evil.example.com:80"):
        out.append(Webhook(f"{genuine.description}: Host {host}", "/voice/call", genuine.form,
                           genuine.signed_url, headers={"Host": host}))
    # Forwarded headers from an untrusted client, with a signature made for the URL they claim.
    for proto, host in (("https", "localhost"), ("https", "gateway.example.com"), ("http", "evil.example.com")):
        out.append(Webhook(f"{genuine.description}: untrusted X-Forwarded {proto}://{host}", "/voice/call",
                           genuine.form, f"{proto}://{host}/voice/call",
                           headers={"X-Forwarded-Proto": proto, "X-Forwarded-Host": host}))
    return out


def _hmac(token: str, message: str, digest) -> bytes:
    return hmac.new(token.encode(), message.encode(), digest).digest()


def bad_signatures(genuine: Webhook, another: Webhook) -> list[Webhook]:
    """The genuine request with a signature that is missing, wrong, or made another way."""
    params = MultiDict(genuine.form)
    right = sign(genuine.signed_url, params)
    payload = genuine.signed_url + "".join(name + value for name, value in sorted(genuine.form))
    signatures = {
        "absent": "",
        "blank": " ",
        "made with another token": sign(genuine.signed_url, params, "not-the-token"),
        "made with the token upper-cased": sign(genuine.signed_url, params, AUTH_TOKEN.upper()),
        "made with the token truncated": sign(genuine.signed_url, params, AUTH_TOKEN[:-1]),
        "made with the token and a space": sign(genuine.signed_url, params, AUTH_TOKEN + " "),
        "made with the account SID": sign(genuine.signed_url, params, ACCOUNT_SID),
        "of another request": sign(another.signed_url, MultiDict(another.form)),
        "of the URL alone": sign(genuine.signed_url, {}),
        "of the form alone": sign("", params),
        "upper-cased": right.upper(),
        "lower-cased": right.lower(),
        "case-swapped": right.swapcase(),
        "with a space inside": right[:10] + " " + right[10:],
        "with a tab inside": right[:10] + "\t" + right[10:],
        "without padding": right.rstrip("="),
        "with extra padding": right + "=",
        "truncated": right[:-2],
        "doubled": right + right,
        "comma-joined with junk": "junk, " + right,
        "base64 of base64": base64.b64encode(right.encode()).decode(),
        "url-safe base64": base64.urlsafe_b64encode(_hmac(AUTH_TOKEN, payload, hashlib.sha1)).decode().replace("=", ""),
        "hex digest": _hmac(AUTH_TOKEN, payload, hashlib.sha1).hex(),
        "HMAC-SHA256 with the token": base64.b64encode(_hmac(AUTH_TOKEN, payload, hashlib.sha256)).decode(),
    }
    out = [
        Webhook(f"{genuine.description}: signature {how}", "/voice/call", genuine.form, genuine.signed_url,
                signature=signature)
        for how, signature in signatures.items()
        if signature != right
    ]
    moved = {"X-Twilio-Signature": "", "Twilio-Signature": right}
    out.append(Webhook(f"{genuine.description}: signature under another header", "/voice/call", genuine.form,
                       genuine.signed_url, signature="", headers=moved))
    # The same fields, but not as the form Twilio posts.
    as_form = urlencode(genuine.form)
    out.append(Webhook(f"{genuine.description}: fields as JSON", "/voice/call", genuine.form, genuine.signed_url,
                       signature=right, body=("application/json", json.dumps(dict(genuine.form)))))
    out.append(Webhook(f"{genuine.description}: form as text/plain", "/voice/call", genuine.form, genuine.signed_url,
                       signature=right, body=("text/plain", as_form)))
    out.append(Webhook(f"{genuine.description}: fields in the query string", f"/voice/call?{as_form}", [],
                       genuine.signed_url, signed_form=genuine.form))
    return out


def twilio_signed_paths(app) -> list[str]:
    """Every other Twilio webhook this app serves (they all check signatures, SPEC §4)."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "POST" in rule.methods and rule.rule.startswith(("/voice/", "/sms/")) and rule.rule != "/voice/call"
        and not rule.arguments
    )


def forgery_corpus(app) -> list[Webhook]:
    genuine = genuine_webhooks()
    paths = twilio_signed_paths(app)
    corpus: list[Webhook] = []
    for request, another in zip(genuine, genuine[1:] + genuine[:1]):
        corpus += tampered_forms(request) + other_signed_urls(request, paths) + bad_signatures(request, another)
    return corpus


def stored_rows(session) -> tuple[int, int]:
    session.expire_all()
    return (
        session.exec(select(func.count()).select_from(Conversation)).one(),
        session.exec(select(func.count()).select_from(HandoffEvent)).one(),
    )


#: Where a re-cut would take a call or a text: another project's number, and a spoofed caller.
OTHER_PROJECTS_NUMBER = "+14155550299"
SPOOFED_CALLER = "+15005550006"
#: Names that swallow what Twilio appends after the attacker's text; each sorts after `To`.
ABSORBERS = ("ToZip", "ToZz", "Zz", "WaId")


def recut_through(genuine: dict, controlled: str, changes: dict, absorber: str):
    """A genuine form whose `controlled` value the sender wrote, and the re-cut it was written for.

    The sender puts into the value they control the text of the fields they want (`changes`
    applied to every field Twilio sends after it in signing order) followed by a field name
    (`absorber`) that swallows the text Twilio appends. Both forms join into the same signed
    text. Returns (the form Twilio signs, the re-cut form).
    """
    after = sorted((name, value) for name, value in genuine.items() if name > controlled)
    wanted = sorted({**dict(after), **changes}.items())
    signed = {**genuine, controlled: genuine[controlled] + "".join(n + v for n, v in wanted) + absorber}
    if controlled == "From" and "Caller" in genuine:  # Twilio writes the caller's text into both
        signed["Caller"] = signed["From"]
    recut = [(name, value) for name, value in sorted(signed.items()) if name < controlled]
    recut += [(controlled, genuine[controlled]), *wanted, (absorber, "".join(n + v for n, v in after))]
    assert [name for name, _ in recut] == sorted(name for name, _ in recut)
    return signed, recut


def recut_webhooks(genuine_forms: list[tuple[str, str, dict, list[str]]]) -> list[Webhook]:
    """Re-cuts through every caller-controlled field of each form that move `To`, `From` or both."""
    goals = {
        "To moved to another project": {"To": OTHER_PROJECTS_NUMBER},
        "From spoofed": {"From": SPOOFED_CALLER},
        "To and From moved": {"To": OTHER_PROJECTS_NUMBER, "From": SPOOFED_CALLER},
    }
    out = []
    for description, path, form, controlled_fields in genuine_forms:
        for controlled in controlled_fields:
            for goal, changes in goals.items():
                changes = {name: value for name, value in changes.items() if name > controlled}
                if not changes:
                    continue
                for absorber in ABSORBERS:
                    if absorber <= max(form):
                        continue
                    signed, recut = recut_through(form, controlled, changes, absorber)
                    assert sign(BASE_URL + path, MultiDict(recut)) == sign(BASE_URL + path, signed)
                    out.append(Webhook(f"{description}: re-cut through {controlled}, {goal}, rest in {absorber}",
                                       path, recut, BASE_URL + path, signed_form=list(signed.items())))
    return out


def sms_form(sid: str, body: str) -> dict:
    """An inbound text as Twilio posts it, geography and twin fields included."""
    return {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "SAN FRANCISCO",
        "FromZip": "94105", "SmsSid": sid, "FromState": "CA", "SmsStatus": "received", "FromCity": "SAN FRANCISCO",
        "Body": body, "FromCountry": "US", "To": "+14155550399", "ToZip": "94105", "NumSegments": "1",
        "MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": "+14155551234", "ApiVersion": "2010-04-01",
    }


def recut_corpus() -> list[Webhook]:
    """Every field a caller or texter writes: a caller name, SIP headers, a SIP From, a text's body."""
    pstn, sip, awkward = (dict(webhook.form) for webhook in genuine_webhooks())
    return recut_webhooks([
        ("pstn", "/voice/call", pstn, ["CallerName"]),
        ("sip", "/voice/call", sip, ["SipHeader_X-Reason", "SipHeader_X-Shared-Id"]),
        ("awkward", "/voice/call", awkward, ["CallerName", "From"]),
        ("sms", "/sms/inbound", sms_form("SM" + "d4" * 16, "Hello there"), ["Body"]),
    ])


def test_re_cuts_through_every_caller_controlled_field_are_refused(client, session):
    corpus = recut_corpus()
    assert len(corpus) >= 40
    let_through = [f"{forgery.description} -> {status}" for forgery in corpus if (status := forgery.send(client).status_code) != 403]
    assert let_through == []
    assert stored_rows(session) == (0, 0)

    # The forms they were cut from are genuine: Twilio signed them, and they are accepted.
    signed = {(forgery.path, tuple(forgery.signed_form)) for forgery in corpus}
    for path, form in signed:
        genuine = Webhook("genuine", path, list(form), BASE_URL + path)
        assert genuine.send(client).status_code == 200, (path, form)


def test_every_forged_or_tampered_webhook_is_refused_and_changes_nothing(app, client, session):
    corpus = forgery_corpus(app)
    assert len(corpus) >= MINIMUM_CORPUS
    assert len({forgery.description for forgery in corpus}) == len(corpus)

    let_through = [
        f"{forgery.description} -> {status}"
        for forgery in corpus
        if (status := forgery.send(client).status_code) != 403
    ]
    assert let_through == []
    assert stored_rows(session) == (0, 0)

    # The corpus is made of real forgeries of requests that are themselves accepted.
    for request in genuine_webhooks():
        assert request.send(client).status_code == 200, request.description
    assert stored_rows(session)[0] == len(genuine_webhooks())


PUBLIC = "https://gateway.example.com"


def test_genuine_webhooks_are_accepted_behind_a_tls_terminating_proxy(make_app, session):
    """The proxy calls us at http://localhost; Twilio signed the public https URL."""
    trusting = make_app(trusted_proxies=1).test_client()
    configured = make_app(public_url=PUBLIC).test_client()
    prefixed = make_app(public_url="https://example.com/handoff").test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gateway.example.com"}
    with_port = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gateway.example.com:8443"}
    setups = [
        ("trusted proxy", trusting, PUBLIC, forwarded),
        ("trusted proxy, Twilio adds :443", trusting, PUBLIC + ":443", forwarded),
        ("trusted proxy on port 8443", trusting, PUBLIC + ":8443", with_port),
        ("GATEWAY_PUBLIC_URL", configured, PUBLIC, {}),
        ("GATEWAY_PUBLIC_URL, Twilio adds :443", configured, PUBLIC + ":443", {}),
        ("GATEWAY_PUBLIC_URL with a path prefix", prefixed, "https://example.com/handoff", {}),
    ]
    refused = []
    for setup, client, base_url, headers in setups:
        for request in genuine_webhooks(base_url):
            request.headers = headers
            for query in ("", "?attempt=1"):
                request.path, request.signed_url = "/voice/call" + query, f"{base_url}/voice/call{query}"
                if (status := request.send(client).status_code) != 200:
                    refused.append(f"{setup}: {request.description}{query} -> {status}")
    assert refused == []
    assert stored_rows(session)[0] == len(genuine_webhooks())

    # Behind the proxy, what the proxy sees (the internal http URL) is not what counts.
    for setup, client, headers in (("trusted proxy", trusting, forwarded), ("GATEWAY_PUBLIC_URL", configured, {})):
        for signed_for in (BASE_URL, "http://gateway.example.com", "https://gateway.example.com:8443"):
            for request in genuine_webhooks(signed_for):
                request.headers = headers
                assert request.send(client).status_code == 403, f"{setup}: signed for {signed_for}"
