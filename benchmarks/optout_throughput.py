"""Opt-out checker throughput, requests per URL, and which signals each tool catches.

A local HTTP server (its own process, 127.0.0.1, many ports = many origins) serves a mix of
works: plain JPEGs, X-Robots-Tag and TDMRep headers, HTML pages with meta tags, JPEGs with C2PA
(signed by sdkit's Stamper) and IPTC XMP opt-outs, behind robots.txt / ai.txt / tdmrep.json
files on some origins. Measured in the same run:

* sdkit's OptOutChecker (aiohttp): URLs/s, requests per URL (site files included);
* datadiligence (Spawning), ``is_allowed(url=...)`` from 64 threads, on the signals it supports;
* aiohttp and httpx as bare async clients (one GET per URL, body read): why aiohttp;
* a coverage table: one URL per signal and edge case, checked by both tools.

datadiligence is not a dependency of sdkit; install it for this benchmark only:

    .venv/bin/pip install datadiligence

Run: ``nice -n 10 .venv/bin/python benchmarks/optout_throughput.py`` (options: --help). Prints
tables and writes benchmarks/optout_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test server and image writers

KINDS = 20  # URL i has kind i % KINDS; kinds below 6 carry an opt-out, the rest are plain JPEGs


# -- the server (its own process) -----------------------------------------------------------


def _serve(ports: int, files: dict[str, bytes], queue: Any) -> None:
    from aiohttp import web

    hits = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        hits[0] += 1
        path = request.path
        port = request.url.port or 0
        site = port % 5
        if path == "/__count":
            hits[0] -= 1
            return web.Response(text=str(hits[0]))
        if path == "/robots.txt":
            if site == 0:
                return web.Response(
                    text="User-agent: GPTBot\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n"
                )
            return web.Response(status=404)
        if path == "/ai.txt":
            return (
                web.Response(text="User-Agent: *\nDisallow: *.png\n")
                if site == 1
                else web.Response(status=404)
            )
        if path == "/.well-known/tdmrep.json":
            if site == 2:
                return web.json_response([{"location": "/reserved/*", "tdm-reservation": 1}])
            return web.Response(status=404)
        if path.startswith("/cov/"):
            return await _coverage_route(request, files)
        kind = int(path.rsplit("/", 1)[-1].split(".")[0]) % KINDS
        headers: dict[str, str] = {}
        data, ctype = files["plain"], "image/jpeg"
        if kind == 0:
            headers["X-Robots-Tag"] = "noai"
        elif kind == 1:
            headers["tdm-reservation"] = "1"
        elif kind == 2:
            data = files["sdkit"]
        elif kind == 3:
            data = files["xmp"]
        elif kind == 4:
            data, ctype = files["html"], "text/html"
        elif kind == 5:
            data = files["c2pa_notallowed"]
        return web.Response(body=data, content_type=ctype, headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        origins = []
        for _ in range(ports):
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            origins.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]
        queue.put(origins)
        await asyncio.Event().wait()

    asyncio.run(main())


async def _coverage_route(request: Any, files: dict[str, bytes]) -> Any:
    from aiohttp import web

    name = request.path.removeprefix("/cov/")
    spec = COVERAGE[name]
    if spec.get("sleep"):
        await asyncio.sleep(spec["sleep"])
    response = web.Response(
        body=files[spec.get("file", "plain")],
        status=spec.get("status", 200),
        content_type=spec.get("type", "image/jpeg"),
    )
    for header, value in spec.get("headers", ()):
        response.headers.add(header, value)
    return response


#: One URL per signal or edge case: (label, route spec). Site-file rows use the origins above.
COVERAGE: dict[str, dict[str, Any]] = {
    "xrt-noai": {"label": "X-Robots-Tag: noai", "headers": [("X-Robots-Tag", "noai")]},
    "xrt-case": {"label": "X-Robots-Tag: NoAI (case)", "headers": [("X-Robots-Tag", "NoAI")]},
    "xrt-repeated": {
        "label": "X-Robots-Tag twice (noindex, then noimageai)",
        "headers": [("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "noimageai")],
    },
    "xrt-scoped": {
        "label": "X-Robots-Tag: GPTBot: noai (AI crawler scope)",
        "headers": [("X-Robots-Tag", "GPTBot: noai")],
    },
    "tdm-header": {"label": "tdm-reservation: 1 header", "headers": [("tdm-reservation", "1")]},
    "meta-robots": {
        "label": '<meta name="robots" content="noai">',
        "file": "html",
        "type": "text/html",
    },
    "meta-tdm": {
        "label": '<meta name="tdm-reservation" content="1">',
        "file": "html_tdm",
        "type": "text/html",
    },
    "c2pa-notallowed": {"label": "C2PA c2pa.training-mining notAllowed", "file": "c2pa_notallowed"},
    "c2pa-constrained": {
        "label": "C2PA c2pa.training-mining constrained",
        "file": "c2pa_constrained",
    },
    "cawg-sdkit": {"label": "CAWG cawg.training-mining (sdkit output)", "file": "sdkit"},
    "iptc": {"label": "IPTC plus:DataMining in XMP", "file": "xmp"},
    "http-503": {"label": "HTTP 503 (fail closed)", "status": 503},
    "slow": {"label": "no answer within the timeout (fail closed)", "sleep": 12.0},
}


# -- fixtures -------------------------------------------------------------------------------


def _files() -> dict[str, bytes]:
    from optout_images import c2pa_signed, credentials, encode, picture, sdkit_signed, with_xmp

    creds = credentials(Path(tempfile.mkdtemp(prefix="optout-bench-")))
    html = (
        b'<html><head><title>a</title><meta name="robots" content="noai"></head><body>'
        + b"x" * 4000
    )
    return {
        "plain": encode(picture(0, (320, 240)), "jpeg", quality=85),
        "sdkit": sdkit_signed(creds, "jpeg"),
        "xmp": with_xmp("DMI-PROHIBITED-AIMLTRAINING", "jpeg"),
        "c2pa_notallowed": c2pa_signed(
            creds, "c2pa.training-mining", {"c2pa.ai_training": {"use": "notAllowed"}}
        ),
        "c2pa_constrained": c2pa_signed(
            creds, "c2pa.training-mining", {"c2pa.ai_training": {"use": "constrained"}}
        ),
        "html": html,
        "html_tdm": html.replace(
            b'name="robots" content="noai"', b'name="tdm-reservation" content="1"'
        ),
    }


def _urls(origins: list[str], n: int) -> list[str]:
    urls = []
    for i in range(n):
        origin = origins[i % len(origins)]
        site = int(origin.rsplit(":", 1)[1]) % 5
        folder = {
            0: "private" if i % 7 == 0 else "img",
            2: "reserved" if i % 7 == 0 else "img",
        }.get(site, "img")
        suffix = "png" if site == 1 and i % 7 == 0 else "jpg"
        urls.append(f"{origin}/{folder}/{i}.{suffix}")
    return urls


def _count(origin: str) -> int:
    with urllib.request.urlopen(origin + "/__count") as response:
        return int(response.read())


# -- the tools ------------------------------------------------------------------------------


def run_sdkit(urls: list[str], concurrency: int) -> dict[str, Any]:
    from provenance.optout import OptOutChecker

    checker = OptOutChecker(allow_private=True, concurrency=concurrency, per_host=16, timeout=10)
    started = time.perf_counter()
    decisions = checker.check_many(urls)
    seconds = time.perf_counter() - started
    verdicts = {
        v: sum(d.verdict == v for d in decisions) for v in ("allowed", "disallowed", "unknown")
    }
    return {"seconds": seconds, "urls_per_s": len(urls) / seconds, "verdicts": verdicts}


def run_datadiligence(urls: list[str], threads: int) -> dict[str, Any]:
    import datadiligence as dd

    def one(url: str) -> bool | str:
        try:
            return bool(dd.is_allowed(url=url))
        except Exception as exc:  # datadiligence raises on 5xx and timeouts
            return type(exc).__name__

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, urls))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "urls_per_s": len(urls) / seconds,
        "verdicts": {
            "allowed": results.count(True),
            "disallowed": results.count(False),
            "raised": sum(isinstance(r, str) for r in results),
        },
    }


async def _client(name: str, urls: list[str], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    if name == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=16)
        ) as session:

            async def get(url: str) -> None:
                async with semaphore, session.get(url) as response:
                    await response.read()

            await asyncio.gather(*(get(u) for u in urls))
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client:

            async def hget(url: str) -> None:
                async with semaphore:
                    (await client.get(url)).read()

            await asyncio.gather(*(hget(u) for u in urls))
    return len(urls) / (time.perf_counter() - started)


def coverage(origins: list[str]) -> list[dict[str, Any]]:
    """Each signal's URL through both tools: does the tool refuse the work?"""
    from provenance.optout import OptOutChecker

    by_site = {int(o.rsplit(":", 1)[1]) % 5: o for o in origins}
    rows: list[tuple[str, str]] = [
        (spec["label"], f"{origins[3]}/cov/{name}") for name, spec in COVERAGE.items()
    ]
    rows += [
        ("robots.txt: User-agent: GPTBot Disallow", f"{by_site[0]}/private/7.jpg"),
        ("ai.txt: Disallow: *.png (Spawning)", f"{by_site[1]}/img/7.png"),
        ("/.well-known/tdmrep.json reservation", f"{by_site[2]}/reserved/7.jpg"),
        ("no opt-out (control: must be allowed)", f"{origins[3]}/img/19.jpg"),
    ]
    checker = OptOutChecker(allow_private=True, timeout=2.0)
    ours = checker.check_many([url for _, url in rows])
    try:
        import datadiligence as dd
    except ImportError:
        dd = None

    def theirs(url: str) -> str:
        if dd is None:
            return "not installed"
        try:
            return "allowed" if dd.is_allowed(url=url) else "refused"
        except Exception as exc:
            return f"raises {type(exc).__name__}"

    with ThreadPoolExecutor(len(rows)) as pool:
        dd_results = list(pool.map(theirs, [url for _, url in rows]))
    out = []
    for (label, _), decision, their in zip(rows, ours, dd_results, strict=True):
        named = ", ".join(sorted({s.name for s in decision.deciding})) or "-"
        out.append(
            {
                "signal": label,
                "sdkit": decision.verdict,
                "sdkit_signal": named,
                "datadiligence": their,
            }
        )
    return out


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=20000, help="URLs checked by sdkit")
    parser.add_argument("--origins", type=int, default=50, help="origins (ports) served")
    parser.add_argument("--dd-urls", type=int, default=2000, help="URLs checked by datadiligence")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--output", default=str(HERE / "optout_throughput.json"))
    args = parser.parse_args()
    try:
        import datadiligence  # noqa: F401
    except ImportError:
        sys.exit(
            "datadiligence is not installed; for this benchmark only: .venv/bin/pip install datadiligence"
        )
    logging.disable(logging.CRITICAL)  # datadiligence logs every image without a C2PA manifest

    files = _files()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.origins, files, queue), daemon=True)
    server.start()
    try:
        origins: list[str] = queue.get(timeout=30)
        urls = _urls(origins, args.urls)
        results: dict[str, Any] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "urls": args.urls,
            "origins": args.origins,
        }

        # warm-up (imports, connections), not measured
        run_sdkit(_urls(origins, 500), args.concurrency)

        before = _count(origins[0])
        ours = run_sdkit(urls, args.concurrency)
        ours["requests_per_url"] = (_count(origins[0]) - before) / len(urls)
        results["sdkit"] = ours

        dd_urls = urls[: args.dd_urls]
        tries = []
        for threads in (16, 64):  # datadiligence's best thread count counts
            before = _count(origins[0])
            theirs = run_datadiligence(dd_urls, threads)
            theirs["requests_per_url"] = (_count(origins[0]) - before) / len(dd_urls)
            theirs["threads"] = threads
            tries.append(theirs)
        theirs = max(tries, key=lambda t: t["urls_per_s"])
        theirs["tried"] = [t["threads"] for t in tries]
        theirs["version"] = importlib.metadata.version("datadiligence")
        results["datadiligence"] = theirs
        runs = []
        for _ in range(3):  # the same URLs, a fresh checker each time (site files again); best of 3
            before = _count(origins[0])
            same = run_sdkit(dd_urls, args.concurrency)
            same["requests_per_url"] = (_count(origins[0]) - before) / len(dd_urls)
            runs.append(same)
        results["sdkit_same_urls"] = max(runs, key=lambda r: r["urls_per_s"])

        client_urls = [u for u in urls if "/img/" in u][:5000]
        results["clients"] = {
            name: asyncio.run(_client(name, client_urls, 64)) for name in ("aiohttp", "httpx")
        }
        results["coverage"] = coverage(origins)
    finally:
        server.kill()
        server.join()

    _print(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


def _print(r: dict[str, Any]) -> None:
    ours, theirs, same = r["sdkit"], r["datadiligence"], r["sdkit_same_urls"]
    print(f"machine: {r['machine']}; {r['origins']} origins on 127.0.0.1\n")
    print("| tool | URLs | URLs/s | requests per URL | verdicts |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| sdkit OptOutChecker (aiohttp) | {r['urls']} | {ours['urls_per_s']:,.0f} | {ours['requests_per_url']:.3f} | {ours['verdicts']} |"
    )
    n_dd = round(theirs["seconds"] * theirs["urls_per_s"])
    print(
        f"| sdkit, the same URLs as datadiligence (best of 3) | {n_dd} | {same['urls_per_s']:,.0f} | {same['requests_per_url']:.3f} | {same['verdicts']} |"
    )
    print(
        f"| datadiligence {theirs['version']} ({theirs['threads']} threads, best of {theirs['tried']}) | {n_dd} | {theirs['urls_per_s']:,.0f} | {theirs['requests_per_url']:.3f} | {theirs['verdicts']} |"
    )
    print(
        f"\nspeed-up on the same URLs: {same['urls_per_s'] / theirs['urls_per_s']:.1f}x"
        f" (20,000-URL rate / datadiligence: {ours['urls_per_s'] / theirs['urls_per_s']:.1f}x)"
    )
    print(
        "\nbare clients, one GET per URL, 64 in flight: "
        + ", ".join(f"{k} {v:,.0f} GET/s" for k, v in r["clients"].items())
    )
    print("\n| signal | sdkit | named | datadiligence |")
    print("|---|---|---|---|")
    for row in r["coverage"]:
        print(
            f"| {row['signal']} | {row['sdkit']} | {row['sdkit_signal']} | {row['datadiligence']} |"
        )


if __name__ == "__main__":
    main()
