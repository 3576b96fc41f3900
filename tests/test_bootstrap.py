"""scripts/bootstrap.sh (behind every make target) decides well when to create, install
and rebuild. It runs here against stand-in interpreters that only record what they are
asked, so each decision takes milliseconds instead of a real install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = r"""#!/usr/bin/env bash
# A stand-in interpreter "{name}": records every call; a virtualenv it makes holds a copy.
echo "{name} $*" >> "$FAKE_LOG"
venv_flag() {{ [ -f "$(dirname "$0")/../$1" ]; }}
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip") [ "$3" = --version ] && venv_flag no-pip && exit 1; exit 0 ;;
  "-c import trio_scheduler") venv_flag package-gone && exit 1; exit 0 ;;
  "-c "*realpath*) echo "/opt/{name}/bin/python 3.12.1" ;;
esac
exit 0
"""


class Checkout:
    """A copy of what bootstrap reads, with stand-in interpreters ``python3`` (named A)
    and ``python-b`` (B) on its PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "scripts").mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "bootstrap.sh", root / "scripts")
        shutil.copy(ROOT / "pyproject.toml", root)
        shutil.copy(ROOT / "Makefile", root)
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        for command, name in (("python3", "A"), ("python-b", "B")):
            path = self.bin / command
            path.write_text(FAKE_PYTHON.format(name=name))
            path.chmod(0o755)
        for command in ("redis-server", "chromium"):  # --with-redis finds them
            (self.bin / command).symlink_to("/bin/true")
        self.log = root / "calls.log"
        self.log.touch()
        self.venv = root / ".venv"

    def env(self, python: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
        env.update(PATH=f"{self.bin}:{env['PATH']}", FAKE_LOG=str(self.log))
        if python is not None:
            env["PYTHON"] = python
        return env

    def bootstrap(self, *args: str, python: str | None = None) -> str:
        """Run it; what it told the user (stderr). Calls since the last run: ``calls``."""
        self._seen = len(self.log.read_text().splitlines())
        done = subprocess.run(["bash", "scripts/bootstrap.sh", *args], cwd=self.root,
                              env=self.env(python), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stderr

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()[self._seen:]

    def installs(self) -> list[str]:
        return [c for c in self.calls if " -m pip install --quiet -e " in c]


@pytest.fixture
def checkout(tmp_path) -> Checkout:
    return Checkout(tmp_path / "checkout")


def test_first_run_creates_and_installs_then_nothing(checkout):
    said = checkout.bootstrap()
    assert "creating .venv with python3" in said
    assert checkout.installs() == ["A -m pip install --quiet -e .[test]"]
    assert (checkout.venv / ".made-by").read_text() == "/opt/A/bin/python 3.12.1\n"
    assert checkout.bootstrap() == ""  # nothing changed: silent
    assert checkout.installs() == []
    assert checkout.bootstrap("--with-redis") == ""


def test_each_extra_is_installed_once(checkout):
    checkout.bootstrap()
    checkout.bootstrap("--with-bench")
    assert checkout.installs() == ["A -m pip install --quiet -e .[bench]"]
    assert checkout.bootstrap() == "" and checkout.bootstrap("--with-bench") == ""


def test_a_changed_pyproject_installs_again(checkout):
    checkout.bootstrap("--with-bench")
    with open(checkout.root / "pyproject.toml", "a") as file:
        file.write("\n# a new dependency\n")
    checkout.bootstrap()
    assert checkout.installs() == ["A -m pip install --quiet -e .[test]"]
    stamps = sorted(p.name for p in checkout.venv.glob(".installed-*"))
    assert len(stamps) == 1 and stamps[0].endswith("-test")  # the old ones are gone
    checkout.bootstrap("--with-bench")
    assert checkout.installs() == ["A -m pip install --quiet -e .[bench]"]


def test_python_names_another_interpreter_so_the_venv_is_rebuilt(checkout):
    checkout.bootstrap()
    said = checkout.bootstrap(python="python-b")
    assert ("rebuilding .venv: it was made by /opt/A/bin/python 3.12.1, PYTHON is "
            "/opt/B/bin/python 3.12.1") in said
    assert checkout.installs() == ["B -m pip install --quiet -e .[test]"]
    assert checkout.bootstrap(python="python-b") == ""
    assert checkout.bootstrap() == ""  # without PYTHON, the venv that is there stays


def test_make_passes_python_on(checkout):
    checkout.bootstrap()
    done = subprocess.run(["make", "-s", "test", "PYTHON=python-b", "ARGS=-q"],
                          cwd=checkout.root, env=checkout.env(None),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "rebuilding .venv" in done.stderr
    assert checkout.log.read_text().splitlines()[-1] == "B -m pytest -q"


@pytest.mark.parametrize(
    ("break_it", "said"),
    [
        (lambda venv: (venv / "bin" / "python").unlink(), "its python does not run"),
        (lambda venv: (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n"),
         "its python does not run"),
        (lambda venv: ((venv / ".made-by").unlink(), (venv / "no-pip").touch()),
         "its creation did not finish"),
    ],
    ids=["python-removed", "python-fails", "interrupted"],
)
def test_a_broken_venv_is_rebuilt(checkout, break_it, said):
    checkout.bootstrap()
    break_it(checkout.venv)
    message = checkout.bootstrap()
    assert f"rebuilding .venv: {said}" in message and "creating .venv" in message
    assert checkout.installs() == ["A -m pip install --quiet -e .[test]"]
    assert checkout.bootstrap() == ""


def test_a_venv_missing_the_package_gets_it_again(checkout):
    checkout.bootstrap()
    (checkout.venv / "package-gone").touch()
    assert "the package is gone from .venv" in checkout.bootstrap()
    assert checkout.installs() == ["A -m pip install --quiet -e .[test]"]


def test_a_complete_venv_from_before_is_adopted(checkout):
    checkout.bootstrap()
    (checkout.venv / ".made-by").unlink()  # as an older bootstrap left it
    assert checkout.bootstrap() == ""
    assert checkout.installs() == []
    assert (checkout.venv / ".made-by").read_text() == "/opt/A/bin/python 3.12.1\n"


def test_a_python_that_is_not_there(checkout):
    done = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=checkout.root,
                          env=checkout.env("python9.9"), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr == ("bootstrap: PYTHON=python9.9 is not a command here "
                           "(python3 >= 3.11 is needed)\n")
