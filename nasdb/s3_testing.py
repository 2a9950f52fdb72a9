"""A real S3-protocol server on loopback for tests and benchmarks: moto's standalone server.

The store reaches it exactly as it reaches AWS or any S3-compatible service: through s3fs over
HTTP, with the endpoint and credentials in the standard environment variables that botocore
reads in every process (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``). A Ray job gets the same variables through its runtime environment
(``ray.init(runtime_env={"env_vars": ...})`` or ``ray job submit --runtime-env-json``).
Needs the ``test`` extra (``moto[server]``, ``s3fs``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Iterator

#: Credentials moto accepts; nothing leaves the machine.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clear_s3fs_cache() -> None:
    """Forget cached s3fs clients: one made for an earlier server would keep its endpoint."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def loopback_s3(bucket: str = "nasdb-test", *, set_env: bool = True) -> Iterator[dict[str, str]]:
    """Start moto's S3 server on 127.0.0.1 (a free port) with ``bucket`` created; yield its env vars.

    With ``set_env`` the variables are put in ``os.environ`` (so this process and every process
    it starts from now on reach the server) and restored on exit.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", **TEST_CREDENTIALS}
    saved = {k: os.environ.get(k) for k in env}
    try:
        if set_env:
            os.environ.update(env)
        clear_s3fs_cache()
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key=env["AWS_ACCESS_KEY_ID"],
                               secret=env["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)
        with contextlib.suppress(FileExistsError):  # a new server on a reused port: s3fs may still list it
            fs.mkdir(bucket)
        yield env
    finally:
        server.stop()
        clear_s3fs_cache()
        if set_env:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
