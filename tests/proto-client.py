#!/usr/bin/env python3
"""proto-client.py: the wire protocol checked against the msgpack-RPC
standard, from outside.

As a module it is an independent msgpack-RPC client (Debian's
python3-msgpack and a raw Unix socket, no project code) with a TAP
producer, a private-mistrald runner and a pseudo-terminal driver, shared
by tests/t-client-*.py.  Run as a program it is the protocol test: the
message shapes of proto/protocol.h, msgids, streaming, cancel, the error
table, and hostile framing (oversized, truncated, garbage, bombs) after
which the daemon must still serve everyone else.  It skips when
daemon/mistrald has not been built.
"""
import os
import sys

try:
    import msgpack
except ImportError:
    if os.path.exists('/usr/bin/python3') and \
            os.path.realpath(sys.executable) != os.path.realpath('/usr/bin/python3'):
        os.execv('/usr/bin/python3', ['/usr/bin/python3'] + sys.argv)
    print('1..0 # SKIP python3-msgpack is not installed')
    sys.exit(0)

import errno
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

# From proto/protocol.h, copied by hand on purpose.
E_PARSE, E_INVALID_REQUEST, E_METHOD_NOT_FOUND, E_INVALID_PARAMS = 1, 2, 3, 4
E_TOO_LARGE, E_VERSION_MISMATCH, E_NO_SUCH_SESSION, E_AMBIGUOUS = 5, 6, 7, 8
E_NO_SUCH_REQUEST = 15
FINISH = ('stop', 'length', 'cancelled', 'error')


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, what):
        self.n += 1
        self.failed += not cond
        print('%sok %d - %s' % ('' if cond else 'not ', self.n, what), flush=True)
        return cond

    def diag(self, text):
        for line in str(text).splitlines():
            print('# ' + line, flush=True)

    def skip_all(self, why):
        print('1..0 # SKIP ' + why, flush=True)
        sys.exit(0)

    def done(self):
        print('1..%d' % self.n, flush=True)
        sys.exit(1 if self.failed else 0)


class Client:
    """A msgpack-RPC connection, strings kept as bytes so that UTF-8 can
    be checked rather than assumed."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.up = msgpack.Unpacker(raw=True, strict_map_key=False)
        self.msgid = 100
        self.kept = []

    def close(self):
        self.sock.close()

    def request(self, method, args=None, msgid=None):
        if msgid is None:
            self.msgid += 1
            msgid = self.msgid
        params = [args] if args is not None else []
        self.sock.sendall(msgpack.packb([0, msgid, method, params], use_bin_type=True))
        return msgid

    def read(self):
        """The next message (None at end of file)."""
        if self.kept:
            return self.kept.pop(0)
        while True:
            for m in self.up:
                return m
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.up.feed(data)

    def wait(self, msgid, notes=None):
        """Until msgid's response: returns (error, result); notifications
        for it are appended to notes as (method, args)."""
        other = []
        while True:
            m = self.read()
            if m is None:
                self.kept = other + self.kept
                raise EOFError('closed before response %d' % msgid)
            if m[0] == 1 and m[1] == msgid:
                self.kept = other + self.kept
                return m[2], m[3]
            if m[0] == 2 and notes is not None and m[2] and m[2][0].get(b'request') == msgid:
                notes.append((m[1].decode(), m[2][0]))
                continue
            other.append(m)

    def call(self, method, args=None, notes=None):
        return self.wait(self.request(method, args), notes)


def s(b):
    """A bytes value from the daemon as text (strict UTF-8)."""
    return b.decode('utf-8') if isinstance(b, bytes) else b


def builddir():
    return os.environ.get('top_builddir', os.getcwd())


def daemon_path():
    p = os.path.join(builddir(), 'daemon', 'mistrald')
    return p if os.access(p, os.X_OK) else None


class Daemon:
    """A private mistrald: socket and state directory under dir."""

    def __init__(self, dir, model=None):
        self.dir = dir
        self.sock = os.path.join(dir, 'd.sock')
        self.state = os.path.join(dir, 'state')
        self.log = os.path.join(dir, 'mistrald.log')
        self.model = model
        self.proc = None

    def start(self, timeout=60):
        conf = os.path.join(self.dir, 'empty.conf')
        open(conf, 'a').close()
        args = [daemon_path(), '--foreground', '-s', self.sock, '-d', self.state, '-c', conf]
        if self.model:
            args += ['-m', self.model]
        with open(self.log, 'a') as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError('mistrald exited (%d):\n%s' % (self.proc.returncode, self.logtext()))
            try:
                Client(self.sock, 5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('mistrald did not start:\n' + self.logtext())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def rss_kib(self):
        with open('/proc/%d/status' % self.proc.pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        return 0

    def logtext(self):
        try:
            with open(self.log, errors='replace') as f:
                return f.read()[-4000:]
        except OSError:
            return ''


def test_model(dir):
    """A small random model from tests/mkmodel (fast on any machine)."""
    path = os.path.join(dir, 'model.gguf')
    subprocess.run([os.path.join(builddir(), 'tests', 'mkmodel'), '-o', path, '--seed', '7'],
                   check=True, stdout=subprocess.DEVNULL)
    return path


class Pty:
    """A program on a pseudo-terminal, as a person would run it."""

    def __init__(self, argv, env):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.out = b''
        self.mark = 0           # where the last match ended
        self.reads = []         # (time, length of out after the read)

    def send(self, data):
        os.write(self.fd, data)

    def settle(self, timeout=5):
        """Wait until the program has put the terminal in its line-editing
        mode (no ICANON, no ISIG), as it is by the time a person types a
        key."""
        import termios
        end = time.time() + timeout
        while time.time() < end and \
                termios.tcgetattr(self.fd)[3] & (termios.ICANON | termios.ISIG):
            time.sleep(0.01)

    def expect(self, pattern, timeout=20):
        """Read until pattern (bytes regex) matches the output after the
        previous match; returns the match or None."""
        end = time.time() + timeout
        start = self.mark
        while True:
            m = re.search(pattern, self.out[start:], re.S)
            if m:
                self.mark = start + m.end()
                return m
            left = end - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if r:
                try:
                    d = os.read(self.fd, 4096)
                except OSError:
                    return None
                if not d:
                    return None
                self.out += d
                self.reads.append((time.time(), len(self.out)))

    def wait(self, timeout=20):
        """The exit status, or None if it did not exit in time (killed)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if r:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(st)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        return None


def raw_exchange(path, data, timeout=10):
    """Send raw bytes on a new connection; return (messages, closed)."""
    c = Client(path, timeout)
    try:
        c.sock.sendall(data)
    except OSError:
        pass
    msgs, closed = [], False
    end = time.time() + timeout
    while time.time() < end:
        try:
            m = c.read()
        except socket.timeout:
            break
        except OSError:
            closed = True
            break
        if m is None:
            closed = True
            break
        msgs.append(m)
    c.close()
    return msgs, closed


def main():
    t = Tap()
    if daemon_path() is None:
        t.skip_all('daemon/mistrald is not built')
    signal.alarm(300)
    tmp = tempfile.mkdtemp(prefix='proto-client.')
    d = Daemon(tmp, test_model(tmp))
    try:
        d.start()
        run(t, d)
    except Exception as e:
        t.ok(False, 'protocol test raised %r' % e)
        t.diag(d.logtext())
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    t.done()


def is_error(err, code):
    return isinstance(err, dict) and err.get(b'code') == code and isinstance(err.get(b'message'), bytes)


def run(t, d):
    c = Client(d.sock)

    # Shapes: hello, then the version check.
    err, res = c.call('hello', {'proto': [1, 0], 'client': 'proto-client.py'})
    t.ok(err is None and res[b'proto'][0] == 1 and isinstance(res[b'server'], bytes)
         and isinstance(res[b'model'], dict), 'hello answers proto, server and model')
    err, res = c.call('hello', {'proto': [99, 0]})
    t.ok(is_error(err, E_VERSION_MISMATCH) and res is None,
         'an incompatible major version is refused: %r' % (err,))
    raw = msgpack.packb([0, 4242, 'status', []])
    c.sock.sendall(raw)
    m = c.read()
    t.ok(isinstance(m, list) and len(m) == 4 and m[0] == 1 and m[1] == 4242 and m[2] is None,
         'a response is [1, msgid, nil, result] with our msgid')
    err, _ = c.call('no.such.method')
    t.ok(is_error(err, E_METHOD_NOT_FOUND), 'unknown method: METHOD_NOT_FOUND')
    err, _ = c.call('chat', {'session': 'x'})
    t.ok(is_error(err, E_INVALID_PARAMS) or is_error(err, E_NO_SUCH_SESSION),
         'chat without text is refused: %r' % (err,))
    err, _ = c.call('tokenize', {'text': 12})
    t.ok(is_error(err, E_INVALID_PARAMS), 'a wrongly typed argument: INVALID_PARAMS')
    err, _ = c.call('status')
    t.ok(err is None, 'and the connection carries on')
    c.sock.sendall(msgpack.packb([0, 77, 'tokenize', ['positional', 1]]))
    err, _ = c.wait(77)
    t.ok(is_error(err, E_INVALID_PARAMS), 'positional params: INVALID_PARAMS')
    t.ok(c.read() is None, 'and the connection is closed (not the protocol)')
    c.close()
    c = Client(d.sock)

    # Sessions and how they are named.
    err, info = c.call('session.create', {'name': 'wire-test', 'params': {'max_tokens': 6, 'temperature': 0}})
    sid = s(info[b'id']) if err is None else ''
    t.ok(err is None and re.fullmatch('[0-9a-f]{16,64}', sid) is not None, 'session.create gives a hex id: %s' % sid)
    ok = True
    for name in (sid, sid[:6], 'wire-test'):
        err, r = c.call('session.get', {'session': name})
        ok = ok and err is None and s(r[b'id']) == sid
    t.ok(ok, 'a session is found by id, by prefix and by name')
    err, _ = c.call('session.get', {'session': 'no-such-session'})
    t.ok(is_error(err, E_NO_SUCH_SESSION), 'unknown session: NO_SUCH_SESSION')

    # Streaming: token notifications, then the response.
    notes = []
    err, r = c.call('chat', {'session': sid, 'text': 'Hello there'}, notes)
    toks = [a for m, a in notes if m == 'token']
    t.ok(err is None and s(r[b'finish']) in FINISH, 'chat answers with a finish reason: %r' % (err or r[b'finish']))
    usage = (r or {}).get(b'usage', {})
    t.ok(all(isinstance(usage.get(k), int) for k in (b'prompt_tokens', b'completion_tokens'))
         and all(isinstance(usage.get(k), (int, float)) for k in (b'prefill_ms', b'decode_ms')),
         'usage has prompt_tokens, completion_tokens, prefill_ms, decode_ms')
    t.ok(len(toks) > 0 and all(isinstance(a[b'text'], bytes) and isinstance(a[b'ids'], list) for a in toks),
         'chat streamed %d token notifications with text and ids' % len(toks))
    try:
        pieces = [a[b'text'].decode('utf-8') for a in toks]
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    t.ok(utf8, 'every streamed piece is whole UTF-8')
    t.ok(utf8 and ''.join(pieces) == s(r[b'text']), 'the pieces add up to the reply text')
    t.ok(usage.get(b'completion_tokens', 99) <= 6, 'max_tokens 6 is honoured')

    # Cancel mid-stream.
    msgid = c.request('generate', {'session': sid, 'prompt': 'Once upon a time',
                                   'params': {'max_tokens': 4000}})
    first = None
    while first is None:
        m = c.read()
        if m is None:
            break
        if m[0] == 2 and m[1] == b'token':
            first = m
        elif m[0] == 1 and m[1] == msgid:
            c.kept.append(m)
            break
    cid = c.request('cancel', {'request': msgid})
    err, r = c.wait(msgid)
    t.ok(err is None and r[b'finish'] == b'cancelled', 'cancel stops a stream with finish "cancelled"')
    err, r = c.wait(cid)
    t.ok(err is None or is_error(err, E_NO_SUCH_REQUEST), 'the cancel request itself is answered')
    err, _ = c.call('cancel', {'request': 999999})
    t.ok(is_error(err, E_NO_SUCH_REQUEST), 'cancelling nothing: NO_SUCH_REQUEST')

    # Tokens, status.
    err, r = c.call('tokenize', {'text': 'Hello world', 'bos': True})
    ids = r[b'ids'] if err is None else []
    t.ok(err is None and len(ids) > 1 and all(isinstance(i, int) for i in ids), 'tokenize gives ids')
    err, r = c.call('detokenize', {'ids': ids[1:]})
    t.ok(err is None and s(r[b'text']).strip() == 'Hello world', 'detokenize inverts it: %r' % (r,))
    err, r = c.call('status')
    t.ok(err is None and all(k in r for k in (b'server', b'model', b'sessions', b'memory', b'queue')),
         'status has server, model, sessions, memory, queue')

    # Pipelining and byte-by-byte delivery.
    c.sock.sendall(msgpack.packb([0, 501, 'status', []]) + msgpack.packb([0, 502, 'session.list', []]))
    e1, _ = c.wait(501)
    e2, r2 = c.wait(502)
    t.ok(e1 is None and e2 is None and isinstance(r2.get(b'sessions'), list), 'two pipelined requests, two responses')
    for b in msgpack.packb([0, 503, 'tokenize', [{'text': 'slowly'}]]):
        c.sock.sendall(bytes([b]))
        time.sleep(0.002)
    err, _ = c.wait(503)
    t.ok(err is None, 'a request written one byte at a time is served')
    err, _ = c.call('session.delete', {'session': sid})
    t.ok(err is None, 'session.delete')
    err, _ = c.call('session.get', {'session': sid})
    t.ok(is_error(err, E_NO_SUCH_SESSION), 'a deleted session is gone')
    c.close()

    # Hostile framing: each on its own connection; the daemon must close
    # it, answering with an error first when a msgid can be read, and keep
    # serving everyone else.
    rss0 = d.rss_kib()
    big = msgpack.packb([0, 9001, 'chat', [{'session': 'x', 'text': 'x' * (8 << 20)}]])
    cases = [
        ('an 8 MiB request', big[:70000], 9001, E_TOO_LARGE),
        ('array32 bomb dd 00 ff ff ff', b'\xdd\x00\xff\xff\xff', None, None),
        ('map32 bomb df 0f ff ff ff', b'\xdf\x0f\xff\xff\xff', None, None),
        ('array32 bomb in a request', b'\x94\x00\x07\xa4chat\xdd\x00\xff\xff\xff', 7, E_TOO_LARGE),
        ('str32 of 4 GiB in a request', b'\x94\x00\xcd\x23\x29\xdb\xff\xff\xff\xff', 9001, E_TOO_LARGE),
        ('1000 nested arrays', b'\x91' * 1000, None, None),
        ('the byte 0xc1', b'\xc1\x00\x00', None, None),
        ('an ext type', b'\xd4\x01\x00', None, None),
        ('0xc1 inside a request', b'\x94\x00\x08\xc1', 8, E_PARSE),
    ]
    for what, data, want_id, want_code in cases:
        msgs, closed = raw_exchange(d.sock, data)
        errs = [m for m in msgs if isinstance(m, list) and len(m) == 4 and m[0] == 1 and m[2] is not None]
        good = closed and len(errs) == len(msgs) and len(errs) <= 1
        if want_id is not None:
            good = good and len(errs) == 1 and errs[0][1] == want_id \
                and errs[0][2].get(b'code') == want_code
        t.ok(good, '%s: %s, then closed (%r)'
             % (what, 'error %d for msgid %d' % (want_code, want_id) if want_id else 'no reply or an error',
                msgs[:1]))
    msgs, _ = raw_exchange(d.sock, b'\x05', timeout=3)
    t.ok(len(msgs) == 1 and msgs[0][0] == 1 and isinstance(msgs[0][2], dict)
         and msgs[0][2].get(b'code') == E_INVALID_REQUEST,
         'a message that is not a request: INVALID_REQUEST (%r)' % (msgs[:1],))
    # Truncated: half a message, then hang up.
    half = msgpack.packb([0, 1, 'status', []])[:3]
    c = Client(d.sock)
    c.sock.sendall(half)
    c.close()
    c = Client(d.sock)
    err, r = c.call('status')
    t.ok(err is None, 'after all of that the daemon still serves a new connection')
    rss1 = d.rss_kib()
    t.ok(rss1 - rss0 < 64 * 1024, 'and its RSS grew by %d KiB only (< 64 MiB)' % (rss1 - rss0))
    c.close()


if __name__ == '__main__':
    main()
