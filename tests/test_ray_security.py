"""A local Ray cluster started by RayRunner listens on the loopback interface only.

Ray's services (GCS, raylet, workers, agents) run code for whoever reaches their ports, so
a cluster started just for this process must not be reachable from other hosts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import posixpath
import re
import time

import pytest

from assay.exec.runner import RayRunner

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'assay[ray]')")
psutil = pytest.importorskip("psutil", reason="psutil (a Ray dependency) is not importable")

_SESSION_DIR = re.compile(r"--session[_-]dir=(\S+)")
# A process that exits, or that we may not inspect, while we look at it.
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def _is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or addr).is_loopback


def _session_processes() -> dict[int, psutil.Process]:
    """The driver, everything it started, and every process naming its Ray session dir."""
    driver = psutil.Process()
    procs = {driver.pid: driver}
    procs.update((p.pid, p) for p in driver.children(recursive=True))
    sessions = set()
    for p in list(procs.values()):
        with contextlib.suppress(*_GONE):
            sessions.update(_SESSION_DIR.findall(" ".join(p.cmdline())))
    assert sessions, "found no Ray process with a --session-dir among the driver's children"
    for p in psutil.process_iter():
        with contextlib.suppress(*_GONE):
            if any(s in " ".join(p.cmdline()) for s in sessions):
                procs[p.pid] = p
                procs.update((c.pid, c) for c in p.children(recursive=True))
    return procs


def _listening_sockets() -> set[tuple[str, int, str]]:
    found = set()
    for p in _session_processes().values():
        # net_connections is psutil >= 6's name for connections
        tcp = getattr(p, "net_connections", None) or p.connections
        try:
            conns = tcp(kind="tcp")
            name = p.name()
        except _GONE:
            continue
        found.update(
            (c.laddr.ip, c.laddr.port, name) for c in conns if c.status == psutil.CONN_LISTEN
        )
    return found


@pytest.mark.slow
def test_local_ray_cluster_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # ray.init would connect to RAY_ADDRESS instead of starting a cluster.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    try:
        # A plain stdlib function: Ray workers can import it, not this test module.
        names = RayRunner(workers=1, progress=False).map(posixpath.basename, ["a/b", "c/d"])
        assert names == ["b", "d"]
        gcs_port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        # Some agents open their ports a little after start-up: check the union of a few
        # samples. A slow machine can only make this miss a late socket, never fail it.
        sockets: set[tuple[str, int, str]] = set()
        for _ in range(5):
            sockets |= _listening_sockets()
            time.sleep(0.5)
        assert sockets, "found no listening socket of the Ray session"
        assert gcs_port in {port for _, port, _ in sockets}, sorted(sockets)
        exposed = sorted(s for s in sockets if not _is_loopback(s[0]))
        assert not exposed, f"Ray services listen beyond loopback: {exposed}"
    finally:
        ray.shutdown()
