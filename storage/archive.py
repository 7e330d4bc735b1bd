"""The video archive: list a source (local folder or ``s3://bucket/prefix``) into VideoTasks,
and open one video for decoding without downloading it whole."""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from schemas.records import VideoTask
from storage.uri import S3_SCHEME, endpoint_of, is_s3, redact, s3_client, split_s3

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
    """Every video under a local folder (or the one file ``source`` names).

    A bad entry never stops the listing: a dangling symlink, a symlink loop, a file or a
    folder that cannot be read each become one task with a ``problem`` (recorded ``failed``
    with that reason); a file that vanishes while the folder is listed is simply not there.
    Symlinked folders are followed, so an archive assembled from links is listed whole; a
    link back into a folder that is already being listed is a loop, reported once and not
    followed (another link to a folder listed elsewhere is skipped: its videos are listed
    once). A source folder that cannot be listed at all is an ArchiveError: an empty listing
    would read as "every video deleted"."""
    root = Path(source).expanduser()
    if root.is_file():
        entry = _file_entry(root.absolute(), source, ())
        return [entry] if entry is not None and is_video(root.name) else []
    if not root.is_dir():
        raise ArchiveError(f"source folder not found: {source}")
    found: dict[str, VideoTask] = {}  # by uri: two links to one file list it once

    def on_error(exc: OSError) -> None:  # os.walk could not list a folder
        folder = Path(exc.filename or root)
        if folder == root:
            raise ArchiveError(f"cannot list the source folder {source}: {exc.strerror}")
        if exc.errno != errno.ENOENT:  # a folder that vanished meanwhile is simply gone
            entry = _folder_problem(folder, source, _tags(root, folder), exc)
            found.setdefault(entry.uri, entry)

    seen: set[tuple[int, int]] = set()  # (device, inode) of the folders listed so far
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        folder = Path(dirpath)
        if not _first_visit(folder, seen):
            dirnames.clear()
            if _is_loop(folder):
                entry = _loop_problem(folder, source, _tags(root, folder.parent))
                found.setdefault(entry.uri, entry)
            continue
        dirnames.sort()
        tags = _tags(root, folder)
        for name in sorted(filenames):
            if is_video(name):
                entry = _file_entry(folder / name, source, tags)
                if entry is not None:
                    found.setdefault(entry.uri, entry)
    return sorted(found.values(), key=lambda t: t.uri)


def _tags(root: Path, folder: Path) -> tuple[str, ...]:
    """The folder names between the source root and ``folder``."""
    return tuple(p for p in folder.relative_to(root).parts if p not in (".", ""))


def _first_visit(folder: Path, seen: set[tuple[int, int]]) -> bool:
    """Whether ``folder`` (its real directory) is listed for the first time."""
    try:
        st = folder.stat()
    except OSError:
        return False  # vanished since its parent was listed
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _is_loop(folder: Path) -> bool:
    """A symlinked folder that leads back to itself or to a folder above it."""
    target = os.path.realpath(folder)
    parent = os.path.realpath(folder.parent)
    return parent == target or parent.startswith(target.rstrip(os.sep) + os.sep)


def _file_entry(path: Path, source: str, tags: tuple[str, ...]) -> VideoTask | None:
    """The task of one listed file: a video, a problem entry, or None when it vanished."""
    try:
        st = path.stat()  # follows symlinks
    except FileNotFoundError:
        if not path.is_symlink():
            return None  # deleted between the folder listing and now: it is not there
        target = os.readlink(path)
        return _problem(path, source, tags, "dangling", f"dangling symlink: {path} -> {target}")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _problem(path, source, tags, "loop", f"symlink loop: {path}")
        reason = f"cannot read {path}: {exc.strerror}"
        return _problem(path, source, tags, "unreadable", reason)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device named like a video would hang
        return _problem(path, source, tags, "special", f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        reason = f"permission denied: cannot read {path}"
        return _problem(path, source, tags, "unreadable", reason)
    return VideoTask(
        uri=os.path.realpath(path),
        size=st.st_size,
        etag=str(st.st_mtime_ns),
        archive=source,
        modified_at=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
        tags=tags,
    )


def _problem(
    path: Path, source: str, tags: tuple[str, ...], kind: str, reason: str, folder: bool = False
) -> VideoTask:
    """A listing entry that could not be read. Its etag names the kind of problem, so that
    once the entry is fixed (a chmod keeps the mtime) the plan sees it changed."""
    try:
        st = path.lstat()
        size, mtime_ns = (0 if folder else st.st_size), st.st_mtime_ns
    except OSError:
        size, mtime_ns = 0, 0
    uri = os.path.realpath(path)
    return VideoTask(
        uri=uri.rstrip(os.sep) + os.sep if folder else uri,
        size=size,
        etag=f"{kind}:{mtime_ns}",
        archive=source,
        modified_at=datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC) if mtime_ns else None,
        tags=tags,
        problem=reason,
    )


def _folder_problem(folder: Path, source: str, tags: tuple[str, ...], exc: OSError) -> VideoTask:
    """The entry of a folder whose videos could not be listed (its catalog rows stay)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason = f"permission denied: cannot list folder {folder}"
    else:
        reason = f"cannot list folder {folder}: {exc.strerror}"
    return _problem(folder, source, tags, "unlistable", reason, folder=True)


def _loop_problem(folder: Path, source: str, tags: tuple[str, ...]) -> VideoTask:
    target = os.path.realpath(folder)
    reason = f"symlink loop: {folder} leads back to {target} (not followed)"
    entry = _problem(folder, source, tags, "loop", reason)
    # the link's own path names it (its target is a folder that is listed anyway)
    return replace(entry, uri=str(folder.absolute()), video_id="")


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
    """One clear line per failure class (endpoint, bucket, object, permission), naming the
    endpoint and the object, with any credential redacted. Raised after botocore's bounded
    retries (``storage.uri.RETRY_DEFAULTS``) gave up."""
    endpoint = endpoint_of(storage_options)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        message = f"cannot reach s3 endpoint {endpoint} for {uri}: {exc}"
    elif isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            message = f"bucket not found: s3://{split_s3(uri)[0]} (listing {uri})"
        elif code in ("NoSuchKey", "404", "NotFound"):
            message = f"object not found: {uri}"
        elif code == "PreconditionFailed":
            message = f"object changed while it was being read: {uri}"
        elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            message = f"access denied to {uri}: {code} {error.get('Message', '')}"
        else:
            message = f"s3 error on {uri} (endpoint {endpoint}): {code} {error.get('Message', '')}"
    else:
        message = f"s3 error on {uri} (endpoint {endpoint}): {exc}"
    return ArchiveError(redact(message.strip(), storage_options))


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
