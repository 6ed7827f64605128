"""The Redis progress layout: the hash read back through the one model, the keys and the ACL rules."""

from videogen_runner.progress import ProgressKeys, ProgressState


def test_the_redis_hash_is_read_through_the_runners_model():
    state = ProgressState.from_hash({"task_id": "t", "updated_at": "1", "stage": "loading", "percent": "0",
                                     "eta_seconds": ""})
    assert (state.stage, state.percent, state.eta_seconds) == ("loading", 0.0, None)
    assert ProgressState.from_hash({}) is None and ProgressState.from_hash({"stage": "nonsense"}) is None


def test_a_namespaces_keys_and_channel_lie_under_its_own_acl_patterns():
    keys = ProgressKeys("videogen")
    assert keys.hash("team-a.fox") == "videogen:task:team-a.fox"
    assert keys.channel("team-a") == "videogen:updates:team-a" and keys.channel() == "videogen:updates"
    assert keys.namespace_of(keys.channel("team-a")) == "team-a" and keys.namespace_of("videogen:updates") is None
    assert keys.namespace_of("other:updates:team-a") is None
    rules = keys.tenant_acl("team-a").split()
    assert "~videogen:task:team-a.*" in rules and "&videogen:updates:team-a" in rules and "-@all" in rules
    # A namespace whose name begins another's ("team" and "team-a") gets none of the other's keys.
    assert "~videogen:task:team.*" in keys.tenant_acl("team").split()
