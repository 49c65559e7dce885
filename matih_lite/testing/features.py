"""The features-slot contract: every FeatureStore backend gives these answers.

The suite runs a backend the way users meet it: a platform in a temporary folder whose profile puts
the backend in the ``features`` slot, definitions written as ``*.toml`` files, applied, then queried
through :class:`matih_lite.features.service.Features`, so the answers compared are the ones users get.
Override ``features_backend`` to return the slot's profile entry::

    class TestMyBackend(FeatureStoreContract):
        @pytest.fixture
        def features_backend(self, tmp_path):
            return {"backend": "mine", "url": "..."}
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from matih_lite.contracts.features import NOT_FOUND, OUTSIDE_MAX_AGE, PRESENT, FeatureStore
from matih_lite.errors import InvalidInput, NotFound

T0 = datetime(2025, 1, 10, tzinfo=UTC)
"""The time entity rows are joined as of, unless a test says otherwise."""
DAY = timedelta(days=1)

CUSTOMER = """
[entities.customer]
join_keys = ["customer_id"]

[sources.customer_stats]
path = "customer_stats.parquet"
timestamp_field = "event_timestamp"
created_timestamp_field = "created"

[feature_views.customer_stats]
entities = ["customer"]
source = "customer_stats"
ttl = "7d"
schema = { conv_rate = "float64", trips = "int64" }

[feature_services.churn_v1]
features = ["customer_stats:conv_rate", "customer_stats:trips"]
"""

DRIVER = """
[entities.driver]
join_keys = ["driver_id"]

[sources.driver_stats]
path = "driver_stats.parquet"
timestamp_field = "ts"

[feature_views.driver_stats]
entities = ["driver"]
source = "driver_stats"
ttl = "2d"
schema = { rating = "float64" }
"""

ROUTES = """
[entities.route]
join_keys = ["origin", "destination"]

[sources.routes]
path = "routes.parquet"
timestamp_field = "event_timestamp"

[feature_views.route_stats]
entities = ["route"]
source = "routes"
ttl = "30d"
schema = { eta_minutes = "float64" }
"""

PUSHED = """
[push_sources.customer_push]
batch_source = "customer_stats"

[feature_views.customer_live]
entities = ["customer"]
source = "customer_push"
ttl = "1d"
schema = { conv_rate = "float64", trips = "int64" }
"""

BOOST = """
[on_demand_feature_views.conv_boost]
function = "boost:boost"
sources = ["customer_stats"]
request_schema = { bonus = "float64" }
schema = { boosted = "float64" }
"""

BOOST_PY = '''
def boost(df):
    out = df[[]].copy()
    out["boosted"] = df["conv_rate"].fillna(0.0) * 10 + df["bonus"]
    return out
'''


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class Platform:
    """A platform in a temporary folder with the backend under test in the ``features`` slot."""

    def __init__(self, host: Any, repo: Path) -> None:
        from matih_lite.features.service import Features
        from matih_lite.identity import LOCAL_ADMIN

        self.host = host
        self.repo = repo
        self.features = Features.of(host)
        self.who = LOCAL_ADMIN

    def write(self, name: str, text: str) -> None:
        (self.repo / name).write_text(textwrap.dedent(text))

    def table(self, name: str, columns: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), self.repo / name)

    def customers(self, rows: list[tuple]) -> None:
        """Rows of (customer_id, event time, created, conv_rate, trips)."""
        import pyarrow as pa

        self.table("customer_stats.parquet", {
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", "UTC")),
            "created": pa.array([r[2] for r in rows], pa.timestamp("us", "UTC")),
            "conv_rate": pa.array([r[3] for r in rows], pa.float64()),
            "trips": pa.array([r[4] for r in rows], pa.int64()),
        })

    def apply(self) -> Any:
        return self.features.apply(self.who)

    def historical(self, entities: dict[str, list], features: list[str] | None = None, **kw: Any) -> dict[str, list]:
        import pyarrow as pa

        cols = dict(entities)
        if "event_timestamp" in cols and cols["event_timestamp"] and isinstance(cols["event_timestamp"][0], datetime):
            tz = cols["event_timestamp"][0].tzinfo
            cols["event_timestamp"] = pa.array(cols["event_timestamp"], pa.timestamp("us", "UTC" if tz else None))
        table = pa.table(cols)
        kw.setdefault("service", None if features else "churn_v1")
        return self.features.historical(self.who, table, features, **kw).to_pydict()

    def online(self, rows: Any, features: list[str], now: datetime = T0 + timedelta(hours=1), **kw: Any) -> Any:
        return self.features.online(self.who, rows, features, now=micros(now), **kw)


class FeatureStoreContract:
    """Override ``features_backend`` to return the profile entry of the backend under test."""

    @pytest.fixture
    def features_backend(self, tmp_path) -> dict[str, Any]:
        raise NotImplementedError("override the 'features_backend' fixture: the features slot's profile entry")

    @pytest.fixture
    def platform(self, features_backend, tmp_path):
        import tomllib

        from matih_lite.config import load_config
        from matih_lite.host import Host

        base = tmp_path / "platform"
        repo = base / "features"
        repo.mkdir(parents=True)
        entry = ", ".join(f"{k} = {_toml(v)}" for k, v in {"repo": "features", **features_backend}.items())
        text = f"[profiles.lite]\nfeatures = {{ {entry} }}\n"
        tomllib.loads(text)
        (base / "matih.toml").write_text(text)
        host = Host(load_config(base / "matih.toml", cwd=base))
        try:
            yield Platform(host, repo)
        finally:
            host.close()

    @pytest.fixture
    def customers(self, platform):
        """Customer 1 with two rows, customer 2 with a tie on event time (created breaks it)."""
        platform.write("customer.toml", CUSTOMER)
        platform.customers([
            (1, T0 - 2 * DAY, T0 - 2 * DAY, 0.1, 1),
            (1, T0 - DAY, T0 - DAY, 0.2, 2),
            (2, T0 - DAY, T0 - DAY, 0.3, 3),
            (2, T0 - DAY, T0 - DAY + timedelta(hours=1), 0.4, 4),
        ])
        platform.apply()
        return platform

    # ---- the slot -----------------------------------------------------------------------------------
    def test_backend_satisfies_the_protocol_and_is_healthy(self, platform):
        backend = platform.host.backend("features")
        assert isinstance(backend, FeatureStore)
        assert backend.health().ok

    # ---- offline ------------------------------------------------------------------------------------
    def test_newest_row_at_or_before_each_entity_row(self, customers):
        got = customers.historical({"customer_id": [1, 1, 1], "event_timestamp": [T0, T0 - DAY, T0 - DAY - timedelta(
            seconds=1)], "label": [1, 0, 1]})
        assert got["conv_rate"] == [0.2, 0.2, 0.1]
        assert got["trips"] == [2, 2, 1]
        assert got["label"] == [1, 0, 1]

    def test_ties_on_event_time_go_to_the_newest_created(self, customers):
        got = customers.historical({"customer_id": [2], "event_timestamp": [T0]})
        assert got["conv_rate"] == [0.4] and got["trips"] == [4]

    def test_rows_exactly_at_ttl_are_kept_one_second_past_are_not(self, customers):
        at_ttl = T0 - DAY + timedelta(days=7)
        got = customers.historical({"customer_id": [1, 1], "event_timestamp": [at_ttl, at_ttl + timedelta(seconds=1)]})
        assert got["conv_rate"] == [0.2, None]
        assert got["trips"] == [2, None]

    def test_entity_rows_before_any_feature_row_and_unknown_entities_keep_nulls(self, customers):
        got = customers.historical({"customer_id": [1, 99, 2], "event_timestamp": [T0 - 10 * DAY, T0, T0],
                                    "label": [7, 8, 9]})
        assert got["customer_id"] == [1, 99, 2]
        assert got["conv_rate"] == [None, None, 0.4]
        assert got["label"] == [7, 8, 9]

    def test_duplicate_entity_rows_each_get_a_row_in_order(self, customers):
        rows = {"customer_id": [2, 1, 2, 1], "event_timestamp": [T0, T0, T0, T0], "row": [0, 1, 2, 3]}
        got = customers.historical(rows)
        assert got["row"] == [0, 1, 2, 3]
        assert got["conv_rate"] == [0.4, 0.2, 0.4, 0.2]

    def test_every_entity_column_is_carried_through(self, customers):
        got = customers.historical({"customer_id": [1], "event_timestamp": [T0], "label": [True], "note": ["x"],
                                    "weight": [0.5]}, ["customer_stats:trips"])
        assert list(got) == ["customer_id", "event_timestamp", "label", "note", "weight", "trips"]
        assert (got["label"], got["note"], got["weight"], got["trips"]) == ([True], ["x"], [0.5], [2])

    def test_naive_and_tz_aware_entity_times_are_the_same_utc_instant(self, customers):
        edge = T0 - DAY  # customer 1's second row, to the microsecond
        aware = customers.historical({"customer_id": [1, 1],
                                      "event_timestamp": [edge, edge - timedelta(microseconds=1)]})
        naive_times = [edge.replace(tzinfo=None), (edge - timedelta(microseconds=1)).replace(tzinfo=None)]
        naive = customers.historical({"customer_id": [1, 1], "event_timestamp": naive_times})
        assert aware["conv_rate"] == naive["conv_rate"] == [0.2, 0.1]
        other_zone = timezone(timedelta(hours=5))
        shifted = customers.historical({"customer_id": [1], "event_timestamp": [edge.astimezone(other_zone)]})
        assert shifted["conv_rate"] == [0.2]

    def test_nulls_in_the_data_stay_null(self, platform):
        platform.write("customer.toml", CUSTOMER)
        platform.customers([(1, T0 - DAY, T0 - DAY, None, 5), (2, T0 - DAY, T0 - DAY, 0.5, None)])
        platform.apply()
        got = platform.historical({"customer_id": [1, 2], "event_timestamp": [T0, T0]})
        assert got["conv_rate"] == [None, 0.5]
        assert got["trips"] == [5, None]

    def test_composite_keys(self, platform):
        import pyarrow as pa

        platform.write("routes.toml", ROUTES)
        platform.table("routes.parquet", {
            "origin": ["AMS", "AMS", "BER"], "destination": ["BER", "PAR", "AMS"],
            "event_timestamp": pa.array([T0 - DAY] * 3, pa.timestamp("us", "UTC")), "eta_minutes": [90.0, 75.0, 95.0]})
        platform.apply()
        got = platform.historical({"origin": ["AMS", "BER", "AMS", "PAR"], "destination": ["PAR", "AMS", "BER", "AMS"],
                                   "event_timestamp": [T0] * 4}, ["route_stats:eta_minutes"])
        assert got["eta_minutes"] == [75.0, 95.0, 90.0, None]
        platform.features.materialize(platform.who, T0 - 30 * DAY, T0)
        online = platform.online({"origin": ["BER", "AMS"], "destination": ["AMS", "ROM"]}, ["route_stats:eta_minutes"])
        assert online.values["eta_minutes"] == [95.0, None]
        assert online.statuses["eta_minutes"] == [PRESENT, NOT_FOUND]

    def test_several_views_with_different_entities_and_ttls(self, customers):
        import pyarrow as pa

        customers.write("driver.toml", DRIVER)
        customers.table("driver_stats.parquet", {"driver_id": pa.array([10, 10, 11], pa.int64()),
                                                 "ts": pa.array([T0 - 3 * DAY, T0 - DAY, T0 - 3 * DAY],
                                                                pa.timestamp("us", "UTC")),
                                                 "rating": [4.0, 4.5, 3.0]})
        customers.apply()
        got = customers.historical({"customer_id": [1, 2, 1], "driver_id": [10, 11, 11],
                                    "event_timestamp": [T0, T0, T0 - 2 * DAY]},
                                   ["customer_stats:conv_rate", "driver_stats:rating"])
        assert got["conv_rate"] == [0.2, 0.4, 0.1]
        assert got["rating"] == [4.5, None, 3.0]  # driver 11's row is 3 days old at T0: past its 2d ttl

    def test_full_feature_names(self, customers):
        got = customers.historical({"customer_id": [1], "event_timestamp": [T0]}, ["customer_stats:trips"],
                                   full_feature_names=True)
        assert got["customer_stats__trips"] == [2]

    def test_the_backend_names_the_columns_as_the_request_asks(self, customers):
        """The slot itself (not only the domain above it): ``feature`` with full feature names off, and
        ``view__feature`` with them on, after the entity rows' own columns, for rows and for a range alike."""
        import pyarrow as pa

        from matih_lite.contracts.features import HistoricalRequest, ViewSelection

        backend = customers.host.backend("features")
        defs = customers.features.definitions(customers.who.tenant)
        views = (ViewSelection("customer_stats", ("conv_rate", "trips")),)
        rows = pa.table({"customer_id": pa.array([1, 2], pa.int64()), "label": [0, 1],
                         "event_timestamp": pa.array([T0, T0], pa.timestamp("us", "UTC"))})
        for full, names in ((False, ["conv_rate", "trips"]), (True, ["customer_stats__conv_rate",
                                                                     "customer_stats__trips"])):
            got = backend.historical(defs, HistoricalRequest(views=views, entities=rows,
                                                             full_feature_names=full)).read_all()
            assert got.column_names == ["customer_id", "label", "event_timestamp", *names], full
            assert got.column(names[0]).to_pylist() == [0.2, 0.4] and got.column(names[1]).to_pylist() == [2, 4]
            ranged = backend.historical(defs, HistoricalRequest(views=views, start=micros(T0 - 3 * DAY),
                                                                end=micros(T0), full_feature_names=full)).read_all()
            assert ranged.column_names[-2:] == names, full
            assert sorted(ranged.column(names[1]).to_pylist()) == [2, 4]

    def test_every_entity_over_a_range(self, customers):
        table = customers.features.historical(customers.who, None, service="churn_v1", start=T0 - 3 * DAY, end=T0)
        got = table.to_pydict()
        assert got["customer_id"] == [1, 2]
        assert got["conv_rate"] == [0.2, 0.4]
        assert {micros(t) for t in got["event_timestamp"]} == {micros(T0)}

    def test_entity_rows_from_a_file_stream_to_a_file(self, customers, tmp_path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = 25_000
        ids = [1 + i % 3 for i in range(n)]
        pq.write_table(pa.table({"customer_id": ids, "event_timestamp": pa.array([T0] * n, pa.timestamp("us", "UTC")),
                                 "row": list(range(n))}), tmp_path / "entities.parquet")
        rows = customers.features.historical_to_file(customers.who, tmp_path / "out.parquet",
                                                     entity_path=tmp_path / "entities.parquet", service="churn_v1")
        out = pq.read_table(tmp_path / "out.parquet").to_pydict()
        assert rows == n and out["row"] == list(range(n))
        assert out["conv_rate"][:3] == [0.2, 0.4, None]

    def test_on_demand_view_is_the_same_offline_and_online(self, customers):
        customers.write("boost.toml", BOOST)
        (customers.repo / "boost.py").write_text(BOOST_PY)
        customers.apply()
        off = customers.historical({"customer_id": [1, 2, 3], "event_timestamp": [T0] * 3, "bonus": [1.0, 2.0, 3.0]},
                                   ["conv_boost:boosted", "customer_stats:trips"])
        assert off["boosted"] == pytest.approx([3.0, 6.0, 3.0])
        assert "conv_rate" not in off
        customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        on = customers.online({"customer_id": [1, 2, 3], "bonus": [1.0, 2.0, 3.0]}, ["conv_boost:boosted"])
        assert on.values["boosted"] == pytest.approx(off["boosted"])

    # ---- materialization and online ------------------------------------------------------------------
    def test_online_after_materialize(self, customers):
        written = customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        assert written == {"customer_stats": 2}
        got = customers.online([{"customer_id": 2}, {"customer_id": 1}, {"customer_id": 7}],
                               ["customer_stats:conv_rate", "customer_stats:trips"])
        assert got.names == ["customer_id", "conv_rate", "trips"]
        assert got.values["conv_rate"] == [0.4, 0.2, None]
        assert got.values["trips"] == [4, 2, None]
        assert got.statuses["trips"] == [PRESENT, PRESENT, NOT_FOUND]
        assert got.event_ts["trips"] == [micros(T0 - DAY), micros(T0 - DAY), 0]

    def test_materialize_twice_changes_nothing(self, customers):
        first = customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        before = customers.online({"customer_id": [1, 2]}, ["customer_stats:conv_rate"]).to_dict()
        again = customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        older = customers.features.materialize(customers.who, T0 - 30 * DAY, T0 - 2 * DAY)
        assert first == again and older == {"customer_stats": 1}
        assert customers.online({"customer_id": [1, 2]}, ["customer_stats:conv_rate"]).to_dict() == before

    def test_materialize_takes_the_window_only(self, customers):
        customers.features.materialize(customers.who, T0 - 30 * DAY, T0 - 2 * DAY)
        got = customers.online({"customer_id": [1, 2]}, ["customer_stats:conv_rate"])
        assert got.values["conv_rate"] == [0.1, None]

    def test_incremental_materialization_goes_on_from_the_last_end(self, customers):
        first = customers.features.materialize_incremental(customers.who, T0 - 2 * DAY + timedelta(hours=1))
        assert first["customer_stats"]["rows"] == 1
        second = customers.features.materialize_incremental(customers.who, T0)
        assert second["customer_stats"]["start"] == first["customer_stats"]["end"]
        assert second["customer_stats"]["rows"] == 2
        assert customers.online({"customer_id": [1, 2]}, ["customer_stats:trips"]).values["trips"] == [2, 4]

    def test_online_values_older_than_ttl_are_outside_max_age(self, customers):
        customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        edge = T0 - DAY + timedelta(days=7)
        at = customers.online({"customer_id": [1]}, ["customer_stats:conv_rate"], now=edge)
        past = customers.online({"customer_id": [1]}, ["customer_stats:conv_rate"], now=edge + timedelta(seconds=1))
        assert (at.values["conv_rate"], at.statuses["conv_rate"]) == ([0.2], [PRESENT])
        assert (past.values["conv_rate"], past.statuses["conv_rate"]) == ([None], [OUTSIDE_MAX_AGE])
        assert past.event_ts["conv_rate"] == [micros(T0 - DAY)]

    def test_push_then_online(self, customers):
        import pyarrow as pa

        customers.write("pushed.toml", PUSHED)
        customers.apply()
        fresh = T0 + timedelta(minutes=5)
        n = customers.features.push(customers.who, "customer_push", {
            "customer_id": [5, 1], "event_timestamp": pa.array([fresh, fresh], pa.timestamp("us", "UTC")),
            "conv_rate": [0.9, 0.8], "trips": [9, 8]})
        assert n == 2
        got = customers.online({"customer_id": [5, 1, 6]}, ["customer_live:conv_rate", "customer_live:trips"])
        assert got.values["conv_rate"] == [0.9, 0.8, None]
        assert got.statuses["trips"] == [PRESENT, PRESENT, NOT_FOUND]
        older = T0 - 3 * DAY
        customers.features.push(customers.who, "customer_push", {
            "customer_id": [5], "event_timestamp": pa.array([older], pa.timestamp("us", "UTC")),
            "conv_rate": [0.1], "trips": [1]})
        assert customers.online({"customer_id": [5]}, ["customer_live:trips"]).values["trips"] == [9]

    def test_offline_push_joins_the_batch_source(self, customers):
        import pyarrow as pa

        customers.write("pushed.toml", PUSHED)
        customers.apply()
        customers.features.push(customers.who, "customer_push", {
            "customer_id": [3], "event_timestamp": pa.array([T0 - DAY], pa.timestamp("us", "UTC")),
            "created": pa.array([T0 - DAY], pa.timestamp("us", "UTC")), "conv_rate": [0.7], "trips": [7]},
            to="offline")
        got = customers.historical({"customer_id": [3, 1], "event_timestamp": [T0, T0]},
                                   ["customer_live:conv_rate", "customer_stats:trips"], full_feature_names=True)
        assert got["customer_live__conv_rate"] == [0.7, 0.2]
        assert got["customer_stats__trips"] == [7, 2]

    def test_scan_and_event_time_range_for_monitoring(self, customers):
        backend = customers.host.backend("features")
        defs = customers.features.definitions(customers.who.tenant)
        assert backend.event_time_range(defs, "customer_stats") == (micros(T0 - 2 * DAY), micros(T0 - DAY), 4)
        rows = backend.scan(defs, "customer_stats", micros(T0 - DAY), micros(T0), 10).to_pydict()
        assert sorted(rows["conv_rate"]) == [0.2, 0.3, 0.4]
        assert set(rows["event_ts"]) == {micros(T0 - DAY)}

    def test_a_removed_view_is_gone_online(self, customers):
        customers.features.materialize(customers.who, T0 - 30 * DAY, T0)
        customers.write("customer.toml", CUSTOMER.split("[feature_views.")[0])
        customers.write("other.toml", '[feature_views.customer_stats2]\nentities = ["customer"]\n'
                                      'source = "customer_stats"\nschema = { trips = "int64" }\n')
        customers.apply()
        with pytest.raises(InvalidInput, match="customer_stats"):
            customers.online({"customer_id": [1]}, ["customer_stats:trips"])
        assert customers.online({"customer_id": [1]}, ["customer_stats2:trips"]).statuses["trips"] == [NOT_FOUND]

    # ---- bad input -------------------------------------------------------------------------------------
    def test_missing_source_file_names_the_source(self, customers):
        (customers.repo / "customer_stats.parquet").unlink()
        with pytest.raises(InvalidInput, match="customer_stats"):
            customers.historical({"customer_id": [1], "event_timestamp": [T0]})

    def test_unknown_feature_or_service(self, customers):
        with pytest.raises(InvalidInput, match="did you mean 'conv_rate'"):
            customers.historical({"customer_id": [1], "event_timestamp": [T0]}, ["customer_stats:conv_rat"])
        with pytest.raises(NotFound, match="churn_v1"):
            customers.features.online(customers.who, {"customer_id": [1]}, service="churn_v2")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class FeatureDefinitionStoreContract:
    """The metadata slot's part for features. Override ``store`` to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your metadata backend")

    def change(self, action: str = "added", name: str = "customer", diff: dict | None = None) -> Any:
        from matih_lite.contracts.features import DefinitionChange

        return DefinitionChange(action, "entities", name, diff or {})  # type: ignore[arg-type]

    def test_versions_count_up_per_tenant_with_their_documents(self, store):
        doc = {"project": "default", "entities": {"customer": {"name": "customer", "join_keys": ["id"]}}}
        assert store.latest_feature_definition_version("t") == 0
        first = store.put_feature_definitions("t", doc, digest="d1", actor="ann", at=10, changes=[self.change()],
                                              expected_version=0)
        second = store.put_feature_definitions("t", {**doc, "x": [1, "ü", None]}, digest="d2", actor="bob", at=20,
                                               changes=[])
        other = store.put_feature_definitions("u", doc, digest="d9", actor="eve", at=30, changes=[])
        assert (first.version, second.version, other.version) == (1, 2, 1)
        assert store.get_feature_definitions("t") == second
        assert store.get_feature_definitions("t", 1).document == doc
        assert store.latest_feature_definition_version("t") == 2
        assert [(v.version, v.digest, v.actor, v.document) for v in store.list_feature_definition_versions("t")] == [
            (2, "d2", "bob", {}), (1, "d1", "ann", {})]

    def test_a_stale_expected_version_is_a_conflict_and_records_nothing(self, store):
        from matih_lite.errors import Conflict

        store.put_feature_definitions("t", {}, digest="d1", actor="a", at=1, changes=[self.change()])
        with pytest.raises(Conflict):
            store.put_feature_definitions("t", {}, digest="d2", actor="a", at=2, changes=[self.change("changed")],
                                          expected_version=0)
        assert store.latest_feature_definition_version("t") == 1 and len(store.feature_audit("t")) == 1

    def test_unknown_versions_and_tenants_are_not_found(self, store):
        store.put_feature_definitions("t", {}, digest="d1", actor="a", at=1, changes=[])
        with pytest.raises(NotFound):
            store.get_feature_definitions("u")
        with pytest.raises(NotFound):
            store.get_feature_definitions("t", 7)

    def test_audit_entries_newest_first_by_name(self, store):
        store.put_feature_definitions("t", {}, digest="d1", actor="ann", at=1,
                                      changes=[self.change(), self.change(name="driver")])
        store.put_feature_definitions("t", {}, digest="d2", actor="bob", at=2,
                                      changes=[self.change("changed", diff={"join_keys": [["a"], ["b"]]})])
        entries = store.feature_audit("t")
        assert [(e.version, e.actor, e.change.action, e.change.name) for e in entries] == [
            (2, "bob", "changed", "customer"), (1, "ann", "added", "driver"), (1, "ann", "added", "customer")]
        assert entries[0].change.diff == {"join_keys": [["a"], ["b"]]}
        assert [e.version for e in store.feature_audit("t", name="customer", max_results=1)] == [2]
        assert store.feature_audit("u") == []

    def test_materializations_newest_first(self, store):
        store.record_materialization("t", "stats", start=0, end=100, rows=5, at=1)
        store.record_materialization("t", "stats", start=100, end=200, rows=7, at=2)
        store.record_materialization("t", "other", start=0, end=900, rows=1, at=3)
        store.record_materialization("u", "stats", start=0, end=999, rows=1, at=4)
        assert [(m.start, m.end, m.rows) for m in store.materializations("t", "stats")] == [(100, 200, 7), (0, 100, 5)]
        assert [m.view for m in store.materializations("t")] == ["other", "stats", "stats"]
        assert len(store.materializations("t", "stats", max_results=1)) == 1
        with pytest.raises(InvalidInput):
            store.record_materialization("t", "stats", start=5, end=1, rows=0, at=5)

    def test_an_alert_is_claimed_once(self, store):
        assert store.claim_feature_alert("t", "stats", "spend", "1d", 42, 1)
        assert not store.claim_feature_alert("t", "stats", "spend", "1d", 42, 2)
        assert store.claim_feature_alert("t", "stats", "spend", "1d", 43, 3)
        assert store.claim_feature_alert("t", "stats", "visits", "1d", 42, 4)
        assert store.claim_feature_alert("u", "stats", "spend", "1d", 42, 5)

    def test_concurrent_applies_get_distinct_versions(self, store):
        import threading

        errors: list[BaseException] = []

        def put(i: int) -> None:
            try:
                store.put_feature_definitions("t", {"i": i}, digest=str(i), actor="a", at=i, changes=[])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(v.version for v in store.list_feature_definition_versions("t")) == [1, 2, 3, 4, 5, 6]
