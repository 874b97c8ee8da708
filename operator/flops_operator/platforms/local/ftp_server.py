"""The artifact store on one machine: a pyftpdlib FTP server run as the platform's child process.

Same contract as the vsftpd container: one user with a generated password (env FTP_PASS, never
on the command line) jailed in its own root directory.

    python -m flops_operator.platforms.local.ftp_server --port P --root DIR --user NAME
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

# Everything MLflow's FTP artifact repository does: list, read, write, mkdir, delete, rename.
USER_PERMISSIONS = "elradfmw"


def build_server(host: str, port: int, root: Path, user: str, password: str) -> FTPServer:
    root.mkdir(parents=True, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm=USER_PERMISSIONS)
    # pyftpdlib configures handlers through class attributes: a subclass keeps ours to ourselves.
    handler = type("ProjectFTPHandler", (FTPHandler,), {"authorizer": authorizer,
                                                         "banner": "flops artifact store ready"})
    server = FTPServer((host, port), handler)
    server.max_cons = 64
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    password = os.environ.get("FTP_PASS")
    if not password:
        parser.error("FTP_PASS must hold the user's password")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    server = build_server(args.host, args.port, args.root, args.user, password)
    signal.signal(signal.SIGTERM, lambda *_: server.close_all())
    try:
        server.serve_forever(handle_exit=True)
    finally:
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
