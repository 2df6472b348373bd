"""The shared file helpers: atomic writes leave no temporary files; completion follows the fingerprint."""

from lmforge.files import atomic_write_bytes, atomic_write_text, fingerprint, is_complete, mark_complete


def test_atomic_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "first")
    atomic_write_text(tmp_path / "a.txt", "second ✓")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text() == "second ✓" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [2, 3]}) == fingerprint({"b": [2, 3], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_complete_only_with_the_same_fingerprint(tmp_path):
    marker = tmp_path / "report.json"
    assert not is_complete(marker, "abc")
    marker.write_text("{half written")
    assert not is_complete(marker, "abc")
    mark_complete(marker, "abc", {"documents": 3})
    assert is_complete(marker, "abc") and not is_complete(marker, "abd")
