"""Bounded measurement scripts (run by hand, never collected by pytest); see docs/performance.md."""
