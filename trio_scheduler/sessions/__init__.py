"""Sessions: the session task, its pure audio segmenter and its ordered result queue."""
