"""matih-s3 against a real SeaweedFS: the artifacts contract kit unchanged, and what only S3 can show.

The kit runs with a 5 MiB multipart threshold and part size, so its large objects (40 MiB) go up
in eight parts, three at a time.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap

import msgspec
import pytest

from matih_lite.config import load_config
from matih_lite.errors import ConfigError, InvalidInput, NotFound, StoreError
from matih_lite.host import Host
from matih_lite.testing import ArtifactStoreContract
from matih_lite.testing.artifacts import MiB, PatternStream, SourceBroke

SMALL_PARTS = {"multipart_threshold": "5MiB", "part_size": "5MiB", "max_concurrency": 3}


class TestS3Contract(ArtifactStoreContract):
    LARGE_SIZE = 12 * MiB      # three parts
    STREAMED_SIZE = 64 * MiB   # thirteen parts, three in flight

    @pytest.fixture
    def store(self, make_store, shared_bucket, prefix):
        return make_store(shared_bucket, prefix=prefix, **SMALL_PARTS)


@pytest.mark.slow
class TestS3ContractAtBucketRoot(TestS3Contract):
    """The same kit with ``prefix = ""``: the whole bucket is the store."""

    @pytest.fixture
    def store(self, make_store, bucket):
        return make_store(bucket, **SMALL_PARTS)


# ---- checksums in object metadata ---------------------------------------------------------------
def test_sha256_and_size_are_object_metadata_written_with_the_object(make_store, shared_bucket, prefix, seaweed):
    store = make_store(shared_bucket, prefix=prefix, **SMALL_PARTS)
    small = b"weights" * 100
    store.put("m/model.bin", small)
    store.put("m/big.bin", PatternStream(12 * MiB))
    client = seaweed.client()
    head = client.head_object(Bucket=shared_bucket, Key=f"{prefix}/m/model.bin")
    assert head["Metadata"] == {"sha256": hashlib.sha256(small).hexdigest(), "size": str(len(small))}
    big = client.head_object(Bucket=shared_bucket, Key=f"{prefix}/m/big.bin")
    assert big["Metadata"]["sha256"] == PatternStream.sha256_of(12 * MiB)
    assert big["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 2 MiB
    assert big["ContentLength"] == 12 * MiB


@pytest.mark.parametrize("size", [4, 9 * MiB], ids=["small", "read-ahead"])
def test_bytes_changed_behind_the_stores_back_are_an_error_not_bad_data(make_store, shared_bucket, prefix, seaweed,
                                                                         size):
    store = make_store(shared_bucket, prefix=prefix)
    store.put("c/ok.bin", PatternStream(size).read())
    client = seaweed.client()
    meta = client.head_object(Bucket=shared_bucket, Key=f"{prefix}/c/ok.bin")["Metadata"]
    evil = bytearray(PatternStream(size).read())
    evil[size // 2] ^= 1
    client.put_object(Bucket=shared_bucket, Key=f"{prefix}/c/ok.bin", Body=bytes(evil), Metadata=meta)  # sha256 kept
    with pytest.raises(StoreError, match="is corrupt: its sha256 no longer matches"):
        store.get("c/ok.bin")
    with pytest.raises(StoreError, match="is corrupt"), store.open("c/ok.bin") as handle:
        while handle.read(MiB):
            pass


def test_a_truncated_object_is_refused_on_read(make_store, shared_bucket, prefix, seaweed):
    store = make_store(shared_bucket, prefix=prefix)
    store.put("t.bin", b"0123456789")
    client = seaweed.client()
    meta = client.head_object(Bucket=shared_bucket, Key=f"{prefix}/t.bin")["Metadata"]
    client.put_object(Bucket=shared_bucket, Key=f"{prefix}/t.bin", Body=b"01234", Metadata=meta)
    with pytest.raises(StoreError, match="5 bytes stored, 10 recorded"):
        store.open("t.bin")


def test_objects_written_by_other_tools_are_listed_and_read_unchecked(make_store, shared_bucket, prefix, seaweed):
    client = seaweed.client()
    client.put_object(Bucket=shared_bucket, Key=f"{prefix}/foreign/data.csv", Body=b"a,b\n1,2\n")
    client.put_object(Bucket=shared_bucket, Key=f"{prefix}/foreign/marker/", Body=b"")  # a console "folder"
    store = make_store(shared_bucket, prefix=prefix)
    assert [(e.path, e.size, e.sha256) for e in store.list("foreign", recursive=True)] == [
        ("foreign/data.csv", 8, None)]
    assert store.get("foreign/data.csv") == b"a,b\n1,2\n"


# ---- downloads -----------------------------------------------------------------------------------
def _download_threads() -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name == "matih-s3-download" and t.is_alive())


def test_a_download_reads_like_a_file_and_stops_its_read_ahead_when_closed_or_dropped(make_store, shared_bucket,
                                                                                      prefix):
    import gc

    from matih_lite.testing.processes import wait_for

    store = make_store(shared_bucket, prefix=prefix)
    lines = b"".join(f"line {i:07d}\n".encode() for i in range(600_000))  # 8.4 MB: read ahead on a thread
    store.put("log.txt", lines)
    with store.open("log.txt") as handle:
        assert handle.readline() == b"line 0000000\n"
        assert handle.read(7) == b"line 00" and handle.peek(1).startswith(b"00001\n")
        buffer = bytearray(100)
        assert handle.readinto(buffer) == 100 and bytes(buffer).startswith(b"00001\nline 0000002")
        rest = handle.read()
    assert len(rest) == len(lines) - 13 - 7 - 100 and rest.endswith(b"line 0599999\n")
    before = _download_threads()
    early = store.open("log.txt")
    early.read(10)
    early.close()
    dropped = store.open("log.txt")
    dropped.read(10)
    del dropped
    gc.collect()
    wait_for(lambda: _download_threads() <= before, timeout=10, what="the read-ahead threads to stop")


# ---- multipart: parallel, bounded, and never left behind -----------------------------------------
@pytest.mark.slow
def test_a_large_stream_uploads_in_parallel_parts_with_bounded_memory(make_store, shared_bucket, prefix, seaweed):
    """200 MiB from a stream that is made as it is read: at most max_concurrency + 1 parts in memory."""
    import tracemalloc

    store = make_store(shared_bucket, prefix=prefix, multipart_threshold="8MiB", part_size="8MiB", max_concurrency=4)
    size = 200 * MiB
    store.put("huge/warm-up.bin", PatternStream(20 * MiB))  # botocore loads its models on first use
    tracemalloc.start()
    try:
        info = store.put("huge/weights.bin", PatternStream(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.sha256 == PatternStream.sha256_of(size)
    # max_concurrency parts in flight and one being read
    assert peak < (4 + 1) * 8 * MiB + 2 * MiB, f"{peak / MiB:.0f} MiB held for a {size / MiB:.0f} MiB upload"
    head = seaweed.client().head_object(Bucket=shared_bucket, Key=f"{prefix}/huge/weights.bin")
    assert head["ETag"].strip('"').endswith("-25") and head["ContentLength"] == size
    with store.open("huge/weights.bin") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == info.sha256


@pytest.mark.slow
def test_an_interrupted_multipart_upload_is_aborted_not_left_as_debris(make_store, shared_bucket, prefix, seaweed):
    store = make_store(shared_bucket, prefix=prefix, **SMALL_PARTS)
    with pytest.raises(SourceBroke):
        store.put("cut/model.bin", PatternStream(30 * MiB, fail_after=17 * MiB))  # after three parts went up
    assert seaweed.multipart_uploads(shared_bucket, prefix) == []
    with pytest.raises(NotFound):
        store.stat("cut/model.bin")
    listed = seaweed.client().list_objects_v2(Bucket=shared_bucket, Prefix=f"{prefix}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_source_that_changes_between_hashing_and_sending_is_refused(make_store, shared_bucket, prefix, seaweed):
    """A seekable source is hashed, then sent: if it changed meanwhile, the upload is aborted."""
    store = make_store(shared_bucket, prefix=prefix, **SMALL_PARTS)

    class Shifting(io.BytesIO):
        reads = 0

        def seek(self, *args):
            Shifting.reads += 1
            if Shifting.reads == 1:  # the seek back after hashing: someone rewrites the file meanwhile
                self.getbuffer()[6 * MiB] ^= 0xFF
            return super().seek(*args)

    data = PatternStream(12 * MiB).read()
    with pytest.raises(InvalidInput, match="changed while it was being stored"):
        store.put("moving.bin", Shifting(data))
    assert seaweed.multipart_uploads(shared_bucket, prefix) == []
    with pytest.raises(NotFound):
        store.stat("moving.bin")


@pytest.mark.slow
def test_a_stream_that_cannot_seek_is_spooled_to_disk_not_memory(make_store, shared_bucket, prefix):
    import tracemalloc

    store = make_store(shared_bucket, prefix=prefix, **SMALL_PARTS)

    class Pipe(PatternStream):
        def seekable(self):
            return False

    store.put("warm-up.bin", Pipe(12 * MiB))  # botocore loads its models on first use
    tracemalloc.start()
    try:
        info = store.put("piped.bin", Pipe(30 * MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.sha256 == PatternStream.sha256_of(30 * MiB)
    assert peak < (3 + 1) * 5 * MiB + 2 * MiB, f"{peak / MiB:.0f} MiB held"


def test_more_than_10000_parts_raise_the_part_size(make_store, shared_bucket, prefix):
    store = make_store(shared_bucket, prefix=prefix, part_size="5MiB")
    assert store._part_size(10 * MiB) == 5 * MiB
    assert store._part_size(100_000 * MiB) == 10 * MiB  # 10,000 parts of 10 MiB
    assert store._part_size(2 * 1024**4) % MiB == 0 and 2 * 1024**4 / store._part_size(2 * 1024**4) <= 10_000


# ---- the tree rule at S3's speed ------------------------------------------------------------------
def test_a_refused_single_put_is_undone_without_touching_the_file_in_the_way(make_store, shared_bucket, prefix,
                                                                              seaweed):
    store = make_store(shared_bucket, prefix=prefix)
    store.put("run/model", b"a file")
    with pytest.raises(InvalidInput, match="inside 'run/model', which is a file"):
        store.put("run/model/MLmodel", b"x")
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=shared_bucket, Prefix=f"{prefix}/")["Contents"]]
    assert keys == [f"{prefix}/run/model"]
    assert store.list("run") == [store.stat("run/model")]


# ---- health and errors ----------------------------------------------------------------------------
def test_health_says_the_bucket_answers(make_store, shared_bucket, seaweed):
    health = make_store(shared_bucket, prefix="x/y").health()
    assert health.ok and health.detail == f"s3://{shared_bucket}/x/y at {seaweed.endpoint_url}"


def test_health_says_why_not(make_store, seaweed, shared_bucket):
    missing = make_store("no-such-bucket-here").health()
    assert not missing.ok and "bucket 'no-such-bucket-here' does not exist" in missing.detail
    wrong_key = make_store(shared_bucket, secret_access_key="not-the-secret").health()
    assert not wrong_key.ok and "refused the credentials" in wrong_key.detail
    from matih_s3.plugin import S3Settings
    from matih_s3.store import S3ArtifactStore

    from matih_lite.testing.processes import free_port

    nobody = S3ArtifactStore(S3Settings(bucket="b-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
                                        access_key_id="k", secret_access_key="s"))
    down = nobody.health()
    assert not down.ok and "cannot reach http://127.0.0.1:" in down.detail and "is the server up?" in down.detail


def test_driver_errors_are_store_errors_saying_what_to_do(make_store, shared_bucket):
    store = make_store("no-such-bucket-here", max_attempts=1)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist") as caught:
        store.put("a.txt", b"x")
    assert caught.value.status == 503 and caught.value.retry_after
    assert caught.value.__cause__ is not None  # raised from the botocore error
    denied = make_store(shared_bucket, secret_access_key="wrong", max_attempts=1)
    with pytest.raises(StoreError, match="refused the credentials"):
        denied.get("a.txt")


# ---- settings, discovery, lazy import -------------------------------------------------------------
@pytest.mark.parametrize(("settings", "message"), [
    ({"bucket": "Bad_Bucket"}, "bucket: 'Bad_Bucket' is not a valid S3 bucket name"),
    ({"bucket": "ok-bucket", "prefix": "../up"}, "prefix: artifact path '../up' contains '..'"),
    ({"bucket": "ok-bucket", "access_key_id": "k"}, "give both or neither"),
    ({"bucket": "ok-bucket", "part_size": "1MiB"}, "part_size: between 5 MiB and 5 GiB"),
    ({"bucket": "ok-bucket", "multipart_threshold": "lots"}, "'lots' is not a size"),
    ({"bucket": "ok-bucket", "endpoint_url": "minio:9000"}, "must start with http:// or https://"),
    ({"bucket": "ok-bucket", "max_concurrency": 0}, "Expected `int` >= 1"),
    ({"bucket": "ok-bucket", "bukket": "x"}, "unknown field `bukket`"),
])
def test_bad_settings_are_refused_naming_the_key(settings, message):
    from matih_s3.plugin import S3Settings

    with pytest.raises(msgspec.ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        msgspec.convert(settings, S3Settings, strict=False)


def test_sizes_take_units_and_an_empty_endpoint_means_aws():
    from matih_s3.plugin import S3Settings

    s = msgspec.convert({"bucket": "ml-artifacts", "multipart_threshold": "64MB", "part_size": 16 * MiB,
                         "endpoint_url": "", "prefix": "/team//a/"[1:]}, S3Settings, strict=False)
    assert (s.multipart_threshold, s.part_size, s.endpoint_url, s.prefix) == (64_000_000, 16 * MiB, None, "team/a")
    assert s.where == "s3://ml-artifacts/team/a"


def test_a_profile_selects_s3_through_the_entry_point(tmp_path, seaweed, shared_bucket, prefix):
    (tmp_path / "matih.toml").write_text(
        f"[profiles.cluster]\nartifacts = {seaweed.artifacts_toml(shared_bucket, prefix=prefix)}\n")
    host = Host(load_config(tmp_path / "matih.toml"), "cluster")
    try:
        assert host.active("artifacts").distribution.startswith("matih-s3")
        host.artifacts.put("a/b.txt", b"hi")
        assert host.health(["artifacts"])["artifacts"].ok
        assert seaweed.client().get_object(Bucket=shared_bucket, Key=f"{prefix}/a/b.txt")["Body"].read() == b"hi"
    finally:
        host.close()


def test_a_bad_setting_in_matih_toml_names_its_key_path(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.cluster]\nartifacts = { backend = "s3", bucket = "ml-artifacts", '
                                         'part_size = "1MiB" }\n')
    with pytest.raises(ConfigError, match=r"profiles\.cluster\.artifacts: part_size: between 5 MiB and 5 GiB"):
        Host(load_config(tmp_path / "matih.toml"), "cluster")


@pytest.mark.slow
def test_boto3_loads_on_the_first_call_not_at_start(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.cluster]\nartifacts = { backend = "s3", bucket = "ml-artifacts", '
                                         'endpoint_url = "http://127.0.0.1:9" }\n')
    code = textwrap.dedent(f"""
        import sys
        from matih_lite.config import load_config
        from matih_lite.host import Host
        host = Host(load_config({str(tmp_path / "matih.toml")!r}), "cluster")
        store = host.artifacts
        assert "boto3" not in sys.modules and "botocore" not in sys.modules, "imported at start"
        print(store.health().ok, "boto3" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_secrets_are_masked_in_config_show(tmp_path):
    from matih_lite.config import mask_secrets

    shown = mask_secrets({"backend": "s3", "bucket": "b", "access_key_id": "AKIA", "secret_access_key": "hush",
                          "session_token": "tok"})
    assert shown["secret_access_key"] == "****" and shown["session_token"] == "****"
