"""Node connections: one task per GPU node socket."""
