"""Cohort's runnable processes: the session worker, the finalizer and the ``cohort`` command.

This package's ``__init__`` imports nothing outside the standard library, so that
``python3 -m services`` can bootstrap a fresh checkout before any dependency exists.
"""
