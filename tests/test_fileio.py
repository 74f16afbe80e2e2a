import os
import subprocess
import sys
import textwrap
import time

import pytest

from ssd_edge.common.atomic import PartialFile, atomic_path, remove_stale_partials


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
        from ssd_edge.common.atomic import atomic_path
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


def test_stale_partials_of_a_target_are_removed_whatever_its_name(tmp_path):
    """Leftovers of a killed writer go; a live writer's partial, other targets' partials and
    the user's files stay. Glob characters in the name (`[1]`) are taken literally."""
    target = tmp_path / "cam[1] café.mp4"
    stale, live, other = PartialFile(target), PartialFile(target), PartialFile(tmp_path / "cam1.mp4")
    old = time.time() - 120
    for partial in (stale, other):
        os.utime(partial.path, (old, old))
    user = tmp_path / "cam[1] café.mp4.partial.mp4"
    user.write_bytes(b"mine")
    os.utime(user, (old, old))
    assert remove_stale_partials(target) == [stale.path]
    assert live.path.exists() and other.path.exists() and user.exists()
