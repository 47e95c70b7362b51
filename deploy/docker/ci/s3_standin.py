"""The S3 server of the CI compose stack (docker-compose.ci.yml), in place of MinIO: Ceph's RADOS
Gateway, the real S3 server the S3 tests already use (deploy/s3/radosgw.py).

On the first start it creates the one-node cluster in /data/ceph (a volume) with the services'
access key; every start then runs the monitor, the OSD and radosgw from that directory in the
foreground, radosgw listening on 0.0.0.0:9000, so that the data survives `down` + `up`. The
container lives as long as all three do.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from deploy.s3 import radosgw

WORKDIR = Path(os.environ.get("CEPH_DIR", "/data/ceph"))
PORT = 9000


def create() -> None:
    """A fresh cluster with the services' key; its daemons are stopped again (started below)."""
    radosgw.start(WORKDIR, access_key=os.environ["S3_ACCESS_KEY"], secret_key=os.environ["S3_SECRET_KEY"],
                  bucket=os.environ.get("S3_BUCKET", "mlstudio"), timeout=120)
    state = radosgw.json.loads((WORKDIR / radosgw.STATE_FILE).read_text())
    for pid in state["pids"].values():
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    (WORKDIR / radosgw.STATE_FILE).unlink()


def main() -> int:
    if not (WORKDIR / "ceph.conf").is_file():
        create()
    conf = WORKDIR / "ceph.conf"
    # The cluster talks over 127.0.0.1; only radosgw listens on the container's network.
    conf.write_text(re.sub(r"rgw_frontends = beast endpoint=\S+", f"rgw_frontends = beast endpoint=0.0.0.0:{PORT}", conf.read_text()))
    base = ["--conf", str(conf)]
    daemons = [
        subprocess.Popen(["ceph-mon", *base, "-i", "a", "-f"]),
        subprocess.Popen(["ceph-osd", *base, "-i", "0", "-f"]),
        subprocess.Popen(["radosgw", *base, "-n", "client.rgw", "-f"]),
    ]

    def stop(signum, frame):
        for daemon in daemons:
            daemon.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid, status = os.wait()  # the first daemon to end ends the container
    stop(None, None)
    for daemon in daemons:
        daemon.wait()
    return os.waitstatus_to_exitcode(status) if status else 0


if __name__ == "__main__":
    sys.exit(main())
