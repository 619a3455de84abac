"""A qemu micro-VM running Debian's own kernel, for tests that need ipip, ESP or PPP.

This host's kernel lacks ``ipip``, ``esp4`` and ``ppp`` (see ``../shared/notes/kernel-vm.md``).
Debian's stock kernel has them as modules, so tests boot it under qemu (TCG: nested KVM hangs
at boot on these machines) with the host's root file system shared read-only over 9p:

- the kernel package is downloaded once (``apt-get download``), unpacked (``dpkg-deb -x``) and
  indexed (``depmod -b``) under ``.cache/vm/`` in the repository;
- a busybox initramfs (``init`` below) loads the virtio/9p modules, mounts the host root
  read-only, tmpfs on ``/tmp`` ``/run`` ``/var``, proc/sys/dev/devpts, and the run's writable
  share at the *same path* it has on the host, then chroots into the host root and runs the
  script, writes its exit status and output to the share, and powers off;
- ``/proc/sys/kernel/modprobe`` points at a wrapper that chroots and runs ``modprobe -d`` on
  the unpacked modules: the kernel's own module autoload runs in the initramfs root, and
  without it ESP with ``rfc4106(gcm(aes))`` fails with ENOENT although the modules are loaded.

The host's Python and the repository's venv are visible in the guest through the shared root,
so a script can run ``"$CE_REPO/.venv/bin/python" -m ...`` (``$CE_REPO`` is the checkout).

Usage::

    result = run_in_vm("ip link add t0 type ipip remote 192.0.2.1 && echo ok", timeout=60)
    assert result.returncode == 0, result.console
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "REPO",
    "VmResult",
    "VmUnavailableError",
    "kernel_tree",
    "require_vm",
    "run_in_vm",
    "vm_unavailable_reason",
]

REPO: Final = Path(__file__).resolve().parents[2]
CACHE: Final = REPO / ".cache" / "vm"
KERNEL_META: Final = "linux-image-amd64"
QEMU: Final = "qemu-system-x86_64"
# Loaded by the initramfs, with their dependencies, before the host root can be mounted.
BOOT_MODULES: Final = ("virtio_pci", "9pnet_virtio", "9p")
# Loaded before the script runs, so that the first test does not pay for (or race) autoload.
PRELOAD_MODULES: Final = ("veth", "ipip", "esp4", "xfrm_user", "aesni_intel", "gcm", "ghash_generic")
_VERSIONED = re.compile(r"Depends:\s*(linux-image-(\d[\w.+-]*))")


class VmUnavailableError(RuntimeError):
    """The micro-VM cannot run here (no qemu, no apt, not root)."""


@dataclass(frozen=True, slots=True)
class VmResult:
    """What a script run in the VM left behind."""

    returncode: int  # the script's exit status; -1 if it never finished (timeout, crash)
    stdout: str
    stderr: str
    console: str  # the serial console: kernel messages and the init script's own output
    seconds: float

    def explain(self) -> str:
        """Everything, for an assertion message."""
        return (
            f"returncode={self.returncode} after {self.seconds:.1f}s\n--- stdout\n{self.stdout}"
            f"\n--- stderr\n{self.stderr}\n--- console (tail)\n{self.console[-4000:]}"
        )


@dataclass(frozen=True, slots=True)
class KernelTree:
    """An unpacked Debian kernel package: ``root/boot/vmlinuz-<version>``, ``root/lib/modules/<version>``."""

    root: Path
    version: str

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"


def _check(argv: Sequence[str], cwd: Path | None = None, timeout: float = 300.0) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise VmUnavailableError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise preparation between parallel test processes (pytest-xdist)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def vm_unavailable_reason() -> str | None:
    """Why the VM cannot run here, or None."""
    if os.geteuid() != 0:
        return "the micro-VM harness runs as root (9p passthrough of /)"
    for tool in (QEMU, "depmod", "modprobe", "busybox", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None and not Path("/sbin", tool).exists():
            return f"{tool} is not installed (./run test installs it)"
    return None


def require_vm() -> None:
    """Skip the calling test if the VM cannot run; under CI=true, fail instead."""
    reason = vm_unavailable_reason()
    if reason is None:
        return
    import pytest  # noqa: PLC0415 - only here: `ce-autoconf demo` uses this module without pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"micro-VM unavailable under CI: {reason}")
    pytest.skip(f"micro-VM unavailable: {reason}")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise VmUnavailableError(f"{name} is not installed")
    return found


def kernel_tree() -> KernelTree:
    """The unpacked, depmod-indexed Debian kernel, downloaded once into ``.cache/vm``."""
    with _locked("kernel"):
        deps = _check(["apt-cache", "depends", KERNEL_META])
        match = _VERSIONED.search(deps)
        if match is None:
            raise VmUnavailableError(f"apt-cache depends {KERNEL_META} names no versioned kernel: {deps!r}")
        package, version = match.group(1), match.group(2)
        root = CACHE / package
        stamp = root / ".ready"
        if stamp.exists():
            return KernelTree(root, version)
        debs = CACHE / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            _check(["apt-get", "download", "-q", package], cwd=debs)
        (deb,) = sorted(debs.glob(f"{package}_*.deb"))[-1:]
        shutil.rmtree(root, ignore_errors=True)
        _check(["dpkg-deb", "-x", str(deb), str(root)])
        _check([_tool("depmod"), "-b", str(root), version])
        stamp.write_text(version)
        return KernelTree(root, version)


def _show_depends(tree: KernelTree, modules: Sequence[str]) -> list[Path]:
    """The .ko files to insmod, in order, for ``modules`` and their dependencies."""
    ordered: list[Path] = []
    for module in modules:
        out = _check([_tool("modprobe"), "-d", str(tree.root), "-S", tree.version, "--show-depends", module])
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                path = Path(words[1])
                if path not in ordered:
                    ordered.append(path)
    return ordered


_INIT = r"""#!/bin/sh
# Micro-VM init (tests/vm/microvm.py): mount the host root, run the work share's script, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "init: insmod $m failed"; done
WORK=$(sed -n 's/.*cework=\([^ ]*\).*/\1/p' /proc/cmdline)
R=/newroot
P9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $P9,ro,cache=loose hostroot $R || { echo "init: no hostroot"; poweroff -f; }
for d in tmp run var; do mount -t tmpfs -o mode=1777 tmpfs $R/$d; done
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=666,mode=620 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mkdir -p $R/var/tmp $R/var/run $R/var/lock $R/run/netns
chmod 1777 $R/var/tmp
# The checkout has its own share, mounted at its own path after the tmpfs mounts: a
# clone under /tmp, /run or /var (CI's may be) would otherwise be hidden by them.
mkdir -p "$R@REPO@" 2>/dev/null
mount -t 9p -o $P9,ro,cache=loose repo "$R@REPO@" || { echo "init: no repo share"; poweroff -f; }
mount -t 9p -o $P9 work "$R$WORK" || { echo "init: no work share"; poweroff -f; }
echo /modprobe-wrapper > /proc/sys/kernel/modprobe
for m in $(cat /preload); do /modprobe-wrapper -q "$m" || echo "init: modprobe $m failed"; done
echo "init: running $WORK/script.sh"
chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 CE_VM=1 CE_REPO=@REPO@ CE_VM_KERNEL_TREE=@KDIR@ \
    /bin/sh -c "cd '$WORK' && /bin/sh ./script.sh >stdout 2>stderr; echo \$? >rc.tmp; mv rc.tmp rc"
sync
echo "init: done"
poweroff -f
"""

_MODPROBE_WRAPPER = r"""#!/bin/sh
# The kernel's request_module runs this in the initramfs root: resolve modules in the chroot.
exec /bin/chroot /newroot /sbin/modprobe -d @KDIR@ "$@"
"""


def _busybox_files() -> list[tuple[Path, Path]]:
    """(host file, path in the initramfs) for busybox and, if it is dynamic, its libraries."""
    busybox = Path(os.path.realpath(_tool("busybox")))
    files = [(busybox, Path("bin/busybox"))]
    ldd = subprocess.run(["ldd", str(busybox)], capture_output=True, text=True, check=False)
    for line in ldd.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        for word in line.split():
            if word.startswith("/") and Path(word).exists():
                files.append((Path(os.path.realpath(word)), Path(word.lstrip("/"))))
    return files


def _write_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio "newc" archive of (name, mode, data); symlinks carry their target as data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _initramfs(tree: KernelTree) -> Path:
    """The busybox initramfs for ``tree``, built once (keyed by its inputs)."""
    modules = _show_depends(tree, BOOT_MODULES)
    bb = _busybox_files()
    kdir = str(tree.root)
    init = _INIT.replace("@KDIR@", kdir).replace("@REPO@", str(REPO))
    wrapper = _MODPROBE_WRAPPER.replace("@KDIR@", kdir)
    key = hashlib.sha256(
        "\0".join([init, wrapper, *map(str, modules), *PRELOAD_MODULES, *(str(h) for h, _ in bb)]).encode()
    ).hexdigest()[:16]
    target = CACHE / f"initrd-{tree.version}-{key}.gz"
    with _locked("initrd"):
        if target.exists():
            return target
        dirs = {"bin", "dev", "proc", "sys", "newroot", "modules"}
        entries: list[tuple[str, int, bytes]] = []
        for host, inside in bb:
            for parent in reversed(inside.parents[:-1]):
                dirs.add(str(parent))
            entries.append((str(inside), 0o100755, host.read_bytes()))
        applets = _check([str(bb[0][0]), "--list"]).split()
        entries += [(f"bin/{a}", 0o120777, b"busybox") for a in applets if a != "busybox"]
        order = []
        for ko in modules:
            entries.append((f"modules/{ko.name}", 0o100644, ko.read_bytes()))
            order.append(ko.name)
        entries += [
            ("init", 0o100755, init.encode()),
            ("modprobe-wrapper", 0o100755, wrapper.encode()),
            ("modules.order", 0o100644, "\n".join(order).encode() + b"\n"),
            ("preload", 0o100644, "\n".join(PRELOAD_MODULES).encode() + b"\n"),
        ]
        archive = _write_newc([(d, 0o040755, b"") for d in sorted(dirs)] + entries)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(archive, compresslevel=1))
        tmp.replace(target)
        for stale in CACHE.glob("initrd-*.gz"):
            if stale != target:
                stale.unlink(missing_ok=True)  # built from other inputs; never used again
        return target


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_in_vm(
    script: str,
    timeout: float = 120.0,
    *,
    memory_mb: int = 1024,
    cpus: int = 2,
    files: dict[str, bytes] | None = None,
) -> VmResult:
    """Boot the micro-VM, run ``script`` (POSIX sh) as root in the host's root file system, power off.

    The script runs with its work share as the current directory (writable, also visible to the
    host: ``files`` are placed there first). qemu is killed after ``timeout`` seconds; the result
    then has returncode -1 and whatever output the script had written.
    """
    reason = vm_unavailable_reason()
    if reason is not None:
        raise VmUnavailableError(reason)
    tree = kernel_tree()
    initrd = _initramfs(tree)
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # Resolved: .cache may be a symlink (a worktree sharing the main checkout's cache), and the
    # guest mounts the share at this path, which must exist in the host root as it is.
    work = Path(tempfile.mkdtemp(prefix="run-", dir=runs)).resolve()
    started = time.monotonic()
    try:
        (work / "script.sh").write_text(script)
        for name, data in (files or {}).items():
            (work / name).write_bytes(data)
        console_path = work / "console.log"
        share = "security_model=passthrough,multidevs=remap"
        argv = [
            _tool(QEMU),
            "-machine", "q35", "-accel", "tcg", "-cpu", "max",
            "-m", str(memory_mb), "-smp", str(cpus),
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(tree.vmlinuz), "-initrd", str(initrd),
            "-virtfs", f"local,path=/,mount_tag=hostroot,{share},readonly=on",
            "-virtfs", f"local,path={REPO},mount_tag=repo,{share},readonly=on",
            "-virtfs", f"local,path={work},mount_tag=work,{share}",
            "-append", f"console=ttyS0 quiet panic=-1 rdinit=/init cework={work}",
        ]  # fmt: skip
        with console_path.open("wb") as console:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                _kill_group(proc)

        def read(name: str) -> str:
            try:
                return (work / name).read_text(errors="replace")
            except FileNotFoundError:
                return ""

        rc_text = read("rc").strip()
        return VmResult(
            returncode=int(rc_text) if rc_text.lstrip("-").isdigit() else -1,
            stdout=read("stdout"),
            stderr=read("stderr"),
            console=read("console.log"),
            seconds=time.monotonic() - started,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
