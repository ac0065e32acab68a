"""Output paths (influence_core.io_safety): files and directories are checked before any work starts, and results
are written atomically."""

from __future__ import annotations

import json

import pytest

from influence_core.io_safety import OutputPathError, atomic_write, check_output_dir, check_output_file


@pytest.mark.parametrize(
    "where, message",
    [
        ("/proc/influence_out.json", "pseudo-filesystem"),
        ("/sys/x.npy", "pseudo-filesystem"),
        ("{tmp}", "is a directory"),
        ("{tmp}/missing/out.json", "does not exist"),
        ("{tmp}/afile/out.json", "is a file, not a folder"),
        ("", "needs a file path"),
    ],
)
def test_output_files_are_checked_before_work(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match=message):
        check_output_file(where.format(tmp=tmp_path), "--json")


@pytest.mark.parametrize(
    "where, message",
    [
        ("/proc/runs", "pseudo-filesystem"),
        ("{tmp}/afile", "is a file"),
        ("{tmp}/afile/sub", "is a file"),
    ],
)
def test_output_directories_are_checked_before_work(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match=message):
        check_output_dir(where.format(tmp=tmp_path))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    target.write_text('{"old": 1}')
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as fh:
            fh.write('{"new": ')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind
    with atomic_write(target) as fh:
        fh.write('{"new": 2}')
    assert json.loads(target.read_text()) == {"new": 2}
