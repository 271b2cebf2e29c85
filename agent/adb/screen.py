"""Screen off and brightness 0 during a measurement (the display is the largest draw on the battery), restored after."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from agent.adb.phone import Phone, PhoneUnavailable

log = logging.getLogger(__name__)


def _awake(phone: Phone) -> bool:
    return "mWakefulness=Awake" in phone.shell("dumpsys power | grep mWakefulness", doing="while reading the screen")


@contextlib.contextmanager
def dark(phone: Phone) -> Iterator[str]:
    """Screen off and brightness 0 inside the block; yields what was changed ("" when nothing)."""
    brightness = phone.shell("settings get system screen_brightness", doing="while reading the brightness").strip()
    was_awake = _awake(phone)
    phone.shell("settings put system screen_brightness 0" + ("; input keyevent KEYCODE_SLEEP" if was_awake else ""))
    try:
        yield f"screen off (was {'on' if was_awake else 'off'}), brightness 0 (was {brightness})"
    finally:
        restore = []
        if brightness.isdigit():
            restore.append(f"settings put system screen_brightness {brightness}")
        if was_awake:
            restore.append("input keyevent KEYCODE_WAKEUP")
        if restore:
            try:
                phone.shell("; ".join(restore), doing="while restoring the screen")
            except PhoneUnavailable as err:  # the job already reports the lost phone
                log.warning("screen not restored: %s", err)
