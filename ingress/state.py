"""What the endpoints share within one app: settings, publisher, metrics, the duplicate cache, drain state."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ingress.dedupe import RecentEvents
from ingress.metrics import IngressMetrics
from ingress.publisher import Publisher
from ingress.settings import Settings

log = logging.getLogger("ingress")


@dataclass
class IngressState:
    settings: Settings
    metrics: IngressMetrics
    recent: RecentEvents
    publisher: Publisher | None = None
    draining: bool = field(default=False)

    def set_draining(self, draining: bool, why: str) -> None:
        if draining != self.draining:
            log.warning("draining" if draining else "serving again", extra={"detail": why})
        self.draining = draining
        self.metrics.set_draining(draining)

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("draining")
        # FAILOVER_ENABLED=false keeps a region in rotation while Pub/Sub fails (its webhooks get 503 and
        # PayNow retries) instead of letting the load balancer move the traffic to the other region.
        if self.publisher is None or (not self.publisher.healthy and self.settings.failover_enabled):
            reasons.append("publisher unhealthy")
        if self.settings.rollback_not_ready:
            reasons.append(f"MULTI_REGION_ENABLED=false and {self.settings.region} is not the primary region")
        return reasons
