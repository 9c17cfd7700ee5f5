"""The config file: the example works, and every mistake stops start-up with one precise line."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import create_app
from gateway.cli import main
from gateway.config.file import ConfigError, load_config
from tests.support import CONFIG_TOML

EXAMPLE = Path(__file__).resolve().parent.parent / "gateway.example.toml"


def test_the_example_config_loads_as_shipped():
    config = load_config(EXAMPLE)
    project = config.find_project("acme", "frontdesk")
    assert project is config.find_project("ws-acme", "PROJECT-frontdesk")
    assert config.route_for("+14155550199").number.destination == "Billing Support"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def error_line(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# (what to change in the test config, the entry and field the line must name)
MISTAKES = {
    "unknown method": (
        ('method = "invite"\nroute = "+14155550101;ext=1234"', 'method = "transfer"\nroute = "+14155550101;ext=1234"'),
        "projects[0] (ws-acme/PROJECT-frontdesk).destinations[1] ('Extension desk'): method:",
    ),
    "route missing for invite": (
        ('route = "+14155550101;ext=1234"\n', ""),
        "projects[0] (ws-acme/PROJECT-frontdesk).destinations[1] ('Extension desk'): route:",
    ),
    "route missing for refer": (
        ('route = "2001"\n', ""),
        "destinations[3] ('Tier 2'): route:",
    ),
    "header name without X-": (
        ('"X-Topic" = "$topic"', '"Topic" = "$topic"'),
        "destinations[3] ('Tier 2'): sip_headers:",
    ),
    "number not in E.164": (
        ('number = "+14155550198"', 'number = "415-555-0198"'),
        "projects[0] (ws-acme/PROJECT-frontdesk).numbers[1] ('415-555-0198'): number:",
    ),
    "destination that does not exist": (
        ('destination = "Extension desk"', 'destination = "Nobody"'),
        "numbers[1] (+14155550198): destination: no destination named 'Nobody'",
    ),
    "fallback that does not exist": (
        ('fallback = ["Billing"]', 'fallback = ["Nobody"]'),
        "numbers[0] (+14155550199): fallback: no destination named 'Nobody'",
    ),
    "default that does not exist": (
        ('default_destination = "Desk"', 'default_destination = "Nobody"'),
        "projects[1] (ws-globex/PROJECT-support): default_destination:",
    ),
    "two defaults": (
        ('default_destination = "Desk"', 'default_destination = "Desk"\ndefault_destination = "Desk"'),
        "projects[1]: default_destination: given twice",
    ),
    "duplicate numbers": (
        ('number = "+14155550299"', 'number = "+14155550199"'),
        "projects[1] (ws-globex/PROJECT-support).numbers[0] (+14155550199): number: already linked",
    ),
    "duplicate destination names": (
        ('name = "Secure desk"', 'name = "Billing"'),
        "destinations[4] ('Billing'): name: another destination",
    ),
    "bare extension without sip_domain": (
        ('sip_domain = "pbx.acme.test"\n', ""),
        "destinations[3] ('Tier 2'): route: the bare extension '2001' needs the project's sip_domain",
    ),
    "route given for bye": (
        ('method = "bye"\n', 'method = "bye"\nroute = "+14155550100"\n'),
        "destinations[5] ('SBC'): route: a bye destination has no route",
    ),
    "misspelled key": (
        ("max_attempts = 3", "max_attempt = 3"),
        "projects[0] (ws-acme/PROJECT-frontdesk): max_attempt: unknown key",
    ),
    "headers too long for Twilio": (
        ('"X-Called" = "$called_number"', '"X-Called" = "' + "v" * 240 + '"'),
        "destinations[3] ('Tier 2'): sip_headers: the SIP URI with its headers takes",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_names_file_entry_and_field(tmp_path, mistake):
    (old, new), expected = MISTAKES[mistake]
    assert old in CONFIG_TOML
    assert expected in error_line(tmp_path, CONFIG_TOML.replace(old, new, 1))


def test_start_up_stops_on_a_bad_file(tmp_path, make_settings):
    path = write(tmp_path, CONFIG_TOML.replace('method = "invite"', 'method = "dial"', 1))
    with pytest.raises(ConfigError, match="method"):
        create_app(make_settings(config_path=path))


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml")


def test_a_file_that_is_not_utf8_is_one_line_naming_where(tmp_path):
    """Saved as Latin-1 (a Windows editor): the line and byte to look at, and what to save it as."""
    path = tmp_path / "gateway.toml"
    path.write_bytes(CONFIG_TOML.replace('description = "Operators"', 'description = "Caf\u00e9 desk"').encode("latin-1"))
    offset = CONFIG_TOML.index("Operators") + len("Caf")
    line = CONFIG_TOML.count("\n", 0, offset) + 1
    expected = f"{path}: line {line} (byte {offset}): not UTF-8 text; save the file as UTF-8"
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == expected
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert (result.exit_code, result.output) == (1, expected + "\n")


def test_a_file_saved_with_a_utf8_byte_order_mark_loads(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CONFIG_TOML.encode("utf-8"))
    assert load_config(path).find_project("acme", "frontdesk") is not None


def test_check_config_prints_the_same_line_and_exits_1(tmp_path):
    path = write(tmp_path, CONFIG_TOML.replace('destination = "SBC"', 'destination = "Nope"'))
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 1
    assert "numbers[4] (+14155550195): destination: no destination named 'Nope'" in result.output


def test_check_config_summarises_a_good_file():
    result = CliRunner().invoke(main, ["check-config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "+14155550199 -> destination 'Billing Support' then Front desk" in result.output


SPEC_SAMPLE = """
[[projects]]
account_id = "ws-acme"
project_id = "PROJECT-frontdesk"
default_destination = "Front desk"
max_attempts = 2
api_key_sha256 = ["%s"]
assistant_webhook = "https://bot.example.com/chat"
sip_domain = "pbx.example.com"
sms_help_text = "Acme support. Reply STOP to opt out."

[[projects.destinations]]
name = "Front desk"
description = "When the caller needs an operator"
method = "invite"
route = "+14155550100"
timeout = 20
sip_headers = { "X-Caller-ID" = "$caller_id", "X-Reason" = "$reason" }
utterance = "Let me transfer you to someone who can help."
reason = "needs_human"
handoff_keywords = ["agent", "human"]

[[projects.destinations]]
name = "Billing Support"
method = "refer"
route = "sip:billing@pbx.example.com"

[[projects.numbers]]
number = "+14155550199"
destination = "Front desk"
fallback = ["Billing Support"]
messaging_service_sid = "MG%s"
a2p_10dlc = "registered"
""" % ("0" * 64, "0" * 32)


def test_the_specs_own_sample_file_loads(tmp_path):
    """SIP headers on a destination that dials a phone number are accepted (and not sent: a
    <Number> carries none), exactly as SPEC §3 writes them."""
    config = load_config(write(tmp_path, SPEC_SAMPLE))
    assert config.route_for("+14155550199").project.destination("Front desk").sip_headers == {
        "X-Caller-ID": "$caller_id",
        "X-Reason": "$reason",
    }
