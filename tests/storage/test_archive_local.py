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


def _archive_with_bad_entries(root):
    """Two good files, and beside them every kind of entry a listing must survive."""
    (root / "x").mkdir(parents=True)
    (root / "good.mp4").write_bytes(b"g" * 10)
    (root / "x" / "inner.mp4").write_bytes(b"i" * 20)
    (root / "loop.mp4").symlink_to("loop.mp4")  # a symlink loop named like a video
    (root / "dangling.mp4").symlink_to(root / "nowhere.mp4")
    (root / "x" / "up").symlink_to("..")  # a folder link back to the root: a loop
    os.mkfifo(root / "pipe.mp4")  # would hang a decoder
    return root


def test_bad_entries_become_problem_entries_and_the_rest_is_listed(tmp_path):
    root = _archive_with_bad_entries(tmp_path / "archive")
    tasks = {os.path.relpath(t.uri, root): t for t in list_source(str(root))}
    good = {name: t for name, t in tasks.items() if not t.problem}
    assert sorted(good) == ["good.mp4", "x/inner.mp4"]
    assert good["x/inner.mp4"].tags == ("x",)
    problems = {name: t.problem for name, t in tasks.items() if t.problem}
    assert problems == {
        "loop.mp4": f"symlink loop: {root / 'loop.mp4'}",
        "nowhere.mp4": f"dangling symlink: {root / 'dangling.mp4'} -> {root / 'nowhere.mp4'}",
        "x/up": f"symlink loop: {root / 'x' / 'up'} leads back to {root} (not followed)",
        "pipe.mp4": f"not a regular file: {root / 'pipe.mp4'}",
    }
    # a problem's etag names it, so a fixed entry (a chmod keeps the mtime) is planned again
    assert all(
        t.etag.split(":")[0] in {"loop", "dangling", "special"} for t in tasks.values() if t.problem
    )
    assert all(t.archive == str(root) for t in tasks.values())


def test_a_symlinked_folder_is_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "far.mp4").write_bytes(b"f")
    root = tmp_path / "archive"
    root.mkdir()
    (root / "linked").symlink_to(elsewhere)
    (root / "more").symlink_to(elsewhere)  # two ways to one folder: its files listed once
    (task,) = list_source(str(root))
    assert task.uri == str((elsewhere / "far.mp4").resolve()) and task.tags == ("linked",)
    assert not task.problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_and_folder_for_real(tmp_path):
    root = tmp_path / "archive"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "in.mp4").write_bytes(b"l")
    (root / "secret.mp4").write_bytes(b"s")
    (root / "ok.mp4").write_bytes(b"o")
    (root / "secret.mp4").chmod(0)
    (root / "locked").chmod(0)
    try:
        tasks = {os.path.relpath(t.uri, root): t.problem for t in list_source(str(root))}
    finally:
        (root / "locked").chmod(0o755)
        (root / "secret.mp4").chmod(0o644)
    assert tasks == {
        "ok.mp4": "",
        "secret.mp4": f"permission denied: cannot read {root / 'secret.mp4'}",
        "locked": f"permission denied: cannot list folder {root / 'locked'}",
    }


def test_unreadable_file_and_folder(tmp_path, monkeypatch):
    """The same as above with the permission errors injected, so it runs as root too."""
    root = tmp_path / "archive"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "in.mp4").write_bytes(b"l")
    (root / "secret.mp4").write_bytes(b"s")
    (root / "ok.mp4").write_bytes(b"o")
    real_scandir, real_access = os.scandir, os.access

    def scandir(path="."):
        if os.fspath(path) == str(root / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(
        os, "access", lambda p, mode: not str(p).endswith("secret.mp4") and real_access(p, mode)
    )
    tasks = {os.path.relpath(t.uri, root): t for t in list_source(str(root))}
    assert {name: t.problem for name, t in tasks.items()} == {
        "ok.mp4": "",
        "secret.mp4": f"permission denied: cannot read {root / 'secret.mp4'}",
        "locked": f"permission denied: cannot list folder {root / 'locked'}",
    }
    assert tasks["locked"].uri.endswith("/locked/")  # a folder entry: its rows are kept
    assert tasks["secret.mp4"].etag.startswith("unreadable:")


def test_unlistable_source_folder_is_an_error_not_an_empty_listing(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"a")

    def scandir(path="."):
        raise PermissionError(13, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ArchiveError, match="cannot list the source folder .*Permission denied"):
        list_source(str(root))


def test_file_vanishing_between_listing_and_stat_is_not_listed(tmp_path):
    from storage.archive import _file_entry

    assert _file_entry(tmp_path / "gone.mp4", str(tmp_path), ()) is None
