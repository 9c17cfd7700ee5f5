"""The SMS policy without a web app: number kinds, keywords, error words, the campaign cache."""
from __future__ import annotations

import pytest
import responses
from twilio.rest import Client

from gateway.config.file import NumberConfig
from gateway.errors import GatewayError
from gateway.texting.messaging import (
    ERROR_EXPLANATIONS,
    CampaignCache,
    Keyword,
    NumberKind,
    check_a2p_10dlc,
    classify,
    explain,
    keyword_of,
)
from tests.messaging_support import USA2P_URL, campaigns
from tests.support import ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID


@pytest.mark.parametrize(
    "number,kind",
    [
        ("+14155550199", NumberKind.US_LONG_CODE),
        ("+12125550100", NumberKind.US_LONG_CODE),
        *[(f"+1{prefix}5550100", NumberKind.TOLL_FREE) for prefix in ("800", "833", "844", "855", "866", "877", "888")],
        ("+18995550100", NumberKind.US_LONG_CODE),
        ("12345", NumberKind.SHORT_CODE),
        ("898211", NumberKind.SHORT_CODE),
        ("+447700900123", NumberKind.OTHER),
        ("+33612345678", NumberKind.OTHER),
    ],
)
def test_classify(number, kind):
    assert classify(number) is kind


@pytest.mark.parametrize(
    "body", ["STOP", "STOPALL", "STOP ALL", "stop  all", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", " stop! "]
)
def test_opt_out_words(body):
    assert keyword_of(body) is Keyword.OPT_OUT


@pytest.mark.parametrize("body,keyword", [("START", Keyword.OPT_IN), ("Unstop", Keyword.OPT_IN), ("yes", Keyword.OPT_IN),
                                          ("HELP", Keyword.HELP), ("info?", Keyword.HELP)])
def test_opt_in_and_help_words(body, keyword):
    assert keyword_of(body) is keyword


@pytest.mark.parametrize("body", ["", "please stop", "stopping by later", "yes please", "help me find my order"])
def test_other_texts_are_not_keywords(body):
    assert keyword_of(body) is None


def test_every_common_error_code_is_explained():
    for code in (30003, 30005, 30006, 30007, 30008, 30034, 21211, 21408, 21610, 21614):
        assert code in ERROR_EXPLANATIONS
        assert explain(code) == ERROR_EXPLANATIONS[code]
    assert explain(None) is None
    assert "30999" in explain(30999)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_campaign_cache_asks_again_after_its_time(twilio_api):
    client = Client(ACCOUNT_SID, AUTH_TOKEN, environment={})
    clock = FakeClock()
    cache = CampaignCache(ttl_seconds=300, clock=clock)
    campaigns(twilio_api, "IN_PROGRESS")
    assert cache.statuses(client, MESSAGING_SERVICE_SID) == ("IN_PROGRESS",)
    clock.now += 299
    assert cache.statuses(client, MESSAGING_SERVICE_SID) == ("IN_PROGRESS",)
    assert len(twilio_api.calls) == 1

    twilio_api.replace(responses.GET, USA2P_URL, json={"compliance": [{"campaign_status": "VERIFIED"}], "meta": {"key": "compliance"}})
    clock.now += 2
    assert cache.statuses(client, MESSAGING_SERVICE_SID) == ("VERIFIED",)
    assert len(twilio_api.calls) == 2


def test_registered_config_needs_no_lookup(twilio_api):
    check_a2p_10dlc(NumberConfig(number="+14155550199", destination="x", a2p_10dlc="registered"), None, CampaignCache())
    assert len(twilio_api.calls) == 0


def test_lookup_without_credentials_is_503():
    number = NumberConfig(number="+14155550199", destination="x", messaging_service_sid=MESSAGING_SERVICE_SID)
    with pytest.raises(GatewayError) as refused:
        check_a2p_10dlc(number, None, CampaignCache())
    assert (refused.value.status, refused.value.code) == (503, "twilio_not_configured")


def test_config_answer_wins_over_the_messaging_service(twilio_api):
    """a2p_10dlc is the operator's word; Twilio is asked only when it is absent."""
    number = NumberConfig(
        number="+14155550199", destination="x", messaging_service_sid=MESSAGING_SERVICE_SID, a2p_10dlc="unregistered"
    )
    with pytest.raises(GatewayError) as refused:
        check_a2p_10dlc(number, None, CampaignCache())
    assert refused.value.code == "a2p_10dlc_unregistered"
    assert len(twilio_api.calls) == 0
