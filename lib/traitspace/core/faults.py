"""Fault injection at a stage's own progress events, for the crash-safety tests.

Every atomic write (:mod:`traitspace.core.artifacts`) passes two events: ``before-replace`` (the
temporary file is complete, the rename onto the real name has not happened) and ``written`` (the
file is in place). They are the natural points where a crash tests the cache: between a part's
table and its sidecar, between a checkpoint's trainer state and its step folder, between a stage's
last table and its manifest. Their order is the stage's own order of work, so a fault drawn from
them lands at the same point of the work on every run, unlike a timer.

Off unless an environment variable asks (one dictionary lookup per write otherwise):

- ``TRAITSPACE_FAULT_AT=<event>:<count>``: at the ``count``-th ``<event>`` of this process, act.
- ``TRAITSPACE_FAULT_PATH=<relative path>``: count only the events of files whose path ends with it
  (a resumed run skips finished work, so "the 1st write of parts/x/step-000002.json" names the same
  point of the work in a first run and in a resumed one, where a plain count would not).
- ``TRAITSPACE_FAULT_ACTION``: ``kill`` (default) sends SIGKILL to this process, as a power cut or
  the out-of-memory killer would (no ``finally`` block, no atexit); ``enospc`` raises
  ``OSError(ENOSPC)`` at that point, as a full disk would.
- ``TRAITSPACE_FAULT_LOG=<file>``: append ``<event>\\t<count>\\t<path>`` for every event, so a test
  can list a stage's events and draw its fault points from them.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from pathlib import Path

FAULT_AT = "TRAITSPACE_FAULT_AT"
FAULT_ACTION = "TRAITSPACE_FAULT_ACTION"
FAULT_LOG = "TRAITSPACE_FAULT_LOG"
FAULT_PATH = "TRAITSPACE_FAULT_PATH"
EVENTS = ("before-replace", "written")
ACTIONS = ("kill", "enospc")

_counts: Counter[str] = Counter()    # every event of this process, by kind (the log's numbering)
_matching: Counter[str] = Counter()  # the events that pass TRAITSPACE_FAULT_PATH, by kind


def parse_fault(value: str) -> tuple[str, int]:
    """``"<event>:<count>"`` -> (event, count); ValueError naming the variable when malformed."""
    event, _, count = value.rpartition(":")
    if event not in EVENTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{FAULT_AT}={value!r}: expected <event>:<count> with event one of {EVENTS} and count >= 1")
    return event, int(count)


def reached(event: str, path: str | Path) -> None:
    """Called by the writers at each progress event; acts only when the environment asks."""
    if FAULT_AT not in os.environ and FAULT_LOG not in os.environ:
        return
    _counts[event] += 1
    count = _counts[event]
    log = os.environ.get(FAULT_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as handle:  # not atomic on purpose: a log line per event
            handle.write(f"{event}\t{count}\t{path}\n")
    wanted = os.environ.get(FAULT_AT)
    if not wanted:
        return
    only = os.environ.get(FAULT_PATH)
    if only and not Path(path).as_posix().endswith("/" + only.strip("/")):
        return
    _matching[event] += 1
    if parse_fault(wanted) != (event, _matching[event]):
        return
    action = os.environ.get(FAULT_ACTION, "kill")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    else:
        raise ValueError(f"{FAULT_ACTION}={action!r}: expected one of {ACTIONS}")


def reset() -> None:
    """Start counting events from zero (a forked process inherits its parent's counts)."""
    _counts.clear()
    _matching.clear()
