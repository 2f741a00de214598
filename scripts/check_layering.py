#!/usr/bin/env python3
"""Checks Kiln's library boundaries (docs/architecture.md, "Layering"): every production
file under src/<library>/ includes only the Kiln libraries its row below allows, and only
the files listed in ASIO_TUS include Asio or Beast (STYLE rule 12: compile time on two
cores). Tests (*_test.cpp, *_itest.cpp, test_*.hpp, *conformance*.hpp) may include more.

A row names libraries ("collab") or single headers ("collab/access.hpp": the port only).
Exit status 1 with one line per forbidden include; 0 when the tree keeps the table.
    python3 scripts/check_layering.py [SRC_DIR]
"""
import pathlib
import re
import sys

# library -> what its production files may include from other Kiln libraries.
ALLOWED = {
    "platform": set(),
    "auth": {"platform"},
    "collab": {"platform"},
    # Client libraries for outside systems: each speaks its system's protocol, nothing of
    # Kiln's domain.
    "clients/redis": {"platform"},
    "clients/sql": {"platform"},
    "clients/s3": {"platform"},
    "clients/amqp": set(),
    "store": {"clients/sql", "platform"},
    "journal": {"collab", "platform"},
    "engines/memory": {"collab", "platform"},
    "engines/redis": {"collab", "clients/redis", "platform"},
    "gateway": {"collab", "auth", "sandbox/sessions.hpp", "sandbox/sandbox.hpp",
                "sandbox/scrollback.hpp", "sandbox/spec.hpp", "sandbox/terminals.hpp",
                "sandbox/remote/remote.hpp", "sandbox/remote/wire.hpp", "platform"},
    "persist": {"collab/persistence.hpp", "store", "platform"},
    # Jobs: the rules (pure), the JobQueue port, its database adapter over the repository,
    # the worker.
    "jobs": {"store", "clients/sql/sql.hpp", "clients/amqp", "platform"},
    # Uploads and assets: the rules (pure), the service over the repositories and S3.
    "assets": {"store", "clients/sql/sql.hpp", "clients/s3", "platform"},
    # The asset pipeline (the worker role's): import, LOD chains, textures, manifests, and
    # LOD selection (pure); meshoptimizer and the model and image libraries stay in it.
    "assets/pipeline": {"assets", "jobs/job.hpp", "jobs/worker.hpp", "store", "clients/s3",
                        "clients/sql/sql.hpp", "platform"},
    # The object store's private index speaks SQL through the connection port only.
    "objects": {"clients/sql/sql.hpp", "clients/s3", "platform"},
    # The API decides access changes on the access bus port only, never a room engine.
    "api": {"assets", "auth", "collab/access.hpp", "jobs/queue.hpp", "jobs/job.hpp", "store",
            "sandbox/sandbox.hpp", "sandbox/spec.hpp", "sandbox/terminals.hpp",
            "sandbox/remote/wire.hpp",
            "clients/sql/sql.hpp", "clients/s3", "platform"},
    # A client of Kiln's own API (kiln upload, the build agent): the platform's HTTP client
    # (and S3's percent-encoding).
    "client": {"clients/s3", "platform"},
    # Sandboxes: the port, the terminal scrollback (pure) and, in their own libraries later,
    # the runc and QEMU drivers.
    "sandbox": {"platform"},
    "sandbox/oci": {"sandbox", "platform"},
    "sandbox/microvm": {"sandbox", "platform"},
    "sandbox/remote": {"sandbox", "platform"},
    "app": {"*"},
}

# Folders whose subfolders are libraries of their own (clients/redis, engines/memory, ...).
NESTED = {"clients", "engines"}
# Subfolders that are libraries of their own inside a library's folder.
SUBLIBS = {"assets/pipeline", "sandbox/microvm", "sandbox/oci", "sandbox/remote"}


def library_of(path: str) -> str:
    parts = path.split("/")
    if "/".join(parts[:2]) in SUBLIBS and len(parts) > 2:
        return "/".join(parts[:2])
    return "/".join(parts[:2]) if parts[0] in NESTED else parts[0]

# The translation units that may include Asio or Beast (everything else sees plain interfaces).
ASIO_TUS = {
    "platform/asio_impl.cpp", "platform/http_server.cpp", "platform/http_server_impl.hpp",
    "platform/http_stream_session.cpp", "platform/http_upgrade.hpp",
    "platform/runtime.cpp", "platform/runtime_asio.hpp", "clients/redis/connection.cpp",
    "gateway/gateway.cpp", "platform/websocket.cpp",
    "platform/http_client.cpp",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)


def is_test(path: pathlib.Path) -> bool:
    n = path.name
    return (n.endswith("_test.cpp") or n.endswith("_itest.cpp") or n.startswith("test_")
            or "conformance" in n or n == "test_env.hpp" or n.startswith("test_recorder"))


def allowed(lib: str, rel: str, header: str) -> bool:
    rules = ALLOWED[lib]
    if "*" in rules:
        return True
    # "clients/redis" is a library of its own: a row names it (or one header of it).
    target = library_of(header)
    own = library_of(rel)
    return target == own or target in rules or header in rules


def main() -> int:
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    problems = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in (".cpp", ".hpp") or is_test(path):
            continue
        rel = path.relative_to(src).as_posix()
        lib = library_of(rel)
        if lib not in ALLOWED:
            problems.append(f"{rel}: library '{lib}' has no row in scripts/check_layering.py")
            continue
        for kind, header in INCLUDE.findall(path.read_text(errors="replace")):
            if kind == "<":
                if re.match(r"boost/(asio|beast)", header) and rel not in ASIO_TUS:
                    problems.append(f"{rel}: includes <{header}> (Asio/Beast stay in the files "
                                    "listed in ASIO_TUS, behind plain interfaces)")
                continue
            if "/" in header and (src / header).exists() and not allowed(lib, rel, header):
                problems.append(f"{rel}: includes \"{header}\", which '{lib}' may not use")
    for p in problems:
        print(p)
    if problems:
        print(f"layering: {len(problems)} forbidden include(s); see docs/architecture.md",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
