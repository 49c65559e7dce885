"""What a run records about where it ran, and that recording it never fails the run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import matih_lite as ml
from matih_lite.tracking import capture
from matih_lite.tracking.capture import GIT_DIFF_ARTIFACT, MAX_DIFF_BYTES, capture_environment


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "init.defaultBranch=main", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "train.py").write_text("print('v1')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_python_os_cpu_and_packages_are_recorded(hermetic):
    found = capture_environment(seeds={"matih.seed": 7})
    tags = found.tags
    assert tags["matih.python.version"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["matih.cpu_count"] == str(os.cpu_count())
    assert tags["matih.os"] and tags["matih.platform"]
    assert tags["matih.seed"] == "7"
    assert "matih.capture_error" not in tags
    packages = found.environment.splitlines()
    assert any(line.startswith("matih-lite==") for line in packages)
    assert any(line.startswith("msgspec==") for line in packages)
    names = [line.split("==")[0] for line in packages]
    assert names == sorted(names) and tags["matih.packages"] == str(len(packages))
    assert not any(k.startswith(("matih.git", "mlflow.source.git")) for k in tags)  # not a repository


def test_git_commit_branch_and_clean_state(repo):
    found = capture_environment(cwd=repo)
    head = git(repo, "rev-parse", "HEAD")
    assert found.tags["matih.git.commit"] == found.tags["mlflow.source.git.commit"] == head
    assert found.tags["matih.git.branch"] == found.tags["mlflow.source.git.branch"] == "main"
    assert found.tags["matih.git.dirty"] == "false"
    assert GIT_DIFF_ARTIFACT not in found.artifacts


def test_a_dirty_tree_stores_its_diff_from_head(repo):
    (repo / "train.py").write_text("print('v2')\n")
    found = capture_environment(cwd=repo)
    assert found.tags["matih.git.dirty"] == "true"
    diff = found.artifacts[GIT_DIFF_ARTIFACT].decode()
    assert "-print('v1')" in diff and "+print('v2')" in diff
    assert "matih.git.diff_truncated" not in found.tags


def test_a_huge_diff_is_cut_at_one_mebibyte(repo):
    (repo / "train.py").write_text("x = 1\n" * 300_000)  # ~1.8 MB of changes
    found = capture_environment(cwd=repo)
    assert len(found.artifacts[GIT_DIFF_ARTIFACT]) == MAX_DIFF_BYTES
    assert found.tags["matih.git.diff_truncated"] == "true"


def test_credentials_in_the_remote_url_are_not_recorded(repo):
    git(repo, "remote", "add", "origin", "https://ana:token123@github.com/acme/churn.git")
    found = capture_environment(cwd=repo)
    assert found.tags["mlflow.source.git.repoURL"] == "https://github.com/acme/churn.git"


def test_a_detached_head_has_no_branch(repo):
    git(repo, "checkout", "-q", "--detach")
    found = capture_environment(cwd=repo)
    assert "matih.git.branch" not in found.tags and found.tags["matih.git.commit"]


def test_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559'\necho 'NVIDIA H100 80GB HBM3, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    capture._nvidia_smi_tags.cache_clear()
    try:
        tags = capture_environment(artifacts=False).tags
    finally:
        capture._nvidia_smi_tags.cache_clear()
    assert tags["matih.gpu"] == "2 x NVIDIA H100 80GB HBM3 (81559 MiB)"
    assert tags["matih.gpu_count"] == "2"


def test_a_failing_probe_becomes_a_tag_not_an_error(monkeypatch):
    def broken(out):
        raise OSError("no /proc here")

    monkeypatch.setattr(capture, "_platform", broken)
    found = capture_environment()
    assert "platform: OSError: no /proc here" in found.tags["matih.capture_error"]
    assert found.tags["matih.python.version"]  # the other probes still ran


def test_start_run_stores_the_capture(repo, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "train.py").write_text("print('v3')\n")
    with ml.start_run(experiment="captured") as run:
        with ml.start_run(nested=True) as child:
            pass
    client = ml.get_client()
    stored = client.get_run(run.run_id)
    assert stored.tags["mlflow.source.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert stored.tags["matih.git.dirty"] == "true"
    assert b"+print('v3')" in client.read_artifact(run.run_id, GIT_DIFF_ARTIFACT)
    assert "matih-lite==" in client.read_environment(stored.tags["matih.environment"])
    child_run = client.get_run(child.run_id)
    assert child_run.tags["matih.python.version"]  # children get the tags...
    assert client.list_artifacts(child.run_id) == []  # ...the parent keeps the files


def test_capture_false_records_nothing(hermetic):
    with ml.start_run(experiment="plain", capture=False) as run:
        pass
    stored = ml.get_client().get_run(run.run_id)
    assert not any(k.startswith("matih.") for k in stored.tags)
    assert ml.get_client().list_artifacts(run.run_id) == []


def test_a_capture_that_cannot_store_its_files_does_not_fail_the_run(hermetic, monkeypatch):
    from matih_lite.errors import StoreError
    from matih_lite.tracking.client import Client

    def refuse(self, run_id, path, data):
        raise StoreError("disk full")

    def refuse_environment(self, text):
        raise StoreError("disk full")

    monkeypatch.setattr(Client, "log_artifact_bytes", refuse)
    monkeypatch.setattr(Client, "store_environment", refuse_environment)
    with ml.start_run(experiment="full-disk") as run:
        ml.log_param("ok", 1)
    stored = ml.get_client().get_run(run.run_id)
    assert stored.status == "FINISHED"
    assert "disk full" in stored.tags["matih.capture_error"]


def test_runs_share_one_stored_environment(hermetic):
    with ml.start_run(experiment="env") as a:
        pass
    with ml.start_run(experiment="env") as b:
        pass
    client = ml.get_client()
    sha_a = client.get_run(a.run_id).tags["matih.environment"]
    assert sha_a == client.get_run(b.run_id).tags["matih.environment"]
    assert "msgspec==" in client.read_environment(sha_a)
    stored = list((hermetic / ".matih" / "artifacts" / "default" / "_environments").iterdir())
    assert [p.name for p in stored] == [f"{sha_a}.txt"]
