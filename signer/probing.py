"""The one probing loop of the signer's monitors (its node, its device)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

_S = TypeVar("_S")


def probe_every(
    probe: Callable[[], _S], stop: threading.Event, interval: float, listener: Callable[[_S], None]
) -> None:
    """Probe every ``interval`` seconds until ``stop`` is set; ``listener`` hears each probe's
    status (the first one included)."""
    while True:
        listener(probe())
        if stop.wait(interval):
            return
