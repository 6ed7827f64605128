"""The Reconciler's memory beside kopf's indexes: one record per resource, all of it gone with the
resource. (Its API calls against a real API server: tests/e2e.)"""

import asyncio
import itertools
from pathlib import Path

import yaml

from videogen_operator.reconcile import Reconciler
from videogen_operator.settings import Settings

SETTINGS = Settings(runner_image="runner:1", s3_bucket="videos", redis_url="redis://127.0.0.1:1/0",
                    allowed_host_paths=["/models"])
SPEC = yaml.safe_load((Path(__file__).parents[2] / "examples" / "tiny-cpu.yaml").read_text())["spec"]


class RecordingAPI:
    """The API server's answers to what one pass writes, as plain JSON; and whether it refuses Jobs."""

    def __init__(self):
        self.versions = itertools.count(2)
        self.refuse = False

    def create_namespaced_job(self, namespace, body):
        if self.refuse:
            import kubernetes

            error = kubernetes.client.ApiException(status=422, reason="Invalid")
            error.body = '{"message": "refused", "details": {"causes": [{"field": "spec.backoffLimit"}]}}'
            raise error
        return {**body, "metadata": {**body["metadata"], "uid": f"job-{body['metadata']['name']}"}, "status": {}}

    def replace_namespaced_custom_object_status(self, group, version, namespace, plural, name, body):
        return {**body, "spec": SPEC, "metadata": {**body["metadata"], "uid": "x", "namespace": namespace,
                                                  "resourceVersion": str(next(self.versions))}}

    def create_namespaced_event(self, namespace, body):
        return body


class NoRedis:
    live = (True, "RedisReachable", "")

    async def state(self, task):
        return None


def test_a_thousand_resources_created_and_deleted_leave_nothing_behind():
    indexes = {"videogenerations": {}, "jobs": {}, "pods": {}, "workloads": {}}
    reconciler = Reconciler(SETTINGS, indexes)
    reconciler.api, reconciler.redis, reconciler.ready = RecordingAPI(), NoRedis(), True
    keys = [("team-a", f"v{i}") for i in range(1000)]

    async def run():
        for i, key in enumerate(keys):
            reconciler.api.refuse = i % 10 == 0  # some Jobs refused by the API server
            indexes["videogenerations"][key] = [{
                "apiVersion": "videogen.io/v1alpha1", "kind": "VideoGeneration", "spec": SPEC, "status": {},
                "metadata": {"name": key[1], "namespace": key[0], "uid": f"u{i}", "resourceVersion": "1",
                             "generation": 1, "creationTimestamp": "2026-12-05T08:00:00Z"}}]
            await reconciler.reconcile_once(key)
        remembered = len(reconciler.remembered), len(reconciler.tasks)
        for i, key in enumerate(keys):
            reconciler.forget(key, "another uid")  # a namesake's deletion does not touch this one
            del indexes["videogenerations"][key]
            reconciler.forget(key, f"u{i}")
        return remembered

    remembered = asyncio.run(run())
    assert remembered == (1000, 900)  # each its written status and Job or refusal; the running ones their task
    assert reconciler.remembered == {} and reconciler.tasks == {}
    assert all(lane._work_queue.empty() for lane in reconciler.lanes.values())
