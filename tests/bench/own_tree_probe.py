"""Runs ``bench.harness.OwnTree``'s scenarios in a fresh process and prints the CPU seconds the
tree counted for each as JSON. The tests run it as a child of their own: a test's process
inside a whole suite has Ray's processes and threads of earlier tests below it, and their CPU
would be counted too."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bench import harness  # noqa: E402

SPIN = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"


def wait_for(path: pathlib.Path) -> None:
    while not path.exists():
        time.sleep(0.05)


def descendants_and_a_stranger(tmp: pathlib.Path) -> dict[str, float]:
    tree = harness.OwnTree()
    before = tree.cpu_s()
    subprocess.run([sys.executable, "-c", SPIN], check=True)  # a rank, waited for
    waited = tree.cpu_s()
    done = tmp / "live"  # a rank still alive, not waited for yet
    live = subprocess.Popen(
        [sys.executable, "-c", SPIN + f"open({str(done)!r}, 'w').close()\ninput()"],
        stdin=subprocess.PIPE,
    )
    wait_for(done)
    alive = tree.cpu_s()
    live.communicate(b"\n")
    reaped = tree.cpu_s()
    # a process outside the tree: its shell exits before the tree samples, so it never
    # counted as the run's
    done, script = tmp / "stranger", tmp / "stranger.py"
    script.write_text(SPIN + f"open({str(done)!r}, 'w').close()\n")
    subprocess.run(["sh", "-c", f"{sys.executable} {script} &"], check=True)
    after_shell = tree.cpu_s()
    wait_for(done)
    return {
        "waited": waited - before,
        "alive": alive - waited,
        "after_reaping_it": reaped - alive,
        "stranger": tree.cpu_s() - after_shell,
    }


def a_daemon_adopted_elsewhere(tmp: pathlib.Path) -> dict[str, float]:
    """Ray's daemons: started below the run, re-parented when their parent exits, and reaped
    by init, never by the run; the CPU they took is still the run's."""
    tree = harness.OwnTree()
    spun, release, script = tmp / "spun", tmp / "release", tmp / "daemon.py"
    script.write_text(
        SPIN
        + f"import os, time\nopen({str(spun)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        + f"os.replace({str(spun)!r} + '.tmp', {str(spun)!r})\n"
        + f"while not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
    )
    before = tree.cpu_s()
    parent = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} {script} & read line"], stdin=subprocess.PIPE
    )
    wait_for(spun)
    daemon = int(spun.read_text())
    tree.cpu_s()  # seen below its shell
    parent.communicate(b"\n")  # the shell exits; the daemon is adopted elsewhere
    release.touch()
    while pathlib.Path(f"/proc/{daemon}").exists():  # ended and reaped by its adopter
        time.sleep(0.02)
    return {"daemon": tree.cpu_s() - before}


if __name__ == "__main__":
    scenario = {"descendants": descendants_and_a_stranger, "daemon": a_daemon_adopted_elsewhere}
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(scenario[sys.argv[1]](pathlib.Path(tmp))))
