"""Qt widgets of the main window: views over AppState that never do I/O."""
