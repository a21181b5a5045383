"""
The seams of meteord: the zope.interface declarations that each boundary between its parts is
written against, so that every implementation (and every test double) can be checked with
``verifyObject`` and run through the same test suite.
"""

from zope.interface import Attribute, Interface


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

    def read(f, size, digest=None):
        """
        The next C{size} bytes (fewer at the end) of a file C{open} or C{open_and_read}
        returned, read off the reactor thread, and added there to C{digest} (a C{hashlib}
        object) when given.

        @return: a Deferred firing with the bytes.
        """

    def move_out(file_id, path):
        """
        Move the file stored under C{file_id} out of the store, to C{path}.

        @return: a Deferred firing with None once it is there.
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

    def existing(file_ids):
        """
        @return: a Deferred firing with the frozenset of those of C{file_ids} that have a
            file stored, all checked at once.
        """

    def open(file_id):
        """
        Open a stored file for reading.

        @return: a Deferred firing with a binary file object, or failing with C{FileNotStored}.
        """

    def open_and_read(file_id, size, digest=None):
        """
        C{open} and the first C{read} of C{size} bytes, in one trip off the reactor thread.

        @return: a Deferred firing with (the open file, its size on disk, those bytes), or
            failing with C{FileNotStored}.
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


class IMeteorStore(Interface):
    """
    Everything a node keeps: files and events, camera statuses and high-water marks, users,
    export configurations and their tasks, the discovery registry and script runs. Every method
    returns a Deferred (named ``-> X`` below for what it fires with); nothing blocks the reactor.
    A missing entity gives ``None`` from ``get_*``; an impossible operation fails with a typed
    error from ``meteord.errors``; bad arguments fail with ``meteord.model.InvalidEntity``.
    Entities are the attrs classes of ``meteord.model``; times are aware UTC datetimes.
    """

    file_store = Attribute("the IFileStore holding the bytes of this store's files")

    def start():
        """Apply migrations and prepare the file store. -> None"""

    def close():
        """Close the database pool once the transactions under way have ended. -> None"""

    def check():
        """Whether the database answers a trivial query now. -> bool"""

    # files and events

    def register_file(file_path, mime_type, semantic_type, file_time, file_metas, camera_id=None,
                      file_name=None):
        """
        Move the file at ``file_path`` into the file store (md5 and sha256 computed off the
        reactor) and record it against the camera status in force at ``file_time``.
        -> FileRecord. Fails with NoCameraStatus when no status is in force.
        """

    def register_event(camera_id, event_time, event_type, file_records=(), event_meta=()):
        """Record an event linking already registered files, in one transaction. -> Event"""

    def get_file(file_id):
        """-> FileRecord or None"""

    def get_event(event_id):
        """-> Event or None"""

    def has_file_id(file_id):
        """-> bool"""

    def has_event_id(event_id):
        """-> bool"""

    def stored_ids(event_ids=(), file_ids=(), status_ids=()):
        """
        Which of these ids are stored, all asked in one call (one statement for a few ids).
        -> (frozenset of event ids, frozenset of file ids, frozenset of status ids)
        """

    def search_files(search):
        """FileRecordSearch -> {"count": int, "files": [FileRecord, ...]}"""

    def search_events(search):
        """EventSearch -> {"count": int, "events": [Event, ...]}"""

    def search_events_wire(search):
        """
        ``search_events`` with each event as ``Event.to_dict`` gives it, built without the
        events. EventSearch -> {"count": int, "events": [dict, ...]}
        """

    def get_event_wire(event_id):
        """``get_event`` as ``Event.to_dict`` gives it. -> dict or None"""

    def file_path_for_id(file_id):
        """The path of a stored file's bytes (not a Deferred). -> FilePath"""

    # cameras

    def update_camera_status(status, time=None, camera_id=None):
        """
        Store ``status`` as a new status (new status_id) valid from ``time`` (default now) for
        ``camera_id`` (default the node's own id), rolling back past the high-water mark first
        when ``time`` is before it. -> CameraStatus
        """

    def get_camera_status(time=None, camera_id=None):
        """The status in force at ``time`` (default now). -> CameraStatus or None"""

    def get_camera_status_by_id(status_id):
        """-> CameraStatus or None"""

    def has_status_id(status_id):
        """-> bool"""

    def get_cameras():
        """Ids of every camera with a status, sorted. -> [str]"""

    def get_high_water_mark(camera_id=None):
        """-> datetime or None"""

    def set_high_water_mark(time, camera_id=None, allow_rollback=True, allow_advance=True):
        """Move the mark; moving it back deletes later data and its files (storage.md). -> None"""

    # users

    def create_or_update_user(user_id, password, roles):
        """
        Create the user, or change the password (if not None) and roles (if not None).
        Hashing runs off the reactor thread. -> "create", "update" or "none"
        """

    def get_user(user_id, password):
        """-> User. Fails with AuthenticationFailed for unknown users and wrong passwords alike."""

    def get_users():
        """-> [User] sorted by user_id"""

    def set_user_roles(user_id, roles):
        """-> User. Fails with EntityNotFound, or LastCameraAdmin."""

    def set_roles(roles_by_user):
        """
        {user_id: roles} -> [User], in one transaction: all changed, or none when it fails
        with EntityNotFound or LastCameraAdmin (checked once, after every change).
        """

    def delete_user(user_id):
        """-> bool (whether a user was deleted). Fails with LastCameraAdmin."""

    # exports

    def create_or_update_export_configuration(config):
        """Upsert by config_id; an empty password keeps the stored one. -> ExportConfiguration"""

    def get_export_configuration(config_id):
        """-> ExportConfiguration or None (with its password, for the exporter)"""

    def get_export_configurations():
        """-> [ExportConfiguration]"""

    def delete_export_configuration(config_id):
        """-> bool"""

    def mark_entities_to_export(config):
        """Queue every new match of the config's search as a pending task. -> int rows added"""

    def claim_export_tasks(config_id, limit, lease_seconds):
        """
        Lease up to ``limit`` due pending tasks of a config, oldest first; several processes
        never get the same task while its lease runs. -> [ExportTask]
        """

    def complete_export_task(task_id, bytes_sent=0):
        """Mark a task done, count the bytes sent, reset an enabled config's failures. -> None"""

    def complete_and_claim_export_tasks(task_id, bytes_sent, config_id, limit, lease_seconds):
        """
        ``complete_export_task`` and ``claim_export_tasks`` as one transaction: neither
        happens if either fails, and the completed task is never among those claimed, even
        if its lease has run out. -> [ExportTask]
        """

    def fail_export_task(task_id, reason):
        """Mark a task failed with its reason (an entity failure). -> None"""

    def release_export_task(task_id):
        """Give a leased task back unchanged (transport failure). -> None"""

    def renew_export_task(task_id, attempt, lease_seconds):
        """
        Extend the lease of claim number ``attempt`` of a pending task (its ``attempts`` when
        claimed) to ``lease_seconds`` from now, unless it has run out. -> bool (extended)
        """

    def defer_export_tasks(config_id, seconds):
        """Make every pending task of a config due ``seconds`` from now. -> int"""

    def retry_export_tasks(config_id):
        """Failed tasks of a config become pending and due now. -> int"""

    def record_export_outcome(config_id, outcome, if_unchanged=None):
        """
        Store a config's failure accounting (an ExportOutcome); with ``if_unchanged`` (the
        ExportOutcome it was decided from), only if the stored count and enabled flag are
        still its. -> bool (stored)
        """

    def get_export_status(config_id):
        """-> ExportStatus or None"""

    # import

    def import_camera_status(status, user_id):
        """Store a status received from another node, if new. -> bool (stored now)"""

    def import_file_record(record, user_id):
        """Store a file record whose bytes are already in the file store, if new. -> bool"""

    def import_event(event, user_id):
        """Store an event with its files (linking existing file records), if new. -> bool"""

    # discovery and scripts

    def save_node(node):
        """Insert or update a discovery registry entry (a dict as in discovery.md). -> None"""

    def load_nodes():
        """-> [dict]"""

    def clear_database():
        """Delete everything, the file store's files included. -> None"""


class INodeRegistryStore(Interface):
    """Where the discovery registry survives restarts."""

    def save_node(node):
        """
        Insert or replace one node, keyed by its C{node_id}.

        @param node: the shape of C{GET /api/nodes} entries plus C{"interval"} (seconds).
        @return: a Deferred firing with None.
        """

    def load_nodes():
        """Every saved node, in the shape given to L{save_node}. @return: Deferred[list[dict]]"""
