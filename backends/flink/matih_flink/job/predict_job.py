"""The streaming-inference job: a deployment's requests topic answered by its models embedded in the job.

``python -m matih_flink.job.predict_job SPEC.json`` in the Flink environment (:mod:`matih_flink.streaming`
starts it). The spec carries a :class:`~matih_lite.contracts.stream_jobs.StreamJobPlan` as data: topics,
the routes as of the job's start, and each routed version's verified model folder and flavor.

1. **Source** (Flink SQL, Java): the requests topic from the group's committed offsets (checkpointed), each
   message's partition and offset kept (the prediction's ``source_offset``, as the events backend numbers it).
2. **Answer** (a process function, Python): each request is routed as the service routes it: by its
   ``request_key``'s sticky bucket (:func:`~matih_lite.contracts.stream_jobs.sticky_bucket`, the service
   router's own hash) over the routes' bucket bounds, at random without a key; the variant's ONNX model
   (onnxruntime, loaded once per worker) predicts it.
3. **Sinks**: the prediction record, in the shape the in-process consumer writes
   (:mod:`matih_lite.serving.streaming`), to the sink topic; one inference-log record per input row (the
   schema of :mod:`matih_lite.serving.inference_log`) to the deployment's inference log, as an HTTP
   prediction is logged. A request that cannot be answered gets an ``error`` record, as in-process.
"""

from __future__ import annotations

import bisect
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from matih_flink.job.common import environment, kafka_sink, read_spec

ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


class Refused(ValueError):
    """A request the model cannot take: answered with an ``error`` record."""


class OnnxModel:
    """One version's ``model.onnx`` in an onnxruntime session (one intra-op thread, as the service's)."""

    def __init__(self, folder: str) -> None:
        import numpy as np
        import onnxruntime as ort

        self.np = np
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = Path(folder) / "model.onnx"
        if not path.is_file():
            found = sorted(Path(folder).glob("**/*.onnx"))
            if not found:
                raise FileNotFoundError(f"no model.onnx in {folder}")
            path = found[0]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, ONNX_TYPES.get(i.type)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self.refused = InvalidArgument

    def predict(self, rows: Any) -> Any:
        np = self.np
        if len(self.inputs) != 1:
            raise Refused(f"the model takes {len(self.inputs)} inputs; the Flink job feeds one-tensor models only")
        name, dtype = self.inputs[0]
        if dtype is None:
            raise Refused(f"input {name!r} is not a numeric tensor")
        try:
            arr = np.asarray(rows, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise Refused(f"input {name!r} takes {dtype} numbers: {exc}") from None
        self.fed = arr  # what the inference log records as the row's features, as the service logs them
        try:
            results = self.session.run(self.outputs, {name: arr})
        except self.refused as exc:
            raise Refused(f"the model refused these inputs: {str(exc).split(' : ', 2)[-1].strip()}") from None
        outputs = {n: _as_array(np, v) for n, v in zip(self.outputs, results)}
        return outputs[self.outputs[0]] if len(outputs) == 1 else outputs


def _as_array(np: Any, value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0])
        return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def rows_of(record: dict[str, Any]) -> list[Any]:
    """The input rows of a request record (``inputs``, ``instances``, ``dataframe_split``, ``dataframe_records``)."""
    if "inputs" in record:
        rows = record["inputs"]
    elif "instances" in record:
        rows = record["instances"]
    elif "dataframe_split" in record and isinstance(record["dataframe_split"], dict):
        rows = record["dataframe_split"].get("data")
    elif "dataframe_records" in record and isinstance(record["dataframe_records"], list):
        rows = [list(r.values()) if isinstance(r, dict) else r for r in record["dataframe_records"]]
    else:
        raise Refused("a request needs one of dataframe_split, dataframe_records, instances or inputs")
    if not isinstance(rows, list) or not rows:
        raise Refused("the request's inputs must be a non-empty list of rows")
    return rows


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def log_records(plan: dict[str, Any], route: dict[str, Any], request_id: str, rows: list[Any], outputs: Any,
                latency_ms: float, at: int) -> list[dict[str, Any]]:
    """The inference-log records of one answered request: one per input row."""
    names = list(route.get("feature_names") or ())
    primary = outputs[next(iter(outputs))] if isinstance(outputs, dict) else outputs
    out = []
    for i, row in enumerate(rows):
        values = row if isinstance(row, list) else [row]
        features = {(names[j] if j < len(names) else f"f{j}"): v for j, v in enumerate(values)
                    if isinstance(v, (int, float, str, bool))}
        record = {"timestamp": at, "request_id": request_id, "row": i, "deployment": plan["log_name"],
                  "variant": route["variant"], "version": str(route["version"]), "latency_ms": latency_ms,
                  "shadow": False, "features": features}
        try:
            value = primary[i]
            value = value.tolist() if hasattr(value, "tolist") else value
            while isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, (int, float, str, bool)):
                record["prediction"] = value
        except (IndexError, TypeError, KeyError):
            pass
        out.append(record)
    return out


def make_function(spec: dict[str, Any]) -> Any:
    from pyflink.common import Types
    from pyflink.datastream import OutputTag, ProcessFunction

    log_tag = OutputTag("inference-log", Types.STRING())

    class Answer(ProcessFunction):
        def open(self, runtime_context: Any) -> None:
            from matih_lite.contracts.stream_jobs import sticky_bucket

            self.bucket = sticky_bucket
            self.plan = spec["plan"]
            self.routes = [r for r in self.plan["routes"] if r["weight"] > 0]
            self.bounds = spec["bounds"]
            self.models: dict[int, Any] = {}
            self.partitions = int(spec.get("partitions", 1))
            self.answered_through = int(spec.get("answered_through", -1))

        def model(self, route: dict[str, Any]) -> Any:
            found = self.models.get(route["version"])
            if found is None:
                if route["flavor"] != "onnx":
                    raise Refused(f"version {route['version']} is a {route['flavor']!r} model; the Flink job "
                                  "embeds onnx models only")
                found = self.models[route["version"]] = OnnxModel(route["model_dir"])
            return found

        def choose(self, key: str | None) -> dict[str, Any]:
            if len(self.routes) == 1:
                return self.routes[0]
            b = self.bucket(self.plan["deployment"], key) if key is not None else random.randrange(10_000)
            return self.routes[bisect.bisect_right(self.bounds, b)]

        def process_element(self, row: Any, ctx: Any) -> Any:
            plan = self.plan
            offset = int(row.offset) * self.partitions + int(row.part)
            if offset <= self.answered_through:
                return  # answered before a restart from an older checkpoint: in the sink already
            try:
                record = json.loads(row.value)
            except ValueError:
                record = None
            request_id = None
            answer: dict[str, Any]
            if isinstance(record, dict):
                rid = record.get("request_id")
                request_id = str(rid) if rid not in (None, "") else None
            label = plan.get("source_label") or plan["source"]
            out = {"request_id": request_id or f"{label}:{offset}", "source": label, "source_offset": offset,
                   "consumer": plan["group"]}
            try:
                if not isinstance(record, dict):
                    raise Refused("a request record must be a JSON object")
                key = record.get("request_key")
                if key is not None and (not isinstance(key, str) or not key or len(key) > 1024):
                    raise Refused("request_key must be a string of 1 to 1024 characters")
                route = self.choose(key)
                rows = rows_of(record)
                start = time.perf_counter()
                model = self.model(route)
                outputs = model.predict(rows)
                latency = (time.perf_counter() - start) * 1000
                at = int(time.time() * 1000)
                answer = {"predictions": plain(outputs), "deployment": plan["deployment"],
                          "version": route["version"], "variant": route["variant"]}
                for entry in log_records(plan, route, request_id or f"flink-{plan['deployment']}-{offset}",
                                         model.fed.tolist(), outputs, latency, at):
                    yield log_tag, json.dumps(entry, separators=(",", ":"))
            except Refused as exc:
                answer, at = {"error": str(exc)[:2000]}, int(time.time() * 1000)
            yield json.dumps({"timestamp": at, **out, **answer}, separators=(",", ":"), allow_nan=False)

    return Answer(), log_tag


def build(spec: dict[str, Any]) -> Any:
    from pyflink.common import Types
    from pyflink.table import StreamTableEnvironment

    env = environment(spec)
    t_env = StreamTableEnvironment.create(env)
    options = {
        "connector": "kafka", "topic": spec["source_topic"], "properties.bootstrap.servers": spec["bootstrap_servers"],
        "properties.group.id": spec["group"], "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": spec.get("start_from", "earliest"), "format": "raw",
        "properties.max.partition.fetch.bytes": str(16 * 1024 * 1024),
    }
    with_ = ", ".join(f"'{k}' = '{v}'" for k, v in options.items())
    t_env.execute_sql(f"""
        CREATE TABLE requests (
          part INT METADATA FROM 'partition' VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `value` STRING
        ) WITH ({with_})""")
    table = t_env.sql_query("SELECT part, `offset`, `value` FROM requests")
    function, log_tag = make_function(spec)
    answers = t_env.to_data_stream(table).process(function, output_type=Types.STRING()).uid("answer").name("answer")
    answers.sink_to(kafka_sink(spec, spec["sink_topic"])).uid("predictions").name("predictions")
    answers.get_side_output(log_tag).sink_to(kafka_sink(spec, spec["log_topic"])).uid("inference-log") \
        .name("inference log")
    return env


def main(argv: list[str]) -> int:
    spec = read_spec(argv[1])
    build(spec).execute(spec["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
