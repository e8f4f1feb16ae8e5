"""Plumbing: atomic files and locks, the cache root, offline wheels, the hub, the installed version."""
