"""testboot.py: how every Python test and tool in tests/ that drives the
daemon starts.

Debian's python3-msgpack is their one dependency.  When the python3 that
runs them lacks it (a pyenv interpreter first on PATH, say), need_msgpack()
runs the same script again under /usr/bin/python3, and when that has none
either, a test skips (TAP) and a tool says why and fails.  load() reads a
sibling file as a module: t-daemon_rpc.py's name is not an identifier, so
it cannot simply be imported.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def need_msgpack(tool=None):
    """Return when msgpack imports; otherwise re-execute or give up."""
    try:
        import msgpack  # noqa: F401
        return
    except ImportError:
        pass
    if sys.executable != "/usr/bin/python3" and \
            os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    if tool is not None:
        print("%s: python3-msgpack is not installed" % tool, file=sys.stderr)
        sys.exit(1)
    print("1..0 # SKIP python3-msgpack is not installed")
    sys.exit(0)


def load(name, file):
    """The module in tests/FILE, named NAME."""
    spec = importlib.util.spec_from_file_location(name,
                                                  os.path.join(HERE, file))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m
