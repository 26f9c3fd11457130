"""Prometheus metrics for both daemons, in the text exposition format (version 0.0.4), without a
client library: counters, gauges and histograms kept in the process (``REGISTRY``), and
collectors that read a daemon's state at each scrape (the coordinator's store).

Every family is written with ``# HELP`` and ``# TYPE``; label values are escaped. Counters and
histograms kept in the process start at zero when the daemon starts (Prometheus' ``rate`` and
``increase`` handle that).

``HttpEndpoint`` serves ``GET /metrics`` (and whatever other read-only pages a daemon adds, the
coordinator's status page) on its own thread: plain HTTP without authentication, so bind it to
loopback or a monitoring network.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: from a loopback call to a person approving at a device."""

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family as written: its samples are (name suffix, labels, value)."""

    name: str
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: object) -> Family:
        self.samples.append((suffix, tuple((k, str(v)) for k, v in labels.items()), value))
        return self

    def text(self) -> str:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        lines += [
            f"{self.name}{suffix}{_labels_text(labels)} {_number(value)}"
            for suffix, labels, value in self.samples
        ]
        return "\n".join(lines)


def histogram_family(
    name: str,
    help: str,
    buckets: Sequence[float],
    observations: Mapping[Labels, Iterable[float]],
) -> Family:
    """A histogram family from every observation of each label set (for collectors that read
    them from a store)."""
    family = Family(name, "histogram", help)
    for labels, values in observations.items():
        _add_histogram(family, labels, buckets, list(values))
    return family


def _add_histogram(
    family: Family, labels: Labels, buckets: Sequence[float], values: Sequence[float]
) -> None:
    counts = [sum(1 for v in values if v <= bound) for bound in buckets]
    for bound, count in zip(buckets, counts, strict=True):
        family.samples.append(("_bucket", (*labels, ("le", _number(bound))), count))
    family.samples.append(("_bucket", (*labels, ("le", "+Inf")), len(values)))
    family.samples.append(("_sum", labels, float(sum(values))))
    family.samples.append(("_count", labels, len(values)))


class _Metric:
    def __init__(self, name: str, help: str, label_names: Sequence[str]) -> None:
        self.name, self.help, self.label_names = name, help, tuple(label_names)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, object]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.label_names)}")
        return tuple((name, str(labels[name])) for name in self.label_names)


class Counter(_Metric):
    """Its name ends in ``_total``, as its samples are written."""

    def __init__(self, name: str, help: str, label_names: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name}: its name must end in _total")
        super().__init__(name, help, label_names)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def family(self) -> Family:
        with self._lock:
            samples = [("", k, v) for k, v in sorted(self._values.items())]
        return Family(self.name, "counter", self.help, samples)


class Gauge(_Metric):
    def __init__(self, name: str, help: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help, label_names)
        self._values: dict[Labels, float] = {}

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def family(self) -> Family:
        with self._lock:
            samples = [("", k, v) for k, v in sorted(self._values.items())]
        return Family(self.name, "gauge", self.help, samples)


class Histogram(_Metric):
    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help, label_names)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def family(self) -> Family:
        family = Family(self.name, "histogram", self.help)
        with self._lock:
            for key in sorted(self._counts):
                counts = self._counts[key]
                for bound, count in zip(self.buckets, counts, strict=False):
                    family.samples.append(("_bucket", (*key, ("le", _number(bound))), count))
                family.samples.append(("_bucket", (*key, ("le", "+Inf")), counts[-1]))
                family.samples.append(("_sum", key, self._sums[key]))
                family.samples.append(("_count", key, counts[-1]))
        return family


Collector = Callable[[], Iterable[Family]]


class Registry:
    """The process' metrics and collectors; ``render`` writes them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._collectors: list[Collector] = []

    def _get(self, metric: Counter | Gauge | Histogram) -> Counter | Gauge | Histogram:
        with self._lock:
            known = self._metrics.setdefault(metric.name, metric)
        if type(known) is not type(metric) or known.label_names != metric.label_names:
            raise ValueError(f"metric {metric.name} registered twice, differently")
        return known

    def counter(self, name: str, help: str, label_names: Sequence[str] = ()) -> Counter:
        found = self._get(Counter(name, help, label_names))
        assert isinstance(found, Counter)
        return found

    def gauge(self, name: str, help: str, label_names: Sequence[str] = ()) -> Gauge:
        found = self._get(Gauge(name, help, label_names))
        assert isinstance(found, Gauge)
        return found

    def histogram(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        found = self._get(Histogram(name, help, label_names, buckets))
        assert isinstance(found, Histogram)
        return found

    def add_collector(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def families(self) -> list[Family]:
        """Every family: the metrics kept here, then what each collector gives (a collector
        that fails is logged and left out)."""
        with self._lock:
            metrics = list(self._metrics.values())
            collectors = list(self._collectors)
        families = [m.family() for m in metrics]
        for collect in collectors:
            try:
                families.extend(collect())
            except Exception:
                log.exception("a metrics collector failed")
        return families

    def render(self) -> str:
        families = sorted(self.families(), key=lambda f: f.name)
        return "\n".join(f.text() for f in families) + "\n"


REGISTRY = Registry()
"""The daemon's registry (one daemon per process)."""

Page = Callable[[], tuple[int, str, bytes]]
"""A read-only page: (HTTP status, content type, body)."""


class HttpEndpoint:
    """Serves ``pages`` (path → page; ``/metrics`` renders ``registry``) on its own thread until
    ``stop``. GET only; anything else is 405, an unknown path 404."""

    def __init__(
        self,
        listen: str,
        registry: Registry = REGISTRY,
        pages: Mapping[str, Page] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        routes: dict[str, Page] = {
            "/metrics": lambda: (200, CONTENT_TYPE, registry.render().encode()),
            **(pages or {}),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = routes.get(self.path.split("?", 1)[0])
                if page is None:
                    self.send_error(404)
                    return
                try:
                    status, content_type, body = page()
                except Exception:
                    log.exception("page %s failed", self.path)
                    self.send_error(500)
                    return
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.send_error(405)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def host(self) -> str:
        host = self._server.server_address[0]
        assert isinstance(host, str)
        return host

    @property
    def address(self) -> str:
        return f"{self.host}:{self._server.server_port}"

    def start(self) -> HttpEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def parse_exposition(text: str) -> dict[str, tuple[str, str]]:
    """Family name → (type, help) of a text exposition; for tests and checks. A sample without
    its ``# TYPE`` first raises ValueError."""
    families: dict[str, tuple[str, str]] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if name not in helps:
                raise ValueError(f"{name}: # TYPE without # HELP")
            families[name] = (kind, helps[name])
        elif line and not line.startswith("#"):
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            base = next(
                (
                    sample[: -len(s)]
                    for s in ("_bucket", "_sum", "_count")
                    if sample.endswith(s) and sample[: -len(s)] in families
                ),
                sample,
            )
            if base not in families:
                raise ValueError(f"sample {sample} without # TYPE")
    return families
