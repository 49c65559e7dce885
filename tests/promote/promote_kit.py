"""Records for promote tests: a lite store filled with every kind of record, for two tenants."""

from __future__ import annotations

import os

from matih_lite.contracts import Metric
from matih_lite.contracts.registry import AuditEntry, StageMove
from matih_lite.host import Host, load_config

NOW = 1_760_000_000_000


def open_host(folder, profile: str) -> Host:
    return Host(load_config(str(folder / "matih.toml")), profile)


def fill(store, artifacts=None, *, tenants=("default", "acme"), runs=6, points=40, accounts=True) -> None:
    """Records in tracking, registry (stages, approvals, audit), auth, lineage, for two tenants."""
    for t_index, tenant in enumerate(tenants):
        if accounts:
            store.create_tenant(tenant, created_at=NOW)
            store.create_user(tenant, "ada", roles=["owner"], created_at=NOW)
            store.create_token(tenant, "ada", token_id=f"tok-{tenant}", token_hash=f"hash-{tenant}",
                               created_at=NOW, name="laptop")
        exp = store.create_experiment(tenant, "churn", tags={"team": "growth"})
        for i in range(runs):
            run_id = f"{t_index}{i:031x}"
            store.create_run(tenant, exp.experiment_id, run_id=run_id, name=f"run-{i}", start_time=NOW + i,
                             user_id="ada", tags={"seed": str(i)})
            store.log_batch(tenant, run_id, params={"lr": str(0.1 * i), "depth": str(i)},
                            metrics=[Metric("auc", 0.5 + i / 100 + s / 10_000, NOW + s, s) for s in range(points)]
                            + [Metric("loss", float("nan"), NOW, 0)])
            store.update_run(tenant, run_id, status="FINISHED", end_time=NOW + 1000)
            if artifacts is not None:
                artifacts.put(f"{tenant}/{exp.experiment_id}/{run_id}/artifacts/model.bin", os.urandom(2048 + i))
        store.create_registered_model(tenant, "churn", owner="ada")
        for i in range(2):
            store.create_model_version(tenant, "churn", source=f"runs:/{t_index}{i:031x}/model",
                                       run_id=f"{t_index}{i:031x}", flavor="sklearn", created_by="ada")
        store.record_transition(tenant, "churn", moves=[StageMove(1, "Development", "Staging")],
                                audit=[AuditEntry(name="churn", action="version.transitioned", actor="ada",
                                                  timestamp=NOW, version=1, from_stage="Development",
                                                  to_stage="Staging")])
        store.create_approval(tenant, "churn", 1, approval_id=f"ap-{tenant}", requested_by="ada", requested_at=NOW,
                              reason="beats v0")
        store.put_lineage_node(tenant, "dataset:train", kind="dataset", at=NOW, name="train.parquet")
        store.put_lineage_node(tenant, f"run:{t_index}{0:031x}", kind="run", at=NOW)
        store.put_lineage_node(tenant, "model:churn/1", kind="model_version", at=NOW)
        store.add_lineage_edge(tenant, "dataset:train", f"run:{t_index}{0:031x}", kind="consumed_by", at=NOW)
        store.add_lineage_edge(tenant, f"run:{t_index}{0:031x}", "model:churn/1", kind="produced", at=NOW)
