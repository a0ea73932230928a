"""lightning_models.files.atomic_file: a reader sees the whole new file or the old one."""

import pytest

from lightning_models.files import atomic_file


def test_the_new_file_appears_whole_and_only_when_written(tmp_path):
    path = tmp_path / "table.md"
    path.write_text("old table\n")
    with atomic_file(path, "w") as f:
        f.write("new ")
        assert path.read_text() == "old table\n"  # nothing of the new one is seen yet
        f.write("table\n")
    assert path.read_text() == "new table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic_file(path) as f:
        f.write(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data_batch_1"]
