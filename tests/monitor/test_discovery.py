"""Exporters on the shared Ray session: replaced when their settings change, stopped on demand,
and a file_sd per cluster that the writer keeps current."""

import json
import pathlib
import socket
import urllib.request

import pytest
from timeouts import scaled

from raytrain_eff.monitor import discovery

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(autouse=True)
def no_exporters(ray_session):
    """The session is shared: runs of earlier tests leave their exporters and file_sd
    writers (detached, as on a real cluster); each test here starts from none."""
    discovery.stop_exporters()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).read()
        return True
    except OSError:
        return False


def test_changed_settings_replace_the_exporter_and_stop_ends_them(tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv(discovery.HOST_ENV, raising=False)
    first_port, second_port = _free_port(), _free_port()
    (old,) = discovery.ensure_exporters("127.0.0.1", first_port)
    assert int(old["target"].rsplit(":", 1)[1]) >= first_port and _listening(old["url"])
    (new,) = discovery.ensure_exporters("127.0.0.1", second_port)  # `exporter --port` again
    assert int(new["target"].rsplit(":", 1)[1]) >= second_port and new["target"] != old["target"]
    assert _listening(new["url"]) and not _listening(old["url"])
    assert discovery.list_exporters() == [new]
    # the same settings again: the same exporter, not a new one
    handle = discovery.node_exporter("127.0.0.1", second_port)
    assert ray.get(handle.address.remote()) == new

    path = discovery.start_file_sd(
        "127.0.0.1", second_port, tmp_path / "sd" / "c.json", refresh_s=0.5
    )
    groups = json.loads(pathlib.Path(path).read_text())
    assert groups == [{"targets": [new["target"]], "labels": {"node_id": new["node_id"]}}]

    assert discovery.stop_exporters() == {"writers": 1, "exporters": 1}
    assert discovery.list_exporters() == []
    assert not (tmp_path / "sd" / "c.json").exists() and not _listening(new["url"])


def test_the_default_file_sd_is_one_file_per_cluster_under_the_configured_dir(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(discovery.FILE_SD_DIR_ENV, str(tmp_path))
    path = discovery.cluster_file_sd()
    assert path.parent == tmp_path and path.name.startswith("cluster-")
    assert path == discovery.cluster_file_sd()  # stable for one cluster


def test_exporter_command_on_a_cluster_keeps_a_file_sd_and_stop_ends_it(tmp_path, monkeypatch):
    import threading
    import time

    from raytrain_eff.monitor.cli_exporter import run_exporter, stop_cluster

    monkeypatch.delenv(discovery.HOST_ENV, raising=False)
    file_sd, stop, lines = tmp_path / "sd.json", threading.Event(), []
    port = _free_port()
    thread = threading.Thread(
        target=run_exporter,
        args=("127.0.0.1", port, str(file_sd)),
        kwargs={"address": "auto", "refresh_s": 0.5, "stop": stop, "echo": lines.append},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not file_sd.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        [group] = json.loads(file_sd.read_text())
        assert int(group["targets"][0].rsplit(":", 1)[1]) >= port
        assert _listening(f"http://{group['targets'][0]}/metrics")
    finally:
        stop.set()
        thread.join(timeout=scaled(60))
    assert lines[0] == f"Prometheus file_sd: {file_sd}"
    assert any(group["targets"][0] in line for line in lines[1:])
    out = []
    assert stop_cluster("auto", echo=out.append) == 0
    assert out == ["stopped 1 exporter(s) and 1 file_sd writer(s)"]
    assert not file_sd.exists() and discovery.list_exporters() == []
