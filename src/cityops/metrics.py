"""Prometheus metrics of one CityOps process, served at ``GET /metrics``.

Each process (``--workers N``) counts what it did itself; scrape every worker, or run one.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric of the process, in its own registry (tests build as many apps as they like)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingest_readings = Counter(
            "cityops_ingest_readings", "Device readings (measure groups) taken by the IoT gateway, by transport and outcome "
            "(stored, duplicate: a redelivered message already stored, dead_letter: refused and kept with the reason).",
            ["transport", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "cityops_ingest_dead_letters", "Messages the gateway refused, by reason.", ["reason"], registry=self.registry
        )
        self.ingest_latency = Histogram(
            "cityops_ingest_receipt_to_stored_seconds", "Time from the gateway receiving a message to its reading being committed.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ingest_queue = Gauge("cityops_ingest_queue_readings", "Messages received and not yet stored.", registry=self.registry)
        self.ingest_batches = Counter("cityops_ingest_batches", "Transactions the gateway committed.", registry=self.registry)
        self.devices_offline = Counter(
            "cityops_devices_marked_offline", "Devices marked offline because they missed their expected interval.", registry=self.registry
        )
        self.mqtt_connected = Gauge("cityops_mqtt_connected", "1 while the gateway is connected to its MQTT broker.", registry=self.registry)
        self.commands = Counter("cityops_device_commands", "Commands sent to devices, by outcome.", ["outcome"], registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
