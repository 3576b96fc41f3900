"""Several scheduler instances behind one Redis: any session reaches any node.

Each instance announces itself in the store (:mod:`registry`), mirrors its nodes there and
tells the others of every change (:mod:`directory`), so every snapshot holds every live
node. A job for a node on another instance goes through that instance's inbox stream
(:mod:`bus`) and the node's answers come back the same way (:mod:`relay`). To dispatch,
a node on another instance is just a node whose link (:mod:`links`) is a message.
"""
