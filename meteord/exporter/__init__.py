"""
Replication from this node to other nodes' import APIs: the export protocol as pure code and
the LoopingCall service that drives it with treq.
"""
