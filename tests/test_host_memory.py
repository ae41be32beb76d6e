"""t5mtl.host_memory: XLA's per-step buffers on huge pages (glibc tunable).

The probes run in fresh interpreters: glibc reads GLIBC_TUNABLES only when a
process starts, which is why `t5mtl` re-executes itself.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

from t5mtl import cli, host_memory

GLIBC = platform.libc_ver()[0] == "glibc"


def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


# Re-executes like the CLI does, then times the minor page faults of a jitted
# op whose 256 MiB output XLA allocates (and frees) on every call.
PROBE = """
import json, os, resource
from t5mtl.host_memory import reexec_with_huge_pages
reexec_with_huge_pages()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((64 * 2**20,), jnp.float32)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = f(x).block_until_ready()
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "faults": faults}))
"""
PAGES = 256 * 2**20 // os.sysconf("SC_PAGE_SIZE")


def _probe(**env):
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (GLIBC and _thp_available()), reason="glibc with transparent huge pages")
def test_reexec_puts_xla_buffers_on_huge_pages():
    out = _probe()
    assert out["tunables"] == host_memory.TUNABLE
    # 2 MiB pages: a 256 MiB buffer takes ~128 faults instead of 65536.
    assert max(out["faults"][1:]) < PAGES // 50, out["faults"]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_system_setting_keeps_glibc_defaults():
    out = _probe(T5MTL_HOST_MALLOC="system")
    assert out["tunables"] is None
    # Mapped and unmapped around every call, 4 KiB at a time: all pages fault.
    assert min(out["faults"][1:]) > PAGES * 9 // 10, out["faults"]


def test_environment_respects_existing_tunables_and_the_opt_out():
    base = {"PATH": "/bin"}
    if GLIBC:
        assert host_memory.huge_page_environment(base)["GLIBC_TUNABLES"] == host_memory.TUNABLE
        other = {**base, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
        assert host_memory.huge_page_environment(other)["GLIBC_TUNABLES"] == \
            "glibc.malloc.arena_max=2:" + host_memory.TUNABLE
    chosen = {**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert host_memory.huge_page_environment(chosen) is None
    assert host_memory.huge_page_environment({**base, "T5MTL_HOST_MALLOC": "system"}) is None
    with pytest.raises(ValueError, match="T5MTL_HOST_MALLOC='jemalloc'"):
        host_memory.huge_page_environment({**base, "T5MTL_HOST_MALLOC": "jemalloc"})


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_cli_entry_point_reexecutes_once_but_calls_from_python_do_not(monkeypatch, capsys):
    calls = []

    def fake_execve(path, args, env):
        calls.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("T5MTL_HOST_MALLOC", raising=False)
    assert cli.main(["--help"]) == 0                      # called from Python: no exec
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["t5mtl", "--help"])
    with pytest.raises(SystemExit):
        cli.main()                                        # the process's entry point
    (path, args, env), = calls
    assert path == sys.executable and args == [sys.executable] + sys.orig_argv[1:]
    assert env["GLIBC_TUNABLES"] == host_memory.TUNABLE
    monkeypatch.setenv("GLIBC_TUNABLES", host_memory.TUNABLE)   # after the exec
    assert cli.main() == 0
    assert len(calls) == 1
