"""Test hook: stop the process with SIGKILL at a named point, so crash tests kill exactly there.

Crash tests used to kill on a timer and so depended on the machine's speed. Instead, the code
calls ``crash_point("name")`` at the moments worth interrupting (the indexer's commit boundary, a
store write between its data fragments and its commit, a trainer's optimiser step, a download
chunk), and a test runs it with the environment variable::

    ACSEARCH_CRASH_AT=name        # die at the first time the point is reached
    ACSEARCH_CRASH_AT=name:N      # die at its N-th hit (1-based)
    ACSEARCH_CRASH_AT=a:2,b       # several points; whichever comes first

Without the variable a call costs one dictionary lookup: the variable is read once, lazily, on
the first call (never at import), and cached. ``SIGKILL`` gives no chance to flush, clean up or
run ``finally`` blocks: it is the same as a power cut or the OOM killer, which is the point.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["ENV_VAR", "crash_point", "reset"]

ENV_VAR = "ACSEARCH_CRASH_AT"

_targets: dict[str, int] | None = None  # name -> the hit that kills; read from the environment once
_hits: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    targets: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, count = item.partition(":")
        try:
            targets[name.strip()] = max(1, int(count)) if count else 1
        except ValueError:
            raise ValueError(f"{ENV_VAR}={spec!r}: {count!r} is not a hit count (use name or name:N)") from None
    return targets


def crash_point(name: str) -> None:
    """Kill this process right here if ``ACSEARCH_CRASH_AT`` names this point (and this is its N-th hit)."""
    global _targets
    if _targets is None:
        _targets = _parse(os.environ.get(ENV_VAR, ""))
    if not _targets or name not in _targets:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _targets[name]:
        sys.stderr.write(f"crash point {name} (hit {_hits[name]}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the cached variable and the hit counts (for tests that change the variable in-process)."""
    global _targets
    _targets = None
    _hits.clear()
