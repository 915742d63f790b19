"""Strategy helpers: who writes in a cluster, and several strategies in one process."""

import types

import pytest
import tensorflow as tf

from simclr_tf import distributed, keras_compat

from conftest import cpu_devices


def _strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ],
)
def test_exactly_one_task_is_chief(cluster, task_type, task_id, chief):
    assert distributed.is_chief(_strategy(cluster, task_type, task_id)) is chief


def test_single_process_is_chief():
    assert distributed.is_chief(tf.distribute.get_strategy())


def test_strategies_of_different_sizes_in_one_process():
    for n in (2, 4, 2):
        strategy = keras_compat.mirrored_strategy(cpu_devices(n))
        result = strategy.run(
            lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0))
        )
        assert float(strategy.experimental_local_results(result)[0]) == n


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distributed.make_strategy("multi_worker")
