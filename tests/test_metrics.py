"""The Prometheus exposition (vpool.metrics): every family with # HELP and # TYPE, counters,
gauges and cumulative histograms, escaped labels, and a read-only HTTP endpoint. The daemons'
own /metrics are scraped in tests/test_observability_e2e.py."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from vpool.metrics import Family, HttpEndpoint, Registry, histogram_family, parse_exposition


def test_every_family_is_written_with_help_and_type() -> None:
    registry = Registry()
    registry.counter("vpool_x_total", "Xs.", ("kind",)).inc(kind="a")
    registry.gauge("vpool_y", "Y.").set(3)
    registry.histogram("vpool_z_seconds", "Z.", buckets=(1, 2)).observe(1.5)
    families = parse_exposition(registry.render())
    assert families == {
        "vpool_x_total": ("counter", "Xs."),
        "vpool_y": ("gauge", "Y."),
        "vpool_z_seconds": ("histogram", "Z."),
    }


def test_a_counter_adds_up_per_label_set() -> None:
    registry = Registry()
    counter = registry.counter("vpool_requests_total", "Requests.", ("decision",))
    counter.inc(decision="signed")
    counter.inc(decision="signed")
    counter.inc(decision="refused")
    lines = registry.render().splitlines()
    assert 'vpool_requests_total{decision="signed"} 2' in lines
    assert 'vpool_requests_total{decision="refused"} 1' in lines


def test_a_counter_name_must_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        Registry().counter("vpool_requests", "Requests.")


def test_a_histogram_is_cumulative_with_sum_count_and_inf() -> None:
    registry = Registry()
    histogram = registry.histogram("vpool_d_seconds", "D.", buckets=(1, 5))
    for value in (0.5, 3, 10):
        histogram.observe(value)
    lines = registry.render().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        'vpool_d_seconds_bucket{le="1"} 1',
        'vpool_d_seconds_bucket{le="5"} 2',
        'vpool_d_seconds_bucket{le="+Inf"} 3',
        "vpool_d_seconds_sum 13.5",
        "vpool_d_seconds_count 3",
    ]


def test_a_histogram_from_stored_observations_matches_one_kept_in_process() -> None:
    family = histogram_family("vpool_r_seconds", "R.", (1, 5), {(("kind", "w"),): [0.5, 3, 10]})
    registry = Registry()
    kept = registry.histogram("vpool_r_seconds", "R.", ("kind",), buckets=(1, 5))
    for value in (0.5, 3, 10):
        kept.observe(value, kind="w")
    assert family.text() == kept.family().text()


def test_label_values_are_escaped() -> None:
    family = Family("vpool_s", "gauge", "S.").add(1, signer='a"b\\c\nd')
    assert 'vpool_s{signer="a\\"b\\\\c\\nd"} 1' in family.text().splitlines()


def test_the_wrong_labels_are_refused() -> None:
    gauge = Registry().gauge("vpool_g", "G.", ("signer",))
    with pytest.raises(ValueError, match="labels"):
        gauge.set(1, other="x")


def test_a_failing_collector_is_left_out_and_the_rest_is_served() -> None:
    registry = Registry()
    registry.gauge("vpool_fine", "Fine.").set(1)

    def broken() -> list[Family]:
        raise RuntimeError("store down")

    registry.add_collector(broken)
    assert "vpool_fine 1" in registry.render().splitlines()


def test_a_sample_without_its_type_is_found_by_the_parser() -> None:
    with pytest.raises(ValueError, match="without # TYPE"):
        parse_exposition("vpool_orphan 1\n")


def test_the_endpoint_serves_metrics_and_pages_and_nothing_else() -> None:
    registry = Registry()
    registry.gauge("vpool_up", "Up.").set(1)
    endpoint = HttpEndpoint(
        "127.0.0.1:0", registry, {"/": lambda: (200, "text/html", b"<p>hi</p>")}
    ).start()
    base = f"http://{endpoint.address}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "vpool_up 1" in answer.read().decode().splitlines()
        with urllib.request.urlopen(f"{base}/", timeout=10) as answer:
            assert answer.read() == b"<p>hi</p>"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/admin", timeout=10)
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(f"{base}/metrics", data=b"x", timeout=10)
        assert posted.value.code == 405
    finally:
        endpoint.stop()
