"""Test hook: stop the process with SIGKILL at a named point, so crash tests kill exactly there.

Crash tests used to kill on a timer and so depended on the machine's speed. Instead, the code
calls ``crash_point("name")`` at the moments worth interrupting (the indexer's commit boundary, a
store write between its data fragments and its commit, a trainer's optimiser step, a download
chunk), and a test runs it with the environment variable::

    ACSEARCH_CRASH_AT=name        # die at the first time the point is reached
    ACSEARCH_CRASH_AT=name:N      # die at its N-th hit (1-based)
    ACSEARCH_CRASH_AT=a:2,b       # several points; whichever comes first
    ACSEARCH_CRASH_AT=name:once ACSEARCH_CRASH_ONCE=/tmp/marker
                                  # die at the first hit in whichever process creates the marker
                                  # file first: one death across processes (a Ray worker that is
                                  # restarted and retried reaches the point again, and passes)

Without the variable a call costs one dictionary lookup: the variable is read once, lazily, on
the first call (never at import), and cached. ``SIGKILL`` gives no chance to flush, clean up or
run ``finally`` blocks: it is the same as a power cut or the OOM killer, which is the point.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["ENV_ONCE", "ENV_VAR", "crash_point", "reset"]

ENV_VAR = "ACSEARCH_CRASH_AT"
ENV_ONCE = "ACSEARCH_CRASH_ONCE"
ONCE = 0  # a target hit count meaning ":once"

_targets: dict[str, int] | None = None  # name -> the hit that kills; read from the environment once
_hits: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    targets: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, count = item.partition(":")
        if count.strip() == "once":
            targets[name.strip()] = ONCE
            continue
        try:
            targets[name.strip()] = max(1, int(count)) if count else 1
        except ValueError:
            raise ValueError(f"{ENV_VAR}={spec!r}: {count!r} is not a hit count (use name, name:N or name:once)"
                             ) from None
    return targets


def _first_across_processes() -> bool:
    """True in the one process that creates the ``$ACSEARCH_CRASH_ONCE`` marker file."""
    marker = os.environ.get(ENV_ONCE)
    if not marker:
        raise ValueError(f"{ENV_VAR}: a name:once point needs {ENV_ONCE}=<marker file>")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def crash_point(name: str) -> None:
    """Kill this process right here if ``ACSEARCH_CRASH_AT`` names this point (and this is its N-th hit)."""
    global _targets
    if _targets is None:
        _targets = _parse(os.environ.get(ENV_VAR, ""))
    if not _targets or name not in _targets:
        return
    _hits[name] = _hits.get(name, 0) + 1
    target = _targets[name]
    if target == ONCE and not _first_across_processes():
        return
    if _hits[name] >= target:
        sys.stderr.write(f"crash point {name} (hit {_hits[name]}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the cached variable and the hit counts (for tests that change the variable in-process)."""
    global _targets
    _targets = None
    _hits.clear()
