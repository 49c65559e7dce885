"""The SDK writing straight into this folder's store (no MATIH_URL)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sdk_scenarios import SdkScenarios

import matih_lite as ml
from matih_lite.errors import NotFound


class TestEmbedded(SdkScenarios):
    @pytest.fixture
    def transport(self, hermetic) -> str:
        return "embedded"


def test_runs_land_in_the_working_folders_store(hermetic):
    with ml.start_run(experiment="churn", capture=False):
        ml.log_metric("auc", 0.9)
    assert (hermetic / ".matih" / "matih.db").exists()
    assert ml.get_client().location == str(hermetic / ".matih")


def test_a_new_working_folder_gets_its_own_store(hermetic, tmp_path, monkeypatch):
    with ml.start_run(experiment="here", capture=False):
        pass
    first = ml.get_client()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert ml.get_client() is not first
    with pytest.raises(NotFound):
        ml.get_client().get_experiment_by_name("here")


def test_importing_matih_lite_loads_no_heavy_library():
    code = ("import sys, matih_lite, matih_lite.sdk; "
            "heavy = [m for m in ('httpx', 'litestar', 'numpy', 'sqlite_utils', 'pluggy', 'uvicorn', 'pandas') "
            "if m in sys.modules]; print(heavy); assert not heavy; "
            "assert callable(matih_lite.start_run) and matih_lite.Client.__name__ == 'Client'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_sdk_function_is_resolved_once_then_a_plain_attribute():
    from matih_lite import sdk

    assert ml.log_metric is sdk.log_metric
    assert vars(ml)["log_metric"] is sdk.log_metric  # the module's __getattr__ is not called again


def test_the_public_surface_is_importable():
    for name in sorted(ml._SDK_NAMES):
        assert callable(getattr(ml, name)), name
    with pytest.raises(AttributeError):
        ml.no_such_function  # noqa: B018
