"""The one rule for a container process's uid, gid and group list, shared by every front end.

runc and crun put process.user.additionalGids into setgroups(2) as they are, and containerd and
CRI-O always put the primary gid first in that list, so `id` inside shows the primary group.
Berth does the same: groups = the primary gid, every group of the image's /etc/group that lists
the user by name, then the caller's extra groups (CRI SupplementalGroups, Docker --group-add),
without duplicates. A numeric uid missing from the image's /etc/passwd gets primary gid 0 (or
the gid given with it) and no memberships. The kernel sorts the list; `id` prints it sorted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runtime.spec import group_id, read_group_file, resolve_user


@dataclass(frozen=True)
class ProcessUser:
    """process.user as the OCI spec wants it: additional_gids holds the primary gid too."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)

    def as_tuple(self) -> tuple[int, int, list[int]]:
        return self.uid, self.gid, list(self.additional_gids)


def user_string(user: str = "", uid: int | None = None, username: str = "",
                gid: int | None = None) -> str:
    """`user[:group]` from separate fields (CRI's run_as_*): a name wins over a uid, as in
    containerd's generateUserString; "" means "the image decides"."""
    who = username or ("" if uid is None else str(uid)) or user
    if gid is not None:
        if not who:
            raise ValueError("a group needs a user (uid or name) to go with it")
        who = f"{who.partition(':')[0]}:{gid}"
    return who


def process_user(rootfs: str, user: str, extra_groups: Iterable[int | str] = (),
                 image_groups: bool = True) -> ProcessUser:
    """Resolve `user` ("name", "uid", "name:group", "uid:gid"; "" is root) in the ROOTFS.

    `extra_groups` are gids or group names (names resolve in the image's /etc/group; an unknown
    name raises UserNotFound and a bad gid ValueError, as `docker run --group-add` refuses
    them). With `image_groups` False (Kubernetes' Strict supplemental groups policy) the
    image's /etc/group memberships are skipped.
    """
    uid, gid, member_of = resolve_user(rootfs, user or "0")
    groups = [gid]
    if image_groups:
        groups += member_of[1:]  # resolve_user lists the primary gid first
    named = [g for g in extra_groups if isinstance(g, str) and not g.isdigit()]
    lines = read_group_file(rootfs) if named else []
    for g in extra_groups:
        num = int(g) if isinstance(g, int) or g.isdigit() else group_id(lines, g)
        if num < 0 or num > 0xFFFFFFFE:
            raise ValueError(f"group {g} is not a valid gid (0..4294967294)")
        groups.append(num)
    return ProcessUser(uid, gid, list(dict.fromkeys(groups)))
