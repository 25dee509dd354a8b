"""Atomic writes get the permissions of a plain ``open()``."""

import os
import stat

import pytest

from cryoet_monai.data.atomic import atomic_path


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask 022", "umask 027"])
def test_atomic_file_gets_the_mode_the_umask_gives(umask, mode, tmp_path):
    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "picks.csv") as tmp:
            tmp.write_text("x\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "picks.csv").stat().st_mode) == mode
