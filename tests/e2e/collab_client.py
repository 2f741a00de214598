"""A kiln.v1 test client on Python's `websockets` (asyncio), plus HS256 token signing.

Independent of the server's code: tokens are signed here with the standard library, frames
are plain JSON. Every wait is bounded by WAIT seconds.

A token proves identity only; the gateway decides joins from the database (members, live
scenes). A `Directory` writes that state through the REST API with the service key: once
gateways are `attach`ed to one, `Client.connect(url, user, roles)` makes `user` a member with
those roles and `Client.join(room)` creates the room's scene first (`create=False` joins
what exists, for tests of refusals).
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time

import websockets

WAIT = 20.0
SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, roles, name=None, secret=SECRET, exp_in=3600, alg="HS256", header=None, claims=None):
    head = header or {"alg": alg, "typ": "JWT"}
    payload = {"sub": sub, "name": name or sub, "exp": int(time.time()) + exp_in, "roles": roles}
    payload.update(claims or {})
    signing_input = b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(payload).encode())
    if alg == "none":
        return signing_input + "."
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


class Directory:
    """Projects, members and scenes, written through the REST API of `api` (a harness Kiln
    node) with the service key. Idempotent and thread-safe; remembers what it wrote."""

    OWNER = "e2e-owner"

    def __init__(self, api, service_key):
        self.api = api
        self.key = service_key
        self.lock = threading.Lock()
        self.projects = set()
        self.members = {}
        self.scenes = set()

    def _call(self, method, path, body, ok):
        # 429, and 503 while the database is unreachable (a failover, a restart), are waited
        # out as the server says (Retry-After), as a real client does; 503 for 30 s at most.
        unavailable_until = time.monotonic() + 30
        for _ in range(100):
            status, headers, doc = self.api.call(method, path, self.key, body)
            if status != 429 and not (status == 503 and time.monotonic() < unavailable_until):
                break
            time.sleep(float(headers.get("retry-after", "1")))  # the server's own hint
        assert status in ok, (method, path, status, doc)
        return status

    def project(self, project):
        with self.lock:
            if project in self.projects:
                return
            self._call("POST", "/v1/projects", {"id": project, "name": project, "owner": self.OWNER},
                       (201, 409))
            self.projects.add(project)

    def grant(self, user, roles):
        for project, role in roles.items():
            self.project(project)
            with self.lock:
                if self.members.get((project, user)) == role:
                    continue
                self._call("PUT", f"/v1/projects/{project}/members/{user}", {"role": role}, (200,))
                self.members[(project, user)] = role

    def scene(self, room):
        project, scene = room.split("/", 1)
        self.project(project)
        with self.lock:
            if room in self.scenes:
                return
            self._call("POST", f"/v1/projects/{project}/scenes", {"id": scene, "name": scene},
                       (201, 409))
            self.scenes.add(room)


DIRECTORIES = {}  # "host:port" of a gateway -> the Directory its database is written through


def attach(nodes, directory):
    """Clients of these gateway nodes get their roles and scenes through `directory`."""
    for n in nodes:
        DIRECTORIES[f"{n.host}:{n.port}"] = directory
    return directory


def detach(node):
    DIRECTORIES.pop(f"{node.host}:{node.port}", None)


def directory_for(url):
    return DIRECTORIES.get(url.split("://", 1)[-1].split("/", 1)[0])


class Client:
    """One connection. Replies are matched by id; other frames queue up in `inbox`."""

    opened = []  # every client of the running test, closed by run()

    def __init__(self, ws):
        self.ws = ws
        self.inbox = []
        self.next_id = 100
        self.directory = None
        Client.opened.append(self)

    @classmethod
    async def connect(cls, url, user=None, roles=None, name=None, **kw):
        directory = directory_for(url)
        if directory is not None and user is not None and roles:
            await asyncio.to_thread(directory.grant, user, roles)
        ws = await websockets.connect(url, subprotocols=["kiln.v1"], max_size=None, **kw)
        c = cls(ws)
        c.directory = directory
        if user is not None:
            c.welcome = await c.request({"t": "hello", "token": token(user, roles or {}, name)})
            assert c.welcome["t"] == "welcome", c.welcome
        return c

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def recv(self):
        return json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))

    async def request(self, msg):
        self.next_id += 1
        msg = dict(msg, id=self.next_id)
        await self.send(msg)
        while True:
            m = await self.recv()
            if m.get("id") == self.next_id and m["t"] in ("welcome", "joined", "ack", "nack", "left", "pong"):
                return m
            self.inbox.append(m)

    async def next(self, t, pred=lambda m: True):
        for i, m in enumerate(self.inbox):
            if m["t"] == t and pred(m):
                return self.inbox.pop(i)
        while True:
            m = await self.recv()
            if m["t"] == t and pred(m):
                return m
            self.inbox.append(m)

    async def join(self, room, since=None, create=True):
        if create and self.directory is not None:
            await asyncio.to_thread(self.directory.scene, room)
        msg = {"t": "join", "room": room}
        if since is not None:
            msg["since"] = since
        return await self.request(msg)

    async def op(self, room, *ops):
        return await self.request({"t": "op", "room": room, "ops": list(ops)})

    async def closed(self):
        """Reads until the server closes; returns (code, reason)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), WAIT)
        except websockets.ConnectionClosed as e:
            return e.code, e.reason

    async def close(self):
        await self.ws.close()


def run(coro):
    """Runs one test's coroutine, then closes every client it opened: a client left open
    would hold the server's drain at shutdown until its close handshake times out."""
    async def wrapper():
        try:
            return await asyncio.wait_for(coro, 120)
        finally:
            clients, Client.opened[:] = list(Client.opened), []
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return asyncio.run(wrapper())


class RawWebSocket:
    """A hand-rolled client for frames a well-behaved library refuses to send."""

    def __init__(self, host, port, path="/v1/collab", protocol="kiln.v1"):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.rest = buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.head = head.decode("latin-1")

    def send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 1 << 20 else \
            (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        try:
            self.sock.sendall(header + mask + masked)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before reading everything

    def read_close_code(self):
        """Reads frames until a close frame; returns its status code (None if the TCP
        connection ends without one)."""
        buf = self.rest
        while True:
            while len(buf) < 2:
                chunk = self._recv()
                if not chunk:
                    return None
                buf += chunk
            opcode = buf[0] & 0x0F
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                n = struct.unpack("!H", buf[2:4])[0] if len(buf) >= 4 else None
                off = 4
            elif n == 127:
                n = struct.unpack("!Q", buf[2:10])[0] if len(buf) >= 10 else None
                off = 10
            if n is None or len(buf) < off + n:
                chunk = self._recv()
                if not chunk:
                    return None
                buf += chunk
                continue
            payload, buf = buf[off:off + n], buf[off + n:]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return b""

    def close(self):
        self.sock.close()
