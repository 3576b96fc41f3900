"""Dispatch: pure node selection, job records, and the lock-free path from job to node."""
