"""
The seams of meteord: the zope.interface declarations that each boundary between its parts is
written against, so that every implementation (and every test double) can be checked with
``verifyObject`` and run through the same test suite.
"""

from zope.interface import Interface


class IFileStore(Interface):
    """
    The bytes behind file records, kept on disk under ids of 32 lowercase hex characters.

    A file appears under its final name only once it is whole and durable; nothing that returns
    a Deferred blocks the reactor thread.
    """

    def start():
        """
        Create the store's directories and remove temporary files left by a crash.

        @return: a Deferred firing with the number of leftover temporary files removed.
        """

    def path_for(file_id):
        """
        The path of a file in the store, whether or not the file exists.

        @raise InvalidFileId: if C{file_id} is not 32 lowercase hex characters.
        @rtype: L{twisted.python.filepath.FilePath}
        """

    def add_from_path(source_path, file_id, move=False):
        """
        Store the bytes of the file at C{source_path} under C{file_id}, hashing them.

        With C{move}, the source is gone once the file is stored (renamed when it is on the
        store's file system, copied then removed otherwise); without it the source is kept.

        @return: a Deferred firing with a C{StoredFile}.
        """

    def open_upload(max_bytes=None):
        """
        Start receiving the bytes of a file in pieces (for uploads over HTTP).

        The returned upload has C{write(chunk)}, C{size}, C{abort()} and
        C{commit(file_id, expected_md5=None, expected_sha256=None)}; C{write} is called on
        the reactor thread as chunks arrive and C{commit} returns a Deferred firing with a
        C{StoredFile}, or failing with C{ChecksumMismatch} after discarding the bytes.
        """

    def remove(file_ids):
        """
        Remove the files with these ids; ids with no file are ignored.

        @return: a Deferred firing with the list of ids whose file was removed.
        """

    def exists(file_id):
        """
        @return: a Deferred firing with whether a file is stored under C{file_id}.
        """

    def open(file_id):
        """
        Open a stored file for reading.

        @return: a Deferred firing with a binary file object, or failing with C{FileNotStored}.
        """

    def rehash(file_id):
        """
        Read a stored file again and hash it (for fsck).

        @return: a Deferred firing with a C{StoredFile}, or failing with C{FileNotStored}.
        """

    def iter_file_ids():
        """
        Yield the id of every file in the store, walking its directories.

        This blocks while it reads directories: call it from a thread or a command-line tool.
        """
