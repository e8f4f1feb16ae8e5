"""Readers of other tools' logs, turned into flipscope run directories."""
