"""The security context in OCI form: capabilities, seccomp, masked paths, no_new_privs."""

from __future__ import annotations

import json
import os
from typing import Any

from cri.errors import InvalidArgument, NotFound
from proto import api_pb2
from runtime import caps as capsmod
from runtime import seccomp
from runtime.spec import DEFAULT_MASKED, DEFAULT_READONLY

PROFILE = api_pb2.SecurityProfile.ProfileType


def capabilities(sec: api_pb2.LinuxContainerSecurityContext) -> list[str]:
    """Start from the defaults (or all when privileged); drop, then add, ALL included."""
    try:
        return capsmod.container_set(sec.privileged, sec.capabilities.drop_capabilities,
                                     sec.capabilities.add_capabilities)
    except capsmod.UnknownCapability as exc:
        raise InvalidArgument(f"unknown capability {exc.name}") from None


def seccomp_profile(sec: api_pb2.LinuxContainerSecurityContext,
                    caps: list[str] | None = None) -> dict[str, Any] | None:
    """Resolve the structured field first, then the legacy string, as kubelet sends either.

    RuntimeDefault opens the syscalls Docker's profile gates on a capability the container holds
    (`caps`, its bounding set: sethostname with CAP_SYS_ADMIN, ptrace's kin with CAP_SYS_PTRACE).
    """
    if sec.privileged:
        return None
    if sec.HasField("seccomp"):
        kind, ref = sec.seccomp.profile_type, sec.seccomp.localhost_ref
    else:
        legacy = sec.seccomp_profile_path
        if legacy in ("", "unconfined"):
            return None
        if legacy in ("runtime/default", "docker/default"):
            kind, ref = PROFILE.RuntimeDefault, ""
        elif legacy.startswith("localhost/"):
            kind, ref = PROFILE.Localhost, legacy.removeprefix("localhost")
        else:
            raise InvalidArgument(f"unknown seccomp profile '{legacy}'")
    if kind == PROFILE.Unconfined:
        return None
    if kind == PROFILE.RuntimeDefault:
        return seccomp.default_profile(capabilities(sec) if caps is None else caps)
    if not ref or not os.path.isabs(ref):
        raise InvalidArgument(f"seccomp localhost profile path '{ref}' must be absolute")
    try:
        with open(ref) as fh:
            profile = json.load(fh)
    except FileNotFoundError:
        raise NotFound(f"seccomp profile {ref} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"seccomp profile {ref} is not valid JSON: {exc}") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise InvalidArgument(f"seccomp profile {ref} has no defaultAction")
    return profile


def check_apparmor(sec: api_pb2.LinuxContainerSecurityContext) -> None:
    """No AppArmor on these hosts: defaults are fine, a named profile cannot be honoured."""
    named = (sec.HasField("apparmor") and sec.apparmor.profile_type == PROFILE.Localhost) or \
        sec.apparmor_profile.startswith("localhost/")
    if named:
        raise InvalidArgument("apparmor is not enabled on this node; "
                              "a localhost apparmor profile cannot be applied")


def apply_security(spec: dict[str, Any], sec: api_pb2.LinuxContainerSecurityContext,
                   cfg: api_pb2.ContainerConfig) -> None:
    """Fill process capabilities/seccomp/no_new_privs and linux masked/readonly paths."""
    check_apparmor(sec)
    caps = capabilities(sec)
    proc = spec["process"]
    proc["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps,
                            "inheritable": [], "ambient": []}
    proc["noNewPrivileges"] = sec.no_new_privs
    linux = spec["linux"]
    profile = seccomp_profile(sec, caps)
    if profile is not None:
        linux["seccomp"] = profile
    if sec.privileged:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        linux["maskedPaths"] = list(sec.masked_paths) or list(DEFAULT_MASKED)
        linux["readonlyPaths"] = list(sec.readonly_paths) or list(DEFAULT_READONLY)
