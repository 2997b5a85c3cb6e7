#!/bin/sh
# t-man.sh: the manual pages against mandoc's linter and against the
# programs they describe.
#
#  - mandoc -Tlint -Wwarning finds nothing in any page (skipped without
#    mandoc), and each page's .Dt matches its file name;
#  - every page of ours that a page refers to (.Xr) exists;
#  - mistrald, mistral and mistral-run: every option the --help output
#    names is documented in the page, every option of the SYNOPSIS is in
#    --help, and any other option the page documents is accepted by the
#    program (probed with the option alone: it must not be "unknown");
#  - mistral: the COMMANDS section lists exactly the commands of --help;
#  - mistrald.conf(5) documents exactly the settings of mistrald --help,
#    with the same defaults where --help states one, and so does the
#    example configuration.
#
# The parsing is done in Python (python3 is needed by other tests too).

: "${top_builddir:=.}"
: "${top_srcdir:=.}"
export top_builddir top_srcdir
if ! command -v python3 >/dev/null 2>&1; then
	echo "1..0 # SKIP python3 is not installed"
	exit 0
fi
exec python3 - <<'EOF'
import os
import re
import shutil
import subprocess
import sys

src = os.environ["top_srcdir"]
build = os.environ["top_builddir"]
PAGES = ["mistrald.8", "mistral.1", "mistral-run.1", "mistrald.conf.5",
         "mistrald-protocol.7"]
PROGRAMS = [  # page, binary, probe options missing from --help
    ("mistrald.8", "daemon/mistrald", False),
    ("mistral.1", "client/mistral", True),
    ("mistral-run.1", "client/mistral-run", True),
]
n = 0
failed = False


def ok(cond, desc, detail=None):
    global n, failed
    n += 1
    print("%sok %d - %s" % ("" if cond else "not ", n, desc))
    if not cond:
        failed = True
        if detail:
            diag(detail)


def skip(why):
    global n
    n += 1
    print("ok %d # SKIP %s" % (n, why))


def diag(text):
    for line in str(text).splitlines():
        print("# " + line)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def sections(text):
    """{section name: [lines]} of an mdoc page."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^\.Sh\s+(.*)$", line)
        if m:
            cur = m.group(1).strip()
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


MACRO = re.compile(r"^[A-Z][a-z][a-z]?$")
DELIM = {"|", ",", ".", ";", ":", "(", ")", "[", "]", "...", "="}


def page_options(lines):
    """Options named by Fl macros on macro lines."""
    opts = set()
    for line in lines:
        if not line.startswith("."):
            continue
        flag = False
        for tok in line[1:].split():
            if tok == "Fl":
                flag = True
            elif MACRO.match(tok):
                flag = False
            elif flag and tok not in DELIM:
                name = "-" + tok
                if re.match(r"^(-[A-Za-z0-9]|--[a-z][a-z0-9-]*)$", name):
                    opts.add(name)
    return opts


def help_options(text):
    return set(m.group(2) for m in re.finditer(
        r"(^|[\s\[(|,])(-[A-Za-z0-9](?![\w-])|--[a-z][a-z0-9-]*)", text))


def run(argv, timeout=20):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return None, "timed out"


pages = {p: read(os.path.join(src, "man", p)) for p in PAGES}

# --- lint ---------------------------------------------------------------
mandoc = shutil.which("mandoc")
for p in PAGES:
    if mandoc is None:
        skip("mandoc is not installed (apt-get install mandoc): %s" % p)
        continue
    rc, out = run([mandoc, "-Tlint", "-Wwarning",
                   os.path.join(src, "man", p)])
    ok(rc == 0 and out.strip() == "", "mandoc -Tlint -Wwarning %s" % p, out)

for p in PAGES:
    name, sect = p.rsplit(".", 1)
    m = re.search(r"^\.Dt\s+(\S+)\s+(\S+)", pages[p], re.M)
    ok(m is not None and m.group(1) == name.upper() and m.group(2) == sect,
       "%s: .Dt names the page and its section" % p,
       m.group(0) if m else "no .Dt")

missing = []
for p in PAGES:
    for m in re.finditer(r"^\.Xr\s+(mistral\S*)\s+([0-9])", pages[p], re.M):
        if "%s.%s" % (m.group(1), m.group(2)) not in PAGES:
            missing.append("%s refers to %s(%s)" % (p, m.group(1),
                                                    m.group(2)))
ok(not missing, "every page of ours that is referred to exists",
   "\n".join(missing))

# --- options against --help --------------------------------------------
helps = {}
for page, binary, probe in PROGRAMS:
    path = os.path.join(build, binary)
    if not os.access(path, os.X_OK):
        for _ in range(3):
            skip("%s is not built" % binary)
        continue
    rc, out = run([path, "--help"])
    helps[binary] = out
    if rc != 0:
        ok(False, "%s --help exits 0" % binary, out)
        continue
    hopts = help_options(out)
    secs = sections(pages[page])
    popts = page_options(pages[page].splitlines())
    sopts = page_options(secs.get("SYNOPSIS", []))
    ok(hopts and hopts <= popts,
       "%s: every option of --help is documented" % page,
       "missing: " + " ".join(sorted(hopts - popts)))
    ok(sopts and sopts <= hopts,
       "%s: every option of the SYNOPSIS is in --help" % page,
       "not in --help: " + " ".join(sorted(sopts - hopts)))
    extra = sorted(popts - hopts)
    if not probe:
        ok(not extra, "%s: documents no option --help lacks" % page,
           " ".join(extra))
        continue
    bad = []
    for o in extra:
        rc, out = run([path, o], timeout=10)
        if rc is None or re.search(r"(unknown|unrecognized|invalid) option",
                                   out, re.I):
            bad.append("%s: %s" % (o, out.strip().splitlines()[:1]))
    ok(not bad, "%s: the options only the page names (%s) are accepted"
       % (page, " ".join(extra) or "none"), "\n".join(bad))

# --- mistral's commands ----------------------------------------------------
if "client/mistral" in helps:
    hcmds = set(re.findall(r"^\s+mistral\s+([a-z][a-z-]*)", helps[
        "client/mistral"], re.M))
    lines = sections(pages["mistral.1"]).get("COMMANDS", [])
    pcmds = set()
    for i, line in enumerate(lines):
        m = re.match(r"^\.It Cm ([a-z][a-z-]*)", line)
        if m:
            pcmds.add(m.group(1))
        m = re.match(r"^\.Cm ([a-z][a-z-]*)", line)
        if m and i > 0 and lines[i - 1].strip() == ".It Xo":
            pcmds.add(m.group(1))
    ok(hcmds and hcmds == pcmds,
       "mistral.1: COMMANDS lists exactly the commands of --help",
       "only in --help: %s; only in the page: %s" % (
           " ".join(sorted(hcmds - pcmds)), " ".join(sorted(pcmds - hcmds))))
else:
    skip("client/mistral is not built")

# --- mistrald.conf(5) and the example --------------------------------------
if "daemon/mistrald" in helps:
    keys, defaults = set(), {}
    for line in helps["daemon/mistrald"].splitlines():
        m = re.search(r"--([a-z][a-z0-9-]*)", line)
        if not m or m.group(1) in ("config", "foreground", "help",
                                   "version"):
            continue
        keys.add(m.group(1))
        d = re.search(r"\(default (\S+)\)\s*$", line)
        if d:
            defaults[m.group(1)] = d.group(1)
    conf = sections(pages["mistrald.conf.5"]).get("SETTINGS", [])
    items, cur = {}, None
    for line in conf:
        m = re.match(r"^\.It Cm ([a-z][a-z0-9-]*)", line)
        if m:
            cur = m.group(1)
            items[cur] = []
        elif line.startswith(".It") or line.startswith(".El"):
            cur = None
        elif cur is not None:
            items[cur].append(re.sub(r"^\.[A-Z][a-z]+\s*", "", line))
    ok(keys and keys == set(items),
       "mistrald.conf.5 documents exactly the settings of mistrald --help",
       "only in --help: %s; only in the page: %s" % (
           " ".join(sorted(keys - set(items))),
           " ".join(sorted(set(items) - keys))))
    wrong = []
    for k, v in sorted(defaults.items()):
        text = " ".join(items.get(k, []))
        m = re.search(r"Default:\s*(\S+?)[.,]?(\s|$)", text)
        if not m or m.group(1) != v:
            wrong.append("%s: --help says %s, the page %s" % (
                k, v, m.group(1) if m else "nothing"))
    ok(defaults and not wrong,
       "mistrald.conf.5 gives the defaults --help states (%d)"
       % len(defaults), "\n".join(wrong))
    example = read(os.path.join(src, "etc", "mistrald.conf"))
    ex = dict(re.findall(r"^#([a-z][a-z0-9-]*) = (.*)$", example, re.M))
    wrong = ["%s: --help says %s, the example %s" % (k, v, ex.get(k))
             for k, v in sorted(defaults.items()) if ex.get(k) != v]
    ok(set(ex) == keys and not wrong,
       "etc/mistrald.conf shows every setting with the default --help states",
       "\n".join(wrong) + "\nkeys differ: %s" % " ".join(
           sorted(set(ex) ^ keys)))
else:
    for _ in range(3):
        skip("daemon/mistrald is not built")

print("1..%d" % n)
sys.exit(1 if failed else 0)
EOF
