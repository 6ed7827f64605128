"""Leader election on a real kube-apiserver: one holder, a takeover once the Lease has not been
renewed for lease_seconds, an immediate one after a clean release, and per-namespace Leases."""

import asyncio
import time

import kubernetes
import pytest

from videogen_operator.leader import Leader
from videogen_operator.settings import Settings

pytestmark = pytest.mark.cluster


def leaders(cluster, namespaces, **settings):
    client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
    config = Settings(namespaces=namespaces, lease_seconds=3, **settings)
    return [Leader(config, api_client=client, me=me) for me in ("one", "two")]


def rounds(*leaders_):
    for leader in leaders_:
        for scope in leader.scopes:
            leader.settle(scope, leader.try_hold(scope))


def test_one_holder_and_a_takeover_after_expiry_or_release(kube_apiserver, kube_namespace):
    one, two = leaders(kube_apiserver, [kube_namespace])
    rounds(one, two)
    assert one.leading(kube_namespace) and not two.leading(kube_namespace)
    rounds(one, two)  # renewed: still one's
    assert one.leading(kube_namespace) and not two.leading(kube_namespace)
    time.sleep(3.5)  # one stops renewing (it died): two sees the record unchanged for lease_seconds
    rounds(two)
    assert two.leading(kube_namespace)
    assert not one.leading(kube_namespace)  # one could not renew for most of the Lease: it stops acting
    rounds(one)
    assert not one.held
    asyncio.run(two.release())
    rounds(one)
    assert one.leading(kube_namespace)


def test_two_releases_watching_one_namespace_never_both_act(kube_apiserver, kube_namespace):
    """The Lease lives in the watched namespace, whatever namespace each operator runs in."""
    (one, _), (_, two) = leaders(kube_apiserver, [kube_namespace]), leaders(
        kube_apiserver, [kube_namespace], lease_namespace="elsewhere")
    rounds(one, two)
    assert one.leading(kube_namespace) != two.leading(kube_namespace)


def test_a_leader_paused_past_its_lease_says_it_lost_it_when_it_resumes(kube_apiserver, kube_namespace, caplog):
    one, two = leaders(kube_apiserver, [kube_namespace])
    rounds(one, two)
    time.sleep(3.5)  # one is paused (a frozen node): no round, no renewal; two takes over
    rounds(two)
    assert two.leading(kube_namespace) and not one.leading(kube_namespace)
    with caplog.at_level("INFO", logger="videogen_operator.leader"):
        rounds(one)  # resumed: its renewal is refused
    lost = [r for r in caplog.records if "lost the Lease" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelname == "WARNING" and f"{kube_namespace}/" in lost[0].getMessage()
    assert "last renewed 3 s ago" in lost[0].getMessage() or "last renewed 4 s ago" in lost[0].getMessage()
    caplog.clear()
    with caplog.at_level("INFO", logger="videogen_operator.leader"):
        rounds(one)  # said once, not on every round
    assert not [r for r in caplog.records if "Lease" in r.getMessage()]
