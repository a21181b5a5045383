"""
Test support that other projects' trial tests can use: a throwaway PostgreSQL cluster
(``meteord.testing.postgres``) and, with the store, a whole node in process.
"""
