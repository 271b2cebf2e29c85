"""One line of a runner's output as it reaches us: straight from the tool, or through Android's log.

benchmark_model writes "INFO: …"/"ERROR: …" on a terminal (TensorFlow Lite's minimal logging), but on a phone
its lines are often read back from logcat (the benchmark APK logs only there), in one of logcat's formats:

- threadtime (adb logcat's default): ``07-14 13:14:56.520 22838 22838 I tflite  : count=25 …``
  (also with the year, ``-v year``);
- brief: ``I/tflite  (22838): count=25 …`` or ``I/tflite: …``;
- tag: ``I tflite  : count=25 …``;
- Android Studio's Logcat window: ``2023-06-14 10:55:21.084 18088-18088 tflite   org.tensorflow.lite.benchmark   I  …``.

`split` returns the line's level (V/D/I/W/E/F, "" when it carries none) and its message, so the parsers read
every format the same way. Tabs inside the message are kept; logcat itself turns them into spaces, which is why
the operator tables read back from it are space-aligned (agent/adb/op_table.py).
"""

from __future__ import annotations

import re

_THREADTIME = re.compile(r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEFA])\s+[^:]*?\s*: ?(.*)$")
_STUDIO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+-\d+\s+\S+\s+\S+\s+([VDIWEFA])  (.*)$")
_BRIEF = re.compile(r"^([VDIWEFA])/[^(:\s]+\s*(?:\(\s*\d+\))?: ?(.*)$")
_TAG = re.compile(r"^([VDIWEFA]) tflite\w*\s*: ?(.*)$")
#: TensorFlow Lite's minimal logging prefixes; a terminal may leave junk before them ("^[[AINFO: count=…").
_MARKERS = {"INFO: ": "I", "ERROR: ": "E", "WARNING: ": "W", "VERBOSE: ": "V"}


def split(raw: str) -> tuple[str, str]:
    """(level, message) of one output line, whichever way it was logged."""
    level = ""
    text = raw.rstrip("\r\n")
    for pattern in (_THREADTIME, _STUDIO, _BRIEF, _TAG):
        if m := pattern.match(text):
            level, text = m.group(1), m.group(2)
            break
    found = [(at, marker) for marker in _MARKERS if (at := text.find(marker)) != -1]
    if found:
        at, marker = min(found)
        return level or _MARKERS[marker], text[at + len(marker) :]
    return level, text


def message(raw: str) -> str:
    """The line without any log prefix."""
    return split(raw)[1]
