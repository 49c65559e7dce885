"""The lineage part of the metadata-slot contract."""

from __future__ import annotations

import pytest

from matih_lite.contracts.lineage import LineageEdge
from matih_lite.errors import Conflict, InvalidInput, NotFound

T = "tenant-a"
OTHER = "tenant-b"
DATA = "dataset:s3://bucket/train.parquet@v3"
RUN = "run:0123456789abcdef"
MODEL = "model:churn/1"


class LineageStoreContract:
    """Override the ``store`` fixture to return a fresh, empty metadata backend."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("override the 'store' fixture to build your backend")

    def chain(self, store, tenant=T):
        """dataset -> run -> model version, the way the platform records a training run."""
        store.put_lineage_node(tenant, DATA, kind="dataset", at=1, properties={"digest": "sha256:ab"})
        store.put_lineage_node(tenant, RUN, kind="run", at=2, name="baseline")
        store.put_lineage_node(tenant, MODEL, kind="model_version", at=3)
        store.add_lineage_edge(tenant, DATA, RUN, kind="consumed_by", at=4)
        store.add_lineage_edge(tenant, RUN, MODEL, kind="produced", at=5)

    def test_lineage_node_is_created_then_merged(self, store):
        node = store.put_lineage_node(T, DATA, kind="dataset", at=10, name="train",
                                      properties={"uri": "s3://bucket/train.parquet", "rows": 100})
        assert (node.key, node.kind, node.name, node.created_at, node.updated_at) == (DATA, "dataset", "train", 10, 10)
        again = store.put_lineage_node(T, DATA, kind="dataset", at=20, properties={"rows": 120, "quality": 0.98})
        assert again.name == "train"  # kept when not given
        assert again.properties == {"uri": "s3://bucket/train.parquet", "rows": 120, "quality": 0.98}
        assert (again.created_at, again.updated_at) == (10, 20)
        assert store.get_lineage_nodes(T, [DATA]) == {DATA: again}

    def test_lineage_node_properties_keep_json_types(self, store):
        props = {"n": 3, "f": 0.5, "ok": True, "none": None, "list": [1, "a"], "nested": {"a": {"b": [1.5]}},
                 "text": "naïve ✓ 'quoted' \"double\""}
        store.put_lineage_node(T, DATA, kind="dataset", at=1, properties=props)
        assert store.get_lineage_nodes(T, [DATA])[DATA].properties == props

    def test_lineage_node_kind_cannot_change(self, store):
        store.put_lineage_node(T, RUN, kind="run", at=1)
        with pytest.raises(Conflict):
            store.put_lineage_node(T, RUN, kind="dataset", at=2)

    def test_unknown_lineage_keys_are_left_out(self, store):
        store.put_lineage_node(T, RUN, kind="run", at=1)
        assert set(store.get_lineage_nodes(T, [RUN, "run:nope"])) == {RUN}
        assert store.get_lineage_nodes(T, []) == {}

    def test_lineage_edges_are_idempotent(self, store):
        self.chain(store)
        first = store.lineage_edges(T, [RUN], direction="upstream")
        assert first == [LineageEdge(T, DATA, RUN, "consumed_by", 4)]
        again = store.add_lineage_edge(T, DATA, RUN, kind="consumed_by", at=99)
        assert again.created_at == 4
        assert store.lineage_edges(T, [RUN], direction="upstream") == first
        # the same pair with another kind is another edge
        store.add_lineage_edge(T, DATA, RUN, kind="validated_by", at=6)
        assert [e.kind for e in store.lineage_edges(T, [RUN], direction="upstream")] == ["consumed_by",
                                                                                        "validated_by"]

    def test_lineage_edges_by_direction(self, store):
        self.chain(store)
        assert [(e.source, e.target) for e in store.lineage_edges(T, [RUN], direction="downstream")] == [(RUN, MODEL)]
        assert [(e.source, e.target) for e in store.lineage_edges(T, [RUN], direction="upstream")] == [(DATA, RUN)]
        both = store.lineage_edges(T, [DATA, RUN], direction="downstream")
        assert [(e.source, e.target) for e in both] == [(DATA, RUN), (RUN, MODEL)]
        assert store.lineage_edges(T, [DATA], direction="upstream") == []
        with pytest.raises(InvalidInput):
            store.lineage_edges(T, [DATA], direction="sideways")

    def test_lineage_edge_needs_both_nodes(self, store):
        store.put_lineage_node(T, RUN, kind="run", at=1)
        with pytest.raises(NotFound):
            store.add_lineage_edge(T, RUN, MODEL, kind="produced", at=2)
        with pytest.raises(NotFound):
            store.add_lineage_edge(T, DATA, RUN, kind="consumed_by", at=2)

    def test_lineage_of_another_tenant_is_invisible(self, store):
        self.chain(store)
        assert store.get_lineage_nodes(OTHER, [DATA, RUN, MODEL]) == {}
        assert store.lineage_edges(OTHER, [RUN], direction="upstream") == []
        assert store.list_lineage_nodes(OTHER).items == []
        with pytest.raises(NotFound):  # another tenant's nodes cannot be linked to
            store.add_lineage_edge(OTHER, DATA, RUN, kind="consumed_by", at=9)
        # the same key in another tenant is another node
        mine = store.put_lineage_node(OTHER, RUN, kind="run", at=7, properties={"x": 1})
        assert mine.created_at == 7 and store.get_lineage_nodes(T, [RUN])[RUN].properties == {}

    def test_list_lineage_nodes_by_kind_and_pages(self, store):
        for i in range(5):
            store.put_lineage_node(T, f"run:r{i}", kind="run", at=100 + i)
        store.put_lineage_node(T, DATA, kind="dataset", at=50)
        assert [n.key for n in store.list_lineage_nodes(T).items] == [DATA] + [f"run:r{i}" for i in range(5)]
        seen, token = [], None
        while True:
            page = store.list_lineage_nodes(T, kind="run", max_results=2, page_token=token)
            seen += [n.key for n in page.items]
            token = page.next_token
            if not token:
                break
        assert seen == [f"run:r{i}" for i in range(5)]
        with pytest.raises(InvalidInput):
            store.list_lineage_nodes(T, page_token="not-a-token")

    def test_lineage_keys_are_data_not_sql(self, store):
        evil = "dataset:x'); DROP TABLE lineage_nodes; --"
        store.put_lineage_node(T, evil, kind="dataset", at=1)
        store.put_lineage_node(T, RUN, kind="run", at=2)
        store.add_lineage_edge(T, evil, RUN, kind="consumed_by", at=3)
        assert store.lineage_edges(T, [RUN], direction="upstream")[0].source == evil
        assert set(store.get_lineage_nodes(T, [evil, RUN])) == {evil, RUN}

    def test_many_lineage_keys_in_one_query(self, store):
        keys = [f"dataset:file:///d/{i}.csv" for i in range(520)]  # more than one IN (...) chunk
        store.put_lineage_node(T, RUN, kind="run", at=1)
        for i, key in enumerate(keys):
            store.put_lineage_node(T, key, kind="dataset", at=2)
            if i % 100 == 0:
                store.add_lineage_edge(T, key, RUN, kind="consumed_by", at=3)
        assert len(store.get_lineage_nodes(T, keys)) == 520
        assert len(store.lineage_edges(T, keys, direction="downstream")) == 6
