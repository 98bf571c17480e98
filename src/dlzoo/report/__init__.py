"""Report: one table of every experiment."""
