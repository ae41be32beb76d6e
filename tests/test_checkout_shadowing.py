"""A checkout directory named t5mtl, seen from its parent directory, must not
hide the installed package (issue 16, item 8).

The checkout root has no __init__.py, so from its parent (sys.path[0] is ''
for `python -c` and a notebook, the script's directory for a script) Python
can take it for a namespace package `t5mtl`. That happens only where the
installed package is not on any sys.path entry: setuptools' default editable
install of a flat layout is an import hook consulted after all of them.

The test does what `pip install -e .` does, with this checkout's setup.py:
builds the editable wheel through setuptools' PEP 660 hook and unpacks it
into a site directory. The checks run with `python -S` (only the standard
library and that site directory; whatever the running environment has
installed cannot hide the trap) and without PYTHONPATH.
"""
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = """
import site, sys
site.addsitedir(sys.argv[1])
import t5mtl
print(t5mtl.__file__)
print(type(t5mtl.load).__name__)
"""


def _editable_install(checkout, site_dir, wheel_dir):
    built = subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta as b; print(b.build_editable(sys.argv[1]))",
         str(wheel_dir)],
        cwd=checkout, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = wheel_dir / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site_dir)


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_checkout_named_t5mtl_does_not_shadow_the_editable_install(tmp_path):
    parent = tmp_path / "parent"
    checkout = parent / "t5mtl"
    checkout.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "setup.py"), checkout)
    shutil.copytree(os.path.join(ROOT, "t5mtl"), checkout / "t5mtl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert not (checkout / "__init__.py").exists()
    site_dir, wheel_dir = tmp_path / "site", tmp_path / "wheel"
    _editable_install(checkout, site_dir, wheel_dir)

    real = str(checkout / "t5mtl" / "__init__.py")
    # From the parent: `python -c` (sys.path[0] == '') ...
    inline = _run(["-c", CHECK, str(site_dir)], cwd=parent)
    assert inline.returncode == 0, inline.stderr
    assert inline.stdout.splitlines() == [real, "function"]
    # ... and a script in the parent directory (sys.path[0] == parent).
    (parent / "script.py").write_text(CHECK)
    script = _run(["script.py", str(site_dir)], cwd=parent)
    assert script.returncode == 0, script.stderr
    assert script.stdout.splitlines() == [real, "function"]
