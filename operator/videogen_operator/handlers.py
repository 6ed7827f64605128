"""The kopf handlers: indexes that keep what the watches deliver, and events that nudge the one
writer of the resource concerned (reconcile.py). No handler reads the API.

kopf's change handlers (create, resume, update) and its timers and daemons are not used: they keep
handler state in annotations or a finalizer on every resource (two more writes each, and a
deletion that waits for the operator; a timer on each of 1,000 resources also tripled the peak
RSS, see Reconciler.resync); everything here is level-triggered from the indexes, and kopf's
diff base, which only change handlers read, is not built (NoEssence).
"""

import asyncio
import logging

import kopf
import kubernetes
from prometheus_client import start_http_server

from videogen_operator.job import KUEUE_GROUP, KUEUE_JOB_UID_LABEL, KUEUE_VERSION, NAME_LABEL
from videogen_operator.leader import Leader
from videogen_operator.models import GROUP, PLURAL, VERSION
from videogen_operator.reconcile import Reconciler, trim_job, trim_pod, trim_videogeneration, trim_workload
from videogen_operator.settings import Settings

log = logging.getLogger(__name__)


class NoEssence(kopf.DiffBaseStorage):
    """kopf's diff base is for change handlers (on.create/update/resume), which this operator has
    none of; the stock one deep-copies every body of every watch event to build it anyway."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return {}

    def store(self, *, body, patch, essence) -> None:
        pass


@kopf.on.startup()
async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, videogenerations, jobs, pods,
                           workloads, **_):
    config = Settings()
    try:  # the Kubernetes client of the Reconciler: in a pod, the service account; else kubeconfig
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    settings.posting.enabled = False  # the Reconciler posts the events users need
    settings.persistence.diffbase_storage = NoEssence()
    settings.watching.server_timeout = 300  # the API server ends each watch: kopf lists again
    settings.watching.client_timeout = 330
    # A stalled watch: kopf's settings.watching.inactivity_timeout (70 s, against the API server's
    # bookmark every minute) restarts it, a list and a new watch.
    # Only the Jobs and pods of VideoGenerations travel, not every pod of a shared cluster.
    settings.watching.label_selectors["batch", "jobs"] = NAME_LABEL
    settings.watching.label_selectors["", "pods"] = NAME_LABEL
    indexes = {"videogenerations": videogenerations, "jobs": jobs, "pods": pods, "workloads": workloads}
    memo.leader = Leader(config, on_lead=lambda: memo.reconciler.nudge_all())
    memo.reconciler = reconciler = Reconciler(config, indexes, leading=memo.leader.leading)
    memo.tasks = [asyncio.create_task(reconciler.resync())]
    if config.leader_election:
        memo.tasks.append(asyncio.create_task(memo.leader.run()))
    if reconciler.redis is not None:
        reconciler.redis.on_change = reconciler.nudge_all  # the ProgressAvailable condition
        following = reconciler.redis.follow(reconciler.progress_nudged, reconciler.nudge_all)
        memo.tasks.append(asyncio.create_task(following))
    start_http_server(config.metrics_port)
    log.info("videogen operator started (namespaces: %s)", config.namespaces or "all")


@kopf.on.cleanup()
async def operator_cleanup(memo: kopf.Memo, **_):
    for task in memo.get("tasks", []):
        task.cancel()
    if "leader" in memo:
        await memo.leader.release()


# --- the watch-fed cache: only the fields the status needs ---------------------------------------

# async: kopf runs a sync handler in a thread of its executor, for every event of every object.
@kopf.index(GROUP, VERSION, PLURAL)
async def videogenerations(namespace: str, name: str, body, **_):
    return {(namespace, name): trim_videogeneration(body)}


@kopf.index("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
async def jobs(namespace: str, labels, body, **_):
    return {(namespace, labels[NAME_LABEL]): trim_job(body)}


@kopf.index("", "v1", "pods", labels={NAME_LABEL: kopf.PRESENT})
async def pods(namespace: str, labels, body, **_):
    return {(namespace, labels[NAME_LABEL]): trim_pod(body)}


@kopf.index("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
async def job_owners(namespace: str, labels, uid: str, **_):
    return {uid: (namespace, labels[NAME_LABEL])}


# Kueue's Workloads, by the uid of the Job each stands for: what Kueue decided, in its own words.
# Without Kueue's CRDs kopf serves nothing here (one warning at start) and watches for them.
@kopf.index(KUEUE_GROUP, KUEUE_VERSION, "workloads", labels={KUEUE_JOB_UID_LABEL: kopf.PRESENT})
async def workloads(labels, body, **_):
    return {labels[KUEUE_JOB_UID_LABEL]: trim_workload(body)}


# --- what nudges a resource's writer -------------------------------------------------------------

@kopf.on.event(GROUP, VERSION, PLURAL)
async def videogeneration_changed(type, namespace: str, name: str, uid: str, memo: kopf.Memo, **_):
    memo.reconciler.ready = True
    if type == "DELETED":
        memo.reconciler.forget((namespace, name), uid)
    else:
        memo.reconciler.writers.nudge((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={NAME_LABEL: kopf.PRESENT})
async def child_changed(namespace: str, labels, memo: kopf.Memo, **_):
    memo.reconciler.ready = True
    memo.reconciler.writers.nudge((namespace, labels[NAME_LABEL]))


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, "workloads", labels={KUEUE_JOB_UID_LABEL: kopf.PRESENT})
async def workload_changed(labels, memo: kopf.Memo, job_owners: kopf.Index, **_):
    for key in job_owners.get(labels[KUEUE_JOB_UID_LABEL], []):
        memo.reconciler.writers.nudge(key)
