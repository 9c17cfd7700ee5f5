"""`[[projects.event_webhooks]]` in the config file: a mistake stops start-up with one line naming it."""
from __future__ import annotations

import pytest

from gateway.config.file import ConfigError, load_config
from tests.events_support import SECRET_ENV, subscribe

ENTRY = "projects[0] (ws-acme/PROJECT-frontdesk).event_webhooks[0]"


def error_line(config_path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(config_path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{config_path}: ")
    return message


def test_a_subscription_is_read_with_its_types(config_path):
    subscribe(config_path, "https://crm.example.com/hooks", types=["handoff.*"])
    (webhook,) = load_config(config_path).find_project("acme", "frontdesk").event_webhooks
    assert (webhook.url, webhook.secret_env) == ("https://crm.example.com/hooks", SECRET_ENV)
    assert webhook.wants("handoff.failed") and not webhook.wants("conversation.ended")
    summary = load_config(config_path).summary()
    assert f"    events -> https://crm.example.com/hooks (handoff.*; secret in ${SECRET_ENV})" in summary.splitlines()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hooks", "http://localhost/hooks", "http://[::1]:9000/h"])
def test_plain_http_is_allowed_on_loopback_only(config_path, url):
    subscribe(config_path, url)
    assert load_config(config_path).find_project("acme", "frontdesk").event_webhooks[0].url == url


@pytest.mark.parametrize("url", ["http://crm.example.com/hooks", "ftp://crm.example.com/", "https:///nohost", "crm.example.com"])
def test_anything_else_but_https_is_refused(config_path, url):
    subscribe(config_path, url)
    assert error_line(config_path).startswith(f"{config_path}: {ENTRY} ('{url}'): url: must be an https:// URL")


@pytest.mark.parametrize("url", ["http://evil.example\\@127.0.0.1/hooks", "http://evil.example\\@localhost/hooks"])
def test_a_url_that_only_looks_like_loopback_is_refused(config_path, url):
    """Python's `urlsplit` reads the host after the `@`; requests (urllib3), which delivers, ends
    the host at the backslash and would post callers' data in plain text to evil.example.
    Found by an outside review."""
    subscribe(config_path, url)
    assert "would be sent to 'evil.example'" in error_line(config_path)


def test_a_glob_that_matches_no_type_is_refused_with_the_known_types(config_path):
    subscribe(config_path, "https://crm.example.com/hooks", types=["handoff.started"])
    message = error_line(config_path)
    assert f"{ENTRY} ('https://crm.example.com/hooks'): types" in message
    assert "handoff.initiated" in message


def test_a_secret_in_the_file_is_refused(config_path):
    subscribe(config_path, "https://crm.example.com/hooks")
    config_path.write_text(config_path.read_text().replace(f'secret_env = "{SECRET_ENV}"', f'secret_env = "{SECRET_ENV}"\nsecret = "whsec_abc"'))
    message = error_line(config_path)
    assert f"{ENTRY} ('https://crm.example.com/hooks'): secret: the signing secret never goes in this file" in message
    assert "whsec_abc" not in message


def test_a_secret_env_that_is_not_a_variable_name_is_refused(config_path):
    subscribe(config_path, "https://crm.example.com/hooks", secret_env="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La+aSw")
    assert "secret_env" in error_line(config_path)


def test_the_same_url_twice_in_a_project_is_refused(config_path):
    subscribe(config_path, "https://crm.example.com/hooks")
    subscribe(config_path, "https://crm.example.com/hooks")
    assert "event_webhooks[1] ('https://crm.example.com/hooks'): url: listed twice" in error_line(config_path)


def test_a_url_longer_than_the_worker_can_store_is_refused(config_path):
    """event_subscriptions.url holds 2000 characters: a longer URL passed the check, then on
    PostgreSQL failed every pass of the worker, and no subscription of any project got anything."""
    url = "https://crm.example.com/hooks?token=" + "a" * 2000
    subscribe(config_path, url)
    assert f"{ENTRY} ('{url}'): url: is 2036 characters long; the delivery worker keeps at most 2000" in error_line(config_path)
