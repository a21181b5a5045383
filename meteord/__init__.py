"""
meteord: one Twisted daemon that stores, searches, replicates and announces the events and
files recorded by a network of meteor cameras, keeping the MeteorPi wire format.
"""

__version__ = "0.1.0"
