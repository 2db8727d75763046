"""Atomic writes: a failure leaves the old file or folder as it was and no temporary file behind."""

import pytest

from omnigen.files import atomic_folder, atomic_save, atomic_write, atomic_write_bytes, atomic_write_text


def test_a_file_is_replaced_whole_and_its_parent_made(tmp_path):
    target = tmp_path / "new" / "record.json"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


@pytest.mark.parametrize("write", ["context", "writer"])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path, write):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        if write == "context":
            with atomic_write(target) as file:
                file.write(b"half")
                raise RuntimeError("interrupted")
        else:
            def writer(temporary):
                temporary.write_bytes(b"half")
                raise RuntimeError("interrupted")
            atomic_save(target, writer)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_a_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as scratch:
        (scratch / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as scratch:
            (scratch / "a.txt").write_text("two")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as scratch:
        (scratch / "b.txt").write_text("three")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no scratch or old folder left


def test_only_whole_new_files_are_written(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "log.csv", "a"):
            pass
