"""Starts the real `kiln` binary and talks to it over real sockets.

No sleeps: every wait is for an observable event (a line on stdout or in the log, a socket
becoming readable, the process exiting), each bounded by a timeout that fails the test.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

KILN = os.environ.get("KILN_BIN", "kiln")
WAIT = 20.0  # generous bound for any single event on a loaded 2-core machine

# What a sanitizer (the asan preset) prints: a report fails the test that started the process.
SANITIZER = re.compile(r"ERROR: \w*Sanitizer|SUMMARY: \w*Sanitizer|runtime error: |"
                       r"WARNING: ThreadSanitizer")


def helper_ports():
    """Ports for helper servers that cannot bind port 0 and report it (redis-server: port 0
    turns TCP off; socat). Random ones between the fixtures' ports (up to 27005) and the
    kernel's ephemeral range, so that no port-0 bind (every Kiln the tests start) takes one
    meanwhile; a caller whose server finds its port taken (another test's helper) tries the
    next. Never bind-then-close: the port would be free for anyone until the server binds."""
    import random
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    rng = random.SystemRandom()
    for _ in range(50):
        yield rng.randint(28000, ephemeral_low - 1)


# Set by CMake for the sanitized presets (asan): the binary runs ~10x slower and the
# sanitizers reserve the address space an RLIMIT_AS would cap.
SANITIZED = os.environ.get("KILN_SANITIZED") == "1"


def full_speed(reason):
    """Marks a test (or a whole class) that needs the unsanitized build: minutes of work
    under AddressSanitizer, an RLIMIT_AS, or kiln-bench (built in dev only). Skipped when
    KILN_SANITIZED=1. When scripts/test.sh runs both presets, the dev run runs only these
    (KILN_E2E_FULL_SPEED_ONLY=1, see run.py) and the asan run all the others: every test
    runs once, under the sanitizers where it can."""
    import unittest

    def mark(test):
        test.kiln_full_speed = True
        return unittest.skipIf(SANITIZED, reason)(test)
    return mark


def needs(condition, what):
    """Skips a test or class when a server, package or fixture it needs is missing; the
    reason starts with "missing: ", which run.py turns into a failure under CI=true."""
    import unittest
    return unittest.skipUnless(condition, "missing: " + what)


class Kiln:
    """One running `kiln` process with its stdout URL line and its log lines."""

    def __init__(self, *args, env=None, role="serve", data_dir=None, http_listen="127.0.0.1:0",
                 objects_listen="127.0.0.1:0", cwd=None, expect_errors=()):
        # stop() asserts a clean exit (status 0 after SIGTERM), no sanitizer report and no
        # error-level log record but those whose message matches one of `expect_errors`
        # (regular expressions; expect_error() adds more while the test runs).
        self.expect_errors = list(expect_errors)
        self.exit_checked = False  # set by wait_exit() (the caller judges the status)
        self.killed = False  # set by signal(SIGKILL)
        # A given data_dir outlives the process (a restart test starts another on it).
        self.keep_data = data_dir is not None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="kiln-e2e-")
        self.args = list(args)
        self.role = role
        self.companions = []  # nodes stopped with this one (e.g. the API node of gateways)
        cmd = [KILN, role, "--http-listen", http_listen, "--objects-listen", objects_listen,
               "--data-dir", self.data_dir, *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, text=True, cwd=cwd)
        self.lines = []  # log lines (stderr), in order
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        first = self._readline_stdout()
        m = re.search(r"running at http://([^:/]+):(\d+)/", first)
        if not m:
            self.proc.kill()
            raise AssertionError(f"kiln did not start: {first!r}\n" + "\n".join(self.lines))
        self.host, self.port = m.group(1), int(m.group(2))
        self.url_line = first
        self.banner = [first]  # the URL line and what follows it, up to "start here"
        while "start here" not in self.banner[-1]:
            self.banner.append(self._readline_stdout())

    def _readline_stdout(self):
        result = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(WAIT)
        if not result:
            self.proc.kill()
            raise AssertionError("kiln printed no URL within %ss" % WAIT)
        return result[0]

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def log_records(self):
        with self._cv:
            return [json.loads(l) for l in self.lines if l.startswith("{")]

    def wait_for_log(self, predicate, what):
        """Blocks until a JSON log record satisfies predicate; returns it."""
        deadline = time.monotonic() + WAIT
        seen = 0
        with self._cv:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if line.startswith("{"):
                        rec = json.loads(line)
                        if predicate(rec):
                            return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line for {what}; log:\n" + "\n".join(self.lines))
                self._cv.wait(left)

    def connect(self):
        s = socket.create_connection((self.host, self.port), timeout=WAIT)
        return s

    def request(self, method, path, headers=None, body=b"", sock=None):
        """Sends one request and reads one response. Returns (status, headers, body)."""
        own = sock is None
        s = sock or self.connect()
        try:
            send_request(s, method, path, headers, body)
            return read_response(s, head=(method == "HEAD"))
        finally:
            if own:
                s.close()

    def call(self, method, path, token=None, body=None, raw=None, headers=None):
        """A JSON API call: `token` as the bearer credential, `body` sent as JSON (or `raw`
        bytes as they are). Returns (status, headers, parsed JSON body or None)."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = b""
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        status, hd, bd = self.request(method, path, h, data)
        return status, hd, (json.loads(bd) if bd else None)

    def service_key(self):
        """The API's service key: the one on the command line, else the one the node
        generated in its data directory."""
        if "--api-service-key" in self.args:
            return self.args[self.args.index("--api-service-key") + 1]
        with open(os.path.join(self.data_dir, "service-key")) as f:
            return f.read().strip()

    def expect_error(self, pattern):
        """An error-level log message this test causes on purpose (a regular expression)."""
        self.expect_errors.append(pattern)

    def signal(self, sig=signal.SIGTERM):
        if sig == signal.SIGKILL:
            self.killed = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=WAIT):
        code = self.proc.wait(timeout)
        self.exit_checked = True
        self.stop()
        return code

    def problems(self):
        """What this process's exit and output show that no test asked for."""
        found = []
        code = self.proc.returncode
        if not self.killed and not self.exit_checked and code != 0:
            found.append(f"exit status {code} after SIGTERM (expected 0)")
            if code != -signal.SIGKILL:  # an abort or a failed exit: what it printed last
                said = [line for line in self.lines if not line.startswith("{")][-12:]
                found.extend("  said: " + line for line in said)
            if code == -signal.SIGKILL:  # it did not stop within WAIT: what it said last
                found.append(f"not stopped {WAIT:.0f} s after SIGTERM; its last log lines:")
                found.extend("  " + line for line in self.lines[-12:])
                found.append("its threads then:")
                found.extend("  " + line for line in getattr(self, "stacks", "").splitlines())
        report = 0  # lines of a sanitizer report still to show (its stacks say where)
        for line in self.lines:
            if SANITIZER.search(line):
                found.append("sanitizer: " + line)
                report = 80 if "ERROR:" in line else 0
            elif report > 0:
                report -= 1
                found.append("sanitizer:   " + line)
            elif line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("level") in ("error", "critical") and not any(
                        re.search(p, rec.get("msg", "")) for p in self.expect_errors):
                    found.append("error log: " + line)
        return found

    def stop(self):
        from collab_client import detach
        detach(self)  # the port may be reused by another test's node
        companion_problems = []
        for c in self.companions:
            try:
                c.stop()
            except AssertionError as e:  # this node is stopped all the same
                companion_problems.append(str(e))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.stacks = thread_stacks(self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        self._reader.join(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if not getattr(self, "_judged", False):
            self._judged = True  # stop() may run again (tearDown after a test's own stop)
            found = self.problems() + companion_problems
            if found:
                raise AssertionError(f"kiln {self.role} {' '.join(self.args)[:200]}: " +
                                     "\n".join(found[:400]))


def wait_until(predicate, what, timeout=WAIT):
    """Polls a condition on an outside system (a database, Redis, what a node reports)
    until it holds; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def thread_stacks(pid):
    """Every thread's stack of a running process (gdb), frames without their arguments:
    what a process that does not stop is waiting for."""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "set print frame-arguments none",
                              "-ex", "thread apply all bt 12"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(no stacks: {e})"
    return "\n".join(line[:160] for line in out.splitlines() if line.startswith(("#", "Thread")))


def with_api(gateways, *args):
    """Starts a `kiln api` node beside gateway nodes that share its database (given in
    `args`), attaches a collab_client.Directory writing through it to the gateways, and
    stops it with the first gateway. Returns the api node."""
    from collab_client import Directory, attach
    api = Kiln(*args, role="api")
    gateways[0].companions.append(api)
    attach(gateways, Directory(api, api.service_key()))
    return api


class SharedAccess:
    """A database for several nodes of a test (SQLite by default) and a `kiln api` node on
    it through which a collab_client.Directory writes projects, members and scenes: the
    access the gateways decide joins from. Gateways get `args()`."""

    def __init__(self, *api_args, database_url=None):
        from collab_client import Directory
        self.url = database_url or shared_sqlite()
        self.api = Kiln("--http-access-log", "false", *api_args, "--database-url", self.url,
                        role="api")
        self.directory = Directory(self.api, self.api.service_key())

    def args(self):
        return ["--database-url", self.url]

    def attach(self, gateways):
        from collab_client import attach
        attach(gateways, self.directory)
        return gateways

    def grant(self, users, roles, rooms=()):
        for u in users:
            self.directory.grant(u, roles)
        for r in rooms:
            self.directory.scene(r)

    def stop(self):
        self.api.stop()


_MODULE_ACCESS = []


def module_access():
    """One SharedAccess for the whole test module (stopped at exit)."""
    if not _MODULE_ACCESS:
        import atexit
        a = SharedAccess()
        atexit.register(a.stop)
        _MODULE_ACCESS.append(a)
    return _MODULE_ACCESS[0]


def shared_sqlite():
    """A SQLite database URL for several nodes of one test (removed at exit)."""
    d = tempfile.mkdtemp(prefix="kiln-e2e-db-")
    import atexit
    atexit.register(shutil.rmtree, d, True)
    return f"sqlite:{d}/kiln.db"


def raw_exchange(host, port, request: bytes) -> bytes:
    """Sends bytes as they are, half-closes, and returns everything the server sent until it
    closed (for framing tests a well-behaved client library would not send)."""
    with socket.create_connection((host, port), timeout=WAIT) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def send_request(s, method, path, headers=None, body=b""):
    hdrs = {"Host": "kiln.test"}
    if body:
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    s.sendall(head.encode() + b"\r\n" + body)


def read_response(s, head=False):
    """Reads one HTTP/1.1 response with a Content-Length body. Returns (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response header: {buf!r}")
        buf += chunk
    raw_head, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(s):
    """True when the server has closed the connection (recv returns EOF or a reset)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def run_kiln(*args, env=None, timeout=WAIT, cwd=None):
    """Runs a short `kiln` command (in `cwd`, default a new empty directory, so that
    nothing it writes lands in the source tree); returns CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    full_env.update(env or {})
    own = cwd is None
    cwd = cwd or tempfile.mkdtemp(prefix="kiln-e2e-cwd-")
    try:
        return subprocess.run([KILN, *args], capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=cwd)
    finally:
        if own:
            shutil.rmtree(cwd, ignore_errors=True)
