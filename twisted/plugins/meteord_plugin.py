"""
The twistd drop-in for meteord. It names the implementation module as a string so that plugin
discovery imports nothing heavy (and, above all, installs no reactor).
"""

from twisted.application.service import ServiceMaker

meteord = ServiceMaker(
    "meteord",
    "meteord.tap",
    "A meteor camera node or hub: query, admin and import APIs, discovery and replication.",
    "meteord",
)
