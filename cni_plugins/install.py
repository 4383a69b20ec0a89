"""Write tiny launchers (absolute interpreter shebang, -S, checkout on sys.path) for each plugin."""

from __future__ import annotations

import compileall
import os
import sys

PLUGINS = {
    "bridge": "cni_plugins.bridge",
    "host-local": "cni_plugins.host_local",
    "loopback": "cni_plugins.loopback",
    "portmap": "cni_plugins.portmap",
}


def launcher(module: str, interpreter: str, root: str) -> str:
    """-S skips site (~3 ms), -E keeps PYTHON* env (e.g. DONTWRITEBYTECODE) out of plugins."""
    return (
        f"#!{interpreter} -SE\n"
        "import sys\n"
        f"sys.path.insert(0, {root!r})\n"
        f"from {module} import main\n"
        "sys.exit(main())\n"
    )


def install(dest: str, interpreter: str = sys.executable) -> list[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # bytecode up front: compiling the plugin modules on every exec would cost ~10 ms
    compileall.compile_dir(os.path.join(root, "cni_plugins"), quiet=1)
    os.makedirs(dest, exist_ok=True)
    written = []
    for name, module in PLUGINS.items():
        path = os.path.join(dest, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(launcher(module, interpreter, root))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cni_plugins.install DIR")
    for p in install(sys.argv[1]):
        print(p)
