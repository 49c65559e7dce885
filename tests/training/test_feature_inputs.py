"""A training job whose input is a feature service: the job trains on the joined frame, its run records the
dataset and the service, and the version it registers remembers the service (a real job on ray-local)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from job_helpers import spec

from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.testing.features import CUSTOMER, DAY, T0, Platform
from matih_lite.tracking.logged_models import LoggedModels
from matih_lite.training.jobs import Jobs


@pytest.mark.slow
def test_a_job_trains_on_a_feature_service_and_its_version_remembers_it(open_host, ray_session, hermetic):
    host = open_host()
    repo = hermetic / "features"
    repo.mkdir()
    (repo / "customer.toml").write_text(CUSTOMER)
    platform = Platform(host, repo)
    platform.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2), (2, T0 - DAY, T0 - DAY, 0.9, 9),
                        (3, T0 - DAY, T0 - DAY, 0.1, 1), (4, T0 - DAY, T0 - DAY, 0.8, 8)])
    platform.apply()
    pq.write_table(pa.table({"customer_id": pa.array([1, 2, 3, 4, 5], pa.int64()),
                             "event_timestamp": pa.array([T0] * 5, pa.timestamp("us", tz="UTC")),
                             "churned": pa.array([0, 1, 0, 1, 1], pa.int64())}), hermetic / "labels.parquet")
    jobs = Jobs(host)
    job = jobs.submit(LOCAL_ADMIN, spec("featurefns:churn", framework="sklearn", register="churn",
                                        inputs={"features": {"service": "churn_v1",
                                                             "entities": str(hermetic / "labels.parquet")}}))
    done = jobs.wait(LOCAL_ADMIN, job.job_id, timeout=240)
    assert done.status == "SUCCEEDED", (done, jobs.logs(LOCAL_ADMIN, job.job_id))
    from matih_lite.tracking import Tracking

    run = Tracking(host).get_run("default", done.run_id)
    assert run.metrics["rows"].value == 5 and run.metrics["train_rows"].value == 4  # the joined frame, nulls kept
    assert run.tags["matih.feature_service"] == "churn_v1"
    dataset, service = LoggedModels(host).run_io("default", done.run_id).datasets
    assert (service.dataset.name, service.dataset.source_type) == ("churn_v1", "feature_service")
    assert dataset.dataset.name == "features" and len(dataset.dataset.digest) == 64
    assert json.loads(run.tags["matih.dataset.features"])["digest"] == dataset.dataset.digest
    registered = done.result["registered"]
    mv = Registry(host).get_version(LOCAL_ADMIN, "churn", registered["version"])
    assert mv.tags["matih.feature_service"] == "churn_v1"
    assert mv.training_data[0]["feature_service"] == "churn_v1"
