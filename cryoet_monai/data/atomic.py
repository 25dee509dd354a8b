"""Write files so that nothing half-written is ever mistaken for a finished result."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions of a plain ``open()`` (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.

    Args:
        path: the final destination. Its folder must exist.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def current_umask() -> int:
    """The process umask. Reading it means setting it, so it is briefly the strict ``0o077``, never looser."""
    umask = os.umask(0o077)
    os.umask(umask)
    return umask
