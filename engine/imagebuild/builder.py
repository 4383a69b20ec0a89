"""The classic builder: a context tar and a Dockerfile in, an image in the store out.

Stages build in order up to the target. Every step, config-only or not, has a cache key; a hit
reuses the step's recorded result (so an unchanged rebuild runs nothing and yields the same image
ID), a miss runs it. Steps that write files (RUN, COPY, ADD, a WORKDIR that must be created) get
an overlay of the parent's snapshots with a fresh snapshot dir as upper; that upper dir becomes
the layer's blob and is committed as its snapshot as it is, so a built image is never unpacked.
Progress goes out as Docker's JSON build messages through `emit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.imagebuild import config_steps, context, dockerfile
from engine.imagebuild.cache import BuildCache, step_key
from engine.imagebuild.copy import Copier, CopyError
from engine.imagebuild.dockerfile import DockerfileError, Instruction, Stage
from engine.imagebuild.files import prepare_sources, write_files
from engine.imagebuild.image import BuildImage
from engine.imagebuild.runner import NETWORK_MODES, Runner, RunStep
from engine.imagebuild.trees import DirTree, TarTree, Tree, open_root
from engine.imagebuild.words import EXPANDS, WordError, expand, pairs
from runtime.bundle import mount_overlay, unmount
from runtime.images.layerdiff import write_layer
from runtime.images.records import Image
from runtime.images.reference import familiar, normalize, parse
from runtime.images.registry import Auth
from runtime.images.store import ImageStore

Emit = Callable[[dict[str, Any]], None]
WRITES = frozenset({"RUN", "COPY", "ADD"})


class BuildError(Exception):
    """The build stopped; the message is what `docker build` prints after 'ERROR'."""


@dataclass
class BuildOptions:
    """The query options of POST /build that change what gets built."""

    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    pull: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    auth: dict[str, Auth] = field(default_factory=dict)  # registry host -> credentials


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


class Build:
    """One build; `run` returns the image it recorded."""

    def __init__(self, store: ImageStore, runner: Runner, cache: BuildCache, work: Path,
                 opts: BuildOptions, emit: Emit) -> None:
        self.store, self.runner, self.cache, self.opts = store, runner, cache, opts
        self.emit, self.work = emit, work
        self.stages: list[BuildImage] = []
        self.stage_names: list[str] = []
        self.meta: dict[str, str] = {}
        self.used_args: set[str] = set()
        self.step_no, self.steps = 0, 0
        self.ctx = work / "context"
        self.context_tar = Path()
        self.tar_tree: TarTree | None = None  # the context read in place, when it can be
        self.unpacked: DirTree | None = None  # the context unpacked, once a step needs it
        self.fds: list[int] = []  # of the trees above and of staging dirs, closed at the end
        self.mounts = contextlib.AsyncExitStack()  # COPY --from sources, unmounted at the end

    def say(self, text: str) -> None:
        self.emit({"stream": text})

    async def run(self, ctx: Path | context.Spooled, pin: Callable[[list[str]], None]) -> Image:
        """Build from a context file, or from one read on its way in (`context.Spool`)."""
        spooled = ctx if isinstance(ctx, context.Spooled) else None
        self.context_tar = ctx.path if isinstance(ctx, context.Spooled) else ctx
        if spooled is not None:
            self.tar_tree = spooled.tree  # its fd is the spool's to close
        try:
            if self.opts.network not in NETWORK_MODES:
                raise BuildError(f"network mode {self.opts.network!r} is not supported for "
                                 f"builds (use one of {', '.join(NETWORK_MODES)})")
            if spooled is not None and spooled.error is not None:
                raise spooled.error
            if spooled is None:
                self.tar_tree = await asyncio.to_thread(context.index, self.context_tar)
                if self.tar_tree is not None:
                    self.fds.append(self.tar_tree.fd)
            return await self._run(pin)
        finally:
            for fd in self.fds:  # first: a mount with an open fd in it would stay busy
                os.close(fd)
            await self.mounts.aclose()

    async def _run(self, pin: Callable[[list[str]], None]) -> Image:
        df = dockerfile.parse(await asyncio.to_thread(
            self._read_dockerfile, await self.context_tree()))
        last = df.target(self.opts.target)
        stages = df.stages[: last + 1]
        if self.opts.labels:
            stages[-1].instructions.append(dockerfile.parse_one(
                "LABEL " + " ".join(json.dumps(k) + "=" + json.dumps(v)
                                    for k, v in sorted(self.opts.labels.items()))))
        self.steps = sum(1 + len(s.instructions) for s in stages)
        self._meta_args(df)
        self.pin = pin
        for stage in stages:
            self.stages.append(await self._stage(df, stage))
            self.stage_names.append(stage.name)
        unused = sorted(set(self.opts.build_args) - self.used_args)
        if unused:
            self.say(f"[Warning] One or more build-args {unused} were not consumed\n")
        final = self.stages[-1]
        img = await asyncio.to_thread(final.commit, self.store, self.opts.tags)
        self.emit({"aux": {"ID": img.id}})
        self.say(f"Successfully built {short(img.id)}\n")
        for tag in self.opts.tags:
            self.say(f"Successfully tagged {familiar(parse(tag))}\n")
        return img

    async def context_tree(self, unpacked: bool = False) -> Tree:
        """The context as COPY reads it: in place from the tar when its index can answer
        (and unpacked is not asked for), else unpacked once, on first need."""
        if self.tar_tree is not None and not unpacked:
            return self.tar_tree
        if self.unpacked is None:
            await asyncio.to_thread(context.extract, self.context_tar, self.ctx)
            self.unpacked = self.dir_tree(self.ctx)
        return self.unpacked

    def dir_tree(self, path: Path) -> DirTree:
        """A directory of this build as a source tree; its root fd lives as long as the build."""
        tree = DirTree(open_root(path))
        self.fds.append(tree.fd)
        return tree

    def _read_dockerfile(self, tree: Tree) -> str:
        try:
            raw = tree.read(self.opts.dockerfile, (1 << 20) + 1)
        except OSError:
            raise BuildError("Cannot locate specified Dockerfile: "
                             f"{self.opts.dockerfile}") from None
        if len(raw) > 1 << 20:
            raise BuildError("the Dockerfile is larger than 1 MiB")
        return raw.decode("utf-8", "replace")

    def _meta_args(self, df: dockerfile.Dockerfile) -> None:
        for ins in df.meta_args:
            name, value = self._arg(ins, self.meta)
            self.meta[name] = value

    def _arg(self, ins: Instruction, env: dict[str, str]) -> tuple[str, str]:
        if len(ins.values) != 1:
            raise BuildError(f"{ins.where()}: ARG requires exactly one argument")
        name, eq, default = ins.values[0].partition("=")
        default = expand(default, env, "\\") if eq else ""
        if name in self.opts.build_args and self.opts.build_args[name] is not None:
            self.used_args.add(name)
            return name, str(self.opts.build_args[name])
        return name, default

    async def _from(self, df: dockerfile.Dockerfile, stage: Stage) -> BuildImage:
        base = expand(stage.base, self.meta, df.escape)
        self.step(f"FROM {base}" + (f" AS {stage.name}" if stage.name else ""))
        ref = df.stage_ref(base)
        if ref is not None and ref < stage.index:
            state = BuildImage.from_json(self.stages[ref].to_json())
            self.say(f" ---> {short(state.fingerprint())}\n")
            return state
        if base == "scratch":
            return BuildImage()
        img = None if self.opts.pull else self.store.get(base)
        if img is None:
            img = await self.pull_image(base)
        self.pin([img.id, *img.blobs, *img.chain_ids])
        self.say(f" ---> {short(img.id)}\n")
        return await asyncio.to_thread(BuildImage.from_image, self.store, img)

    async def pull_image(self, ref: str) -> Image:
        try:
            domain = normalize(ref).domain
        except ValueError as e:
            raise BuildError(f"invalid reference format: {e}") from None
        self.say(f"Pulling from {ref}\n")
        try:
            return await self.store.pull(ref, self.opts.auth.get(domain))
        except Exception as e:  # every pull failure is the build's failure, said as is
            raise BuildError(f"pull access denied or image not found for {ref}: {e}") from None

    def step(self, text: str) -> None:
        self.step_no += 1
        self.say(f"Step {self.step_no}/{self.steps} : {text}\n")

    async def _stage(self, df: dockerfile.Dockerfile, stage: Stage) -> BuildImage:
        state = await self._from(df, stage)
        args: dict[str, str] = {}
        triggers = [dockerfile.parse_one(t) for t in state.config.get("OnBuild") or []]
        if triggers:
            self.say(f" ---> Running in {len(triggers)} build trigger(s)\n")
            state.config["OnBuild"] = None
        for ins in [*triggers, *stage.instructions]:
            state = await self._instruction(df, state, ins, args)
        return state

    async def _instruction(self, df: dockerfile.Dockerfile, state: BuildImage,
                           ins: Instruction, args: dict[str, str]) -> BuildImage:
        self.step(ins.original)
        env = {**args, **config_steps.env_map(state.config)}
        try:
            if ins.cmd == "ARG":
                name, value = self._arg(ins, {**self.meta, **env})
                if "=" not in ins.values[0] and name in self.meta and name not in \
                        self.opts.build_args:
                    value = self.meta[name]
                args[name] = value
                key = step_key(state, f"ARG {name}={value}")
                return await self._cached(key, state, lambda s: None,
                                          f"/bin/sh -c #(nop)  ARG {ins.values[0]}")
            words = [expand(w, env, df.escape) for w in ins.values] \
                if ins.cmd in EXPANDS and ins.cmd not in ("ENV", "LABEL") else list(ins.values)
            kv = pairs(ins.values, env, df.escape) if ins.cmd in ("ENV", "LABEL") else []
        except WordError as e:
            raise BuildError(f"{ins.where()}: {e}") from None
        if ins.cmd in WRITES or ins.cmd == "WORKDIR":
            return await self._writing(df, state, ins, words, env, args)
        key = step_key(state, ins.original + json.dumps([words, kv]))
        return await self._cached(key, state, lambda s: config_steps.apply(
            s.config, ins, words, kv), f"/bin/sh -c #(nop)  {ins.original}")

    async def _cached(self, key: str, state: BuildImage, change: Callable[[BuildImage], None],
                      created_by: str) -> BuildImage:
        hit = None if self.opts.nocache else self.cache.get(key, self.store)
        if hit is not None:
            self.say(" ---> Using cache\n")
            self.say(f" ---> {short(hit.fingerprint())}\n")
            return hit
        new = BuildImage.from_json(state.to_json())
        change(new)
        new.step(created_by, empty_layer=True)
        self.cache.put(key, new)
        self.say(f" ---> {short(new.fingerprint())}\n")
        return new

    async def _writing(self, df: dockerfile.Dockerfile, state: BuildImage, ins: Instruction,
                       words: list[str], env: dict[str, str], args: dict[str, str]
                       ) -> BuildImage:
        extra, files = "", None
        if ins.cmd in ("COPY", "ADD"):
            files = await prepare_sources(ins, words, self, state)
            extra = files.digest
        elif ins.cmd == "RUN":
            extra = json.dumps(sorted(args.items()))
        key = step_key(state, ins.original + json.dumps(words), extra)
        hit = None if self.opts.nocache else self.cache.get(key, self.store)
        if hit is not None:
            self.say(" ---> Using cache\n")
            self.say(f" ---> {short(hit.fingerprint())}\n")
            self.pin(hit.chain_ids())
            return hit
        new = BuildImage.from_json(state.to_json())
        if ins.cmd == "WORKDIR":
            path = config_steps.workdir(new.config, words[0] if words else "")
            made = await self._layer(new, lambda root: _mkdir(root, path))
            new.step(f"/bin/sh -c #(nop) WORKDIR {path}", empty_layer=not made)
        elif ins.cmd == "RUN":
            cmd = config_steps.command(ins, new.config)
            run_env = [f"{k}={v}" for k, v in {**args, **config_steps.env_map(
                new.config)}.items()]
            step = RunStep(cmd, run_env, new.config.get("WorkingDir") or "/",
                           new.config.get("User") or "", self.opts.network)
            await self._layer(new, lambda root: None, run=step, keep_empty=True)
            new.step(" ".join(cmd) if not ins.json else json.dumps(cmd), empty_layer=False)
        else:
            assert files is not None
            await self._layer(new, lambda root: write_files(files, root), keep_empty=True)
            new.step(f"/bin/sh -c #(nop) {ins.cmd} {files.digest} in {files.dest}",
                     empty_layer=False)
        self.cache.put(key, new)
        self.say(f" ---> {short(new.fingerprint())}\n")
        return new

    @contextlib.asynccontextmanager
    async def rootfs(self, state: BuildImage, upper: Path | None = None
                     ) -> AsyncIterator[Path]:
        """The stage's filesystem mounted on the host; writes go to upper (or a scratch dir)."""
        tmp = self.work / f"mnt-{uuid.uuid4().hex[:12]}"
        target, scratch = tmp / "rootfs", tmp / "scratch"
        for d in (target, scratch / "upper", scratch / "work", tmp / "empty"):
            d.mkdir(parents=True)
        lowers = self.store.snapshots.lowers(state.chain_ids()) or [str(tmp / "empty")]
        up = upper if upper is not None else scratch / "upper"
        work = up.parent / "work"
        work.mkdir(exist_ok=True)
        await asyncio.to_thread(mount_overlay, str(target), lowers, str(up), str(work))
        try:
            yield target
        finally:
            await asyncio.to_thread(unmount, str(target))
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

    async def _layer(self, state: BuildImage, write: Callable[[Path], Any],
                     run: RunStep | None = None, keep_empty: bool = False) -> bool:
        """Write (or run) on top of state; commit the upper dir as a new layer unless it stayed
        empty and keep_empty is off. Returns whether a layer was added."""
        snaps = self.store.snapshots
        tmp = await asyncio.to_thread(snaps.prepare)
        try:
            async with self.rootfs(state, upper=tmp / "fs") as root:
                await asyncio.to_thread(write, root)
                if run is not None:
                    code = await self.runner.run(root, run, self._output)
                    if code != 0:
                        raise BuildError(f"The command '{' '.join(run.args)}' returned a "
                                         f"non-zero code: {code}")
            if not keep_empty and not any((tmp / "fs").iterdir()):
                snaps.discard(tmp)
                return False
            layer = await asyncio.to_thread(write_layer, tmp / "fs", self.store.content)
            chain = BuildImage(diff_ids=[*state.diff_ids, layer.diff_id]).chain_ids()[-1]
            self.pin([layer.digest, chain])
            await asyncio.to_thread(snaps.sync, tmp)
            snaps.commit(tmp, chain)
        except BaseException:
            snaps.discard(tmp)
            raise
        state.diff_ids.append(layer.diff_id)
        state.layers.append((layer.digest, layer.size))
        return True

    def _output(self, data: bytes) -> None:
        self.say(data.decode("utf-8", "replace"))


def _mkdir(root: Path, path: str) -> None:
    """WORKDIR's directory, made beneath the rootfs (symlinks resolve inside it)."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        Copier(fd, None, None, keep_owner=False).mkdirs(path)
    finally:
        os.close(fd)


async def build(store: ImageStore, runner: Runner, cache: BuildCache, work_root: Path,
                context_tar: Path | context.Spooled, opts: BuildOptions, emit: Emit) -> Image:
    """Run one build in a private work dir that is gone afterwards, whatever happens."""
    work = work_root / f"build-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True)
    try:
        with store.pin([]) as pin:
            return await Build(store, runner, cache, work, opts, emit).run(context_tar, pin)
    except (DockerfileError, context.ContextError, WordError, CopyError) as e:
        raise BuildError(str(e)) from None
    finally:
        await asyncio.to_thread(cache.save)  # every step this build recorded, in one write
        await asyncio.to_thread(shutil.rmtree, work, True)
