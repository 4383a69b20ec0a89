"""Table tests for image reference parsing."""

import pytest

from runtime.images.reference import familiar, normalize, parse

D = "sha256:" + "a" * 64

VALID = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("user/repo", "docker.io/user/repo:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/user/repo:v1", "docker.io/user/repo:v1"),
    ("localhost/foo", "localhost/foo:latest"),
    ("localhost:5000/foo/bar:tag", "localhost:5000/foo/bar:tag"),
    ("127.0.0.1:5000/e2e/busybox:1.0", "127.0.0.1:5000/e2e/busybox:1.0"),
    ("Registry.Example.COM/foo", "Registry.Example.COM/foo:latest"),
    ("[::1]:5000/foo", "[::1]:5000/foo:latest"),
    ("Foo/bar", "Foo/bar:latest"),  # an uppercase first component is a registry host
    ("quay.io/a/b/c/d", "quay.io/a/b/c/d:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1.0@{D}", f"docker.io/library/busybox:1.0@{D}"),
    (f"host:5000/x@{D}", f"host:5000/x@{D}"),
    ("a_b.c-d__e---f", "docker.io/library/a_b.c-d__e---f:latest"),
    ("foo:A_b.1-2", "docker.io/library/foo:A_b.1-2"),
    ("foo:" + "t" * 128, "docker.io/library/foo:" + "t" * 128),
]

INVALID = [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("docker.io/Library/busybox", "lowercase"),
    ("foo/Bar", "lowercase"),
    ("busybox:", "invalid tag"),
    ("busybox:-x", "invalid tag"),
    ("busybox:" + "t" * 129, "invalid tag"),
    ("busybox@sha256:abc", "bad format"),
    ("busybox@sha256:" + "A" * 64, "64 lowercase"),
    ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
    ("a" * 64, "64-byte hexadecimal"),
    ("foo//bar", "invalid repository path"),
    ("foo/bar/", "invalid repository path"),
    ("-foo", "invalid repository path"),
    ("foo_", "invalid repository path"),
    ("foo..bar", "invalid repository path"),
    ("-host.io/foo", "invalid registry host"),
    ("host.io:port/foo", "invalid registry host"),
    ("a/" + "b" * 254, "longer than"),
    (" busybox", "whitespace"),
    ("busy box", "whitespace"),
    (":tag", "empty repository"),
    ("@" + D, "empty repository"),
]


@pytest.mark.parametrize(("ref", "want"), VALID)
def test_valid(ref: str, want: str) -> None:
    assert str(normalize(ref)) == want


@pytest.mark.parametrize(("ref", "reason"), INVALID)
def test_invalid(ref: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize(ref)


def test_parts_and_forms() -> None:
    r = normalize(f"127.0.0.1:5000/e2e/busybox:1.0@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("127.0.0.1:5000", "e2e/busybox", "1.0", D)
    assert r.object == D
    assert r.tagged() == "127.0.0.1:5000/e2e/busybox:1.0"
    assert r.with_digest(D) == f"127.0.0.1:5000/e2e/busybox@{D}"
    assert familiar(normalize("busybox")) == "busybox:latest"
    assert familiar(normalize("user/x:1")) == "user/x:1"
    assert parse("busybox").tag is None


@pytest.mark.parametrize(("user", "want"), [
    ("", (None, "")), ("0", (0, "")), ("1000:1000", (1000, "")), ("berth", (None, "berth")),
    ("berth:wheel", (None, "berth")), ("65534:", (65534, "")),
])
def test_config_user_split(user: str, want: tuple) -> None:
    from runtime.images.records import ImageConfig

    assert ImageConfig.from_oci({"config": {"User": user}}).uid_username() == want
