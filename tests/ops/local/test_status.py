"""Metrics parsing and the quantiles, rates and view the live status computes."""
from __future__ import annotations

import pytest
from rich.console import Console

from ops.local import status

TEXT = """\
# TYPE paynow_webhook_ack_seconds histogram
paynow_webhook_ack_seconds_bucket{le="0.01",outcome="accepted",region="us-central1"} 50.0
paynow_webhook_ack_seconds_bucket{le="0.05",outcome="accepted",region="us-central1"} 90.0
paynow_webhook_ack_seconds_bucket{le="0.1",outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_bucket{le="+Inf",outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_count{outcome="accepted",region="us-central1"} 100.0
paynow_webhook_ack_seconds_sum{outcome="accepted",region="us-central1"} 1.5
# TYPE paynow_webhook_responses_total counter
paynow_webhook_responses_total{reason="accepted",region="us-central1",status="202"} 95.0
paynow_webhook_responses_total{reason="draining",region="us-central1",status="503"} 5.0
"""


def test_parse_and_sum_series() -> None:
    samples = status.parse(TEXT)
    assert status.total(samples, status.RESPONSES) == 100
    assert status.total(samples, status.RESPONSES, status="503") == 5
    assert status.by_label(samples, status.RESPONSES, "status") == {"202": 95, "503": 5}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    cumulative = status.buckets(status.parse(TEXT), status.ACK)
    assert cumulative == {0.01: 50, 0.05: 90, 0.1: 100, float("inf"): 100}
    assert status.quantile(0.5, cumulative) == pytest.approx(0.01)
    assert status.quantile(0.95, cumulative) == pytest.approx(0.075)  # halfway through the 0.05..0.1 bucket
    assert status.quantile(0.95, {}) is None
    assert status.quantile(0.95, {0.1: 0, float("inf"): 0}) is None
    assert status.quantile(0.99, {0.1: 0, float("inf"): 10}) == 0.1  # all above the last finite bound


def test_delta_counts_a_restarted_process_from_zero() -> None:
    old = {("c", ()): 10.0, ("d", ()): 5.0}
    assert status.delta({("c", ()): 15.0, ("d", ()): 2.0}, old) == {("c", ()): 5.0, ("d", ()): 2.0}
    assert status.delta({("c", ()): 1.0}, None) == {("c", ()): 1.0}


def test_the_view_renders_every_section() -> None:
    view = status.View(at=0, regions=[status.Region("us-central1", True, "UP", 12.5, 7.5, {"2xx": 100}, True, 80.0,
                                                    12.0),
                                      status.Region("europe-west1", False, "DOWN", 0.0, None, {}, False)],
                       dlq_by_verdict={"drop_incompatible": 3}, compatibility_rate=0.97, envelopes=100,
                       failover_events=2, lb_transitions=["12:00:00 europe-west1 UP→DOWN"], window_s=10)
    console = Console(width=160, record=True)
    console.print(status.render(view, {"project": "p", "target": "http://lb"}))
    text = console.export_text()
    for expected in ("us-central1", "europe-west1", "7.5 ms", "80.0 ms", "drop_incompatible", "97.00% of 100",
                     "failover events (LB UP→DOWN): 2", "europe-west1 UP→DOWN", "DOWN"):
        assert expected in text, expected

