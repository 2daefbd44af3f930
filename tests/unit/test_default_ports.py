"""The services' default ports, and the example client's default targets that follow them.

Regression: all three services once defaulted to gRPC 50051 and metrics 9100, so the
README's commands on one host clashed; and ``recsys client classify`` without
``--target`` dialled 50052, where no sentiment service listened, and ended in
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import pytest

from recsys_tools import client
from recsys_tools.cli import build_parser
from services.events.config import EventsSettings
from services.events.config import load_settings as events_settings
from services.recommender.config import RecommenderSettings
from services.recommender.config import load_settings as recommender_settings
from services.sentiment.config import SentimentSettings
from services.sentiment.config import load_settings as sentiment_settings

#: The documented defaults (README, docs/*.md): the recommender keeps what frontends target.
DOCUMENTED = {"recommender": (50051, 9100), "sentiment": (50052, 9102), "events": (50053, 9101)}


def test_each_service_has_its_own_documented_default_ports() -> None:
    r, s, e = recommender_settings({}), sentiment_settings({}), events_settings({})
    loaded = {
        "recommender": (r.grpc_port, r.metrics_port),
        "sentiment": (s.grpc_port, s.metrics_port),
        "events": (e.grpc_port, e.metrics_port),
    }
    assert loaded == DOCUMENTED
    # the dataclasses' own defaults say the same (code that builds settings directly)
    br, bs, be = RecommenderSettings(), SentimentSettings(), EventsSettings()
    built = {
        "recommender": (br.grpc_port, br.metrics_port),
        "sentiment": (bs.grpc_port, bs.metrics_port),
        "events": (be.grpc_port, be.metrics_port),
    }
    assert built == DOCUMENTED
    ports = [port for pair in DOCUMENTED.values() for port in pair]
    assert len(set(ports)) == len(ports)


def test_client_default_targets_are_the_services_default_ports() -> None:
    targets = (client.DEFAULT_RECOMMENDER, client.DEFAULT_SENTIMENT)
    ports = (recommender_settings({}).grpc_port, sentiment_settings({}).grpc_port)
    assert targets == tuple(f"127.0.0.1:{port}" for port in ports)


@pytest.mark.parametrize("value", ["0", "6", "-1", "two"])
def test_client_attempts_outside_what_grpc_accepts_are_refused_at_parse_time(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["client", "recommend", "--user", "u1", "--attempts", value])
    assert info.value.code == 2
    assert "--attempts" in capsys.readouterr().err


def test_one_attempt_parses_and_builds_no_retry_policy() -> None:
    """gRPC rejects a retry policy with maxAttempts 1; the client must not build one."""
    args = build_parser().parse_args(["client", "classify", "--text", "ok", "--attempts", "1"])
    assert args.attempts == 1
    with pytest.raises(ValueError, match=">= 2"):
        client.retry_service_config(1)
