"""End-to-end: the `kiln` command line, configuration layering and its errors."""
import os
import pathlib
import shutil
import sqlite3
import tempfile
import unittest

from harness import Kiln, run_kiln

ROOT = pathlib.Path(__file__).resolve().parents[2]


class CommandLine(unittest.TestCase):
    def test_version(self):
        r = run_kiln("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^kiln \d+\.\d+\.\d+\n$")

    def test_help_lists_every_role(self):
        r = run_kiln("--help")
        self.assertEqual(r.returncode, 0)
        for role in ("serve", "gateway", "api", "objects", "worker", "agent", "sandboxd"):
            self.assertIn(role, r.stdout)

    def test_token_never_makes_a_secret_of_its_own(self):
        # Run away from any server's data directory: refused, naming where it looked and
        # how to point elsewhere, and nothing is created.
        d = tempfile.mkdtemp(prefix="kiln-e2e-cwd-")
        self.addCleanup(shutil.rmtree, d, True)
        r = run_kiln("token", "--user", "ann", cwd=d)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(os.path.join(d, "kiln-data", "jwt-secret"), r.stderr)
        self.assertIn("--data-dir", r.stderr)
        self.assertEqual(os.listdir(d), [], "no data directory, no secret")
        # Pointed at a running serve's data directory, the token is the serve's.
        k = Kiln()
        self.addCleanup(k.stop)
        r = run_kiln("token", "--user", "ann", "--data-dir", k.data_dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(k.call("GET", "/v1/me", r.stdout.strip())[0], 200)

    def test_token_roles_are_refused_with_where_roles_come_from(self):
        r = run_kiln("token", "--user", "ann", "--role", "demo=editor",
                     "--auth-jwt-secret", "x" * 40)
        self.assertEqual(r.returncode, 2)
        self.assertIn("PUT /v1/projects/PROJECT/members/USER", r.stderr)

    def test_a_mistyped_flag_is_named_with_the_nearest_one_and_exits_2(self):
        for args, typo, meant in [(["upload", "x", "--projcet", "demo"], "--projcet", "--project"),
                                  (["serve", "--http-lsten", "127.0.0.1:0"], "--http-lsten", "--http-listen"),
                                  (["--data-dri", "x", "serve"], "--data-dri", "--data-dir")]:
            r = run_kiln(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(f"unknown flag '{typo}'; did you mean '{meant}'?", r.stderr)
        r = run_kiln("srve")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'srve'; did you mean 'serve'?", r.stderr)
        for cmd in (["upload", "/etc/hostname", "--project", "p", "--api", "127.0.0.1:7800"],
                    ["download", "a1", "--project", "p", "--api", "localhost"]):
            r = run_kiln(*cmd)
            self.assertEqual(r.returncode, 2, (cmd, r.stderr))
            self.assertIn("not an http:// or https:// URL", r.stderr)
        for user in ("", "a b", "a/b"):
            r = run_kiln("token", "--user", user, "--auth-jwt-secret", "x" * 40)
            self.assertEqual(r.returncode, 2, (user, r.stdout))
            self.assertIn("--user must be", r.stderr)
        r = run_kiln("serve", "--projcet", "x")
        self.assertNotIn("did you mean '--project'", r.stderr, "serve has no --project")
        r = run_kiln("serve", "--zzzzzzzzzzzz")
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("did you mean", r.stderr, "nothing close: no guess")
        r = run_kiln("serve", "unexpected-argument")
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_help_shows_commands_first_and_each_commands_own_flags(self):
        r = run_kiln("--help")
        self.assertEqual(r.returncode, 0)
        out = r.stdout
        self.assertLess(out.index("Commands:"), out.index("Settings"))
        token_at, upload_at = out.index("\n  token"), out.index("\n  upload")
        self.assertIn("--user", out[token_at:upload_at], "token's own flags under it")
        self.assertIn("--http-listen <host:port>", out)
        self.assertIn("--gateway-access-ttl-ms <integer", out)
        self.assertNotIn(" TEXT ", out.split("Settings", 1)[1], "settings show their real types")
        self.assertNotIn("INT:INT", out)
        sections = [l.strip() for l in out.split("Settings", 1)[1].splitlines()
                    if l.startswith("  ") and not l.startswith("    ")]
        self.assertEqual(len(sections), len(set(sections)), "each section once")
        r = run_kiln("serve", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("serve", r.stdout.splitlines()[0])
        self.assertIn("--http-listen <host:port>", r.stdout)
        r = run_kiln("upload", "--help")
        self.assertIn("--project", r.stdout)
        r = run_kiln("download", "--help")
        self.assertIn("-o, --output <text>", r.stdout)
        self.assertIn("    --force  ", r.stdout, "a flag takes no value")
        self.assertNotIn("--http-listen", r.stdout, "a client reads no server settings")
        r = run_kiln("help", "serve")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--http-listen", r.stdout)

    def test_config_show_says_where_generated_secrets_are_and_one_boolean_grammar(self):
        r = run_kiln("config", "show", "--data-dir", "/srv/kiln", "--http-access-log", "yes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("auth.jwt_secret = <generated, in /srv/kiln/jwt-secret>", r.stdout)
        self.assertIn("http.access_log = true  (flag)", r.stdout)
        r = run_kiln("config", "show", "--http-access-log", "maybe")
        self.assertEqual(r.returncode, 2)
        self.assertIn("true or false", r.stderr)

    def test_no_command_is_an_error(self):
        r = run_kiln()
        self.assertNotEqual(r.returncode, 0)

    def test_gateway_role_serves_the_collaboration_endpoint(self):
        kiln = Kiln(role="gateway")
        try:
            status, headers, _ = kiln.request("GET", "/v1/collab")
            self.assertEqual(status, 426)
            self.assertIn("(gateway) is running at", kiln.url_line)
        finally:
            kiln.stop()

    def test_roles_not_built_yet_say_so_and_fail(self):
        for role in ("agent",):
            r = run_kiln(role)
            self.assertEqual(r.returncode, 2, role)
            self.assertIn(f"the '{role}' role is not built yet", r.stderr)

    def test_a_sandbox_host_needs_the_clusters_service_key(self):
        with tempfile.TemporaryDirectory() as d:
            r = run_kiln("sandboxd", "--data-dir", d, "--http-listen", "127.0.0.1:0")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("kiln sandboxd needs api.service_key", r.stderr)
        with tempfile.TemporaryDirectory() as d:
            r = run_kiln("gateway", "--data-dir", d, "--http-listen", "127.0.0.1:0",
                         "--sandbox-daemon", "sandbox-host")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("'sandbox-host' is not host:port", r.stderr)
        key = {"KILN_API_SERVICE_KEY": "k" * 40}
        for bad in ("http://127.0.0.1:7710", "127.0.0.1:7710/x", "127.0.0.1:77x",
                    "127.0.0.1:99999", "host name:7710"):
            with tempfile.TemporaryDirectory() as d:
                r = run_kiln("gateway", "--data-dir", d, "--http-listen", "127.0.0.1:0",
                             "--sandbox-daemon", bad, env=key)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn("is not host:port", r.stderr, bad)
        for bad, said in (("127.0.0.1:7710,,127.0.0.1:7711", "has an empty item"),
                          ("127.0.0.1:7710,", "has an empty item"),
                          ("127.0.0.1:7710, 127.0.0.1:7710", "names '127.0.0.1:7710' twice")):
            with tempfile.TemporaryDirectory() as d:
                r = run_kiln("gateway", "--data-dir", d, "--http-listen", "127.0.0.1:0",
                             "--sandbox-daemon", bad, env=key)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn(said, r.stderr, bad)
        # The key is the one guard of a host's API: a short one is refused on both sides.
        for role, extra in (("sandboxd", []), ("gateway", ["--sandbox-daemon", "127.0.0.1:7710"])):
            with tempfile.TemporaryDirectory() as d:
                r = run_kiln(role, "--data-dir", d, "--http-listen", "127.0.0.1:0", *extra,
                             env={"KILN_API_SERVICE_KEY": "short"})
            self.assertEqual(r.returncode, 2, (role, r.stderr))
            self.assertIn("shorter than 32 bytes", r.stderr, role)

    def test_an_api_node_without_a_sandbox_host_says_so(self):
        kiln = Kiln("--auth-dev-tokens", "true", role="api")
        try:
            self.assertNotIn("/v1/term ", "".join(kiln.banner))
            tok = kiln.call("POST", "/v1/dev/token", body={"user": {"id": "ann"}})[2]["token"]
            status, _, doc = kiln.call("POST", "/v1/terminals", tok)
            self.assertEqual(status, 503, doc)
            self.assertIn("no sandbox.daemon is set", doc["detail"])
        finally:
            kiln.stop()

    def test_api_role_serves_the_rest_api_and_not_the_gateway(self):
        kiln = Kiln("--http-access-log", "false", role="api")
        try:
            status, headers, _ = kiln.request("GET", "/v1/me")
            self.assertEqual(status, 401)
            self.assertEqual(headers["www-authenticate"], 'Bearer realm="kiln"')
            status, _, _ = kiln.request("GET", "/v1/collab")
            self.assertEqual(status, 404)
            self.assertIn("(api) is running at", kiln.url_line)
        finally:
            kiln.stop()

    def test_an_origin_with_two_wildcards_is_refused_at_start(self):
        for flag in ("--http-cors-origins", "--objects-cors-origins"):
            r = run_kiln("serve", flag, "https://ok.example,*://*.example")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("an origin may contain at most one '*' (got '*://*.example')", r.stderr)

    def test_a_worker_without_redis_runs_jobs_and_stores_no_rooms(self):
        # A worker runs what it has work for: jobs always; rooms only when they live in
        # Redis (room.engine=redis); with the memory engine `kiln serve` stores its own.
        kiln = Kiln(role="worker")
        try:
            status, _, body = kiln.request("GET", "/readyz")
            self.assertEqual(status, 200, body)
            status, _, metrics = kiln.request("GET", "/metrics")
            self.assertIn(b"kiln_jobs_outbox_relayed_total", metrics)
            self.assertNotIn(b"kiln_persist_passes_total", metrics)
        finally:
            kiln.stop()

    def test_api_with_a_storage_endpoint_needs_its_secret_key(self):
        with tempfile.TemporaryDirectory() as d:
            r = run_kiln("api", "--data-dir", d, "--http-listen", "127.0.0.1:0",
                         "--storage-endpoint", "http://127.0.0.1:1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("storage.secret_key is required", r.stderr)

    def test_migrate_creates_the_schema_once(self):
        with tempfile.TemporaryDirectory() as d:
            first = run_kiln("migrate", "--data-dir", d)
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertRegex(first.stdout, r"schema version 0 -> (\d+) \(\1 migrations applied\)")
            self.assertIn(os.path.join(d, "kiln.db"), first.stdout)
            again = run_kiln("migrate", "--data-dir", d)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertIn("(0 migrations applied)", again.stdout)

    def test_with_migrate_on_start_off_an_older_schema_is_refused_untouched(self):
        # persistence.md: a node finding an older schema refuses to start and says to run
        # `kiln migrate`; it changes nothing. "Older" made for real: the newest migration's
        # record is removed from a migrated database (as if the binary were upgraded).
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(run_kiln("migrate", "--data-dir", d).returncode, 0)
            db = sqlite3.connect(os.path.join(d, "kiln.db"))
            latest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            db.execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))
            db.commit()
            r = run_kiln("serve", "--data-dir", d, "--database-migrate-on-start", "false",
                         "--http-listen", "127.0.0.1:0", "--objects-listen", "127.0.0.1:0")
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn(f"has schema version {latest - 1}, this kiln needs {latest}", r.stderr)
            self.assertIn("run `kiln migrate`", r.stderr)
            self.assertEqual(db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0],
                             latest - 1, "the refusing node changed the schema")
            db.close()
        # An empty database is older too.
        with tempfile.TemporaryDirectory() as d:
            r = run_kiln("serve", "--data-dir", d, "--database-migrate-on-start", "false",
                         "--http-listen", "127.0.0.1:0", "--objects-listen", "127.0.0.1:0")
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("has schema version 0", r.stderr)

    def test_migrate_against_an_unreachable_database_fails_without_leaking_the_password(self):
        r = run_kiln("migrate", "--database-url", "postgresql://kiln:hunter2@127.0.0.1:1/kiln",
                     "--database-connect-timeout-ms", "1000")
        self.assertEqual(r.returncode, 1)
        self.assertIn("migrate failed on postgresql://kiln:***@127.0.0.1:1/kiln", r.stderr)
        self.assertNotIn("hunter2", r.stderr + r.stdout)


class Configuration(unittest.TestCase):
    def write_config(self, text):
        fd, path = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def show(self, *args, env=None):
        r = run_kiln(*args, "config", "show", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = {}
        for line in r.stdout.splitlines():
            key, rest = line.split(" = ", 1)
            value, source = rest.rsplit("  (", 1)
            out[key] = (value, source.rstrip(")"))
        return out

    def test_flags_beat_environment_beat_file_beat_defaults(self):
        path = self.write_config("http:\n  listen: 127.0.0.1:1001\n  idle_timeout_ms: 5000\n"
                                 "log:\n  level: debug\n")
        env = {"KILN_HTTP_LISTEN": "127.0.0.1:1002", "KILN_HTTP_IDLE_TIMEOUT_MS": "6000"}
        shown = self.show("--config", path, "--http-listen", "127.0.0.1:1003", env=env)
        self.assertEqual(shown["http.listen"], ("127.0.0.1:1003", "flag"))
        self.assertEqual(shown["http.idle_timeout_ms"], ("6000", "env"))
        self.assertEqual(shown["log.level"], ("debug", "file"))
        self.assertEqual(shown["log.format"], ("auto", "default"))

    def test_invalid_flag_value_names_setting_value_and_allowed(self):
        r = run_kiln("serve", "--http-max-body-bytes", "lots")
        self.assertEqual(r.returncode, 2)
        self.assertIn("http.max_body_bytes", r.stderr)
        self.assertIn("'lots'", r.stderr)
        self.assertIn("an integer from 0 to 1073741824", r.stderr)

    def test_invalid_environment_value_is_reported_with_its_variable(self):
        r = run_kiln("serve", env={"KILN_LOG_LEVEL": "loud"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("KILN_LOG_LEVEL", r.stderr)
        self.assertIn("one of trace, debug, info, warn, error", r.stderr)

    def test_unknown_environment_setting_is_an_error(self):
        r = run_kiln("serve", env={"KILN_HTTP_LISEN": "127.0.0.1:1"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("KILN_HTTP_LISEN: no such setting", r.stderr)

    def test_invalid_file_is_reported_with_its_path(self):
        path = self.write_config("http:\n  listen: nowhere\n")
        r = run_kiln("--config", path, "serve")
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)
        self.assertIn("http.listen", r.stderr)
        bad = self.write_config("http: [\n")
        r = run_kiln("--config", bad, "serve")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not valid YAML", r.stderr)

    def test_address_in_use_is_a_clear_start_up_error(self):
        first = Kiln()
        other = tempfile.mkdtemp(prefix="kiln-e2e-")  # one serve per data directory
        self.addCleanup(shutil.rmtree, other, True)
        try:
            r = run_kiln("serve", "--http-listen", f"127.0.0.1:{first.port}",
                         "--data-dir", other)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot listen on", r.stderr)
            self.assertIn("http.listen", r.stderr)
        finally:
            first.stop()

    def test_logs_are_text_on_a_terminal_and_json_otherwise(self):
        # Every other test reads the logs through a pipe as JSON lines; on a terminal the
        # default (log.format auto) writes text.
        import pty
        import select
        import subprocess
        from harness import KILN
        master, slave = pty.openpty()
        d = tempfile.mkdtemp(prefix="kiln-e2e-tty-")
        self.addCleanup(shutil.rmtree, d, True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        p = subprocess.Popen([KILN, "serve", "--http-listen", "127.0.0.1:0", "--objects-listen",
                              "127.0.0.1:0", "--data-dir", d], stdout=subprocess.DEVNULL,
                             stderr=slave, env=env)
        os.close(slave)
        try:
            seen = b""
            while b"\n" not in seen:
                ready, _, _ = select.select([master], [], [], 20)
                self.assertTrue(ready, "a log line on the terminal")
                seen += os.read(master, 4096)
            first = seen.split(b"\n")[0].strip()
            self.assertFalse(first.startswith(b"{"), first)
            self.assertIn(b"info", first.lower())
        finally:
            p.terminate()
            p.wait(20)
            os.close(master)

    def test_text_log_format_from_a_file(self):
        path = self.write_config("log:\n  format: text\n")
        kiln = Kiln("--config", path)
        try:
            kiln.request("GET", "/healthz")
        finally:
            kiln.stop()
            kiln.wait_exit()
        self.assertTrue(any(" info listening " in l for l in kiln.lines), kiln.lines[:3])

    def test_readme_configuration_reference_matches_the_code(self):
        r = run_kiln("config", "doc")
        self.assertEqual(r.returncode, 0)
        doc = (ROOT / "docs" / "configuration.md").read_text()
        self.assertTrue(r.stdout in doc, "docs/configuration.md is stale: regenerate it with "
                                         "`bash scripts/gen-config-doc.sh`")


if __name__ == "__main__":
    unittest.main()
