"""Testing kit: a real etcd and an in-process cluster for tests of your workers.

With pytest, install ``processhub[testing]`` and use the fixtures of
:mod:`hub.testing.plugin` (loaded automatically): ``processhub_etcd``,
``processhub_prefix``, ``processhub_cluster``, ``processhub_fresh_etcd`` and
``processhub_no_leaked_tasks``. Without pytest, the same pieces work directly::

    with etcd_for_tests() as etcd:
        async with HubCluster(etcd.endpoints, prefix="/my-test") as cluster:
            await cluster.start(3)

This package imports neither pytest nor Docker libraries; only the plugin module needs
pytest.
"""

from hub.testing._cluster import ClusterFactory, HubCluster
from hub.testing._etcd import EtcdServer, EtcdUnavailable, etcd_for_tests
from hub.testing._wait import poll, wait_for
from hub.testing.fake_kv import FakeKV, ManualClock

__all__ = [
    "ClusterFactory",
    "EtcdServer",
    "EtcdUnavailable",
    "FakeKV",
    "HubCluster",
    "ManualClock",
    "etcd_for_tests",
    "poll",
    "wait_for",
]
