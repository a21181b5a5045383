"""
The HTTP side of meteord: one Klein application per API (query, admin, import, operations),
mounted together under a configurable prefix.
"""
