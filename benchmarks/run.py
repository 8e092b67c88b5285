"""Issue 5's benchmark: actorchat beside a bare trio-websocket relay, a websockets/asyncio relay
and a Django Channels chat, driven by one load generator, in one run.

    python benchmarks/run.py --quick     # about 2 minutes
    python benchmarks/run.py             # the full run, about 15 minutes

Scenarios (see loadgen.py): 1:1 relay with acks (throughput against users, closed loop; then
latency in open loop at half of each system's own best throughput), offline drain (actorchat
only: the peers store nothing), memory per idle logged-in user, login storm (token reconnects).
Each server runs pinned to one core, the load generator on the other. The machine is shared and
noisy, so the figures that matter are ratios of systems measured side by side: the relay runs
interleave the systems for each number of users, and the full run repeats them and keeps each
system's best.

Writes ``benchmarks/results/run.json`` and PNG plots there; prints a table that ends in
``name: value`` lines, ratios first.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h
from harness import LABELS, SYSTEMS, IdleLoad, Server, run_loadgen

RESULTS = h.HERE / "results"

PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "relay_users": [10, 100],
        "rounds": 1,
        "relay_duration": 2.0,
        "relay_warmup": 0.5,
        "latency_duration": 2.5,
        "storm_users": 200,
        "storm_duration": 2.0,
        "drain_count": 2000,
        "idle_counts": [1000],
        "idle_max": False,
    },
    "full": {
        "relay_users": [2, 10, 100, 1000, 5000],
        "rounds": 2,
        "relay_duration": 3.0,
        "relay_warmup": 1.0,
        "latency_duration": 5.0,
        "storm_users": 500,
        "storm_duration": 4.0,
        "drain_count": 20000,
        "idle_counts": [1000, 10000],
        "idle_max": True,
    },
}
WINDOW = 16  # messages in flight per sender...
TOTAL_IN_FLIGHT = 4096  # ...but no more than this over all senders
STORM_CONCURRENCY = 32
LATENCY_USERS = 100  # the open-loop latency runs all use this many users
# Users log in in waves of this many, the load generator waiting for the server to be quiet
# between waves: actorchat answers `welcome` before it has loaded the user's mailbox, so a
# client's limit on logins in flight does not bound the work queued behind them.
LOGIN_WAVE = 500
IDLE_BUDGET = 90.0  # seconds of logins for each idle step over 1,000 users


PHASES = ("relay", "latency", "storm", "drain", "idle")


def window_for(users: int) -> int:
    return max(1, min(WINDOW, TOTAL_IN_FLIGHT // users))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- phases --------------------------------------------------------------------------------------


def relay_phase(servers: dict[str, Server], plan: dict[str, Any], redis: Any) -> dict[str, Any]:
    out: dict[str, Any] = {s: {} for s in servers}
    for rnd in range(plan["rounds"]):
        for users in plan["relay_users"]:
            if rnd > 0 and users > 1000:
                continue  # the big runs take long: once is enough
            order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for system in order:
                server = servers[system]
                server.seed(f"r{rnd}n{users}u{i}" for i in range(users))
                timeout = 60 + users * 0.03 + plan["relay_duration"]
                r = run_loadgen(
                    "relay",
                    server,
                    timeout=timeout,
                    redis=redis if system == "channels" else None,
                    users=users,
                    window=window_for(users),
                    duration=plan["relay_duration"],
                    warmup=plan["relay_warmup"],
                    login_wave=LOGIN_WAVE,
                    prefix=f"r{rnd}n{users}u",
                    sources=",".join(f"127.0.0.{k}" for k in range(2, 6)),
                )
                if r.get("server_cpu"):
                    r["msgs_per_server_cpu_s"] = r.get("delivered_per_s", 0) / r["server_cpu"]
                best = out[system].get(str(users))
                if best is None or r.get("delivered_per_s", 0) > best.get("delivered_per_s", 0):
                    out[system][str(users)] = r
                log(
                    f"relay round {rnd} {system:10} users={users:5} "
                    f"{r.get('delivered_per_s', 0):9.0f} msg/s  "
                    f"p99 {r.get('latency', {}).get('p99_ms', float('nan')):8.1f} ms  "
                    f"server cpu {r.get('server_cpu', float('nan')):.2f}  "
                    f"loadgen cpu {r.get('loadgen_cpu', float('nan')):.2f}"
                    + (f"  ERROR {r['error'][:300]}" if r.get("error") else "")
                    + (f"  lost {r['lost']}" if r.get("lost") else "")
                    + (f"  rejected {r['rejected']}" if r.get("rejected") else "")
                    + (
                        f"  not accepted {r['sent'] - r['rejected'] - r['accepted']}"
                        if system == "actorchat"
                        and r.get("sent", 0) - r.get("rejected", 0) - r.get("accepted", 0) > 0
                        else ""
                    )
                    + (
                        f"  re-logins {r['relogins_after_unavailable']}"
                        if r.get("relogins_after_unavailable")
                        else ""
                    )
                    + (
                        f"  first delivery after {r['first_delivery_seconds']:.1f} s"
                        if (r.get("first_delivery_seconds") or 0) > 0.5
                        else ""
                    )
                )
    return out


def best_relay(relay: dict[str, Any], system: str) -> tuple[int, float]:
    """(users, msgs/s) of the system's best closed-loop run."""
    best = (0, 0.0)
    for users, r in relay.get(system, {}).items():
        v = r.get("delivered_per_s", 0.0) if not r.get("error") else 0.0
        if v > best[1]:
            best = (int(users), v)
    return best


def efficiency(relay: dict[str, Any], system: str) -> float | None:
    """Messages delivered per second of server CPU, in the system's best run: a figure that
    the other tenants of a shared machine disturb less than msgs/s."""
    users, peak = best_relay(relay, system)
    if not peak:
        return None
    return relay[system][str(users)].get("msgs_per_server_cpu_s")


def latency_phase(servers: dict[str, Server], plan: dict[str, Any], redis: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, server in servers.items():
        # The closed-loop peak at this many users, measured right before, so that the other
        # tenants of the machine weigh about the same on both runs.
        users = LATENCY_USERS
        server.seed(f"cal{users}u{i}" for i in range(users))
        cal = run_loadgen(
            "relay",
            server,
            timeout=60 + users * 0.03 + plan["latency_duration"],
            redis=redis if system == "channels" else None,
            users=users,
            window=window_for(users),
            duration=plan["latency_duration"] / 2,
            warmup=plan["relay_warmup"],
            login_wave=LOGIN_WAVE,
            prefix=f"cal{users}u",
            sources=",".join(f"127.0.0.{k}" for k in range(2, 6)),
        )
        peak = cal.get("delivered_per_s") or 0.0
        if not peak:
            out[system] = {"error": f"calibration failed: {cal.get('error')}"}
            continue
        rate = peak / 2
        server.seed(f"lat{users}u{i}" for i in range(users))
        r = run_loadgen(
            "relay",
            server,
            timeout=60 + users * 0.03 + plan["latency_duration"],
            redis=redis if system == "channels" else None,
            users=users,
            window=1000,
            rate=rate,
            duration=plan["latency_duration"],
            warmup=plan["relay_warmup"],
            prefix=f"lat{users}u",
            sources=",".join(f"127.0.0.{k}" for k in range(2, 6)),
        )
        r["target_rate"] = rate
        r["calibration_peak"] = peak
        r["calibration_server_cpu"] = cal.get("server_cpu")
        r["achieved_fraction"] = (r.get("delivered_per_s") or 0) / rate
        out[system] = r
        lat = r.get("latency", {})
        log(
            f"latency {system:10} users={users:5} at {rate:8.0f} msg/s (half of {peak:.0f}): "
            f"p50 {lat.get('p50_ms', float('nan')):.1f} p99 {lat.get('p99_ms', float('nan')):.1f} "
            f"p99.9 {lat.get('p999_ms', float('nan')):.1f} ms, delivered "
            f"{r.get('delivered_per_s', 0):.0f}/s, "
            f"server cpu {r.get('server_cpu', float('nan')):.2f}"
            + (f"  ERROR {r['error'][:300]}" if r.get("error") else "")
        )
    return out


def storm_phase(servers: dict[str, Server], plan: dict[str, Any], redis: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = [(system, server) for _ in range(plan["rounds"]) for system, server in servers.items()]
    for i, (system, server) in enumerate(runs):  # fresh users and source addresses each run
        server.seed(f"storm{i}u{k}" for k in range(plan["storm_users"]))
        r = run_loadgen(
            "storm",
            server,
            timeout=90 + plan["storm_duration"],
            redis=redis if system == "channels" else None,
            users=plan["storm_users"],
            concurrency=STORM_CONCURRENCY,
            duration=plan["storm_duration"],
            prefix=f"storm{i}u",
            sources=",".join(f"127.0.{10 + i}.{k}" for k in range(2, 10)),
        )
        if r.get("logins_per_s", 0) >= out.get(system, {}).get("logins_per_s", 0):
            out[system] = r
        log(
            f"storm {system:10} {r.get('logins_per_s', 0):8.0f} token logins/s  "
            f"p99 {r.get('latency', {}).get('p99_ms', float('nan')):.1f} ms  "
            f"server cpu {r.get('server_cpu', float('nan')):.2f}"
            + (f"  ERROR {r['error'][:300]}" if r.get("error") else "")
            + (f"  errors {r['errors']} ({r.get('first_error')})" if r.get("errors") else "")
        )
    return out


def drain_phase(servers: dict[str, Server], plan: dict[str, Any]) -> dict[str, Any]:
    server = servers["actorchat"]
    r = run_loadgen(
        "drain", server, timeout=200, count=plan["drain_count"], prefix="drain", max_wait=60
    )
    log(
        f"drain actorchat {plan['drain_count']} stored: stored {r.get('stored_per_s', 0):.0f}/s, "
        f"drained {r.get('drained_per_s', 0):.0f}/s, password login "
        f"{r.get('password_login_ms', float('nan')):.0f} ms"
        + (f"  ERROR {r['error'][:300]}" if r.get("error") else "")
    )
    return {
        "actorchat": r,
        **{s: {"skipped": "no storage: relay only"} for s in servers if s != "actorchat"},
    }


def idle_phase(system: str, plan: dict[str, Any], fd_limit: int) -> dict[str, Any]:
    """A fresh server; RSS before, then after 1,000, 10,000 (and the most the fd limit allows)
    idle logged-in users; and the server's CPU while they idle."""
    counts = list(plan["idle_counts"])
    if plan["idle_max"]:
        counts.append(fd_limit - 300)
    server = Server(system, h.workdir()).start()
    out: dict[str, Any] = {"points": []}
    load = None
    try:
        time.sleep(1.0)
        base = server.rss()
        out["baseline_rss"] = base
        procs = 2 if counts[-1] > 2000 else 1
        prefix = f"idle{system[:2]}"
        server.seed(
            f"{prefix}{j}x{i}" for j in range(procs) for i in range(counts[-1] // procs + 1)
        )
        load = IdleLoad(server, processes=procs, prefix=prefix)
        for target in counts:
            t = time.monotonic()
            # Login time is bounded, so that a slow server cannot stretch the run.
            budget = IDLE_BUDGET if target > 1000 else 60.0
            grown = load.grow(target, timeout=budget + 120.0, budget=budget)
            elapsed = time.monotonic() - t
            # actorchat answers welcome before it has loaded the user's mailbox: wait until
            # that work is done before reading memory and the idle CPU.
            settled = server.settle()
            c0, w0 = server.cpu(), time.monotonic()
            time.sleep(2.0)
            idle_cpu = (server.cpu() - c0) / (time.monotonic() - w0)
            rss = server.rss()
            n = grown["connected"]
            point = {
                "target": target,
                "connected": n,
                "failed": grown["failed"],
                "first_error": grown["first_error"],
                "client_counts": grown["counts"],
                "rss": rss,
                "kib_per_user": (rss - base) / n / 1024 if n else None,
                "welcomes_per_s": n / elapsed if elapsed else None,
                "settle_seconds": settled,
                "idle_server_cpu": idle_cpu,
            }
            out["points"].append(point)
            log(
                f"idle {system:10} {n:6} users: {point['kib_per_user'] or 0:6.1f} KiB/user, "
                f"server idle cpu {idle_cpu:.2f}, logged in at {n / elapsed:.0f}/s, "
                f"then busy {settled:.1f} s; {grown['failed']} failed"
                + "".join(
                    f", {v} {k}"
                    for k, v in grown["counts"].items()
                    if k.startswith(("error", "login"))
                )
                + (f" ({grown['first_error']})" if grown["failed"] else "")
            )
            if n < target * 0.9:
                break
    except Exception as exc:
        out["error"] = repr(exc)
        log(f"idle {system}: ERROR {exc!r}")
    finally:
        if load is not None:
            load.close()
        server.stop()
    return out


# -- report --------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def memory_at(idle: dict[str, Any], system: str, target: int) -> float | None:
    for p in idle.get(system, {}).get("points", []):
        if p["target"] == target and p["connected"] >= 0.9 * target:
            return p["kib_per_user"]
    return None


def summarize(res: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    relay, lat, storm, idle, drain = (
        res["relay"], res["latency"], res["storm"], res["idle"], res["drain"],
    )  # fmt: skip
    peak = {s: best_relay(relay, s)[1] for s in SYSTEMS}
    logins = {s: storm.get(s, {}).get("logins_per_s") for s in SYSTEMS}
    mem_n = max(plan["idle_counts"])
    mem = {s: memory_at(idle, s, mem_n) for s in SYSTEMS}
    p99 = {s: lat.get(s, {}).get("latency", {}).get("p99_ms") for s in SYSTEMS}
    s: dict[str, Any] = {}
    s["actorchat_vs_bare_trio_throughput"] = ratio(peak["actorchat"], peak["bare_trio"])
    s["actorchat_vs_channels_throughput"] = ratio(peak["actorchat"], peak["channels"])
    s["actorchat_vs_ws_asyncio_throughput"] = ratio(peak["actorchat"], peak["ws_asyncio"])
    eff = {system: efficiency(relay, system) for system in SYSTEMS}
    s["actorchat_vs_bare_trio_msgs_per_cpu_second"] = ratio(eff["actorchat"], eff["bare_trio"])
    s["actorchat_vs_channels_msgs_per_cpu_second"] = ratio(eff["actorchat"], eff["channels"])
    for users in plan["relay_users"]:
        a = relay.get("actorchat", {}).get(str(users), {}).get("delivered_per_s")
        b = relay.get("bare_trio", {}).get(str(users), {}).get("delivered_per_s")
        s[f"actorchat_vs_bare_trio_throughput_{users}_users"] = ratio(a, b)
    s["actorchat_vs_bare_trio_memory_per_user"] = ratio(mem["actorchat"], mem["bare_trio"])
    s["actorchat_vs_bare_trio_login_rate"] = ratio(logins["actorchat"], logins["bare_trio"])
    s["actorchat_vs_bare_trio_p99_at_half_load"] = ratio(p99["actorchat"], p99["bare_trio"])
    s["actorchat_drain_vs_relay_throughput"] = ratio(
        drain.get("actorchat", {}).get("drained_per_s"), peak["actorchat"]
    )
    for system in SYSTEMS:
        s[f"{system}_peak_msgs_per_s"] = peak[system]
    for system in SYSTEMS:
        s[f"{system}_msgs_per_server_cpu_second"] = eff[system]
    for system in SYSTEMS:
        s[f"{system}_p99_ms_at_half_load"] = p99[system]
    for system in SYSTEMS:
        s[f"{system}_half_load_achieved"] = lat.get(system, {}).get("achieved_fraction")
    for system in SYSTEMS:
        s[f"{system}_kib_per_idle_user_{mem_n}"] = mem[system]
    for system in SYSTEMS:
        s[f"{system}_token_logins_per_s"] = logins[system]
    for system in SYSTEMS:
        pts = idle.get(system, {}).get("points", [])
        if pts:
            s[f"{system}_idle_server_cpu_{pts[0]['target']}_users"] = pts[0]["idle_server_cpu"]
    d = drain.get("actorchat", {})
    s["actorchat_drain_msgs_per_s"] = d.get("drained_per_s")
    s["actorchat_offline_store_msgs_per_s"] = d.get("stored_per_s")
    s["actorchat_password_login_ms"] = d.get("password_login_ms")
    if plan["idle_max"]:
        for system in SYSTEMS:
            pts = idle.get(system, {}).get("points", [])
            if pts:
                s[f"{system}_max_idle_users"] = pts[-1]["connected"]
                s[f"{system}_kib_per_idle_user_max"] = pts[-1]["kib_per_user"]
    # The goals of issue 5, met or not.
    goals = {
        "goal_throughput_ge_1x_bare_trio": (s["actorchat_vs_bare_trio_throughput"], 1.0, ">="),
        "goal_throughput_ge_3x_channels": (s["actorchat_vs_channels_throughput"], 3.0, ">="),
        "goal_p99_le_50ms_at_half_load": (p99["actorchat"], 50.0, "<="),
        "goal_le_24kib_per_idle_user": (mem["actorchat"], 24.0, "<="),
        "goal_token_logins_ge_0.7x_bare": (s["actorchat_vs_bare_trio_login_rate"], 0.7, ">="),
    }
    for name, (value, bound, op) in goals.items():
        if value is None:
            s[name] = "unknown"
        else:
            s[name] = "met" if (value >= bound if op == ">=" else value <= bound) else "not met"
    return s


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def print_table(res: dict[str, Any], plan: dict[str, Any], summary: dict[str, Any]) -> None:
    relay, lat, storm, idle = res["relay"], res["latency"], res["storm"], res["idle"]
    mem_n = max(plan["idle_counts"])
    users_cols = plan["relay_users"]
    head = ["system"] + [f"msg/s@{u}" for u in users_cols] + [
        "msg/CPU-s", "p50 ms", "p99 ms", "p99.9 ms", f"KiB/user@{mem_n}", "logins/s",
    ]  # fmt: skip
    rows = []
    for system in SYSTEMS:
        l_ = lat.get(system, {}).get("latency", {})
        row = [system]
        row += [
            fmt(relay.get(system, {}).get(str(u), {}).get("delivered_per_s")) for u in users_cols
        ]
        row += [fmt(efficiency(relay, system))]
        row += [fmt(l_.get("p50_ms")), fmt(l_.get("p99_ms")), fmt(l_.get("p999_ms"))]
        row += [fmt(memory_at(idle, system, mem_n)), fmt(storm.get(system, {}).get("logins_per_s"))]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print()
    print("relay msgs/s delivered (closed loop, best of rounds) and per second of server CPU;")
    print(f"latency in open loop, {LATENCY_USERS} users, at half of the msgs/s each system reached")
    print("in a closed-loop run just before;")
    print("memory per idle logged-in user (server RSS over baseline); token logins/s")
    print("  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print()
    for k, v in summary.items():
        print(f"{k}: {fmt(v)}")


def plot(res: dict[str, Any], plan: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        pts = sorted(
            (int(u), r.get("delivered_per_s", 0))
            for u, r in res["relay"].get(system, {}).items()
            if not r.get("error")
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[system])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users (each sends to the next, closed loop)")
    ax.set_ylabel("messages delivered per second")
    ax.set_title("1:1 relay throughput (server on one core)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    files.append("throughput.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        r = res["latency"].get(system, {})
        cdf = r.get("latency", {}).get("cdf")
        if cdf:
            ax.plot(
                [max(c[1], 1e-3) for c in cdf],
                [c[0] for c in cdf],
                label=f"{LABELS[system]} @ {r.get('target_rate', 0):.0f}/s",
            )
    ax.set_xscale("log")
    ax.axvline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("end-to-end latency, ms (client timestamps)")
    ax.set_ylabel("fraction of messages")
    ax.set_title(f"latency CDF, {LATENCY_USERS} users, open loop at half of each system's peak")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)
    files.append("latency_cdf.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    targets = sorted(
        {p["target"] for s in SYSTEMS for p in res["idle"].get(s, {}).get("points", [])}
    )
    width = 0.8 / max(1, len(SYSTEMS))
    for i, system in enumerate(SYSTEMS):
        pts = {p["target"]: p for p in res["idle"].get(system, {}).get("points", [])}
        xs = [j + i * width for j, t in enumerate(targets) if t in pts]
        ys = [pts[t]["kib_per_user"] or 0 for t in targets if t in pts]
        bars = ax.bar(xs, ys, width=width, label=LABELS[system])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(24, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(targets))])
    ax.set_xticklabels([f"{t:,} users" for t in targets])
    ax.set_ylabel("KiB of server RSS per idle logged-in user")
    ax.set_title("memory per idle user (goal: <= 24 KiB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "memory_per_user.png", dpi=110)
    plt.close(fig)
    files.append("memory_per_user.png")
    return files


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the ~2 minute run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default all: {','.join(PHASES)}); "
        "a partial run still writes its table and JSON, with n/a for what did not run",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated systems to run side by side (default all: {','.join(SYSTEMS)})",
    )
    args = parser.parse_args()
    phases_wanted = [x for x in args.only.split(",") if x]
    systems = [x for x in args.systems.split(",") if x]
    for name, wanted, known in (("phase", phases_wanted, PHASES), ("system", systems, SYSTEMS)):
        unknown = set(wanted) - set(known)
        if unknown:
            choices = ", ".join(known)
            parser.error(f"unknown {name} {', '.join(sorted(unknown))}: choose from {choices}")
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    args.out.mkdir(parents=True, exist_ok=True)
    import resource

    fd_limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 20_000)
    h.pin_self()
    started = time.monotonic()
    redis = h.redis_process()
    res: dict[str, Any] = {
        "mode": mode,
        "plan": plan,
        "machine": {
            "cpus": h._CPUS,
            "server_cpu": sorted(h.SERVER_CPU),
            "load_cpu": sorted(h.LOAD_CPU),
            "python": platform.python_version(),
            "fd_limit": fd_limit,
            "loadavg_at_start": list(__import__("os").getloadavg()),
        },
        "notes": {
            "peers": "bare_trio, ws_asyncio and channels relay only: no acks, no storage, no "
            "auth (the token is the user name); acks are sent to them and ignored",
            "channels_memory": "uvicorn process RSS only; Redis holds the groups and queues",
            "actorchat_tokens": "made by the load generator with the node's secret (the HMAC "
            "format of actorchat/auth.py), as a client holding a token from an earlier login",
        },
    }
    servers: dict[str, Server] = {}
    for name in PHASES:
        res[name] = {}
    res["phase_seconds"] = {}
    live = [p for p in ("relay", "latency", "storm", "drain") if p in phases_wanted]
    if "drain" in live and "actorchat" not in systems:
        live.remove("drain")
    try:
        for system in systems if live else []:
            servers[system] = Server(system, h.workdir()).start()
            log(f"started {system} on port {servers[system].port} (pid {servers[system].proc.pid})")  # type: ignore[union-attr]
        phases = res["phase_seconds"]
        for name, phase in (
            ("relay", lambda: relay_phase(servers, plan, redis)),
            ("latency", lambda: latency_phase(servers, plan, redis)),
            ("storm", lambda: storm_phase(servers, plan, redis)),
            ("drain", lambda: drain_phase(servers, plan)),
        ):
            if name not in live:
                continue
            t = time.monotonic()
            res[name] = phase()
            phases[name] = time.monotonic() - t
    finally:
        for server in servers.values():
            server.stop()
    if "idle" in phases_wanted:
        t = time.monotonic()
        res["idle"] = {s: idle_phase(s, plan, fd_limit) for s in systems}
        res["phase_seconds"]["idle"] = time.monotonic() - t
    res["summary"] = summarize(res, plan)
    res["seconds"] = time.monotonic() - started
    res["machine"]["loadavg_at_end"] = list(__import__("os").getloadavg())
    res["plots"] = plot(res, plan, args.out)
    (args.out / "run.json").write_text(json.dumps(res, indent=1, default=str))
    log(
        f"done in {res['seconds']:.0f} s; wrote {args.out / 'run.json'} "
        f"and {', '.join(res['plots'])}"
    )
    print_table(res, plan, res["summary"])


if __name__ == "__main__":
    main()
