"""A flood of password-change guesses against one `rig serve`: its memory, other users'
log-in latency (issue 12, item 13).

    .venv/bin/python -m bench.password_flood [--concurrency 20] [--duration 10] [--no-limits]

Starts `rig serve` on an embedded PostgreSQL in a fresh temporary directory, makes two
users, then keeps `--concurrency` `POST /accounts/password` requests in flight with the
first user's token and wrong old passwords (an attacker holding a stolen token) while
the second user logs in every 0.5 s. Prints rig's peak RSS (the rig process alone, not
PostgreSQL), the log-in latencies before and during the flood, and what the flood was
answered. `--no-limits` turns rig's rate limits off, to see the bound on argon2 work alone.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import Child, RssSampler, clean_env, free_port, rss_bytes, wait_until

PASSWORD = "correct horse battery staple"


async def post(session: aiohttp.ClientSession, url: str, body: dict, token: str = "") -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, json=body, headers=headers) as resp:
        return {"status": resp.status, **(await resp.json())}


async def timed_login(session: aiohttp.ClientSession, base: str, username: str) -> float:
    started = time.perf_counter()
    answer = await post(
        session, f"{base}/accounts/auth/local", {"username": username, "password": PASSWORD}
    )
    assert answer["status"] == 200, answer
    return time.perf_counter() - started


async def run(base: str, concurrency: int, duration: float) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        names = [f"flood{secrets.token_hex(3)}", f"other{secrets.token_hex(3)}"]
        for name in names:
            account = {"username": name, "password": PASSWORD, "email": f"{name}@example.org"}
            assert (await post(session, f"{base}/accounts/", account))["status"] == 200
        login = await post(
            session, f"{base}/accounts/auth/local", {"username": names[0], "password": PASSWORD}
        )
        token = login["payload"]["token"]
        before = [await timed_login(session, base, names[1]) for _ in range(5)]

        answers: dict[int, int] = {}
        stop = time.monotonic() + duration

        async def flood() -> None:
            while time.monotonic() < stop:
                guess = {"oldPassword": secrets.token_hex(8), "newPassword": "a new password 1"}
                answer = await post(session, f"{base}/accounts/password", guess, token)
                answers[answer["status"]] = answers.get(answer["status"], 0) + 1

        async def other_user() -> list[float]:
            latencies = []
            while time.monotonic() < stop:
                latencies.append(await timed_login(session, base, names[1]))
                await asyncio.sleep(0.5)
            return latencies

        *_, during = await asyncio.gather(*(flood() for _ in range(concurrency)), other_user())
    return {"before": before, "during": during, "answers": answers}


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return f"p50 {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.password_flood")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--no-limits", action="store_true", help="RIG_RATE_LIMIT_*=0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-flood-") as tmp:
        port = free_port()
        env = clean_env(RIG_DATA_DIR=str(Path(tmp) / "data"), RIG_PORT=str(port))
        if args.no_limits:
            env.update(
                RIG_RATE_LIMIT_ADDRESS="0",
                RIG_RATE_LIMIT_USERNAME="0",
                RIG_RATE_LIMIT_ADDRESS_USERNAME="0",
            )
        rig = Child("rig", [sys.executable, "-m", "rig", "serve"], Path(tmp) / "rig.log", env)
        rig.start()
        try:
            rig.wait_for_port(port, timeout=60)
            wait_until(lambda: rss_bytes(rig.pid) > 0, 5, "rig's RSS")
            idle = rss_bytes(rig.pid)
            with RssSampler(rig.pid, interval=0.1) as sampler:
                base = f"http://127.0.0.1:{port}"
                result = asyncio.run(run(base, args.concurrency, args.duration))
        finally:
            rig.stop()
    print(f"flood: {args.concurrency} concurrent POST /accounts/password for {args.duration:g} s")
    print(f"  answers by HTTP status: {dict(sorted(result['answers'].items()))}")
    print(f"  rig RSS: {idle / 2**20:.0f} MB idle, peak {sampler.peak / 2**20:.0f} MB")
    print(f"  another user's log-in, before: {summary(result['before'])}")
    print(f"  another user's log-in, during: {summary(result['during'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
