"""TLS from Python and from the command line, with certificates made at test time (trustme):
the roles as processes over TLS, one-line refusals, OpenSSL (Python's ssl module) as a
foreign client, and thousands of handshakes that leave the tracker's descriptors as they were."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme

import matchtracker as mt
import matchtracker.aio
from test_processes import PROJECT, answers, roles, start_server, start_tracker  # noqa: F401 (roles is a fixture)


class Pki:
    """A CA, a tracker certificate for localhost and 127.0.0.1, and the files to give them by."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.authority = trustme.CA()
        self.ca = self.write("ca.pem", self.authority.cert_pem)
        self.cert, self.key = self.issue("tracker", "localhost", "127.0.0.1")

    def write(self, name: str, blob: trustme.Blob) -> str:
        path = self.dir / name
        blob.write_to_path(str(path))
        return str(path)

    def issue(self, name: str, *identities: str, **validity: datetime.datetime) -> tuple[str, str]:
        leaf = self.authority.issue_cert(*identities, **validity)
        return self.write(f"{name}.pem", leaf.cert_chain_pems[0]), self.write(f"{name}.key", leaf.private_key_pem)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_the_roles_as_processes_over_tls(roles, pki: Pki) -> None:
    tracker, address = start_tracker(roles, "--tls-cert", pki.cert, "--tls-key", pki.key)
    numbers = {}
    for i in (1, 2, 3):
        _, numbers[f"S{i}"] = start_server(roles, address, f"S{i}", "--tls-ca", pki.ca)
    port = address.rpartition(":")[2]
    clients = [
        roles("client", "--tracker", f"localhost:{port}", "--name", f"C{i}", "--rounds", "3", "--seed", str(i), "--tls-ca", pki.ca)
        for i in (1, 2, 3)
    ]
    for i, client in enumerate(clients, start=1):
        assert client.finish() == 0, "\n".join(client.lines)
        got = answers(client.lines, f"C{i}")
        assert len(got) == 3
        for asked, servers in got:
            assert servers == sorted(s for s, n in numbers.items() if n == asked), (asked, servers, numbers)


def run_role(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT), *args], capture_output=True, text=True, timeout=timeout)


def test_refusals_on_the_command_line_are_one_line(roles, pki: Pki, tmp_path: Path) -> None:
    _, address = start_tracker(roles, "--tls-cert", pki.cert, "--tls-key", pki.key)
    (tmp_path / "stranger").mkdir()
    stranger = Pki(tmp_path / "stranger")
    cases = [
        ((), "tls-required: this tracker speaks TLS"),
        (("--tls-ca", stranger.ca), "not signed by a CA this node trusts"),
    ]
    for extra, said in cases:
        done = run_role("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--wait", "2", *extra)
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr

    _, other_key = pki.issue("other", "localhost")
    for args, said in [
        (("--tls-cert", pki.cert, "--tls-key", other_key), "does not match the certificate"),
        (("--tls-cert", pki.cert), "--tls-cert and --tls-key go together"),
        (("--tls-cert", pki.cert, "--tls-key", str(tmp_path / "missing.key")), "missing.key"),
        (("--listen", "0.0.0.0:0", "--token", "t"), "needs TLS"),
    ]:
        done = run_role("tracker", *args)
        assert done.returncode == 2, done
        last = done.stderr.strip().splitlines()[-1]
        assert said in last and "Traceback" not in done.stderr, done.stderr


def test_a_plain_tracker_is_named_as_such_to_a_tls_node(roles, pki: Pki) -> None:
    _, address = start_tracker(roles)
    done = run_role("server", "--tracker", address, "--name", "S1", "--tls-ca", pki.ca, "--wait", "2")
    assert done.returncode == 1
    assert "does not offer TLS" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_certificate_for_another_name_or_out_of_date_is_refused(pki: Pki) -> None:
    past = datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)
    expired = pki.issue("expired", "localhost", not_before=past - datetime.timedelta(days=30), not_after=past)
    elsewhere = pki.issue("elsewhere", "tracker.example")
    for (cert, key), said in [(expired, "has expired"), (elsewhere, "not valid for the name localhost")]:
        with mt.Tracker(tls_cert=cert, tls_key=key) as tracker:
            with pytest.raises(mt.NetworkError, match=said):
                mt.Client("C1", f"localhost:{tracker.port}", tls_ca=pki.ca)


def test_python_nodes_blocking_and_asyncio_over_tls(pki: Pki) -> None:
    with mt.Tracker(tls_cert=pki.cert, tls_key=pki.key, timeout=0.2, early=True) as tracker:
        with mt.Server("S1", tracker.address, 4, tls_ca=pki.ca), mt.Client("C1", tracker.address, tls_ca=pki.ca) as client:
            assert client.find_match(4) == ["S1"]
            assert client.find_match(5) == []

    async def main() -> list[list[str]]:
        async with mt.aio.Tracker.start(tls_cert=pki.cert, tls_key=pki.key, timeout=0.2, early=True) as tracker:
            async with mt.aio.Server.start("S2", tracker.address, 6, tls_ca=pki.ca):
                async with mt.aio.Client.connect("C2", tracker.address, tls_ca=pki.ca) as client:
                    return await asyncio.gather(*(client.find_match(6 if i % 2 else 7) for i in range(200)))

    got = asyncio.run(main())
    assert got == [["S2"] if i % 2 else [] for i in range(200)]


def tls_to(address: str, ca: str) -> ssl.SSLSocket:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=ca)
    return context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname="localhost")


def test_openssl_speaks_the_protocol_inside_tls(pki: Pki) -> None:
    with mt.Tracker(tls_cert=pki.cert, tls_key=pki.key, timeout=0.2) as tracker, mt.Server("S1", tracker.address, 8, tls_ca=pki.ca):
        with tls_to(tracker.address, pki.ca) as raw:
            lines = raw.makefile("rw", encoding="utf-8", newline="\n")
            lines.write("HI C7\n")
            lines.flush()
            assert lines.readline().startswith("WELCOME C7 ")
            lines.write("FIND 1 8\nFIND 2 9\n")
            lines.flush()
            assert {lines.readline().strip(), lines.readline().strip()} == {"ANSWER 1 replied S1", "ANSWER 2 deadline"}


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts descriptors in /proc (Linux)")
def test_thousands_of_handshakes_leave_no_descriptor_behind(roles, pki: Pki) -> None:
    tracker, address = start_tracker(roles, "--tls-cert", pki.cert, "--tls-key", pki.key)
    pid = tracker.proc.pid
    before = descriptors(pid)
    host, _, port = address.rpartition(":")

    def closed_by_tracker(sock: socket.socket) -> None:
        """Ends our side, then reads until the tracker closes its own: it has let go of the
        connection's descriptor by the time its end of the stream arrives."""
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            # Reset, not closed: the tracker closed with our bytes unread (after its ERROR
            # line), or TLS reported its close as an unexpected end. Closed either way.
            pass

    def one(i: int) -> None:
        if i % 4 == 3:  # plain text to a TLS tracker: an ERROR line, then closed
            with socket.create_connection((host, int(port)), timeout=10) as plain:
                plain.sendall(b"HI X\n")
                assert plain.recv(64).startswith(b"ERROR tls-required ")
                closed_by_tracker(plain)
        else:
            with tls_to(address, pki.ca) as tls:
                closed_by_tracker(tls)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(2000)))
    assert descriptors(pid) <= before, (before, descriptors(pid))
    assert tracker.proc.poll() is None


def test_the_benchmark_runs_its_closed_loop_over_tls(pki: Pki) -> None:
    tls = ["--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-ca", pki.ca]
    done = run_role("bench", "--servers", "2", "--clients", "2", "--duration", "0.2", "--early", "--json", *tls)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tls"] is True and result["requests"] > 0
    refused = run_role("bench", "--scale", "3", *tls)
    assert refused.returncode == 2 and "for the closed loop" in refused.stderr


def served_certificate(address: str, ca: str) -> bytes:
    """The certificate a new TLS handshake with the tracker at `address` sees (DER)."""
    with tls_to(address, ca) as raw:
        return raw.getpeercert(binary_form=True)


def der(pem_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())


def test_a_reload_takes_a_new_certificate_and_token_and_keeps_live_nodes(pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-T0ken\n")
    cert, key = pki.cert, pki.key
    with mt.Tracker(tls_cert=cert, tls_key=key, token_file=str(token_file), timeout=0.2, early=True) as tracker:
        live = mt.Server("S1", tracker.address, 5, tls_ca=pki.ca, token="first-T0ken")
        first = der(cert)
        assert served_certificate(tracker.address, pki.ca) == first
        # A new certificate and key in the same files, and a new token.
        new_cert, new_key = pki.issue("renewed", "localhost", "127.0.0.1")
        Path(cert).write_bytes(Path(new_cert).read_bytes())
        Path(key).write_bytes(Path(new_key).read_bytes())
        token_file.write_text("second-T0ken\n")
        assert tracker.reload() == {"tls": True, "token": True}
        assert served_certificate(tracker.address, pki.ca) == der(new_cert) != first
        with pytest.raises(mt.RefusedError) as refused:
            mt.Client("C1", tracker.address, tls_ca=pki.ca, token="first-T0ken")
        assert refused.value.code == "unauthorized"
        # The server registered before the reload is still there, and still answers.
        with mt.Client("C1", tracker.address, tls_ca=pki.ca, token="second-T0ken") as client:
            assert client.find_match(5) == ["S1"]
        assert tracker.stats()["servers"] == 1
        # A reload that fails keeps what is in force: a key that does not match.
        other_cert, other_key = pki.issue("other", "localhost")
        Path(key).write_bytes(Path(other_key).read_bytes())
        with pytest.raises(ValueError, match="does not match"):
            tracker.reload()
        assert served_certificate(tracker.address, pki.ca) == der(new_cert)
        with mt.Client("C2", tracker.address, tls_ca=pki.ca, token="second-T0ken") as client:
            assert client.find_match(5) == ["S1"]
        live.close()


def test_sighup_reloads_a_command_line_tracker(roles, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    token_file = tmp_path / "token"
    token_file.write_text("first-T0ken\n")
    tracker, address = start_tracker(roles, "--tls-cert", pki.cert, "--tls-key", pki.key, "--token-file", str(token_file))
    server = roles("server", "--tracker", address, "--name", "S1", "--number", "2", "--tls-ca", pki.ca, env={"MATCHTRACKER_TOKEN": "first-T0ken"})
    server.wait_for(r"^S1: received “Welcome” from Central\.$")
    new_cert, new_key = pki.issue("renewed", "localhost", "127.0.0.1")
    Path(pki.cert).write_bytes(Path(new_cert).read_bytes())
    Path(pki.key).write_bytes(Path(new_key).read_bytes())
    token_file.write_text("second-T0ken\n")
    tracker.proc.send_signal(signal.SIGHUP)
    tracker.wait_for(r"^Central: reloaded the TLS certificate and key, and the token; live nodes stay connected\.$")
    assert served_certificate(address, pki.ca) == der(new_cert)
    token_file.write_text("")
    tracker.proc.send_signal(signal.SIGHUP)
    tracker.wait_for(r"^Central: reload failed, keeping the old certificate and token: the token file .+")
    client = roles(
        "client", "--tracker", address, "--name", "C1", "--rounds", "1", "--number", "2", "--tls-ca", pki.ca,
        env={"MATCHTRACKER_TOKEN": "second-T0ken"},
    )
    assert client.finish() == 0, "\n".join(client.lines)
    assert answers(client.lines, "C1") == [(2, ["S1"])]
    assert tracker.stop() == 0
