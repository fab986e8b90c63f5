"""Composition root: command line, settings, wiring and the qasync bootstrap."""
