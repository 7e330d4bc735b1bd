"""Table versions (Lance keeps one per commit): ingest tags, reading as of an earlier point,
and retiring old tags so that clean-up can reclaim their versions.

An ``--as-of`` names a point in the ``memories`` table's history: a version number, a tag
(each ingest run tags what it produced, ``ingest-<UTC time>``, on ``memories`` and
``videos`` alike) or an ISO timestamp (UTC unless it names a zone). The other tables are read
as they were then: at the same tag when they carry it, else at their latest version
committed by that moment (for a version number: before the next ``memories`` commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.tables import MEMORIES, VIDEOS
from storage.db import StorageError, open_table

TAG_PREFIX = "ingest-"
TAGGED_TABLES = (MEMORIES, VIDEOS)  # what the query path reads


class VersionError(StorageError):
    """An ``--as-of`` that names no version of the table."""


@dataclass(frozen=True)
class AsOf:
    """A resolved point in history: the ``memories`` version, the tag that named it (if
    any), and the moment the other tables are read at (None: their latest version)."""

    version: int
    tag: str | None
    until: datetime | None


def version_times(table: Any) -> list[tuple[int, datetime]]:
    """(version, commit time in UTC) of every version the table still keeps, oldest first."""
    out = []
    for entry in table.list_versions():
        stamp = entry["timestamp"]
        stamp = stamp.astimezone(UTC)  # Lance reports naive local time
        out.append((int(entry["version"]), stamp))
    return sorted(out)


def parse_time(text: str) -> datetime | None:
    """An ISO timestamp as UTC (a naive one is taken as UTC), or None when it is not one."""
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def resolve_as_of(table: Any, text: str) -> AsOf:
    """What ``text`` names in ``table``'s history (a version, a tag, a timestamp), or a
    VersionError saying why not."""
    text = str(text).strip()
    versions = version_times(table)
    kept = f"versions {versions[0][0]}-{versions[-1][0]} exist" if versions else "none exist"
    if text.isdigit():
        version = int(text)
        times = dict(versions)
        if version not in times:
            raise VersionError(
                f"--as-of {text}: no version {version} of the {MEMORIES} table ({kept}; "
                "vmem versions lists them)"
            )
        later = [t for v, t in versions if v > version]
        return AsOf(version, None, later[0] - timedelta(microseconds=1) if later else None)
    tags = table.tags.list()
    if text in tags:
        version = int(tags[text]["version"])
        later = [t for v, t in versions if v > version]
        return AsOf(version, text, later[0] - timedelta(microseconds=1) if later else None)
    moment = parse_time(text)
    if moment is None:
        raise VersionError(
            f"--as-of {text!r} is not a version number, a tag of the {MEMORIES} table or an "
            "ISO timestamp (vmem versions lists versions and tags)"
        )
    before = [v for v, t in versions if t <= moment]
    if not before:
        first = versions[0][1].isoformat(timespec="seconds") if versions else "never"
        raise VersionError(
            f"--as-of {text}: the {MEMORIES} table has no version that old (its oldest kept "
            f"version is from {first})"
        )
    return AsOf(before[-1], None, moment)


def checkout(table: Any, name: str, point: AsOf) -> None:
    """Turn ``table`` (``name`` in the database) into a read-only view as of ``point``."""
    if name == MEMORIES:
        table.checkout(point.version)
        return
    if point.tag is not None and point.tag in table.tags.list():
        table.checkout(point.tag)
        return
    if point.until is None:
        return  # the latest version
    before = [v for v, t in version_times(table) if t <= point.until]
    if not before:
        raise VersionError(f"the {name} table did not exist yet at that --as-of point")
    table.checkout(before[-1])


class AsOfConnection:
    """A LanceDB connection whose tables are opened as of one point in the ``memories``
    table's history (read-only views; resolved on first use). Anything else is the
    connection's own."""

    def __init__(self, db: Any, as_of: str) -> None:
        self._db, self.as_of = db, as_of
        self._point: AsOf | None = None

    def point(self) -> AsOf:
        if self._point is None:
            memories = open_table(self._db, MEMORIES)
            if memories is None:
                raise VersionError(f"--as-of {self.as_of}: no {MEMORIES} table yet")
            self._point = resolve_as_of(memories, self.as_of)
        return self._point

    def open_table(self, name: str, **kwargs: Any) -> Any:
        table = self._db.open_table(name, **kwargs)
        checkout(table, name, self.point())
        return table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def tag_ingest(db: Any, now: datetime | None = None) -> str | None:
    """Tag the current version of each table the query path reads with one name,
    ``ingest-<UTC time>``; returns it (None when there is no ``memories`` table)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    memories = open_table(db, MEMORIES)
    if memories is None:
        return None
    name = f"{TAG_PREFIX}{stamp}"
    if name in memories.tags.list():  # two runs in one second
        name = f"{name}-v{memories.version}"
    for table in (open_table(db, n) for n in TAGGED_TABLES):
        if table is not None:
            table.tags.create(name, table.version)
    return name


def retire_ingest_tags(table: Any, older_than: datetime) -> list[str]:
    """Delete the ``ingest-*`` tags of versions committed before ``older_than``, except the
    newest ingest tag (tagged versions are exempt from clean-up). Other tags are kept."""
    times = dict(version_times(table))
    tags = {n: int(t["version"]) for n, t in table.tags.list().items() if n.startswith(TAG_PREFIX)}
    if not tags:
        return []
    newest = max(tags, key=lambda n: tags[n])
    old = [n for n, v in tags.items() if n != newest and (v not in times or times[v] < older_than)]
    for name in old:
        table.tags.delete(name)
    return sorted(old)


def version_rows(table: Any) -> list[dict[str, Any]]:
    """Every kept version of ``table``, newest first: version, time, rows, tags."""
    tags: dict[int, list[str]] = {}
    for name, tag in table.tags.list().items():
        tags.setdefault(int(tag["version"]), []).append(name)
    rows = []
    for entry in sorted(table.list_versions(), key=lambda e: -int(e["version"])):
        version = int(entry["version"])
        rows.append(
            {
                "version": version,
                "time": entry["timestamp"].astimezone(UTC),
                "rows": int((entry.get("metadata") or {}).get("total_rows", 0) or 0),
                "tags": ", ".join(sorted(tags.get(version, []))),
            }
        )
    return rows
