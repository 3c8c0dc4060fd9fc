"""Fault points: named places where a crash test can hold this process still and kill it.

A crash test must prove its kill landed inside the window it claims, not somewhere before or
after. It arms one point by name (``DOORKEEPER_FAULT_POINT``) and names a marker file
(``DOORKEEPER_FAULT_MARKER``); when the process reaches that point it writes its pid to the
marker and waits there until it is killed. Honoured only under pytest (``PYTEST_CURRENT_TEST``
set, as pytest sets it and child processes inherit it): a production process never stops here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINT_ENV = "DOORKEEPER_FAULT_POINT"
MARKER_ENV = "DOORKEEPER_FAULT_MARKER"


def reached(name: str) -> None:
    """Hold here, forever, when a test armed this point; otherwise return at once."""
    if os.environ.get(POINT_ENV) != name or "PYTEST_CURRENT_TEST" not in os.environ:
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        tmp = Path(marker + ".tmp")
        tmp.write_text(f"{os.getpid()} {name}\n")
        os.replace(tmp, marker)
    while True:  # the test kills this process inside the window
        time.sleep(3600)
