"""PySide6 views: observe node state snapshots and send intents; no IO."""
