"""The :class:`~matih_lite.contracts.ArtifactStore` contract over an S3 bucket and prefix, with boto3.

- **Checksums.** Every object carries its sha256 and size as user metadata (``x-amz-meta-sha256``,
  ``x-amz-meta-size``), written with the object itself, so an object never exists without them.
  Reads hash as they stream and raise StoreError at the end when the bytes no longer match.
  Because S3 wants the metadata when an upload begins, a file is hashed before it is sent (a
  second read of a seekable source, hashed again while it uploads to notice a source that changed).
- **Multipart.** Above ``multipart_threshold`` parts of ``part_size`` are read one after another
  from the source and uploaded ``max_concurrency`` at a time; at most ``max_concurrency + 1`` parts
  are in memory, whatever the size of the file. A stream that cannot seek is spooled to a
  temporary file (on disk, not in memory) while it is hashed.
- **All or nothing.** S3 makes an object visible only when its single PUT or its
  CompleteMultipartUpload succeeds; a put that fails on the way (source error, server gone,
  Ctrl-C) aborts its multipart upload, and an abort that could not reach the server is retried
  on the next put or health check. Uploads abandoned by a killed process are aborted after
  ``abandoned_upload_hours``.
- **One tree.** As in a folder on disk, a path is a file or a folder, never both: a put under a
  file or onto a folder is refused with InvalidInput. The check runs beside the upload; a single
  PUT that turns out to be refused is deleted again (by the rule it could not have replaced
  anything), a multipart one is aborted before it completes.
- **Listings** page through ListObjectsV2 (1,000 keys a page) and HEAD every listed file for its
  sha256 (ListObjectsV2 does not return metadata), ``max_concurrency`` at a time. Folders are
  prefixes that hold at least one object (SeaweedFS keeps empty folders as prefixes for a while).

Every driver error becomes ``StoreError(...) from exc`` (503 with Retry-After), with what to check.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import queue
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, BinaryIO

from matih_lite.contracts import Health
from matih_lite.contracts.artifacts import ArtifactInfo, clean_path
from matih_lite.errors import InvalidInput, MatihError, NotFound, StoreError
from matih_s3.plugin import MiB, S3Settings

log = logging.getLogger("matih_s3")

SHA_META = "sha256"
SIZE_META = "size"
MAX_PARTS = 10_000
CHUNK = MiB
"""Read size when hashing a source and when streaming a download."""
PREFETCH_CHUNKS = 4
"""Chunks a download reads ahead of its caller (bodies over two chunks)."""
LIST_PAGE = 1000
DELETE_BATCH = 1000
"""DeleteObjects takes at most 1,000 keys."""
FOLDER_CACHE = 4096
FOLDER_TTL = 30.0


class HashedChunks:
    """A download body as chunks of CHUNK bytes, hashed as they arrive; at EOF a size or sha256 mismatch raises."""

    def __init__(self, body: Any, expected_sha: str | None, expected_size: int, path: str,
                 wrap: Callable[[BaseException, str, str], StoreError]) -> None:
        self.body = body
        self.hash = hashlib.sha256()
        self.expected_sha = expected_sha
        self.expected_size = expected_size
        self.seen = 0
        self.path = path
        self.wrap = wrap

    def pull(self) -> bytes:
        """The next chunk; ``b""`` at EOF once the bytes are verified. Raises StoreError."""
        try:
            data = self.body.read(CHUNK)
        except MatihError:
            raise
        except Exception as exc:  # urllib3 and botocore both raise mid-stream when the server goes away
            raise self.wrap(exc, "download", self.path) from exc
        if data:
            self.hash.update(data)
            self.seen += len(data)
            return data
        if self.seen != self.expected_size:
            raise StoreError(f"artifact {self.path!r} arrived with {self.seen} bytes, not the {self.expected_size} "
                             "stored; read it again")
        if self.expected_sha and self.hash.hexdigest() != self.expected_sha:
            raise StoreError(f"artifact {self.path!r} is corrupt: its sha256 no longer matches the one recorded")
        return b""

    def close(self) -> None:
        try:
            self.body.close()
        except Exception:  # closing a body the server already dropped
            pass


class Prefetch:
    """Pulls a body's chunks on a thread of its own, ``PREFETCH_CHUNKS`` ahead at most, so the network and the
    hashing overlap with the caller's own work. It holds no reference to the reader: a reader dropped without
    being closed stops it (through ``IOBase.__del__``)."""

    def __init__(self, chunks: HashedChunks) -> None:
        self.chunks = chunks
        self.queue: queue.Queue = queue.Queue(maxsize=PREFETCH_CHUNKS)
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="matih-s3-download", daemon=True).start()

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                data = self.chunks.pull()
                self._hand_over(data)
                if not data:
                    return
        except BaseException as exc:
            self._hand_over(exc)

    def _hand_over(self, item: bytes | BaseException) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def pull(self) -> bytes:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopped.set()
        self.chunks.close()


class VerifiedDownload(io.BufferedIOBase):
    """What ``open()`` returns: the object's bytes, streamed and checked (StoreError at EOF on a mismatch).

    ``read(n)`` hands out the chunks as they came (no copy when ``n`` is a chunk, as ``shutil.copyfileobj``
    asks); ``peek`` makes ``readline`` cheap."""

    def __init__(self, chunks: HashedChunks) -> None:
        super().__init__()
        self._source: HashedChunks | Prefetch = Prefetch(chunks) if chunks.expected_size > 2 * CHUNK else chunks
        self._chunk = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def _refill(self) -> bool:
        if self._pos < len(self._chunk):
            return True
        if self._eof:
            return False
        try:
            self._chunk, self._pos = self._source.pull(), 0
        except BaseException:
            self._eof, self._chunk, self._pos = True, b"", 0
            raise
        if not self._chunk:
            self._eof = True
            return False
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        out: list[bytes] = []
        want = -1 if size is None or size < 0 else size
        while want != 0 and self._refill():
            take = len(self._chunk) - self._pos if want < 0 else min(want, len(self._chunk) - self._pos)
            whole = self._pos == 0 and take == len(self._chunk)
            out.append(self._chunk if whole else self._chunk[self._pos:self._pos + take])
            self._pos += take
            if want > 0:
                want -= take
        return out[0] if len(out) == 1 else b"".join(out)

    def read1(self, size: int = -1) -> bytes:
        self._checkClosed()
        if not self._refill():
            return b""
        end = len(self._chunk) if size is None or size < 0 else min(len(self._chunk), self._pos + size)
        data = self._chunk[self._pos:end]
        self._pos = end
        return data

    def peek(self, size: int = 0) -> bytes:
        self._checkClosed()
        return self._chunk[self._pos:] if self._refill() else b""

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class S3ArtifactStore:
    """Artifacts as objects ``<prefix>/<path>`` in one bucket; see the module docstring for the rules."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.base = f"{settings.prefix}/" if settings.prefix else ""
        self.location = f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
        self._lock = threading.Lock()
        self._client: Any = None
        self._probe: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending_aborts: set[tuple[str, str]] = set()
        self._pending_lock = threading.Lock()
        self._swept = settings.abandoned_upload_hours == 0
        self._folders: OrderedDict[str, float] = OrderedDict()
        """Folders seen to be folders lately (path -> monotonic time): a put into one skips re-checking above it."""
        self._folders_lock = threading.Lock()

    # ---- the driver ---------------------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any]:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client, self._probe = self._build_clients()
        return self._client, self._probe

    def _build_clients(self) -> tuple[Any, Any]:
        import boto3
        from botocore.config import Config

        s = self.settings
        style = s.addressing_style or ("path" if s.endpoint_url else "auto")
        region = s.region or ("us-east-1" if s.endpoint_url else None)
        session = boto3.session.Session(aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                                        aws_session_token=s.session_token, region_name=region)
        common = {"s3": {"addressing_style": style}, "user_agent_extra": "matih-lite",
                  # parts in flight, their listings' HEADs, and the service's own request threads
                  "max_pool_connections": 2 * s.max_concurrency + 16}
        main = Config(connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
                      retries={"mode": "standard", "max_attempts": s.max_attempts}, **common)
        # /ready and doctor ask often and must answer fast: one attempt, short timeouts.
        probe = Config(connect_timeout=min(s.connect_timeout, 2.0), read_timeout=min(s.read_timeout, 5.0),
                       retries={"mode": "standard", "max_attempts": 1}, **common)
        kwargs = {"endpoint_url": s.endpoint_url, "verify": s.verify}
        return session.client("s3", config=main, **kwargs), session.client("s3", config=probe, **kwargs)

    @property
    def _s3(self) -> Any:
        return self._clients()[0]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    # +2: the tree check of a put runs beside its parts
                    self._executor = ThreadPoolExecutor(self.settings.max_concurrency + 2,
                                                        thread_name_prefix="matih-s3")
        return self._executor

    def close(self) -> None:
        """Stop the worker threads (uploads in progress finish first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _error(self, exc: BaseException, action: str, rel: str = "") -> StoreError:
        """A StoreError for a driver exception, saying what to check."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        where = self.settings.where
        what = f"S3 {action}" + (f" of {rel!r}" if rel else "")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StoreError(f"{what} failed: bucket {self.bucket!r} does not exist ({where}); create it "
                                  "or fix 'bucket'")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
                return StoreError(f"{what} failed: {where} refused the credentials ({code}); check access_key_id "
                                  "and secret_access_key, or the AWS credential chain, and the bucket's policy")
            message = error.get("Message") or str(exc)
            return StoreError(f"{what} failed: {code or status} {message} ({where})")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"{what} failed: no AWS credentials; set access_key_id and secret_access_key in the "
                              "artifacts settings, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, (ConnectionError, ReadTimeoutError)):
            return StoreError(f"{what} failed: cannot reach {self.settings.endpoint_url or 'S3'} "
                              f"({type(exc).__name__}: {exc}); is the server up?")
        return StoreError(f"{what} failed: {type(exc).__name__}: {exc} ({where})")

    @contextmanager
    def _driver(self, action: str, rel: str = "") -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, action, rel) from exc

    def _key(self, rel: str) -> str:
        return self.base + rel

    def _folder(self, rel: str) -> str:
        """The key prefix of everything inside folder ``rel`` (the whole store for ``""``)."""
        return self.base + (f"{rel}/" if rel else "")

    def _head(self, rel: str, action: str = "stat") -> dict[str, Any] | None:
        """The HEAD answer for a file, or None when there is no object at that key."""
        from botocore.exceptions import ClientError

        with self._driver(action, rel):
            try:
                return self._s3.head_object(Bucket=self.bucket, Key=self._key(rel))
            except ClientError as exc:
                if _status(exc) == 404:
                    return None
                raise

    def _has_children(self, rel: str, *, besides: str | None = None, action: str = "list") -> bool:
        """Whether folder ``rel`` holds an object (other than the key ``besides``)."""
        with self._driver(action, rel):
            found = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._folder(rel), MaxKeys=2)
        return any(o["Key"] != besides and not o["Key"].endswith("/") for o in found.get("Contents") or ())

    def _info(self, rel: str, head: dict[str, Any]) -> ArtifactInfo:
        meta = head.get("Metadata") or {}
        return ArtifactInfo(rel, int(head.get("ContentLength") or 0), meta.get(SHA_META) or None)

    # ---- health -------------------------------------------------------------------------------
    def health(self) -> Health:
        """Whether the bucket answers HEAD with these credentials, and if not, why."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            _, probe = self._clients()
            probe.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) == 404:
                return Health(False, f"bucket {self.bucket!r} does not exist ({self.settings.where}); create it "
                                     "or fix 'bucket'")
            return Health(False, self._error(exc, "head bucket").message)
        except BotoCoreError as exc:
            return Health(False, self._error(exc, "head bucket").message)
        self._tidy()
        return Health(True, self.settings.where)

    def _retry_aborts(self) -> None:
        with self._pending_lock:
            pending = list(self._pending_aborts)
        for key, upload_id in pending:
            self._abort(key, upload_id)

    def _tidy(self) -> None:
        """Abort uploads whose abort failed earlier, and (once) uploads abandoned by a killed process."""
        self._retry_aborts()
        if self._swept:
            return
        self._swept = True
        cutoff = time.time() - self.settings.abandoned_upload_hours * 3600
        try:
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.base)
            for page in pages:
                for upload in page.get("Uploads") or ():
                    if upload["Initiated"].timestamp() < cutoff:
                        log.info("aborting multipart upload of %s begun %s and never finished",
                                 upload["Key"], upload["Initiated"])
                        self._abort(upload["Key"], upload["UploadId"])
        except Exception as exc:  # tidying is a courtesy: never fail a health check for it
            log.warning("could not look for abandoned multipart uploads in %s: %s", self.location, exc)

    # ---- writing ------------------------------------------------------------------------------
    def put(self, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        rel = clean_path(path)
        key = self._key(rel)
        s = self.settings
        check = self._pool().submit(self._tree_problem, rel)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                view = memoryview(data).cast("B")
                size, sha = view.nbytes, hashlib.sha256(view).hexdigest()
                if size <= s.multipart_threshold:
                    self._put_single(rel, key, data if isinstance(data, bytes) else bytes(view), sha, check)
                else:
                    self._put_multipart(rel, key, size, sha, _view_parts(view, self._part_size(size)), check,
                                        rehash=False)
                info = ArtifactInfo(rel, size, sha)
            else:
                info = self._put_stream(rel, key, data, check)
        finally:
            check.cancel()
        self._remember_folders_above(rel)
        if self._pending_aborts:  # the server answers again: clear what an earlier failure left
            self._retry_aborts()
        return info

    # A put into a folder this store has just seen (by its own puts) does not look above it again.
    # Another replica that deletes that folder and writes a file of its name within FOLDER_TTL
    # could slip a file under it past this store: a race of seconds across processes.
    def _remember_folders_above(self, rel: str) -> None:
        now = time.monotonic()
        with self._folders_lock:
            self._folders.pop(rel, None)  # a file now
            parent = rel.rpartition("/")[0]
            while parent:
                self._folders[parent] = now
                self._folders.move_to_end(parent)
                parent = parent.rpartition("/")[0]
            while len(self._folders) > FOLDER_CACHE:
                self._folders.popitem(last=False)

    def _known_folder(self, rel: str) -> bool:
        with self._folders_lock:
            seen = self._folders.get(rel)
        return seen is not None and time.monotonic() - seen < FOLDER_TTL

    def _forget_folders(self, rel: str) -> None:
        """After a delete of ``rel``: folders above it may be gone, and so is everything below it."""
        with self._folders_lock:
            if not rel:
                self._folders.clear()
                return
            for folder in list(self._folders):
                if folder == rel or folder.startswith(rel + "/") or rel.startswith(folder + "/"):
                    del self._folders[folder]

    def _put_stream(self, rel: str, key: str, source: BinaryIO, check: Future) -> ArtifactInfo:
        s = self.settings
        seekable = _seekable(source)
        start = source.tell() if seekable else 0
        head = _read_head(source, s.multipart_threshold + 1)
        size = sum(len(c) for c in head)
        if size <= s.multipart_threshold:  # small: read once, hashed once, one PUT
            body = head[0] if len(head) == 1 else b"".join(head)
            sha = hashlib.sha256(body).hexdigest()
            self._put_single(rel, key, body, sha, check)
            return ArtifactInfo(rel, size, sha)
        digest = hashlib.sha256()
        for chunk in head:
            digest.update(chunk)
        if seekable:
            # S3 takes the metadata when the upload begins: hash to the end, then send from the start.
            del head
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            source.seek(start)
            sha = digest.hexdigest()
            self._put_multipart(rel, key, size, sha, _stream_parts(source, size, self._part_size(size)), check,
                                rehash=True)
            return ArtifactInfo(rel, size, sha)
        # Unknown length and no seeking back: spool to disk (never to memory) while hashing.
        with tempfile.TemporaryFile(prefix="matih-s3-") as spool:
            spool.writelines(head)
            del head
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
            sha = digest.hexdigest()
            self._put_multipart(rel, key, size, sha, _stream_parts(spool, size, self._part_size(size)), check,
                                rehash=False)
        return ArtifactInfo(rel, size, sha)

    def _part_size(self, size: int) -> int:
        """The configured part size, raised (to whole MiB) when the file would need more than 10,000 parts."""
        needed = math.ceil(size / MAX_PARTS)
        return max(self.settings.part_size, math.ceil(needed / MiB) * MiB)

    def _metadata(self, sha: str, size: int) -> dict[str, str]:
        return {SHA_META: sha, SIZE_META: str(size)}

    def _put_single(self, rel: str, key: str, body: bytes | bytearray, sha: str, check: Future) -> None:
        if check.done():
            _refuse(check.result())
        try:
            with self._driver("put", rel):
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=self._metadata(sha, len(body)),
                                    ContentType="application/octet-stream")
        except StoreError:
            _refuse(_problem_if_known(check))  # some servers refuse a file over a folder themselves: say why
            raise
        problem = check.result()
        if problem:
            # By the one-tree rule nothing was at this key before, so deleting it restores the store.
            try:
                self._s3.delete_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                log.warning("could not remove %s, refused as %s: %s", key, problem, exc)
            _refuse(problem)

    def _put_multipart(self, rel: str, key: str, size: int, sha: str, parts: Iterator[bytes | bytearray],
                       check: Future, *,
                       rehash: bool) -> None:
        if check.done():
            _refuse(check.result())
        with self._driver("put", rel):
            upload_id = self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=self._metadata(sha, size),
                ContentType="application/octet-stream")["UploadId"]
        in_flight: deque[tuple[int, Future]] = deque()
        done: list[dict[str, Any]] = []
        try:
            digest = hashlib.sha256() if rehash else None
            sent = 0
            for number, part in enumerate(parts, 1):
                if digest is not None:
                    digest.update(part)
                sent += len(part)
                while len(in_flight) >= self.settings.max_concurrency:
                    n, future = in_flight.popleft()
                    done.append({"PartNumber": n, "ETag": future.result()})
                in_flight.append((number, self._pool().submit(self._upload_part, rel, key, upload_id, number, part)))
                del part
            while in_flight:
                n, future = in_flight.popleft()
                done.append({"PartNumber": n, "ETag": future.result()})
            if sent != size or (digest is not None and digest.hexdigest() != sha):
                raise InvalidInput(f"the source of artifact {rel!r} changed while it was being stored; "
                                   "store it again once it is complete")
            _refuse(check.result())
            with self._driver("put", rel):
                self._s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": done})
        except BaseException:
            for _, future in in_flight:
                future.cancel()
            for _, future in in_flight:
                try:
                    future.result()
                except BaseException:
                    pass
            self._abort(key, upload_id)
            raise

    def _upload_part(self, rel: str, key: str, upload_id: str, number: int, part: bytes | bytearray) -> str:
        with self._driver("put", rel):
            return self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                        Body=part)["ETag"]

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; if the server cannot be reached, remember it and try again later."""
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            if _status(exc) != 404:  # 404: already gone (aborted, or swept by a lifecycle rule)
                log.warning("could not abort the multipart upload of %s (%s); will retry", key, exc)
                with self._pending_lock:
                    self._pending_aborts.add((key, upload_id))
                return
        with self._pending_lock:
            self._pending_aborts.discard((key, upload_id))

    def _tree_problem(self, rel: str) -> str | None:
        """Why ``rel`` cannot be a file: it is a folder, or a folder above it is a file. None when it can be."""
        if self._has_children(rel, action="put"):
            return f"artifact path {rel!r} is a folder"
        parent = rel.rpartition("/")[0]
        if not parent:
            return None
        # Another file in the same folder proves, by this same rule, that no folder above is a file.
        if self._known_folder(parent) or self._has_children(parent, besides=self._key(rel), action="put"):
            return None
        parts = parent.split("/")
        for depth in range(len(parts), 0, -1):
            above = "/".join(parts[:depth])
            if self._head(above, action="put") is not None:
                return f"artifact path {rel!r} is inside {above!r}, which is a file"
        return None

    # ---- reading ------------------------------------------------------------------------------
    def open(self, path: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        rel = clean_path(path)
        with self._driver("download", rel):
            try:
                found = self._s3.get_object(Bucket=self.bucket, Key=self._key(rel))
            except ClientError as exc:
                if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                    raise NotFound(f"artifact {rel!r} does not exist") from None
                raise
        size = int(found.get("ContentLength") or 0)
        meta = found.get("Metadata") or {}
        recorded = meta.get(SIZE_META)
        if recorded is not None and recorded.isdigit() and int(recorded) != size:
            found["Body"].close()
            raise StoreError(f"artifact {rel!r} is corrupt: {size} bytes stored, {recorded} recorded")
        chunks = HashedChunks(found["Body"], meta.get(SHA_META) or None, size, rel, self._error)
        return VerifiedDownload(chunks)  # type: ignore[return-value]

    def get(self, path: str) -> bytes:
        with self.open(path) as handle:
            return handle.read()

    def stat(self, path: str) -> ArtifactInfo:
        rel = clean_path(path, allow_root=True)
        if not rel:
            return ArtifactInfo("", 0, None, True)
        head = self._head(rel)
        if head is not None:
            return self._info(rel, head)
        if self._has_children(rel):
            return ArtifactInfo(rel, 0, None, True)
        raise NotFound(f"artifact {rel!r} does not exist")

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": LIST_PAGE}}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        with self._driver("list", prefix[len(self.base):].rstrip("/")):
            yield from self._s3.get_paginator("list_objects_v2").paginate(**kwargs)

    def _relative(self, key: str) -> str | None:
        """The artifact path of a key, or None for keys no artifact path names (folder markers, ``a//b``)."""
        if not key.startswith(self.base) or key.endswith("/"):
            return None
        rel = key[len(self.base):]
        try:
            return rel if clean_path(rel) == rel else None
        except InvalidInput:
            return None

    def list(self, prefix: str = "", recursive: bool = False) -> list[ArtifactInfo]:
        rel = clean_path(prefix, allow_root=True)
        files: list[str] = []
        folders: list[str] = []
        for page in self._pages(self._folder(rel), None if recursive else "/"):
            for obj in page.get("Contents") or ():
                child = self._relative(obj["Key"])
                if child is not None:
                    files.append(child)
            for common in page.get("CommonPrefixes") or ():
                child = self._relative(common["Prefix"][:-1])
                if child is not None and child.startswith(f"{rel}/" if rel else ""):
                    folders.append(child)
        infos = self._map(lambda f: (f, self._head(f)), files)
        out = [self._info(f, head) for f, head in infos if head is not None]  # None: deleted meanwhile
        live = self._map(lambda d: (d, self._has_children(d)), folders)
        out += [ArtifactInfo(d, 0, None, True) for d, has in live if has]
        return sorted(out, key=lambda i: i.path)

    def _map(self, fn: Callable[[str], Any], items: list[str]) -> list[Any]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        return list(self._pool().map(fn, items))

    # ---- deleting -----------------------------------------------------------------------------
    def delete(self, path: str) -> int:
        rel = clean_path(path, allow_root=True)
        self._forget_folders(rel)
        if rel and self._head(rel) is not None:
            with self._driver("delete", rel):
                self._s3.delete_object(Bucket=self.bucket, Key=self._key(rel))
            return 1
        removed = 0
        batch: list[str] = []
        for page in self._pages(self._folder(rel), None):
            for obj in page.get("Contents") or ():
                batch.append(obj["Key"])
                if len(batch) == DELETE_BATCH:
                    removed += self._delete_keys(rel, batch)
                    batch = []
        if batch:
            removed += self._delete_keys(rel, batch)
        return removed

    def _delete_keys(self, rel: str, keys: list[str]) -> int:
        with self._driver("delete", rel):
            answer = self._s3.delete_objects(Bucket=self.bucket,
                                             Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(f"S3 delete of {rel!r} failed for {len(errors)} of {len(keys)} objects, e.g. "
                             f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}; delete it again")
        return sum(1 for k in keys if self._relative(k) is not None)

    def __repr__(self) -> str:
        return f"<S3ArtifactStore {self.settings.where}>"


# ---- sources ----------------------------------------------------------------------------------
def _seekable(source: Any) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _read_head(source: BinaryIO, limit: int) -> list[bytes]:
    """Up to ``limit`` bytes as the chunks they were read in (a small file costs its size, not ``limit``)."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = source.read(min(CHUNK, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks


def _read_part(source: BinaryIO, size: int) -> bytearray:
    """Up to ``size`` bytes read straight into one buffer (no list of chunks joined: a part is in memory once)."""
    buffer = bytearray(size)
    got = 0
    with memoryview(buffer) as view:
        readinto = getattr(source, "readinto", None)
        while got < size:
            if readinto is not None:
                n = readinto(view[got:]) or 0
            else:
                chunk = source.read(size - got) or b""
                n = len(chunk)
                view[got:got + n] = chunk
            if not n:
                break
            got += n
    del buffer[got:]
    return buffer


def _stream_parts(source: BinaryIO, size: int, part_size: int) -> Iterator[bytearray]:
    remaining = size
    while remaining > 0:
        part = _read_part(source, min(part_size, remaining))
        if not part:
            return  # shorter than it was: the caller sees the size differ and aborts
        remaining -= len(part)
        yield part
        del part  # the upload holds it now; do not keep a second reference while the next part is read


def _view_parts(view: memoryview, part_size: int) -> Iterator[bytes]:
    for start in range(0, view.nbytes, part_size):
        yield bytes(view[start:start + part_size])


def _problem_if_known(check: Future) -> str | None:
    """The tree check's verdict, or None if it could not tell (its own request failed too)."""
    try:
        return check.result()
    except MatihError:
        return None


def _refuse(problem: str | None) -> None:
    if problem:
        raise InvalidInput(problem)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status is None:
        code = str(response.get("Error", {}).get("Code", ""))
        return int(code) if code.isdigit() else None
    return int(status)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
