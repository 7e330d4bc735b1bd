from __future__ import annotations

import os
from datetime import UTC

import pytest

from storage.archive import ArchiveError, list_source, open_video


def test_list_local_folder_recursive(tmp_path):
    root = tmp_path / "archive"
    files = {
        "a.mp4": b"a" * 10,
        "x/b.MKV": b"b" * 20,
        "x/y/c.webm": b"c" * 30,
        "x/y/d.jpg": b"not a video",
        "notes.txt": b"text",
        "z/e.ts": b"e",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    tasks = list_source(str(root))
    assert [os.path.relpath(t.uri, root) for t in tasks] == [
        "a.mp4",
        "x/b.MKV",
        "x/y/c.webm",
        "z/e.ts",
    ]
    by_name = {os.path.basename(t.uri): t for t in tasks}
    assert by_name["c.webm"].tags == ("x", "y") and by_name["a.mp4"].tags == ()
    assert by_name["b.MKV"].size == 20
    assert by_name["b.MKV"].etag == str((root / "x/b.MKV").stat().st_mtime_ns)
    assert by_name["a.mp4"].modified_at.tzinfo == UTC
    assert all(t.archive == str(root) and os.path.isabs(t.uri) for t in tasks)
    assert len({t.video_id for t in tasks}) == 4


def test_missing_folder_is_an_archive_error(tmp_path):
    with pytest.raises(ArchiveError, match=f"source folder not found: {tmp_path}/nope"):
        list_source(str(tmp_path / "nope"))


def test_open_local_video(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"x")
    assert open_video(str(path)) == str(path)
    with pytest.raises(ArchiveError, match="file not found"):
        open_video(str(tmp_path / "missing.mp4"))
