"""Files beside the tables (exports, manifests, reports), on any Hadoop file system.

Local paths are handled directly; anything with a scheme (hdfs://, s3a://, dbfs:/)
goes through Hadoop's FileSystem of the running Spark session.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

from llmrec.conf import join

log = logging.getLogger("llmrec")

# A stage stages its rows for minutes; a folder untouched for a week belongs to a run that
# was killed outright (SIGKILL, a lost driver), which ran nothing to remove it.
STAGING_STALE_AFTER_S = 7 * 86400


def is_local(path: str) -> bool:
    scheme = urlparse(path).scheme
    return scheme in ("", "file")


def local_path(path: str) -> str:
    return urlparse(path).path if path.startswith("file:") else path


def publish_folder(spark, local_src: str, dest: str) -> None:
    """Replaces folder `dest` by the contents of `local_src` (written fully, then swapped)."""
    if is_local(dest):
        dest = local_path(dest)
        tmp = dest.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(local_src, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        os.replace(tmp, dest)
        return
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    target = jvm.org.apache.hadoop.fs.Path(dest)
    fs = target.getFileSystem(conf)
    tmp = jvm.org.apache.hadoop.fs.Path(dest.rstrip("/") + ".tmp")
    fs.delete(tmp, True)
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(local_src), tmp)
    fs.delete(target, True)
    fs.rename(tmp, target)


def write_text(spark, dest: str, text: str) -> None:
    """Writes (replaces) one small text file, local or remote."""
    if is_local(dest):
        dest = local_path(dest)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        with open(dest + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(dest + ".tmp", dest)
        return
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(dest)
    fs = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = fs.create(target, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(spark, src: str) -> str | None:
    """The contents of one small text file, or None if it does not exist."""
    if is_local(src):
        try:
            with open(local_path(src)) as fh:
                return fh.read()
        except FileNotFoundError:
            return None
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(src)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def arrow_fs(path: str):
    """(pyarrow FileSystem, path in it) for a local path or a URI (hdfs://, s3://, gs://).

    dbfs:/x maps to the /dbfs/x mount that Databricks gives every node; s3a:// (Hadoop's
    name) to s3://.
    """
    import pyarrow.fs as pafs

    if path.startswith("s3a://"):
        path = "s3://" + path[len("s3a://"):]
    if path.startswith("dbfs:/"):
        path = "/dbfs/" + path[len("dbfs:/"):].lstrip("/")
    if is_local(path):
        return pafs.LocalFileSystem(), os.path.abspath(local_path(path))
    return pafs.FileSystem.from_uri(path)


def absolute(path: str) -> str:
    """A path executors can use: local paths made absolute, URIs unchanged."""
    return os.path.abspath(local_path(path)) if is_local(path) else path


def remove_tree(path: str) -> None:
    """Deletes a folder (local or URI) if it exists."""
    fs, p = arrow_fs(path)
    try:
        fs.delete_dir(p)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def staging(root: str, name: str) -> Iterator[str]:
    """A folder of this run's own under <root>/_staging (another run of the stage may be
    staging at once), removed when the block ends, failed or not."""
    parent = join(absolute(root), "_staging")
    _remove_stale(parent)
    path = join(parent, f"{name}-{uuid.uuid4().hex[:12]}")
    try:
        yield path
    finally:
        remove_tree(path)


def _remove_stale(parent: str) -> None:
    """Removes what under `parent` is untouched for STAGING_STALE_AFTER_S (object stores
    give folders no time: those are left)."""
    import pyarrow.fs as pafs

    fs, p = arrow_fs(parent)
    cutoff = time.time() - STAGING_STALE_AFTER_S
    for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)):
        if info.mtime is None or info.mtime.timestamp() >= cutoff:
            continue
        log.info("staging: removing %s, untouched since %s (its run was killed)", info.path,
                 time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.mtime.timestamp())))
        try:
            (fs.delete_dir if info.type == pafs.FileType.Directory else fs.delete_file)(info.path)
        except OSError as e:  # another run removing it too, or no right to: not this stage's failure
            log.warning("staging: could not remove %s: %s", info.path, e)
