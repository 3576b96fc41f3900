"""Node management: pure state transitions, pool derivation, snapshots and their owner task."""
