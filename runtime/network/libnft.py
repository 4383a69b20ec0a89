"""nft scripts through libnftables, the library the `nft` command is a front end of.

Why not `nft -f -`: a process per transaction cost berthd ~4 ms of the child's CPU plus the
spawn in the event loop's thread (a vfork of the daemon, a PATH walk of failed execs, a
child-watcher thread) for what is ~0.7 ms of work in-process. The library parses the same
syntax with the same code and sends the same single netlink transaction. Calls run in a worker
thread (ctypes releases the GIL; the kernel's commit may wait), one at a time: a context is
not shared, but the library keeps a little global state, so nothing here relies on it being
reentrant. The `nftables` package (Debian's libnftables1) is what `nft` itself needs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
from functools import cache

_LOCK = threading.Lock()
_SONAME = "libnftables.so.1"


@cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or _SONAME)
    except OSError as exc:
        raise OSError(f"{_SONAME} is missing (install the nftables package): {exc}") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def run_sync(script: str) -> None:
    """One script, one transaction (as `nft -f`): all of it applies or none of it; a failure
    raises OSError with nft's own message."""
    lib = _lib()
    with _LOCK:
        ctx = lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT
        if not ctx:
            raise OSError("nft: could not make a libnftables context")
        try:
            lib.nft_ctx_buffer_output(ctx)  # nothing of it reaches berthd's stdout
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        finally:
            lib.nft_ctx_free(ctx)
    if rc != 0:
        raise OSError(f"nft: {err.strip() or f'exit status {rc}'}")


async def run(script: str) -> None:
    await asyncio.to_thread(run_sync, script)
