"""The kopf handlers: small, each calling the Reconciler (I/O) and the pure builders.

VideoGeneration created or resumed → its one Job exists; `spec.suspend` changed → the Job is
stopped or resumed; any event of its Job or pods → its status is recomputed.
"""

import logging

import kopf
import kubernetes
from prometheus_client import start_http_server

from videogen_operator.health import Resync, WatchHealth
from videogen_operator.job import NAME_LABEL
from videogen_operator.models import GROUP, PLURAL, VERSION
from videogen_operator.progress import ProgressSubscriber
from videogen_operator.reconcile import InvalidSpec, Reconciler
from videogen_operator.settings import Settings
from videogen_operator.status import TERMINAL


@kopf.on.startup()
def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    config = Settings()
    try:  # the Kubernetes client of the Reconciler: in a pod, the service account; else kubeconfig
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    # Handler progress lives in annotations: the status schema is ours alone (and pruned).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.enabled = False  # the Reconciler posts the events users need
    settings.watching.server_timeout = 300  # reconnect watches regularly
    # Only the Jobs and pods of VideoGenerations travel, not every pod of a shared cluster.
    settings.watching.label_selectors["batch", "jobs"] = NAME_LABEL
    settings.watching.label_selectors["", "pods"] = NAME_LABEL
    settings.watching.client_timeout = 330
    memo.reconciler = Reconciler(config)
    memo.health = WatchHealth()
    memo.threads = [Resync(memo.reconciler, memo.health, config.namespaces, config.resync_seconds)]
    if memo.reconciler.redis is not None:
        memo.threads.append(ProgressSubscriber(memo.reconciler))
    for thread in memo.threads:
        thread.start()
    start_http_server(config.metrics_port)
    logging.getLogger(__name__).info("videogen operator started (namespaces: %s)", config.namespaces or "all")


@kopf.on.cleanup()
def operator_cleanup(memo: kopf.Memo, **_):
    for thread in memo.get("threads", []):
        thread.stop()


@kopf.on.probe(id="watch")
def operator_watch_alive(memo: kopf.Memo, **_):
    if memo.health.stalled:
        raise kopf.PermanentError("a watch stopped delivering events (list and watch disagree)")
    return "ok"


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL, when=lambda status, **_: status.get("phase") not in TERMINAL)
def videogeneration_run(body, namespace: str, name: str, memo: kopf.Memo, **_):
    try:
        memo.reconciler.ensure_job(body)
    except InvalidSpec as e:
        memo.reconciler.fail_invalid(body, str(e))
        raise kopf.PermanentError(f"InvalidSpec: {e}") from None
    memo.reconciler.refresh(namespace, name)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.suspend",
                when=lambda status, **_: status.get("phase") not in TERMINAL)
def videogeneration_suspend(body, new, namespace: str, name: str, memo: kopf.Memo, **_):
    memo.reconciler.set_suspended(body, bool(new))
    memo.reconciler.refresh(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def videogeneration_seen(type, namespace: str, name: str, meta, memo: kopf.Memo, **_):
    if type == "DELETED":
        memo.health.forget(namespace, name)
    else:
        memo.health.saw(namespace, name, meta["resourceVersion"])


@kopf.on.event("batch", "v1", "jobs", labels={NAME_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={NAME_LABEL: kopf.PRESENT})
def child_changed(namespace: str, labels, memo: kopf.Memo, **_):
    memo.reconciler.refresh(namespace, labels[NAME_LABEL])
