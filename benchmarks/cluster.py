"""Issue 6's benchmark: the relay scenario against one node, then the same users spread over
two nodes of a cluster (one per core) with half the traffic crossing nodes; and the time from
a node's death (SIGKILL) to the last of its users being served again on the other node.

    python benchmarks/cluster.py [--users 200] [--duration 4] [--pg URL]

Needs PostgreSQL (``--pg``, default ``$ACTORCHAT_TEST_PG_URL`` or
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``): a fresh database is created for the
run and dropped after it. Prints a table and writes ``results/cluster.json``.

Cores: this machine has two. The one-node run pins the node to one core and the load
generator to the other; the two-node run pins one node to each core and the load generator
shares them, so the factor is a floor (the generator's own CPU is taken from the nodes). So it
also reports the CPU of the nodes, the load generator, PostgreSQL and everything else on the
machine, the factor per node-CPU-second, and the bound the cores put on the raw factor
(``per_cpu``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from harness import _HASH, SECRET  # noqa: E402
from loadgen import mint_token  # noqa: E402

CLUSTER_SECRET = "cluster-benchmark-secret-0123456789"
LEASE = 5.0  # the default: a shorter lease fences nodes whose store is slow under load
CPUS = sorted(os.sched_getaffinity(0))
LISTENING = re.compile(r"listening on ws://[^:/]+:(\d+)/")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class NodeProc:
    def __init__(
        self, url: str, name: str, cpu: int | None, workdir: Path, cluster: bool = True,
        log_name: str = "",
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{log_name or name}.stderr"
        args = [
            sys.executable, "-m", "actorchat", "--port", "0", "--node-name", name,
            "--database-url", url, "--secret", SECRET, "--migrate", "no",
            "--messages-per-second", "100000", "--message-burst", "100000",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if cluster:
            args += ["--cluster-secret", CLUSTER_SECRET, "--cluster-lease", str(LEASE)]

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            os.setsid()

        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, text=True,
            stderr=open(self.log_path, "w"),  # noqa: SIM115
            env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=pin,
        )
        self.port = 0
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                m = LISTENING.search(line)
                if m and not found.is_set():
                    self.port = int(m[1])
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.kill()
            raise RuntimeError(f"{name} did not start; see {self.log_path}")

    def status(self) -> dict[str, Any]:
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/cluster/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def store_hops(self) -> dict[str, Any]:
        """From /metrics: the store hops by duration (le -> count, cumulative) and fences."""
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out: dict[str, Any] = {}
        for line in text.splitlines():
            if line.startswith("actorchat_store_batch_seconds_bucket"):
                out[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("actorchat_cluster_fenced"):
                out["fenced"] = float(line.rsplit(" ", 1)[1])
        return out

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def wait_linked(nodes: list[NodeProc], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(n.status()["linked"]) == len(nodes) - 1 for n in nodes):
            return
        time.sleep(0.1)
    raise RuntimeError("the nodes did not link")


def relay(nodes: list[NodeProc], users: int, window: int, duration: float, prefix: str,
          load_cpu: int | None) -> dict[str, Any]:
    cmd = [
        sys.executable, str(HERE / "loadgen.py"), "relay", "--port", str(nodes[0].port),
        "--ports", ",".join(str(n.port) for n in nodes), "--secret", SECRET,
        "--users", str(users), "--window", str(window), "--duration", str(duration),
        "--warmup", "1.0", "--prefix", prefix, "--server-pid", str(nodes[0].proc.pid),
        "--sources", ",".join(f"127.0.0.{k}" for k in range(2, 6)),
    ]  # fmt: skip

    def pin() -> None:
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pin)
    marks: dict[str, Any] = {}
    result: dict[str, Any] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "event" in msg:
            marks[msg["event"] + "_t"] = time.monotonic()
            marks[msg["event"] + "_utc"] = time.time()
            marks[msg["event"] + "_cpu"] = sum(n.cpu() for n in nodes)
            for n in nodes:
                marks[msg["event"] + "_cpu_" + n.name] = n.cpu()
            marks[msg["event"] + "_db"] = db_cpu()
            marks[msg["event"] + "_busy"] = busy_cpu()
        elif "result" in msg:
            result = msg["result"]
    proc.wait(120)
    if not result:
        return {"error": (proc.stderr.read() if proc.stderr else "")[-1500:]}
    span = marks["window_end_t"] - marks["window_start_t"]
    result["nodes_cpu"] = (marks["window_end_cpu"] - marks["window_start_cpu"]) / span
    result["node_cpu"] = {  # cores, each node
        n.name: (marks[f"window_end_cpu_{n.name}"] - marks[f"window_start_cpu_{n.name}"]) / span
        for n in nodes
    }
    result["db_cpu"] = db_cpu_between(marks["window_start_db"], marks["window_end_db"]) / span
    # Everything busy on the machine (other users of it too: the rest is theirs).
    result["machine_busy_cpu"] = (marks["window_end_busy"] - marks["window_start_busy"]) / span
    result["other_cpu"] = (result["machine_busy_cpu"] - result["nodes_cpu"] - result["db_cpu"]
                           - result.get("loadgen_cpu", 0.0))
    result["window_utc"] = [time.strftime("%H:%M:%S", time.gmtime(marks[k]))
                            for k in ("window_start_utc", "window_end_utc")]
    result["ended_utc"] = time.strftime("%H:%M:%S", time.gmtime())
    try:
        result["store_hops"] = {n.name: n.store_hops() for n in nodes}
    except Exception as e:  # a node that died: reported, not fatal
        result["store_hops"] = repr(e)
    return result


def db_cpu() -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL server process (none where they are not ours to
    see): the database shares the cores too. By pid, since backends come and go."""
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            out[proc.pid] = t.user + t.system
    return out


def db_cpu_between(start: dict[int, float], end: dict[int, float]) -> float:
    """What the database used between two ``db_cpu()`` readings (a backend that exited in
    between is not counted: a floor)."""
    return sum(cpu - start.get(pid, 0.0) for pid, cpu in end.items())


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def per_cpu(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """The factor by CPU: what a delivered message costs the nodes (and the load generator,
    and PostgreSQL), one node against two, and what that means for the raw factor here.

    ``msgs_per_node_cpu_s`` = delivered/s over the nodes' cores in use; ``factor_per_cpu`` is
    two nodes' over one node's: 1.0 means a message costs the two nodes together as much CPU
    as it costs one node (what perfect scaling needs). With a core per node (and the load
    generator and the database elsewhere), two saturated nodes would deliver ``2 x
    factor_per_cpu`` times one saturated node. On this machine the two nodes, the load
    generator and PostgreSQL share ``len(CPUS)`` cores, so two nodes cannot pass ``cores /
    (node + loadgen + db CPU per message)``: ``raw_factor_bound`` is that over one node with
    a whole core (``msgs_per_node_cpu_s["one"]``), ``raw_factor_bound_ideal`` the same if a
    message cost two nodes no more CPU than one. Other processes on the machine lower both."""
    t1, t2 = one.get("delivered_per_s") or 0, two.get("delivered_per_s") or 0
    if not (t1 and t2 and one.get("nodes_cpu") and two.get("nodes_cpu")):
        return {}
    cores = len(CPUS)
    us = {k: {name: 1e6 * r.get(f"{name}_cpu", 0.0) / t for name in ("nodes", "loadgen", "db")}
          for k, r, t in (("one", one, t1), ("two", two, t2))}
    e1, e2 = t1 / one["nodes_cpu"], t2 / two["nodes_cpu"]
    cost2 = sum(us["two"].values()) / 1e6
    ideal = (us["one"]["nodes"] + us["two"]["loadgen"] + us["two"]["db"]) / 1e6
    return {
        "cpu_us_per_msg": us,
        "msgs_per_node_cpu_s": {"one": e1, "two": e2},
        "factor_per_cpu": e2 / e1,
        "factor_with_a_core_per_node": 2 * e2 / e1,
        "raw_factor_bound": cores / cost2 / e1,
        "raw_factor_bound_ideal": cores / ideal / e1,
    }


async def seed(dsn: str, names: list[str]) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await db.executemany(
            "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            [(n, _HASH, time.time()) for n in names],
        )
    finally:
        await db.close()


async def failover(victim: NodeProc, survivor: NodeProc, names: list[str]) -> dict[str, Any]:
    """Log ``names`` in on ``victim`` (idle), SIGKILL it, and have each reconnect to
    ``survivor`` (resume with its token; logging in again on `unavailable` while the dead
    node's lease runs). Returns the time from the kill to the last welcome."""
    import websockets

    async def hold(name: str, port: int) -> Any:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/", open_timeout=20)
        await ws.send(json.dumps({"type": "resume", "token": mint_token(SECRET.encode(), name)}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "welcome":
                return ws
            if frame["type"] == "error":
                await ws.close()
                raise RuntimeError(frame)

    sem = asyncio.Semaphore(50)

    async def first(name: str) -> Any:
        async with sem:
            return await hold(name, victim.port)

    conns = await asyncio.gather(*(first(n) for n in names))
    await asyncio.sleep(0.5)
    killed = time.monotonic()
    victim.kill()
    served: list[float] = []

    async def back(name: str, ws: Any) -> None:
        try:
            await ws.recv()
        except Exception:
            pass
        while True:
            try:
                async with sem:
                    again = await hold(name, survivor.port)
                served.append(time.monotonic() - killed)
                await again.close()
                return
            except Exception:
                await asyncio.sleep(0.1)

    await asyncio.wait_for(asyncio.gather(*(back(n, c) for n, c in zip(names, conns,
                                                                          strict=True))), 120)
    served.sort()
    return {"users": len(names), "first_served_s": served[0], "last_served_s": served[-1],
            "median_served_s": served[len(served) // 2], "lease_s": LEASE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2, help="best of N per configuration")
    parser.add_argument("--failover-users", type=int, default=200)
    parser.add_argument("--pg", default=os.environ.get(
        "ACTORCHAT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    base = make_url(args.pg)
    dbname = f"actorchat_bench_{secrets.token_hex(3)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    url = base.set(database=dbname).render_as_string(hide_password=False)
    dsn = base.set(drivername="postgresql", database=dbname).render_as_string(
        hide_password=False)
    workdir = HERE / "results" / "cluster-work"
    workdir.mkdir(parents=True, exist_ok=True)

    async def admin_sql(sql: str) -> None:
        db = await asyncpg.connect(admin)
        try:
            await db.execute(sql)
        finally:
            await db.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{dbname}"'))
    nodes: list[NodeProc] = []
    out: dict[str, Any] = {"users": args.users, "window": args.window, "cpus": len(CPUS)}
    try:
        subprocess.run([sys.executable, "-m", "actorchat", "migrate", "--database-url", url],
                       cwd=ROOT, check=True, capture_output=True)
        one_cpu = CPUS[-1]
        load_cpu = CPUS[0] if len(CPUS) > 1 else None
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "one": [], "two": []}
        for rnd in range(args.rounds):
            for kind in ("plain", "one", "two"):
                prefix = f"{kind}{rnd}u"
                asyncio.run(seed(dsn, [f"{prefix}{i}" for i in range(args.users)]))
                # Each node's log (stderr: fencing, link and relay warnings) is kept per round.
                if kind == "plain":  # no cluster secret: the node as it was before issue 6
                    nodes = [NodeProc(url, "n0", one_cpu, workdir, cluster=False,
                                      log_name=f"{prefix}-n0")]
                    r = relay(nodes, args.users, args.window, args.duration, prefix, load_cpu)
                elif kind == "one":
                    nodes = [NodeProc(url, "n1", one_cpu, workdir, log_name=f"{prefix}-n1")]
                    wait_linked(nodes)
                    r = relay(nodes, args.users, args.window, args.duration, prefix, load_cpu)
                else:
                    nodes = [NodeProc(url, "n1", CPUS[0], workdir, log_name=f"{prefix}-n1"),
                             NodeProc(url, "n2", CPUS[-1], workdir, log_name=f"{prefix}-n2")]
                    wait_linked(nodes)
                    r = relay(nodes, args.users, args.window, args.duration, prefix, None)
                for n in nodes:
                    n.stop()
                warnings = [f"{n.log_path.name}: {line.strip()}" for n in nodes
                            for line in n.log_path.read_text(errors="replace").splitlines()
                            if "fenc" in line.lower() or "4004" in line]
                r["node_fencing_lines"] = warnings[:20]
                nodes = []
                runs[kind].append(r)
                lat = r.get("latency", {})
                cross = r.get("cross_node_latency") or {}
                log(f"round {rnd} {kind} node(s): {r.get('delivered_per_s', 0):8.0f} msg/s"
                    f"  p50 {lat.get('p50_ms', float('nan')):.1f} p99"
                    f" {lat.get('p99_ms', float('nan')):.1f} ms"
                    + (f"  cross-node p50 {cross.get('p50_ms', float('nan')):.1f}"
                       f" p99 {cross.get('p99_ms', float('nan')):.1f} ms" if cross.get("count")
                       else "")
                    + f"  nodes cpu {r.get('nodes_cpu', float('nan')):.2f}"
                    + f" ({r.get('delivered_per_s', 0) / (r.get('nodes_cpu') or float('nan')):.0f}"
                    f" msgs/node-CPU-s; others {r.get('other_cpu', float('nan')):.2f} cores)"
                    + f"  lost {r.get('lost')} (accepted {r.get('accepted_not_delivered')},"
                    f" unaccepted {r.get('unaccepted')}) dup {r.get('duplicates')}"
                    f" ooo {r.get('out_of_order')}"
                    + (f"  sent {r.get('sent')} accepted {r.get('accepted')}"
                       f" rejected {r.get('rejected')} closed {r.get('closed_by_server')}"
                       f" first error {r.get('first_error')}"
                       if r.get("lost") or r.get("out_of_order") else "")
                    + (f"  FENCED {len(warnings)} lines in node logs" if warnings else "")
                    + (f"  ERROR {r['error'][:300]}" if r.get("error") else ""))
        best = {k: max(v, key=lambda r: r.get("delivered_per_s", 0)) for k, v in runs.items()}
        out["plain_node"] = best["plain"]
        out["one_node"], out["two_nodes"] = best["one"], best["two"]
        one = best["one"].get("delivered_per_s") or 0
        two = best["two"].get("delivered_per_s") or 0
        out["factor"] = two / one if one else None
        out["per_cpu"] = per_cpu(best["one"], best["two"])
        # Failover: idle users on n2, SIGKILL n2, all back on n1.
        names = [f"fo{i}" for i in range(args.failover_users)]
        asyncio.run(seed(dsn, names))
        nodes = [NodeProc(url, "n1", CPUS[0], workdir), NodeProc(url, "n2", CPUS[-1], workdir)]
        wait_linked(nodes)
        out["failover"] = asyncio.run(failover(nodes[1], nodes[0], names))
    finally:
        for n in nodes:
            n.kill()
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    cross = out["two_nodes"].get("cross_node_latency") or {}
    lat1 = out["one_node"].get("latency", {})
    fo = out["failover"]
    print(f"relay, {args.users} users, window {args.window}, PostgreSQL, {len(CPUS)} cores")
    plain = out["plain_node"].get("delivered_per_s") or 0
    print(f"  one node without --cluster-secret: {plain:8.0f} msg/s")
    print(f"  one node : {one:8.0f} msg/s  p50 {lat1.get('p50_ms', 0):.1f} ms"
          f"  p99 {lat1.get('p99_ms', 0):.1f} ms")
    print(f"  two nodes: {two:8.0f} msg/s  (half the messages cross nodes)"
          f"  cross-node p50 {cross.get('p50_ms', 0):.1f} ms  p99 {cross.get('p99_ms', 0):.1f} ms")
    print(f"  factor two/one: {out['factor']:.2f}x (goal 1.5x)")
    pc = out.get("per_cpu") or {}
    if pc:
        for k, label in (("one", "one node "), ("two", "two nodes")):
            r, u = out[f"{k}_node" if k == "one" else "two_nodes"], pc["cpu_us_per_msg"][k]
            print(f"  {label}: nodes {r.get('nodes_cpu', 0):.2f} cores"
                  f" ({', '.join(f'{n} {c:.2f}' for n, c in r.get('node_cpu', {}).items())}),"
                  f" loadgen {r.get('loadgen_cpu', 0):.2f}, PostgreSQL {r.get('db_cpu', 0):.2f},"
                  f" others {r.get('other_cpu', 0):.2f} of {len(CPUS)} cores;"
                  f" per message: nodes {u['nodes']:.0f} us, loadgen {u['loadgen']:.0f} us,"
                  f" PostgreSQL {u['db']:.0f} us")
        e = pc["msgs_per_node_cpu_s"]
        print(f"  per node-CPU-second: one node {e['one']:.0f} msgs, two nodes {e['two']:.0f}:"
              f" factor per CPU {pc['factor_per_cpu']:.2f}"
              f" (with a core per node: {pc['factor_with_a_core_per_node']:.2f}x)")
        print(f"  this machine's bound on the raw factor ({len(CPUS)} cores for both nodes,"
              f" the load generator and PostgreSQL): {pc['raw_factor_bound']:.2f}x at the"
              f" measured cost per message; {pc['raw_factor_bound_ideal']:.2f}x if a message"
              f" cost two nodes no more than one")
    print(f"  SIGKILL of a node with {fo['users']} users: all served again on the other node"
          f" after {fo['last_served_s']:.2f} s (first {fo['first_served_s']:.2f} s;"
          f" lease {LEASE} s)")
    for key in ("plain_node", "one_node", "two_nodes"):
        for lat_key in ("latency", "cross_node_latency"):
            if isinstance(out[key].get(lat_key), dict):
                out[key][lat_key].pop("cdf", None)
    (HERE / "results" / "cluster.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
