"""The video archive: list a source (local folder or ``s3://bucket/prefix``) into VideoTasks,
and open one video for decoding without downloading it whole."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from schemas.records import VideoTask
from storage.uri import S3_SCHEME, is_s3, lance_options, s3_client, split_s3

VIDEO_EXTENSIONS = frozenset(".mp4 .mkv .mov .avi .webm .m4v .mpg .mpeg .ts .flv .wmv".split())
READ_BUFFER = 8 * 1024 * 1024  # bytes per ranged GET when streaming a video from S3


class ArchiveError(RuntimeError):
    """A source or object that cannot be listed or opened; the message names it."""


def is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def list_source(source: str, storage_options: dict[str, Any] | None = None) -> list[VideoTask]:
    """Every video under ``source``, sorted by URI; tags are the folders below the root."""
    if is_s3(source):
        return _list_s3(source, storage_options)
    return _list_local(source)


def _list_local(source: str) -> list[VideoTask]:
    root = Path(source).expanduser()
    if root.is_file():
        return [_local_task(root.resolve(), source, ())] if is_video(root.name) else []
    if not root.is_dir():
        raise ArchiveError(f"source folder not found: {source}")
    tasks = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        tags = tuple(p for p in rel.parts if p not in (".", ""))
        for name in sorted(filenames):
            if is_video(name):
                tasks.append(_local_task((Path(dirpath) / name).resolve(), source, tags))
    return sorted(tasks, key=lambda t: t.uri)


def _local_task(path: Path, source: str, tags: tuple[str, ...]) -> VideoTask:
    st = path.stat()
    return VideoTask(
        uri=str(path),
        size=st.st_size,
        etag=str(st.st_mtime_ns),
        archive=source,
        modified_at=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
        tags=tags,
    )


def _list_s3(source: str, storage_options: dict[str, Any] | None) -> list[VideoTask]:
    bucket, prefix = split_s3(source)
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # the source is a folder: s3://b/videos must not match videos2/
    client = s3_client(storage_options)
    tasks = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/") or not is_video(key):
                    continue
                tags = tuple(p for p in key[len(prefix) :].split("/")[:-1] if p)
                tasks.append(
                    VideoTask(
                        uri=f"{S3_SCHEME}{bucket}/{key}",
                        size=int(obj["Size"]),
                        etag=obj.get("ETag", "").strip('"'),
                        archive=source,
                        modified_at=obj["LastModified"].astimezone(UTC),
                        tags=tags,
                    )
                )
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, source, storage_options) from exc
    return sorted(tasks, key=lambda t: t.uri)


def _s3_error(exc: Exception, uri: str, storage_options: dict[str, Any] | None) -> ArchiveError:
    """One clear message per failure class (endpoint, bucket, object, permission)."""
    if isinstance(exc, EndpointConnectionError):
        endpoint = lance_options(storage_options).get("aws_endpoint", "the default AWS endpoint")
        return ArchiveError(f"cannot reach s3 endpoint {endpoint} for {uri}: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return ArchiveError(f"bucket not found: s3://{split_s3(uri)[0]} (listing {uri})")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ArchiveError(f"object not found: {uri}")
        if code == "PreconditionFailed":
            return ArchiveError(f"object changed while it was being read: {uri}")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ArchiveError(f"access denied to {uri}: {code} {error.get('Message', '')}")
        return ArchiveError(f"s3 error on {uri}: {code} {error.get('Message', '')}")
    endpoint = lance_options(storage_options).get("aws_endpoint", "the default AWS endpoint")
    return ArchiveError(f"s3 error on {uri} (endpoint {endpoint}): {exc}")


def read_file(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The bytes of a small file (a question batch, say): a local path or an S3 object."""
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(f"file not found: {uri}") from exc
        except IsADirectoryError as exc:
            raise ArchiveError(f"{uri} is a folder, not a file") from exc
        except PermissionError as exc:
            raise ArchiveError(f"permission denied: {uri}") from exc
    bucket, key = split_s3(uri)
    try:
        return s3_client(storage_options).get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, uri, storage_options) from exc


def open_video(uri: str, storage_options: dict[str, Any] | None = None) -> str | io.BufferedReader:
    """A local path, or a seekable read-only stream over an S3 object (ranged GETs)."""
    if not is_s3(uri):
        if not Path(uri).is_file():
            raise ArchiveError(f"file not found: {uri}")
        return uri
    return io.BufferedReader(S3RangeReader(uri, storage_options), buffer_size=READ_BUFFER)


class S3RangeReader(io.RawIOBase):
    """A seekable raw stream over one S3 object: each read is one ranged GET.

    The object is never downloaded whole; wrap in io.BufferedReader to batch small reads.
    Reads are pinned to the ETag seen at open, so a concurrent overwrite fails loudly
    instead of mixing two versions of the file."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.uri = uri
        self._options = storage_options
        self._bucket, self._key = split_s3(uri)
        self._client = s3_client(storage_options)
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._key)
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, uri, storage_options) from exc
        self.size = int(head["ContentLength"])
        self._etag = head.get("ETag")
        self._pos = 0

    @property
    def name(self) -> str:
        return self.uri

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self.size)
        if end <= self._pos:
            return 0
        data = self._get_range(self._pos, end - 1)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _get_range(self, first: int, last: int) -> bytes:
        kwargs = {"IfMatch": self._etag} if self._etag else {}
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={first}-{last}", **kwargs
            )
            return response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, self.uri, self._options) from exc
