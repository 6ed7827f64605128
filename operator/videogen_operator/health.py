"""Noticing a stalled watch: a periodic list must agree with what the watch has delivered.

Every resync lists the VideoGenerations and refreshes the unfinished ones (a safety net for lost
nudges). If a resource's resourceVersion in the list still differs from the last one the watch
delivered, one full resync later, the watch has stopped delivering: the liveness probe fails and
the kubelet restarts the operator.
"""

import logging
import threading

from videogen_operator.models import GROUP, PLURAL, VERSION
from videogen_operator.reconcile import Reconciler
from videogen_operator.status import TERMINAL

log = logging.getLogger(__name__)


class WatchHealth:
    def __init__(self):
        self.delivered: dict[tuple[str, str], str] = {}
        self.suspect: dict[tuple[str, str], str] = {}
        self.stalled = False
        self.lock = threading.Lock()

    def saw(self, namespace: str, name: str, resource_version: str) -> None:
        with self.lock:
            self.delivered[(namespace, name)] = resource_version

    def forget(self, namespace: str, name: str) -> None:
        with self.lock:
            self.delivered.pop((namespace, name), None)

    def compare(self, listed: dict[tuple[str, str], str]) -> None:
        """Flags a stall when the same unseen version is listed twice in a row."""
        with self.lock:
            behind = {key: rv for key, rv in listed.items() if self.delivered.get(key) != rv}
            self.stalled = any(self.suspect.get(key) == rv for key, rv in behind.items())
            self.suspect = behind


class Resync(threading.Thread):
    def __init__(self, reconciler: Reconciler, health: WatchHealth, namespaces: list[str], interval: float = 60.0):
        super().__init__(name="resync", daemon=True)
        self.reconciler, self.health, self.namespaces, self.interval = reconciler, health, namespaces, interval
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("resync failed")

    def once(self) -> None:
        custom = self.reconciler.custom
        if self.namespaces:
            items = [i for ns in self.namespaces
                     for i in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]]
        else:
            items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        listed = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"] for i in items}
        self.health.compare(listed)
        for item in items:
            if (item.get("status") or {}).get("phase") not in TERMINAL:
                self.reconciler.refresh(item["metadata"]["namespace"], item["metadata"]["name"])
