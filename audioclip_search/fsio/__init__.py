"""Object storage (S3, GCS, Azure) for indexing inputs, through ``pyarrow.fs``.

A file in object storage is named by its URI (``s3://bucket/key``) everywhere a local file is
named by its absolute path: in the database's ``path`` column, in failure reports, in ``--prune``.
:class:`ObjectPath` carries such a URI through the indexer where a :class:`pathlib.Path` would
mangle it (``Path("s3://b/k")`` is ``s3:/b/k``).

Credentials and endpoints come from each service's standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``; ``GOOGLE_APPLICATION_CREDENTIALS``;
``AZURE_STORAGE_ACCOUNT_NAME`` ...), the same variables LanceDB reads for a ``--db`` URI, so one
environment serves both the inputs and the database.
"""

from .paths import OBJECT_SCHEMES, ObjectPath, input_path, is_object_path, is_object_uri
from .storage import file_info, list_files, local_copy, open_object, read_bytes

__all__ = [
    "OBJECT_SCHEMES",
    "ObjectPath",
    "file_info",
    "input_path",
    "is_object_path",
    "is_object_uri",
    "list_files",
    "local_copy",
    "open_object",
    "read_bytes",
]
