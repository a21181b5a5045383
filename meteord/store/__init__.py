"""
Persistence for meteord: the SQLite and PostgreSQL implementations of IMeteorStore and the
on-disk file store.
"""
