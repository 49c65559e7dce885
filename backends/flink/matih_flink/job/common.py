"""What both jobs share: the execution environment of a spec (loopback only, checkpoints, restore), and the
Kafka sinks. Runs in the Flink environment's Python (``python -m matih_flink.job.<kind> SPEC.json``).

The spec is the JSON file the ml-service side wrote (:mod:`matih_flink.jobs`): where Kafka is, which topics,
the checkpoint folder and the checkpoint to restore from, the REST port of the mini-cluster. Every listener
of the mini-cluster binds 127.0.0.1; the Python workers run as processes the JVM starts (PyFlink's
in-driver "loopback" workers would listen on every interface).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def read_spec(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def configuration(spec: dict[str, Any]) -> Any:
    """The Flink configuration of a job: loopback binds, its REST port, checkpoints, restore, Python bundles."""
    from pyflink.common import Configuration

    conf = Configuration()
    for key in ("jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host", "jobmanager.rpc.address",
                "rest.bind-address", "rest.address"):
        conf.set_string(key, LOOPBACK)
    conf.set_string("rest.port", str(spec["rest_port"]))
    conf.set_string("blob.server.port", "0")
    conf.set_string("taskmanager.numberOfTaskSlots", str(max(int(spec.get("parallelism", 1)), 1)))
    checkpoints = Path(spec["checkpoint_dir"]).resolve().as_uri()
    savepoints = Path(spec["savepoint_dir"]).resolve().as_uri()
    conf.set_string("state.backend.type", "hashmap")
    conf.set_string("execution.checkpointing.interval", f"{int(spec['checkpoint_ms'])} ms")
    conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
    conf.set_string("execution.checkpointing.dir", checkpoints)
    conf.set_string("execution.checkpointing.savepoint-dir", savepoints)
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", "3")
    # A failure ends the job (and this process): the ml-service side restarts it with a backoff, from
    # the latest checkpoint, and reports it meanwhile.
    conf.set_string("restart-strategy.type", "none")
    if spec.get("restore"):
        conf.set_string("execution.state-recovery.path", spec["restore"])
    if spec.get("buffer_timeout_ms") is not None:  # how long records may wait in a network buffer between operators
        conf.set_string("execution.buffer-timeout.interval", f"{int(spec['buffer_timeout_ms'])} ms")
    conf.set_string("python.fn-execution.bundle.time", str(int(spec.get("bundle_ms", 200))))
    conf.set_string("python.fn-execution.bundle.size", str(int(spec.get("bundle_size", 10_000))))
    conf.set_string("pipeline.name", spec["name"])
    return conf


def environment(spec: dict[str, Any]) -> Any:
    """The StreamExecutionEnvironment of a spec, with the connector jars and this Python for the workers."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment(configuration(spec))
    env.set_parallelism(max(int(spec.get("parallelism", 1)), 1))
    env.set_python_executable(sys.executable)
    env.add_jars(*[Path(j).resolve().as_uri() for j in spec["jars"]])
    return env


def kafka_sink(spec: dict[str, Any], topic: str) -> Any:
    """An at-least-once Kafka sink of strings to ``topic`` (replays are dropped by their keys: see the jobs)."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    serializer = (KafkaRecordSerializationSchema.builder().set_topic(topic)
                  .set_value_serialization_schema(SimpleStringSchema()).build())
    return (KafkaSink.builder().set_bootstrap_servers(spec["bootstrap_servers"])
            .set_record_serializer(serializer)
            .set_property("linger.ms", str(spec.get("linger_ms", 5)))
            .set_property("max.request.size", str(16 * 1024 * 1024))
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE).build())


def interval(ms: int) -> str:
    """A Flink SQL interval literal of ``ms`` milliseconds (its SQL has no MILLISECOND unit): ``DAY TO SECOND(3)``."""
    ms = int(ms)
    if ms < 0:
        raise ValueError(f"an interval cannot be negative: {ms} ms")
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def source_table(t_env: Any, spec: dict[str, Any], name: str, topics: list[str], lateness_ms: int) -> None:
    """A table over ``topics`` (raw JSON values) with each message's topic and timestamp, the watermark
    trailing the newest timestamp by ``lateness_ms``; a topic silent for ``idle_ms`` holds no one back."""
    options = {
        "connector": "kafka", "topic": ";".join(topics), "properties.bootstrap.servers": spec["bootstrap_servers"],
        "properties.group.id": spec["group"], "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": spec.get("start_from", "earliest"), "format": "raw",
        "scan.watermark.idle-timeout": f"{int(spec.get('idle_ms', 5000))} ms",
        "properties.max.partition.fetch.bytes": str(16 * 1024 * 1024),
    }
    with_ = ", ".join(f"'{k}' = '{v}'" for k, v in options.items())
    t_env.execute_sql(f"""
        CREATE TABLE `{name}` (
          topic STRING METADATA VIRTUAL,
          ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
          `value` STRING,
          WATERMARK FOR ts AS ts - {interval(lateness_ms)}
        ) WITH ({with_})""")
