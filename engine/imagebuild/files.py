"""COPY and ADD steps: where the sources come from, their digest, and the write itself.

Sources come from the build context (read in place from its tar, or unpacked for ADD, whose
archives need the file), from an earlier stage or an image (`--from`: its rootfs, mounted until
the build ends), or, for ADD, from a URL (downloaded into a private dir). `--chown` names
resolve in the destination image's own /etc/passwd and /etc/group.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from engine.imagebuild.copy import (
    Copier,
    CopyError,
    Owner,
    Source,
    copy_sources,
    digest_sources,
)
from engine.imagebuild.copy import expand_sources as _expand
from engine.imagebuild.dockerfile import Instruction
from engine.imagebuild.image import BuildImage
from engine.imagebuild.trees import Tree, open_root
from runtime.spec import resolve_user

if TYPE_CHECKING:
    from engine.imagebuild.builder import Build

MAX_URL_BYTES = 4 << 30


@dataclass(frozen=True)
class FileStep:
    """A COPY or ADD, resolved: sources under src_root, and how to write them."""

    cmd: str
    src: Tree
    sources: list[Source]
    dest: str
    chown: str | None
    chmod: int | None
    keep_owner: bool
    add_archives: bool
    digest: str


def _dest(words: list[str], workdir: str) -> str:
    dest = words[-1]
    as_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith(("/.", "/.."))
    full = posixpath.normpath(posixpath.join(workdir or "/", dest))
    return full.rstrip("/") + "/" if as_dir else full


def _chmod(ins: Instruction) -> int | None:
    raw = ins.flags.get("chmod")
    if raw is None:
        return None
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise CopyError(f"{ins.where()}: invalid --chmod={raw}: give an octal mode like 0755")
    return mode


async def _download(build: Build, url: str, into: Path) -> str:
    """ADD's remote file: fetched whole into the staging dir; its name is the URL's last part."""
    name = posixpath.basename(urllib.parse.urlparse(url).path) or "download"
    target = into / name
    try:
        # made in a thread: the client's SSL context loads the CA bundle, 20-60 ms of CPU
        client = await asyncio.to_thread(httpx.AsyncClient, follow_redirects=True,
                                         trust_env=False, timeout=httpx.Timeout(300, connect=30))
        async with client, client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise CopyError(f"ADD {url}: got HTTP status code {resp.status_code}")
            size = 0
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                async for chunk in resp.aiter_bytes(1 << 20):
                    size += len(chunk)
                    if size > MAX_URL_BYTES:
                        raise CopyError(f"ADD {url}: larger than {MAX_URL_BYTES} bytes")
                    await asyncio.to_thread(os.write, fd, chunk)
            finally:
                os.close(fd)
    except httpx.HTTPError as e:
        raise CopyError(f"ADD {url}: {e}") from None
    os.chmod(target, 0o600)  # Docker gives downloaded files mode 0600
    return name


async def _from_stage(build: Build, ref: str) -> Tree:
    """COPY --from: that stage's (or image's) rootfs, mounted until the build ends, so the
    digest and, on a miss, the copy read it where it is."""
    idx = next((i for i, s in enumerate(build.stage_names) if s and s == ref.lower()), None)
    if idx is None and ref.isdigit() and int(ref) < len(build.stages):
        idx = int(ref)
    if idx is not None:
        source = build.stages[idx]
    else:
        img = build.store.get(ref) or await build.pull_image(ref)
        build.pin([img.id, *img.blobs, *img.chain_ids])
        source = await asyncio.to_thread(BuildImage.from_image, build.store, img)
    return build.dir_tree(await build.mounts.enter_async_context(build.rootfs(source)))


async def prepare_sources(ins: Instruction, words: list[str], build: Build,
                          state: BuildImage) -> FileStep:
    """Resolve a COPY/ADD's sources and their digest (for the cache key) before any write."""
    if len(words) < 2:
        raise CopyError(f"{ins.where()}: {ins.cmd} requires at least two arguments")
    dest = _dest(words, state.config.get("WorkingDir") or "/")
    patterns = words[:-1]
    keep_owner = False
    src: Tree
    if "from" in ins.flags:
        src, keep_owner = await _from_stage(build, ins.flags["from"]), True
    elif ins.cmd == "ADD" and any(p.startswith(("http://", "https://")) for p in patterns):
        if len(patterns) != 1:
            raise CopyError(f"{ins.where()}: ADD takes one URL at a time here")
        staging = build.work / f"src-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        patterns = [await _download(build, patterns[0], staging)]
        src = build.dir_tree(staging)
    else:  # ADD may unpack an archive source, which needs the file: the unpacked context
        src = await build.context_tree(unpacked=ins.cmd == "ADD")

    def resolve() -> tuple[list[Source], str]:
        found = _expand(src, patterns)
        return found, digest_sources(src, found)

    sources, digest = await asyncio.to_thread(resolve)
    return FileStep(ins.cmd, src, sources, dest, ins.flags.get("chown"), _chmod(ins),
                    keep_owner, ins.cmd == "ADD" and src is build.unpacked, digest)


def write_files(step: FileStep, root: Path) -> None:
    """The copy into the step's mounted rootfs (blocking)."""
    owner = None
    if step.chown:
        try:
            uid, gid, _ = resolve_user(str(root), step.chown)
        except LookupError as e:
            raise CopyError(f"{step.cmd} --chown={step.chown}: {e}") from None
        owner = Owner(uid, gid)
    rfd = open_root(root)
    try:
        copier = Copier(rfd, owner, step.chmod, step.keep_owner)
        copy_sources(step.src, step.sources, step.dest, copier, add_archives=step.add_archives)
    finally:
        os.close(rfd)
