"""DELETE /images/{name}: Docker's rules for untagging and deleting (daemon/images/image_delete.go).

A name untags; the image goes with its last reference unless a container uses it (then it is
left dangling, as dockerd leaves it). An ID deletes the image with all its references, and is
refused with 409 while other repositories reference it or a stopped container uses it (both
yield to force) or a running container uses it (never forced). Berth differs in one place: a
forced delete of an image a stopped container uses untags it but keeps its layers, since
Berth's container rootfs is an overlay on the image's snapshots, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import FailedPrecondition
from runtime.images import reference
from runtime.images.records import Image
from runtime.images.store import ImageStore

Users = list[tuple[str, bool]]  # (container id, running) of each container using the image


@dataclass
class Deletion:
    """The response rows and the events to publish once the store is updated."""

    rows: list[dict[str, str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)


def delete(images: ImageStore, img: Image, given: str, users: Users, force: bool) -> Deletion:
    """Apply the rules; blocking (the index is saved on each change): run it in a thread."""
    out = Deletion()
    if not _is_id_prefix(img.id, given):
        ref = _stored(given)
        if not force and _single(img) and users:
            raise FailedPrecondition(
                f'conflict: unable to remove repository reference "{given[:300]}" (must force) '
                f"- container {users[0][0][:12]} is using its referenced image {img.id[7:19]}")
        _untag(images, img, ref, out)
        name = ref.split("@", 1)[0] if "@" in ref else _name(ref)
        if "@" not in ref and not any(_name(t) == name for t in img.repo_tags):
            for d in [d for d in img.repo_digests if d.split("@", 1)[0] == name]:
                _untag(images, img, d, out)  # digests of a repository whose last tag went
        if img.repo_tags or img.repo_digests or users:
            return out  # still referenced, or dangling while a container uses it
    else:
        if _single(img):
            _refuse(img, users, force, multiple=False)
            for r in [*img.repo_tags, *img.repo_digests]:
                _untag(images, img, r, out)
        _refuse(img, users, force, multiple=not force)
        for r in [*img.repo_tags, *img.repo_digests]:
            _untag(images, img, r, out)
        if users:  # forced past stopped containers: their rootfs still needs the layers
            return out
    images.remove(img.id)
    out.rows.append({"Deleted": img.id})
    out.events.append((img.id, "delete"))
    return out


def _refuse(img: Image, users: Users, force: bool, multiple: bool) -> None:
    """dockerd's conflict checks in its order: running user, other references, stopped user."""
    running = [cid for cid, up in users if up]
    if running:
        _conflict(img, "cannot be forced", f"image is being used by running container "
                                            f"{running[0][:12]}")
    if multiple and (img.repo_tags or img.repo_digests):
        _conflict(img, "must be forced", "image is referenced in multiple repositories")
    if users and not force:
        _conflict(img, "must be forced", f"image is being used by stopped container "
                                         f"{users[0][0][:12]}")


def _conflict(img: Image, how: str, why: str) -> None:
    raise FailedPrecondition(f"conflict: unable to delete {img.id[7:19]} ({how}) - {why}")


def _untag(images: ImageStore, img: Image, ref: str, out: Deletion) -> None:
    if images.untag(img.id, ref):
        out.rows.append({"Untagged": _familiar(ref)})
        out.events.append((img.id, "untag"))


def _single(img: Image) -> bool:
    """dockerd's isSingleReference: one tag, plus digests of that tag's repository only."""
    refs = [*img.repo_tags, *img.repo_digests]
    if len(refs) <= 1:
        return len(refs) == 1
    if len(img.repo_tags) > 1:
        return False
    digest_names = {d.split("@", 1)[0] for d in img.repo_digests}
    one = _name(img.repo_tags[0]) if img.repo_tags else img.repo_digests[0].split("@", 1)[0]
    return digest_names == {one}


def _is_id_prefix(image_id: str, given: str) -> bool:
    return image_id.startswith(given) or image_id.removeprefix("sha256:").startswith(given)


def _stored(given: str) -> str:
    """The form the store records: `name:tag` or `name@digest`."""
    try:
        r = reference.normalize(given)
    except ValueError:
        return given
    return r.tagged() or r.with_digest(r.digest or "")


def _name(ref: str) -> str:
    try:
        return reference.parse(ref).name
    except ValueError:
        return ref


def _familiar(ref: str) -> str:
    try:
        return reference.familiar(reference.parse(ref))
    except ValueError:
        return ref
