"""Every command block in the docs runs as written, in order, on a fresh `kiln serve`
(the way Rust runs its documentation examples).

The ```sh blocks of README.md, then docs/*.md and each top-level folder's README.md by
name, are run in one bash (`set -euo pipefail`, so variables carry from block to block)
in a new directory where `kiln serve` keeps its data in `./kiln-data` and listens on the
documented addresses (127.0.0.1:7700, objects on 7701), with `kiln` on the PATH. A block
opened with ```sh no-test: REASON is not run; the reason is required. Fences named bash,
shell or console are refused: a command block is ```sh.
"""
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import KILN, Kiln

ROOT = pathlib.Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\S*)(.*)$")


def doc_files():
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted(p for p in ROOT.glob("*/README.md"))
    return files


def command_blocks(path):
    """[(line, info, text)] of the file's fenced blocks whose language is a shell."""
    out, block, start, info = [], None, 0, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and block is None:
            lang, rest = m.group(1), m.group(2).strip()
            block, start, info = [], n, (lang, rest)
            continue
        if line.startswith("```") and block is not None:
            if info[0] in ("sh", "bash", "shell", "console"):
                out.append((start, info, "\n".join(block)))
            block = None
            continue
        if block is not None:
            block.append(line)
    return out


class Docs(unittest.TestCase):
    def test_command_blocks_say_sh_and_why_they_are_not_run(self):
        for path in doc_files():
            for line, (lang, rest), _ in command_blocks(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                self.assertEqual(lang, "sh", f"{where}: command blocks are ```sh")
                if rest:
                    self.assertRegex(rest, r"^no-test: \S", f"{where}: ```sh no-test: REASON")

    def test_every_command_block_runs_on_a_fresh_serve(self):
        work = tempfile.mkdtemp(prefix="kiln-e2e-docs-")
        self.addCleanup(shutil.rmtree, work, True)
        bin_dir = os.path.join(work, ".bin")
        os.mkdir(bin_dir)
        os.symlink(os.path.abspath(shutil.which(KILN) or KILN), os.path.join(bin_dir, "kiln"))
        serve = Kiln("--http-access-log", "false", data_dir=os.path.join(work, "kiln-data"),
                     http_listen="127.0.0.1:7700", objects_listen="127.0.0.1:7701", cwd=work)
        self.addCleanup(serve.stop)
        script = ["set -euo pipefail"]
        ran = []
        for path in doc_files():
            for line, (lang, rest), text in command_blocks(path):
                if rest.startswith("no-test:"):
                    continue
                where = f"{path.relative_to(ROOT)}:{line}"
                ran.append(where)
                script += [f"echo '--- {where}' >&2", text]
        self.assertTrue(ran, "the README has command blocks")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env["PATH"] = bin_dir + os.pathsep + env["PATH"]
        r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
        last = [l for l in r.stderr.splitlines() if l.startswith("--- ")]
        self.assertEqual(r.returncode, 0,
                         f"the block at {last[-1][4:] if last else '?'} failed:\n"
                         f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
        print(f"\nran {len(ran)} command blocks: {', '.join(ran)}", flush=True)


if __name__ == "__main__":
    unittest.main()
