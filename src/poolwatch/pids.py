"""Whether a process exists, for the demo's supervisor and the multiprocess directory's
dead-worker clean-up."""

from __future__ import annotations

import os


def pid_exists(pid: int) -> bool:
    """True when a process with ``pid`` exists (zombies and other users' processes too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
