"""Runs kept: the store interface with its SQLite and PostgreSQL backends (chosen by store/open.py), schema
and migrations, export/import lines, the run data classes and strict JSON.

Rule: store/ imports only fleet/ (the config file names the store); never analysis/ or anything above it.
"""
