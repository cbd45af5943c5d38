"""A cluster of trackers at scale, and its throughput beside a lone tracker.

    python3 -m pip install .                  # and nats-server (Debian: apt install nats-server)
    python3 benches/cluster.py scale [--servers 30000] [--trackers 3]
    python3 benches/cluster.py throughput [--duration 5] [--repeat 3]

scale: a three-node NATS cluster, three tracker processes (one per NATS node), and
`--servers` servers spread evenly over them, each tracker's share registered by a process
of its own (more connections than one process may hold here). Then ten clients, spread over
the trackers, make five rounds (2 s deadline, only matching servers reply) in one process,
round by round; every answer is checked against the numbers the servers were given. Prints
the rounds' wall time against the 10 s floor, and the registration time.

throughput: the closed loop (K = 10, C = 10, early) through one lone tracker, through one
tracker of a cluster, and through two trackers of a cluster (servers and clients spread over
them, each request asked of the other tracker over NATS), alternating, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from nats_cluster import NatsCluster  # noqa: E402

import matchtracker as mt  # noqa: E402


def start_tracker(url: str, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "matchtracker", "tracker", "--cluster", url, "--cluster-name", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("Central: listening on "):
            return proc, line.split()[-1].rstrip(".")
    raise RuntimeError("the tracker did not start")


def hear_each_other(trackers: list[subprocess.Popen]) -> None:
    """Waits until each tracker has heard every other (a request waits only for the trackers
    it has heard), then keeps reading their lines so that their output never fills a pipe."""
    for proc in trackers:
        heard = 0
        while heard < len(trackers) - 1:
            line = proc.stdout.readline()
            assert line, "a tracker ended"
            heard += "of the cluster is heard from" in line
        log = open(f"{tempfile.gettempdir()}/cluster-bench-tracker-{proc.pid}.log", "w")
        threading.Thread(target=lambda p=proc, log=log: [log.write(line) for line in p.stdout], daemon=True).start()


HERD = """
import asyncio, sys
import matchtracker.aio as aio
first, count, address = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
async def main():
    servers = []
    for start in range(first, first + count, 500):
        batch = range(start, min(start + 500, first + count))
        servers += await asyncio.gather(*(aio.Server.start(f"S{i}", address, i % 10 + 1) for i in batch))
    print("registered", len(servers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


@contextlib.contextmanager
def nats_and_processes():
    """A NATS cluster, and a list for the processes started on it; all stopped at the end."""
    with tempfile.TemporaryDirectory() as directory:
        nats = NatsCluster(Path(directory))
        procs: list[subprocess.Popen] = []
        try:
            yield nats, procs
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
            nats.stop()


def scale(args: argparse.Namespace) -> None:
    with nats_and_processes() as (nats, procs):
        trackers = []
        for i in range(args.trackers):
            proc, address = start_tracker(nats.url(i % 3), "--timeout", "2")
            procs.append(proc)
            trackers.append(address)
        hear_each_other(procs)
        share = args.servers // args.trackers
        started = time.perf_counter()
        herds = []
        for i, address in enumerate(trackers):
            herd = subprocess.Popen(
                [sys.executable, "-c", HERD, str(i * share + 1), str(share), address],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            herds.append(herd)
            procs.append(herd)
        for herd in herds:
            line = herd.stdout.readline()
            assert line.startswith("registered"), line
        registered = time.perf_counter() - started
        numbers = {f"S{i}": i % 10 + 1 for i in range(1, share * args.trackers + 1)}
        holders = {k: sorted((s for s, n in numbers.items() if n == k), key=lambda s: int(s[1:])) for k in range(1, 11)}
        clients = [mt.Client(f"C{i}", trackers[i % len(trackers)]) for i in range(10)]
        rng = random.Random(1)
        wrong = 0
        started = time.perf_counter()
        for _ in range(5):
            picks = [rng.randint(1, 10) for _ in clients]
            got = [None] * len(clients)

            def ask(i: int) -> None:
                got[i] = clients[i].find_match(picks[i])

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(clients))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for i, names in enumerate(got):
                if names != holders[picks[i]]:
                    wrong += 1
                    want = holders[picks[i]]
                    extra, missing = set(names) - set(want), set(want) - set(names)
                    print(f"C{i} asked {picks[i]}: {len(names)} names, {len(extra)} not holding it, "
                          f"{len(missing)} missing", file=sys.stderr)
        rounds = time.perf_counter() - started
        print(f"{len(numbers)} servers over {args.trackers} trackers, registered in {registered:.1f} s")
        print(f"5 rounds of 10 clients: {rounds:.2f} s ({rounds - 10:.2f} s above the 10 s floor); "
              f"{50 - wrong} of 50 answers complete and right")
        for client in clients:
            client.close()
        users_command(trackers, holders)


def users_command(trackers: list[str], holders: dict[int, list[str]]) -> None:
    """The same five rounds as a user runs them: ten `./project.py client` processes at once,
    each timed as `/usr/bin/time -f "%e %M"` times it, every answer checked."""
    project = Path(__file__).resolve().parent.parent / "project.py"
    runs = []
    for i in range(10):
        command = ["/usr/bin/time", "-f", "%e %M", sys.executable, str(project), "client", "--tracker",
                   trackers[i % len(trackers)], "--name", f"U{i}", "--rounds", "5", "--seed", str(i), "--json"]
        runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    times, right = [], 0
    for run in runs:
        out, err = run.communicate(timeout=120)
        wall, kib = err.strip().splitlines()[-1].split()
        times.append((float(wall), int(kib)))
        events = [json.loads(line) for line in out.splitlines()]
        asked = [e["fields"]["number"] for e in events if e["kind"] == "find.sent"]
        answered = [e["fields"]["servers"] for e in events if e["kind"] == "answer.received"]
        right += sum(1 for number, names in zip(asked, answered) if names == holders[number])
    walls = sorted(t for t, _ in times)
    print(f"the user's command, ten `project.py client --rounds 5` at once: {walls[0]:.2f}-{walls[-1]:.2f} s "
          f"(median {statistics.median(walls):.2f} s), {max(k for _, k in times) / 1024:.0f} MiB at most; "
          f"{right} of 50 answers complete and right")


def throughput(args: argparse.Namespace) -> None:
    with nats_and_processes() as (nats, procs):
        lone = subprocess.Popen(
            [sys.executable, "-m", "matchtracker", "tracker", "--early"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        procs.append(lone)
        lone_address = next(line for line in lone.stdout if "listening on" in line).split()[-1].rstrip(".")
        threading.Thread(target=lambda: [None for _ in lone.stdout], daemon=True).start()
        a, a_address = start_tracker(nats.url(0), "--early")
        b, b_address = start_tracker(nats.url(1), "--early")
        procs += [a, b]
        hear_each_other([a, b])
        runs = {"lone tracker": lone_address, "one tracker of a cluster": a_address,
                "two trackers of a cluster": f"{a_address},{b_address}"}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        p50: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, address in runs.items():
                result = mt.run_load(10, 10, args.duration, tracker=address)
                rates[name].append(result["rate"])
                p50[name].append(result["p50"])
        for name in runs:
            print(f"{name:>28}: {statistics.median(rates[name]):8.0f} req/s (runs: "
                  f"{', '.join(f'{r:.0f}' for r in rates[name])}), p50 {statistics.median(p50[name]) * 1e6:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="workload", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--servers", type=int, default=30000)
    s.add_argument("--trackers", type=int, default=3)
    t = sub.add_parser("throughput")
    t.add_argument("--duration", type=float, default=5.0)
    t.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scale(args) if args.workload == "scale" else throughput(args)


if __name__ == "__main__":
    main()
