"""Leader election with Leases (coordination.k8s.io), as client-go's leaderelection does it.

Every replica watches and keeps its indexes warm; only the holder of the Lease acts. The Lease
lives in each watched namespace (or in settings.lease_namespace when the whole cluster is
watched), so that two operators watching the same namespace by mistake never both act there. A
standby takes a Lease over once its record has not changed for settings.lease_seconds, judged by
its own clock (no clock skew between nodes matters); the holder stops acting when it could not
renew for most of that time, before anyone may take over.
"""

import asyncio
import datetime
import logging
import os
import socket
import time

import kubernetes

from videogen_operator.settings import Settings

log = logging.getLogger(__name__)


def own_identity(environ=os.environ) -> str:
    """This replica's name as the Lease's holder (and kopf's identity): the pod's name (POD_ID,
    from the downward API), else the host name. kopf's own fallback asks the passwd database for
    the user, which an image run under an arbitrary uid does not have."""
    return environ.get("POD_ID") or socket.gethostname()


class Leader:
    def __init__(self, settings: Settings, on_lead=lambda: None, api_client=None, me: str | None = None):
        self.settings = settings
        self.enabled = settings.leader_election
        self.namespaced = bool(settings.namespaces)
        self.scopes = list(settings.namespaces) or [settings.lease_namespace]
        self.on_lead = on_lead
        self.me = me or own_identity()
        self.api_client = api_client
        self.held: dict[str, float] = {}  # lease namespace → when last renewed (monotonic)
        self.known: dict[str, kubernetes.client.V1Lease] = {}  # the Lease as last read or written
        self.seen: dict[str, tuple] = {}  # lease namespace → (holder, renewTime), and when it last changed
        self.said: dict[str, bool] = {}  # lease namespace → whether this replica last said it leads there

    @property
    def renew_seconds(self) -> float:
        return self.settings.lease_seconds / 4

    def leading(self, namespace: str) -> bool:
        """Whether this replica may act on the resources of `namespace`."""
        if not self.enabled:
            return True
        scope = namespace if self.namespaced else self.scopes[0]
        renewed = self.held.get(scope)
        return renewed is not None and time.monotonic() - renewed < self.settings.lease_seconds * 0.75

    async def run(self) -> None:
        while True:
            for scope in self.scopes:
                try:
                    held = await asyncio.to_thread(self.try_hold, scope)
                except Exception as e:  # noqa: BLE001 - the next round tries again
                    log.warning("Lease %s/%s: %s", scope, self.settings.lease_name,
                                getattr(e, "reason", None) or type(e).__name__)
                    self.known.pop(scope, None)
                    held = None
                self.settle(scope, held)
            await asyncio.sleep(self.renew_seconds)

    def settle(self, scope: str, held: bool | None) -> None:
        """Records one round (None: the API server did not answer) and says when this replica
        starts or stops acting, compared with what it last said: a replica paused past its Lease
        (a frozen node, a stopped process) stopped acting without a round in between, and says so
        when it resumes."""
        renewed = self.held.get(scope)
        if held:
            self.held[scope] = time.monotonic()
        elif held is False:
            self.held.pop(scope, None)
        leading = self.leading(scope)
        if leading == self.said.get(scope, False):
            return
        self.said[scope] = leading
        if leading:
            log.info("holding the Lease %s/%s", scope, self.settings.lease_name)
            self.on_lead()
        else:
            ago = f"{time.monotonic() - renewed:.0f} s ago" if renewed is not None else "never"
            log.warning("lost the Lease %s/%s (last renewed %s): standing by", scope, self.settings.lease_name, ago)

    def try_hold(self, namespace: str) -> bool:
        """One round: renew our Lease, or take it when it has expired; True while it is ours."""
        api = kubernetes.client.CoordinationV1Api(self.api_client)
        name = self.settings.lease_name
        lease = self.known.get(namespace)
        if lease is None or lease.spec.holder_identity != self.me:
            try:
                lease = api.read_namespaced_lease(name, namespace)
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
                lease = None
        stamp = datetime.datetime.now(datetime.UTC)
        if lease is None:
            fresh = kubernetes.client.V1Lease(
                metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace),
                spec=kubernetes.client.V1LeaseSpec(holder_identity=self.me, acquire_time=stamp, renew_time=stamp,
                                                   lease_duration_seconds=int(self.settings.lease_seconds),
                                                   lease_transitions=0))
            return self.write(namespace, lambda: api.create_namespaced_lease(namespace, fresh))
        spec = lease.spec
        if spec.holder_identity != self.me:
            record = (spec.holder_identity, spec.renew_time)
            if self.seen.get(namespace, (None,))[0] != record:
                self.seen[namespace] = (record, time.monotonic())
            unchanged = time.monotonic() - self.seen[namespace][1]
            if spec.holder_identity and unchanged < (spec.lease_duration_seconds or self.settings.lease_seconds):
                return False
            spec.acquire_time = stamp
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.me
        spec.renew_time = stamp
        spec.lease_duration_seconds = int(self.settings.lease_seconds)
        return self.write(namespace, lambda: api.replace_namespaced_lease(name, namespace, lease))

    def write(self, namespace: str, call) -> bool:
        """The write, refused (409) when another replica wrote first: then it is theirs."""
        try:
            self.known[namespace] = call()
            return True
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
            self.known.pop(namespace, None)
            return False

    async def release(self) -> None:
        """On a clean shutdown, hand the Leases over at once instead of letting them expire."""
        for scope in list(self.held):
            lease = self.known.get(scope)
            if lease is None:
                continue
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            api = kubernetes.client.CoordinationV1Api(self.api_client)
            try:
                await asyncio.to_thread(api.replace_namespaced_lease, self.settings.lease_name, scope, lease)
            except Exception as e:  # noqa: BLE001 - it expires anyway
                log.warning("Lease %s/%s not released: %s", scope, self.settings.lease_name, type(e).__name__)
        self.held.clear()
