"""The ADB bridge: an agent on a computer drives one Android phone over adb (runner, battery, screen)."""
