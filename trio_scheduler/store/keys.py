"""Key schema of the shared store: one place that names every key.

Hash tags: every key a script touches together shares a tag
-----------------------------------------------------------
Redis Cluster runs a script (or a MULTI) only when all its keys live in one hash slot, and
the slot of a key is that of its hash tag, the part between the first ``{`` and the next
``}``, when there is one. So the schema tags keys by what is touched together, and the same
store works on one Redis and on a cluster unchanged:

- everything about one node shares the tag ``{node:<node_id>}`` (its mirrored state, its
  reservations), so a script may take a node's reservation and read its state atomically;
- the registry of instances (the set of live ids and each instance's hash) shares the one tag
  ``{instances}``, since a script registers or expires an instance in both at once;
- an instance's inbox is tagged by that instance alone (``{inbox:<instance_id>}``): it is
  read and written by itself, so inboxes spread over the cluster.

A tag starts with a fixed word (``node:``, ``inbox:``), so it is never empty (an empty ``{}``
would hash the whole key) and two keys of the same id always share it, whatever the id holds.
The prefix must not contain braces (the configuration refuses it): a tag in the prefix would
put every key in one slot.
"""

from __future__ import annotations

import attrs


def _tag(name: str) -> str:
    return "{" + name + "}"


@attrs.frozen
class Keys:
    prefix: str = "ts:"

    def node(self, node_id: str) -> str:
        """Hash mirroring a node's public state."""
        return f"{self.prefix}{_tag('node:' + node_id)}"

    def reservations(self, node_id: str) -> str:
        """Sorted set of a node's in-flight attempts, scored by expiry (ms); reserve.lua."""
        return f"{self.node(node_id)}:res"

    def instances(self) -> str:
        """Sorted set of the ids of the live scheduler instances."""
        return f"{self.prefix}{_tag('instances')}"

    def instance(self, instance_id: str) -> str:
        """Hash describing one scheduler instance; shares its tag with :meth:`instances`."""
        return f"{self.instances()}:{instance_id}"

    def instance_prefix(self) -> str:
        """What :meth:`instance` puts before an instance id (a script builds the keys)."""
        return f"{self.instances()}:"

    def inbox(self, instance_id: str) -> str:
        """Stream of one instance's inbox (jobs and results other instances send it)."""
        return f"{self.prefix}{_tag('inbox:' + instance_id)}"
