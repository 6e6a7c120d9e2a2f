"""Serving: the drawing page's server, its files, and the corrections it collects.

No imports here: importing a module of this package loads only what that module needs."""
