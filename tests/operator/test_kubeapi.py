"""The operator's plain-JSON API calls on a real kube-apiserver: dicts back, and the answers that
reconcile.routine() tells apart (409 from a stale copy or an existing Job, 404 for a resource gone)
raised as the client's ApiException with the API server's own sentence."""

import kubernetes
import pytest

from videogen_operator.kubeapi import KubeAPI
from videogen_operator.models import GROUP, PLURAL, VERSION
from videogen_operator.reconcile import api_message, routine

pytestmark = pytest.mark.cluster

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "plain"},
       "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                                                       "containers": [{"name": "c", "image": "none"}]}}}}


@pytest.fixture
def api(kube_apiserver):
    return KubeAPI(kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig)))


def test_jobs_status_and_events_as_plain_json(api, crd_applied, kube_namespace):
    created = api.create_namespaced_job(kube_namespace, JOB)
    assert created["metadata"]["uid"] and created["spec"]["suspend"] is True
    with pytest.raises(kubernetes.client.ApiException) as again:
        api.create_namespaced_job(kube_namespace, JOB)
    assert again.value.status == 409 and api_message(again.value) == 'jobs.batch "plain" already exists'
    assert routine(again.value).retry == 1.0
    assert api.patch_namespaced_job("plain", kube_namespace, {"spec": {"suspend": False}})["spec"]["suspend"] is False
    api.delete_namespaced_job("plain", kube_namespace)

    body = api.client.sanitize_for_serialization(
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VideoGeneration", "metadata": {"name": "plain"},
         "spec": {"model": {"preset": "ti2v-5b", "pvc": {"claimName": "models"}, "path": "ti2v"}, "prompt": "a fox"}})
    resource = api.request("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{kube_namespace}/{PLURAL}", body)
    status = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VideoGeneration", "status": {"phase": "Pending"},
              "metadata": {"name": "plain", "resourceVersion": resource["metadata"]["resourceVersion"]}}
    written = api.replace_namespaced_custom_object_status(GROUP, VERSION, kube_namespace, PLURAL, "plain", status)
    assert written["status"]["phase"] == "Pending"
    with pytest.raises(kubernetes.client.ApiException) as stale:  # the same, stale, resourceVersion
        api.replace_namespaced_custom_object_status(GROUP, VERSION, kube_namespace, PLURAL, "plain", status)
    assert stale.value.status == 409
    with pytest.raises(kubernetes.client.ApiException) as gone:
        missing = {**status, "metadata": {"name": "missing", "resourceVersion": "1"}}
        api.replace_namespaced_custom_object_status(GROUP, VERSION, kube_namespace, PLURAL, "missing", missing)
    assert gone.value.status == 404 and routine(gone.value).retry is None

    event = {"metadata": {"generateName": "plain."}, "involvedObject": {"kind": "Job", "name": "plain",
                                                                        "namespace": kube_namespace, "uid": "u-1"},
             "reason": "FailedCreate", "message": "refused", "type": "Warning"}
    api.create_namespaced_event(kube_namespace, event)
    listed = api.list_namespaced_event(kube_namespace, field_selector="involvedObject.kind=Job,reason=FailedCreate")
    assert [(e["involvedObject"]["uid"], e["message"]) for e in listed["items"]] == [("u-1", "refused")]
    assert api.list_namespaced_event(kube_namespace, field_selector="reason=Other")["items"] == []
