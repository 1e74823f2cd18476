"""Runs started by these tests write their Prometheus file_sd into a private temp dir, never
into the machine's default /tmp/raytrain_eff/file_sd that a real Prometheus may read."""
import os
import tempfile

os.environ.setdefault("RAYTRAIN_EFF_FILE_SD_DIR", tempfile.mkdtemp(prefix="rte-file-sd-"))
