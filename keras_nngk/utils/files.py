"""Files that are whole or absent: atomic writes of bytes, JSON and Keras models, and a lock per run folder.

Everything is written under a temporary name in the target's folder and renamed
over the final name (`os.replace`, atomic on POSIX), so a process killed at any
point leaves either the previous file or the new one, never half of one.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time

TEMPORARY_PREFIX = ".tmp-"


def _current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _usual_permissions(path):
    os.chmod(path, 0o666 & ~_current_umask())  # mkstemp makes the file private; give it the usual permissions.


def write_file_atomically(path, write):
    """Calls `write(staging_path)` for a new file beside `path`, then renames it over `path`; returns the path."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=parent, prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path))
    os.close(handle)
    try:
        os.remove(staging)  # Writers such as h5py and zipfile create the file themselves.
        write(staging)
        _usual_permissions(staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def write_atomically(path, content):
    """Writes bytes to a temporary file beside `path`, then renames it over `path`; returns the absolute path."""
    def write(staging):
        with open(staging, "xb") as stream:
            stream.write(content)
    return write_file_atomically(path, write)


def write_json_atomically(path, values):
    """Writes `values` as indented, key-sorted JSON (NumPy scalars as floats) atomically."""
    return write_atomically(path, json.dumps(values, indent=2, sort_keys=True, default=float).encode())


def save_model(model, path, **save_kwargs):
    """`model.save(path)` under a temporary name, then renamed: a `.keras` / `.h5` file, or a SavedModel folder
    (see `write_folder_atomically`)."""
    if os.path.splitext(path)[1] in (".keras", ".h5"):
        return write_file_atomically(path, lambda staging: model.save(staging, **save_kwargs))
    return write_folder_atomically(path, lambda staging: model.save(staging, **save_kwargs))


def write_folder_atomically(path, write):
    """Calls `write(staging_folder)`, then puts the folder in place of `path` by renames; returns the path.

    A folder that already exists is swapped out by two renames; a process killed
    between them leaves no `path` (and a `.tmp-` folder that `remove_temporaries`
    clears), never a partly written folder under the real name.
    """
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=TEMPORARY_PREFIX + name + "-")
    retired = None
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~_current_umask())
        if os.path.exists(path):
            retired = tempfile.mkdtemp(dir=parent, prefix=TEMPORARY_PREFIX + name + "-old-")
            os.rmdir(retired)
            os.rename(path, retired)
        os.rename(staging, path)
    finally:
        for leftover in (staging, retired):
            if leftover and os.path.exists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    return path


def remove_temporaries(directory):
    """Removes what an interrupted writer left in `directory`: `.tmp-*` files and folders, TF's `*_temp` folders.

    Call it only while holding the folder's `WorkdirLock`: another writer's
    temporaries would otherwise be removed under it. Returns the removed names.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if name.startswith(TEMPORARY_PREFIX) or (name.endswith("_temp") and os.path.isdir(full)):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.remove(full)
            removed.append(name)
    return removed


class WorkdirLock:
    """An exclusive, non-blocking lock on a run folder, held by one process at a time.

    The lock is an `flock` on `<directory>/.lock`, which the kernel releases when
    the holding process exits or is killed, so no stale lock is ever left behind.
    The file records who holds it; a second process refuses with a one-line
    `ValueError` naming the holder.

    >>> with WorkdirLock("saved_models/run"):
    ...     train()
    """

    FILE_NAME = ".lock"

    def __init__(self, directory, purpose="run"):
        self.directory = directory
        self.path = os.path.join(directory, self.FILE_NAME)
        self.purpose = purpose
        self._stream = None

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        while True:
            stream = open(self.path, "a+")  # pylint: disable=consider-using-with  (held until release)
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                stream.seek(0)
                holder = stream.read().strip() or "another process"
                stream.close()
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise ValueError(f"{self.directory} is in use by {holder}; wait for it to finish, stop it, or choose "
                                 "another --workdir.") from None
            # The file may have been unlinked by a holder that released it between our open and our lock: retry.
            try:
                same = os.path.samestat(os.fstat(stream.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            stream.close()
        stream.seek(0)
        stream.truncate()
        stream.write(f"{self.purpose} of process {os.getpid()} on {socket.gethostname()} (started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        stream.flush()
        self._stream = stream
        return self

    def release(self):
        if self._stream is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        self._stream.close()  # Closing the file releases the flock.
        self._stream = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
