"""berthd: load config, claim the state dir and sockets, serve both front ends until stopped.

The one module above `cri/` and `dockerapi/`: it builds the engine context and hands it to each.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import fcntl
import os
import signal
import socket
import stat
import sys
import threading
from importlib.metadata import version
from pathlib import Path
from typing import IO, TYPE_CHECKING

import structlog

from berthd import logsetup
from engine import config as configmod
from engine.store import Store
from runtime.monitor.launch import launch

if TYPE_CHECKING:
    from cri.context import Context
    from cri.metrics import BerthMetrics
    from cri.metrics_http import MetricsServer
    from cri.streaming.server import StreamingServer
    from dockerapi.server import DockerServer

log = structlog.get_logger("berthd")
GIL_SWITCH_INTERVAL = 0.0005  # s; see main()
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


class StartupError(Exception):
    """A reason not to start, worth one line to the operator."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="berthd", description="Berth CRI runtime daemon")
    p.add_argument("--config", help=f"TOML config file (default {configmod.DEFAULT_CONFIG_PATH}, "
                   "embedded defaults when absent)")
    p.add_argument("--version", action="version", version=f"berthd {version('berth')}")
    return p.parse_args(argv)


def _make_dir(path: str, mode: int) -> None:
    try:
        Path(path).mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"{path} is not writable")


def _lock_state_dir(state_dir: str) -> IO[str]:
    """One berthd per state dir: a second one would corrupt metadata and double-manage pods."""
    path = Path(state_dir) / "berthd.lock"
    try:
        fh = open(path, "a+")  # noqa: SIM115 - held open for the daemon's lifetime
    except OSError as exc:
        raise StartupError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise StartupError(
            f"another berthd (pid {holder}) holds the state dir {state_dir}") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def _claim_socket(path: str) -> None:
    """Refuse a live socket or an unsafe directory; clear a stale socket left by a crash."""
    parent = Path(path).parent
    _make_dir(str(parent), 0o711)
    pmode = parent.stat().st_mode
    if pmode & stat.S_IWOTH and not pmode & stat.S_ISVTX:
        raise StartupError(f"refusing socket in world-writable directory {parent}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StartupError(f"cannot check socket {path}: {exc.strerror}") from None
        os.unlink(path)
        return
    finally:
        probe.close()
    raise StartupError(f"socket {path} is already in use by another process")


def _launch_monitor_early(cfg: configmod.Config) -> threading.Thread:
    """Start the monitor while berthd is still importing: two processes, two cores."""
    def run() -> None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(Path(cfg.run_dir) / "monitor.sock"))
            return  # one is already serving (a berthd restart)
        except OSError:
            pass
        finally:
            probe.close()
        try:
            launch(cfg.state_dir, cfg.run_dir, None)
        except Exception as exc:  # ensure_monitor retries and reports it properly
            log.warning("early monitor start failed", error=str(exc))

    thread = threading.Thread(target=run, name="monitor-launch", daemon=True)
    thread.start()
    return thread


async def _context(cfg: configmod.Config, store: Store) -> Context:
    """Open the runtime handles; the monitor is started if no earlier one is still running."""
    from cri.context import Context
    from runtime.containers import ensure_monitor
    from runtime.images.registry import RegistryConfig
    from runtime.images.store import ImageStore
    from runtime.network.cni import CNIConfig, CNIManager

    images = ImageStore(cfg.state_dir, RegistryConfig(
        insecure=set(cfg.registry.insecure), mirrors=dict(cfg.registry.mirrors),
        progress_timeout=cfg.registry.progress_timeout,
        max_concurrent_downloads=cfg.registry.max_concurrent_downloads))
    network = CNIManager(CNIConfig(
        conf_dir=cfg.cni.conf_dir, bin_dirs=list(cfg.cni.bin_dirs), state_dir=cfg.state_dir,
        install_default=cfg.cni.install_default_conflist, default_subnet=cfg.cni.default_subnet))
    try:
        network.load()
    except Exception as exc:  # reported through Status as NetworkReady=false, not fatal
        log.warning("no usable network config", error=str(exc))
    try:
        monitor = await ensure_monitor(cfg.state_dir, cfg.run_dir)
    except Exception as exc:
        raise StartupError(f"cannot start the container monitor: {exc}") from None
    return Context(config=cfg, store=store, images=images, network=network, monitor=monitor)


async def _start_metrics(ctx: Context) -> tuple[BerthMetrics | None, MetricsServer | None]:
    """Prometheus metrics and /healthz; an empty metrics.address turns both off."""
    if not ctx.config.metrics.address:
        return None, None
    from cri.metrics import BerthMetrics
    from cri.metrics_http import MetricsServer

    metrics = BerthMetrics(ctx)
    metrics.watch_monitor_restarts()
    ctx.pull_observers.append(metrics.observe_pull)
    web = MetricsServer(ctx, metrics, ctx.config.metrics.address)
    try:
        await web.start()
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {ctx.config.metrics.address}: "
                           f"{exc.strerror}") from None
    return metrics, web


async def _start_streaming(cfg: configmod.Config, ctx: Context) -> StreamingServer:
    """The Exec/Attach/PortForward HTTP server, listening before CRI answers any request."""
    from cri.streaming.server import StreamingServer

    srv = StreamingServer(ctx.monitor, cfg.streaming.address, cfg.streaming.token_ttl)
    try:
        await srv.start()
    except OSError as exc:
        raise StartupError(f"cannot serve streaming on {cfg.streaming.address}: {exc}") from None
    log.info("streaming", url=srv.base_url)
    return srv


def _docker_server(cfg: configmod.Config, ctx: Context,
                   server: type[DockerServer] | None) -> DockerServer | None:
    """The Docker Engine API on its own socket; server (the class) is None when
    docker.socket = "" turned it off."""
    if server is None:
        return None
    return server(ctx, cfg.docker_socket_path, cfg.docker.max_connections, cfg.docker.max_body)


async def _start_docker(srv: DockerServer) -> None:
    try:
        await srv.start()
    except OSError as exc:
        raise StartupError(f"cannot serve the Docker API on {srv.path}: {exc.strerror}") \
            from None


async def serve(cfg: configmod.Config) -> None:
    sock = cfg.socket_path
    _make_dir(cfg.state_dir, 0o711)
    _make_dir(cfg.run_dir, 0o711)
    lock = _lock_state_dir(cfg.state_dir)
    _claim_socket(sock)
    if cfg.docker_socket_path:
        _claim_socket(cfg.docker_socket_path)
    early = _launch_monitor_early(cfg)
    # grpc, httpx and aiohttp take a few hundred ms to import: only now, and beside the monitor
    from cri import server as servermod
    from cri.events import relay as cri_events
    from cri.interceptor import RpcInterceptor
    from cri.sandbox import backfill_ports
    from engine.event_bridge import follow_monitor
    from engine.recovery import reconcile

    # the Docker API's imports take ~100 ms of the loop's CPU: here, not once CRI is served
    docker_class: type[DockerServer] | None = None
    if cfg.docker_socket_path:
        from dockerapi import server as dockermod

        docker_class = dockermod.DockerServer

    await asyncio.to_thread(early.join)
    try:
        store = Store(Path(cfg.state_dir) / "metadata.db")
    except Exception as exc:  # sqlite raises several types; all mean the same to the operator
        raise StartupError(f"cannot open metadata store in {cfg.state_dir}: {exc}") from None
    ctx = await _context(cfg, store)
    backfill_ports(ctx)
    await reconcile(ctx)
    cri_events(ctx)
    metrics, metrics_server = await _start_metrics(ctx)
    streaming = ctx.streaming = await _start_streaming(cfg, ctx)
    server = servermod.CriServer(ctx, RpcInterceptor([metrics.observe_rpc] if metrics else []))
    try:
        await server.start(sock)
    except OSError as exc:
        raise StartupError(f"cannot listen on {sock}: {exc.strerror}") from None
    # the Docker server's event listener is in place before the relay starts
    docker = _docker_server(cfg, ctx, docker_class)
    relay = asyncio.create_task(follow_monitor(ctx))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if docker is not None:
        await _start_docker(docker)
    log.info("serving", socket=sock, state_dir=cfg.state_dir, version=version("berth"),
             docker_socket=cfg.docker_socket_path)
    await stop.wait()
    log.info("stopping")
    if docker is not None:
        await docker.stop()
    await server.stop(grace=5)
    relay.cancel()
    await streaming.stop()
    if metrics_server is not None:
        await metrics_server.stop()
    await ctx.monitor.close()
    await ctx.images.aclose()
    store.close()
    Path(sock).unlink(missing_ok=True)
    lock.close()
    log.info("stopped")


def _one_malloc_arena() -> None:
    """Every thread allocates from glibc's main arena (glibc only; before any thread starts).

    A pull's layer threads take ~1 MiB buffers (socket reads, inflate output) over and over; in
    their own arenas glibc trims each heap's top as it frees and faults it back in on the next
    chunk, and malloc_trim after the pull cannot give back the tops of other arenas. With one
    arena a cold pull of the 50 MB bench image took 8.2k page faults instead of 14.4k and 0.225
    s of berthd CPU instead of 0.25, and berthd kept 49 MiB of anonymous memory after it
    instead of 57-61 (docs/performance.md, 2026-12-07). berthd's Python threads allocate under
    the GIL anyway, so they never contend for the one arena's lock. A setting, not MALLOC_ARENA_MAX
    in the environment, so that no child (plugins, hooks, the monitor) inherits it."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)


def main(argv: list[str] | None = None) -> None:
    _one_malloc_arena()
    args = _parse_args(argv)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as exc:
        sys.exit(f"berthd: {exc}")
    logsetup.configure(cfg.log_level)
    if os.geteuid() != 0:
        sys.exit("berthd: must run as root (it manages namespaces, cgroups and mounts)")
    # The loop answers lists and Version from memory while worker threads read cgroup files
    # for stats; with CPython's 5 ms default a loop waiting for the GIL waits up to 5 ms at
    # every wake-up, which was most of a Version call's p50 under back-to-back stats calls.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        asyncio.run(serve(cfg))
    except StartupError as exc:
        sys.exit(f"berthd: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
