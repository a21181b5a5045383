"""
Network protocols other than HTTP; today the UDP discovery beacon.
"""
