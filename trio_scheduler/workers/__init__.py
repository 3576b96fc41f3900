"""``trio-scheduler serve --workers N``: one small parent process and N scheduler
instances on one port and one Redis (see :mod:`.supervisor`)."""
