"""The operator's API calls: plain JSON, dicts in and dicts out, through the official client's
configuration (kubeconfig or in-cluster, token refresh) and connection pool, without its typed
API classes and model objects.

For a handful of calls the typed classes cost out of proportion: importing CoreV1Api alone adds
about 70 MiB of RSS (88 → 158 MiB measured), and every answer becomes model objects that are then
turned back into dicts. The methods keep the typed client's names (tests/helm/test_rbac.py reads
the RBAC the code needs from them) and raise its ApiException, so callers tell routine answers
apart as before. Synchronous, like the client: the Reconciler runs them in its lanes of threads.
"""

import json
from urllib.parse import quote

import kubernetes


def _segment(name: str) -> str:
    return quote(name, safe="")


class KubeAPI:
    def __init__(self, api_client: kubernetes.client.ApiClient):
        self.client = api_client

    def request(self, method: str, path: str, body=None, query: dict | None = None,
                content_type: str = "application/json") -> dict:
        """One call; the answer's JSON, or the client's ApiException for a non-2xx answer."""
        url_method, url, headers, data, post = self.client.param_serialize(
            method=method, resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        response = self.client.call_api(url_method, url, headers, data, post)
        try:
            response.read()
        finally:
            response.response.release_conn()
        if not 200 <= response.status <= 299:
            raise kubernetes.client.ApiException.from_response(
                http_resp=response, body=response.data.decode(errors="replace"), data=None)
        return json.loads(response.data or b"{}")

    # --- Jobs ----------------------------------------------------------------------------------

    def create_namespaced_job(self, namespace: str, body: dict) -> dict:
        return self.request("POST", f"/apis/batch/v1/namespaces/{_segment(namespace)}/jobs", body)

    def patch_namespaced_job(self, name: str, namespace: str, body: dict) -> dict:
        return self.request("PATCH", f"/apis/batch/v1/namespaces/{_segment(namespace)}/jobs/{_segment(name)}", body,
                            content_type="application/merge-patch+json")

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str = "Background") -> dict:
        return self.request("DELETE", f"/apis/batch/v1/namespaces/{_segment(namespace)}/jobs/{_segment(name)}",
                            query={"propagationPolicy": propagation_policy})

    # --- the resource's status -----------------------------------------------------------------

    def replace_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                                name: str, body: dict) -> dict:
        return self.request("PUT", f"/apis/{group}/{version}/namespaces/{_segment(namespace)}/{plural}/"
                                   f"{_segment(name)}/status", body)

    # --- events --------------------------------------------------------------------------------

    def create_namespaced_event(self, namespace: str, body: dict) -> dict:
        return self.request("POST", f"/api/v1/namespaces/{_segment(namespace)}/events", body)

    def list_namespaced_event(self, namespace: str, field_selector: str | None = None) -> dict:
        return self.request("GET", f"/api/v1/namespaces/{_segment(namespace)}/events",
                            query={"fieldSelector": field_selector})
