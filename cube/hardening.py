"""Process-level hardening the launchers (cube-manager, cube-worker, cube-store) apply at start.

Cube's data directories hold the cluster's state (tasks, their env, which may carry secrets) and
its sockets; nothing in them is meant for other local users. These helpers are small and
best-effort where failing would only make Cube less hardened, never less able to run.
"""
from __future__ import annotations

import logging
import os
import stat
from typing import Callable

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def secure_umask() -> int:
    """Make every file and directory Cube creates from now on private to its user.

    Stores, logs and sockets are created by libraries (LevelDB, ZeroMQ) that use the default
    0666/0777 modes; a 077 umask is the one place that covers them all. Returns the old umask.
    """
    return os.umask(0o077)


def ensure_private_dir(path: str) -> str:
    """Create `path` (and parents) as 0700, or tighten an existing one to 0700; returns it.

    makedirs' mode does not apply to a directory that already exists (made by an older Cube or
    by hand), hence the chmod.
    """
    os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def tighten(path: str) -> int:
    """Walk a data directory: directories become 0700 and regular files 0600; returns how many
    modes changed.

    For data written before the umask was set. Sockets, fifos and devices keep their modes
    (an endpoint's permissions are its owner's choice), and symlinks are neither followed nor
    touched, so nothing outside `path` changes. An entry that vanishes mid-walk (a store
    compacting) or that cannot be changed is skipped with a warning: this must not stop a start.
    """
    # Top-down, each directory is fixed before the walk lists it, so a 0000 one is still entered.
    changed = _set_mode(path, PRIVATE_DIR, stat.S_ISDIR)
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs:
            changed += _set_mode(os.path.join(root, name), PRIVATE_DIR, stat.S_ISDIR)
        for name in files:
            changed += _set_mode(os.path.join(root, name), PRIVATE_FILE, stat.S_ISREG)
    return changed


def _set_mode(path: str, want: int, is_kind: Callable[[int], bool]) -> int:
    """chmod `path` to `want` if it is (not a link to) the expected kind and differs; 1 if changed."""
    try:
        st = os.lstat(path)
        if not is_kind(st.st_mode) or stat.S_IMODE(st.st_mode) == want:
            return 0
        os.chmod(path, want)
        return 1
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc)
        return 0


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard limit; returns the soft limit in effect.

    A manager holds a socket per worker and client and a worker one per container event stream
    and store file; the usual soft limit of 1024 is reached long before the machine's. Never
    raises: a start with the old limit is better than no start. -1 means unlimited (Linux's
    RLIM_INFINITY) or unknown (a platform without `resource`).
    """
    try:
        import resource
    except ImportError:
        return -1
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return -1
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite soft limit above fs.nr_open, macOS above OPEN_MAX.
        candidates = [_nr_open(), 1 << 20, 10240]
    else:
        candidates = [hard]
    for target in candidates:
        if target is None or (soft != resource.RLIM_INFINITY and target <= soft):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the open-files limit to %s: %s", target, exc)
    return soft


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
