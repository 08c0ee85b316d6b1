"""Named points in the write path where a test can pause the process (to kill it there).

Set `WEIGHTDOCTOR_PAUSE_AT=<point>` (and optionally `WEIGHTDOCTOR_PAUSE_FILE=<path>`, written when the
point is reached): the process then sleeps at that point until it is killed. Points: `after-header`,
`tensor-<n>` (before the n-th tensor's bytes, from 0), `before-verify`, `before-rename`, `before-index`,
`before-swap`, `after-swap`. Unset, `reached` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import time


def reached(point: str) -> None:
    """Pause forever at `point` when the environment asks for it (test support only)."""
    if os.environ.get("WEIGHTDOCTOR_PAUSE_AT") != point:
        return
    marker = os.environ.get("WEIGHTDOCTOR_PAUSE_FILE")
    if marker:
        with open(marker, "w") as handle:
            handle.write(point)
    while True:
        time.sleep(60)
