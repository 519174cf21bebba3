"""The testbed host: what it needs (``check``), installing it (``setup``) and removing leftovers (``clean``).

Requirements (``check_host``): Linux, root (namespaces, ``tc`` and setuid helpers), the commands
``ip``, ``tc``, ``nsenter``, ``runuser``, ``iperf3``, Mahimahi's ``mm-delay`` and ``mm-loss`` installed
setuid root, the unprivileged user ``TESTBED_USER`` (Mahimahi refuses to run as root), ``/dev/net/tun``,
the ``tbf`` qdisc (probed inside a throw-away network namespace, so the host is not touched) and the
congestion controls the run asks for.

Set-up (``setup_host``, idempotent: every step first checks and skips what is present): the Debian
packages Mahimahi needs to build and the testbed needs to run (``APT_PACKAGES``), the snakeoil TLS
certificate Mahimahi's ``configure`` insists on, Mahimahi built from a source tree (default: the
snapshot in ``../shared/third_party/mahimahi``) in a temporary copy and installed with ``make install``
(which makes ``mm-*`` setuid root), the system user, ``net.ipv4.ip_forward = 1``, and bbr, cubic and
reno in ``net.ipv4.tcp_allowed_congestion_control`` (a namespace may only make a listed control its
default; the list only restricts unprivileged choices, it changes no socket).

Leftovers (``find_leftovers`` / ``clean_leftovers``). Everything a run starts is recognisable:

* Mahimahi shells and their holder processes run as ``TESTBED_USER``, a user that exists only for the
  testbed: any process of that user is a leftover when no run is active;
* ``runuser -u itptb ...`` (root) started them;
* processes the run starts as root (receiver, sender, ``tc`` controllers, ``iperf3``) carry the run's
  temporary directory (``/tmp/itptb-run-*``) in their command line or as their working directory;
* temporary directories are named ``TEMP_PREFIX*`` in the system temp folder;
* network namespaces, ``tun`` devices (``delay-*``, ``loss-*``) and the ``tbf`` qdiscs inside the
  namespaces belong to the shell processes and disappear with them; a named namespace (``ip netns``)
  called ``itptb-*`` is removed too (the testbed creates none, but a user's experiment might).

``clean_leftovers`` sends SIGTERM to each leftover process group, waits up to 2 s, then SIGKILL, then
removes the directories. It never touches a process that is not matched by one of these rules.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "APT_PACKAGES",
    "MAHIMAHI_BINARIES",
    "TEMP_PREFIX",
    "TESTBED_CONGESTION_CONTROLS",
    "TESTBED_USER",
    "LeftoverProcess",
    "Leftovers",
    "Requirement",
    "allowed_congestion_controls",
    "available_congestion_controls",
    "check_host",
    "clean_leftovers",
    "default_mahimahi_src",
    "find_leftovers",
    "setup_host",
]

logger = logging.getLogger(__name__)

TESTBED_USER: str = "itptb"
"""The unprivileged system user that runs the Mahimahi shells (Mahimahi refuses to run as root)."""
TEMP_PREFIX: str = "itptb-"
"""Prefix of every temporary directory, holder process name and named namespace of the testbed."""
MAHIMAHI_BINARIES: tuple[str, ...] = ("mm-delay", "mm-loss")
APT_PACKAGES: tuple[str, ...] = (
    # Build dependencies of Mahimahi (its debian/control and README).
    "autotools-dev",
    "dh-autoreconf",
    "iptables",
    "protobuf-compiler",
    "libprotobuf-dev",
    "pkg-config",
    "libssl-dev",
    "dnsmasq-base",
    "ssl-cert",
    "libxcb-present-dev",
    "libcairo2-dev",
    "libpango1.0-dev",
    "apache2-dev",
    "apache2-bin",
    "make",
    "g++",
    # Run time of the testbed.
    "iproute2",
    "util-linux",
    "iperf3",
)
_COMMANDS: tuple[str, ...] = ("ip", "tc", "nsenter", "runuser", "unshare", "iperf3")
_SNAKEOIL = Path("/etc/ssl/certs/ssl-cert-snakeoil.pem")


@dataclass(frozen=True)
class Requirement:
    """One thing the testbed needs: ``name``, whether it is ``ok``, ``detail`` (found / what is wrong)."""

    name: str
    ok: bool
    detail: str


def default_mahimahi_src() -> Path | None:
    """The Mahimahi snapshot beside the repository (``<repo>/../shared/third_party/mahimahi``), if present."""
    repo = Path(__file__).resolve().parents[2]
    candidate = repo.parent / "shared" / "third_party" / "mahimahi"
    return candidate if (candidate / "configure.ac").is_file() else None


def _is_setuid_root(path: str) -> bool:
    st = os.stat(path)
    return bool(st.st_mode & stat.S_ISUID) and st.st_uid == 0


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _tbf_available() -> tuple[bool, str]:
    """Install a tbf on the loopback of a throw-away namespace (nothing on the host changes)."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return False, "needs unshare and tc"
    proc = subprocess.run(
        [
            "unshare",
            "--net",
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "tbf",
            "rate",
            "10mbit",
            "burst",
            "10000",
            "limit",
            "30000",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if proc.returncode == 0:
        return True, "tbf qdisc works (probed in a throw-away namespace)"
    return False, f"tbf qdisc failed: {proc.stderr.strip() or proc.returncode}"


def available_congestion_controls() -> tuple[str, ...]:
    """Congestion controls the kernel offers (``tcp_available_congestion_control``)."""
    try:
        return tuple(Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split())
    except OSError:
        return ()


_ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
TESTBED_CONGESTION_CONTROLS: tuple[str, ...] = ("bbr", "cubic", "reno")


def allowed_congestion_controls() -> tuple[str, ...]:
    """Controls a network namespace other than the host's may make its default.

    Linux lets a child namespace set ``net.ipv4.tcp_congestion_control`` only to a control listed in
    the host's ``tcp_allowed_congestion_control`` (``EPERM`` otherwise), so a control the testbed sets
    inside its paths must be listed there; ``setup_host`` adds the testbed's.
    """
    try:
        return tuple(_ALLOWED_CC.read_text().split())
    except OSError:
        return ()


def check_host(congestion_controls: Sequence[str] = ()) -> list[Requirement]:
    """Every requirement of a testbed run, in the order a user should fix them (module docstring).

    Args:
        congestion_controls: controls the run will use (each must be available).
    """
    out: list[Requirement] = []
    is_linux = os.uname().sysname == "Linux"
    out.append(Requirement("linux", is_linux, os.uname().sysname))
    root = os.geteuid() == 0
    out.append(Requirement("root", root, "running as root" if root else "run as root (sudo)"))
    for cmd in _COMMANDS:
        path = shutil.which(cmd)
        out.append(Requirement(cmd, path is not None, path or "not found (itp testbed setup installs it)"))
    for cmd in MAHIMAHI_BINARIES:
        path = shutil.which(cmd)
        if path is None:
            out.append(Requirement(cmd, False, "not found: itp testbed setup builds Mahimahi"))
        elif not _is_setuid_root(path):
            out.append(Requirement(cmd, False, f"{path} is not setuid root (reinstall with make install)"))
        else:
            out.append(Requirement(cmd, True, f"{path} (setuid root)"))
    has_user = _user_exists(TESTBED_USER)
    out.append(
        Requirement(
            f"user {TESTBED_USER}",
            has_user,
            "exists" if has_user else "missing: itp testbed setup creates it",
        )
    )
    tun = Path("/dev/net/tun").exists()
    out.append(Requirement("/dev/net/tun", tun, "present" if tun else "missing (load the tun module)"))
    if root and is_linux:
        ok, detail = _tbf_available()
        out.append(Requirement("tbf qdisc", ok, detail))
    available = available_congestion_controls()
    allowed = allowed_congestion_controls()
    for cc in congestion_controls:
        if cc not in available:
            out.append(
                Requirement(
                    f"congestion control {cc}",
                    False,
                    f"not in the kernel (available: {' '.join(available) or 'unknown'})",
                )
            )
        elif cc not in allowed:
            out.append(
                Requirement(
                    f"congestion control {cc}",
                    False,
                    f"available but not allowed inside namespaces (tcp_allowed_congestion_control = "
                    f"{' '.join(allowed)}); itp testbed setup allows it",
                )
            )
        else:
            out.append(Requirement(f"congestion control {cc}", True, "available and allowed in namespaces"))
    return out


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 1800.0) -> None:
    logger.info("running %s", " ".join(cmd), extra={"event": "setup_command"})
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n" + "\n".join(tail))


def _missing_packages(packages: Iterable[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return []
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def setup_host(
    *, mahimahi_src: Path | None = None, install_packages: bool = True, rebuild_mahimahi: bool = False
) -> list[str]:
    """Install what the testbed needs, skipping what is present (module docstring). Needs root.

    Args:
        mahimahi_src: a Mahimahi source tree (default ``default_mahimahi_src()``).
        install_packages: install missing Debian packages with apt-get (False: only report them).
        rebuild_mahimahi: build and install Mahimahi even if ``mm-delay`` is installed.

    Returns:
        One line per step saying what was done or skipped.

    Raises:
        PermissionError: not root.
        FileNotFoundError: Mahimahi must be built and no source tree exists (says where it looked).
        RuntimeError: a command failed (with the tail of its output).
    """
    if os.geteuid() != 0:
        raise PermissionError("itp testbed setup must run as root (it installs packages and a user)")
    done: list[str] = []
    missing = _missing_packages(APT_PACKAGES)
    if not missing:
        done.append("packages: all present")
    elif not install_packages:
        done.append(f"packages: missing {' '.join(missing)} (not installed: --no-apt)")
    else:
        env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
        _run([*env_cmd, "apt-get", "update"])
        _run([*env_cmd, "apt-get", "install", "-y", "--no-install-recommends", *missing])
        done.append(f"packages: installed {' '.join(missing)}")
    have_mm = all(
        shutil.which(b) is not None and _is_setuid_root(str(shutil.which(b))) for b in MAHIMAHI_BINARIES
    )
    if have_mm and not rebuild_mahimahi:
        done.append(f"mahimahi: present ({shutil.which('mm-delay')})")
    else:
        src = mahimahi_src if mahimahi_src is not None else default_mahimahi_src()
        if src is None or not (Path(src) / "configure.ac").is_file():
            where = str(mahimahi_src) if mahimahi_src is not None else "../shared/third_party/mahimahi"
            raise FileNotFoundError(
                f"Mahimahi is not installed and no source tree was found at {where}: pass "
                "--mahimahi-src DIR (a checkout of github.com/ravinet/mahimahi)"
            )
        if not _SNAKEOIL.exists():
            _run(["make-ssl-cert", "generate-default-snakeoil", "--force-overwrite"])
        with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}mahimahi-build-") as tmp:
            build = Path(tmp) / "mahimahi"
            shutil.copytree(src, build, symlinks=True)
            _run(["./autogen.sh"], cwd=build)
            _run(["./configure"], cwd=build)
            _run(["make", f"-j{os.cpu_count() or 1}"], cwd=build)
            _run(["make", "install"], cwd=build)
        done.append(f"mahimahi: built from {src} and installed ({shutil.which('mm-delay')})")
    if _user_exists(TESTBED_USER):
        done.append(f"user {TESTBED_USER}: present")
    else:
        _run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "itp testbed (runs Mahimahi shells)",
                TESTBED_USER,
            ]
        )
        done.append(f"user {TESTBED_USER}: created")
    allowed = allowed_congestion_controls()
    wanted = [
        c for c in TESTBED_CONGESTION_CONTROLS if c in available_congestion_controls() and c not in allowed
    ]
    if not wanted:
        done.append(f"tcp_allowed_congestion_control: already {' '.join(allowed)}")
    else:
        _ALLOWED_CC.write_text(" ".join((*allowed, *wanted)) + "\n")
        done.append(
            f"tcp_allowed_congestion_control: added {' '.join(wanted)} (the paths' namespaces may then use "
            "them; no socket's behaviour changes)"
        )
    fwd = Path("/proc/sys/net/ipv4/ip_forward")
    if fwd.read_text().strip() == "1":
        done.append("net.ipv4.ip_forward: already 1")
    else:
        fwd.write_text("1\n")
        done.append("net.ipv4.ip_forward: set to 1 (Mahimahi shells route through the host)")
    return done


@dataclass(frozen=True)
class LeftoverProcess:
    """A process a testbed run left behind: ``pid``, ``pgid``, ``user``, ``reason`` and ``cmdline``."""

    pid: int
    pgid: int
    user: str
    reason: str
    cmdline: str


@dataclass(frozen=True)
class Leftovers:
    """What ``find_leftovers`` found: processes, temporary directories and named namespaces."""

    processes: tuple[LeftoverProcess, ...]
    directories: tuple[Path, ...]
    namespaces: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Nothing left behind."""
        return not (self.processes or self.directories or self.namespaces)

    def describe(self) -> list[str]:
        """One line per leftover."""
        lines = [f"process {p.pid} ({p.user}, {p.reason}): {p.cmdline[:100]}" for p in self.processes]
        lines += [f"directory {d}" for d in self.directories]
        lines += [f"network namespace {n}" for n in self.namespaces]
        return lines


def _proc_info(pid: int) -> tuple[int, int, str, str] | None:
    """(uid, pgid, cmdline, cwd) of a live process, or None if it vanished or cannot be read."""
    base = Path("/proc") / str(pid)
    try:
        uid = base.stat().st_uid
        raw = (base / "cmdline").read_bytes()
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        pgid = int(fields[2])
        try:
            cwd = os.readlink(base / "cwd")
        except OSError:
            cwd = ""
    except (OSError, IndexError, ValueError):
        return None
    return uid, pgid, raw.replace(b"\0", b" ").decode(errors="replace").strip(), cwd


def find_leftovers(
    *, user: str = TESTBED_USER, temp_dir: Path | None = None, exclude_pids: Iterable[int] = ()
) -> Leftovers:
    """Processes, directories and named namespaces a testbed run left behind (module docstring).

    Args:
        user: the testbed user (all of its processes are leftovers).
        temp_dir: where run directories live (default: the system temp folder).
        exclude_pids: processes never reported (the caller itself and its live run).
    """
    tmp = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
    marker = str(tmp / TEMP_PREFIX)
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = -1
    skip = {os.getpid(), *exclude_pids}
    procs: list[LeftoverProcess] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        info = _proc_info(int(entry.name))
        if info is None:
            continue
        p_uid, pgid, cmdline, cwd = info
        if not cmdline:
            continue  # kernel thread or zombie
        if p_uid == uid:
            reason = f"runs as {user}"
        elif cmdline.startswith(f"runuser -u {user} "):
            reason = f"starts a process as {user}"
        elif marker in cmdline or cwd.startswith(marker):
            reason = "belongs to a testbed run directory"
        else:
            continue
        try:
            name = pwd.getpwuid(p_uid).pw_name
        except KeyError:
            name = str(p_uid)
        procs.append(LeftoverProcess(int(entry.name), pgid, name, reason, cmdline))
    dirs = tuple(sorted(p for p in tmp.glob(f"{TEMP_PREFIX}*") if p.is_dir()))
    netns_dir = Path("/run/netns")
    namespaces = tuple(
        sorted(p.name for p in (netns_dir.glob(f"{TEMP_PREFIX}*") if netns_dir.is_dir() else ()))
    )
    return Leftovers(tuple(sorted(procs, key=lambda p: p.pid)), dirs, namespaces)


_NS_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def clean_leftovers(leftovers: Leftovers, *, grace_s: float = 2.0) -> list[str]:
    """Terminate the leftover processes (SIGTERM, then SIGKILL after ``grace_s``), remove directories.

    Process groups are signalled when the group holds only leftovers' processes (a Mahimahi shell is
    one group); otherwise the single process. Returns one line per action.
    """
    done: list[str] = []
    pids = {p.pid for p in leftovers.processes}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in leftovers.processes if _proc_info(p.pid) is not None]
        if not alive:
            break
        for p in alive:
            try:
                group = [
                    int(e.name)
                    for e in Path("/proc").iterdir()
                    if e.name.isdigit() and (info := _proc_info(int(e.name))) and info[1] == p.pgid
                ]
                if p.pgid > 1 and set(group) <= pids:
                    os.killpg(p.pgid, sig)
                else:
                    os.kill(p.pid, sig)
            except ProcessLookupError:
                continue
            except PermissionError as exc:
                done.append(f"process {p.pid}: {exc}")
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(_proc_info(p.pid) for p in alive):
                time.sleep(0.05)
        done.append(f"sent {sig.name} to {len(alive)} process(es)")
    for d in leftovers.directories:
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d}")
    for name in leftovers.namespaces:
        if _NS_NAME.match(name):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False, timeout=10)
            done.append(f"deleted network namespace {name}")
    return done
