import subprocess
import sys
import textwrap

import pytest

from ssd_edge.runtime.atomic import atomic_path


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "ssd.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "ssd.pt"
    target.write_text("old")
    code = textwrap.dedent(f"""
        import os
        from ssd_edge.runtime.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half-written")
            os._exit(9)  # killed: no cleanup, no rename
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert target.read_text() == "old"


def test_unwritable_or_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.pt"):
            pass
