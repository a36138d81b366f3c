"""Another Ray on the same machine: a study started without --address runs on a Ray of its own. Plain
``ray.init()`` joins a cluster some `ray start` left behind (found through /tmp/ray), and then shares its
CPUs with strangers and dies with their `ray stop` — seen here while other tests ran. RAY_ADDRESS (as set
by `ray job submit`) still names the cluster to join."""

import pytest

from proda.ablation import runner


@pytest.fixture
def init_calls(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_default_study_starts_its_own_ray_instead_of_joining_one_it_finds(init_calls, record_property):
    record_property("fault", "a foreign Ray cluster running on the same machine")
    runner.connect(None)
    assert init_calls[0]["address"] == "local"
    record_property("results_lost", 0)


def test_ray_address_from_the_environment_is_still_joined(init_calls, monkeypatch):
    class Answer:  # the GCS port answers
        def close(self):
            pass

    monkeypatch.setattr(runner.socket, "create_connection", lambda addr, timeout: Answer())
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    runner.connect(None)
    assert init_calls[0]["address"] == "10.0.0.5:6379" and "dashboard_host" not in init_calls[0]
