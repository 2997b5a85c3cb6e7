#!/usr/bin/env python3
# t-client-mockd.py: a stand-in mistrald for the client's tests.
#
# It speaks the protocol of proto/protocol.h (written against that header
# with python3-msgpack, not with the project's C code) and keeps sessions in
# memory.  A chat reply is "echo: " followed by the user's text, streamed a
# few characters per token notification.  Some messages trigger the cases a
# real model cannot produce on demand:
#   "slow ..."   tokens 0.2 s apart (to be cancelled)
#   "die ..."    two tokens, then the connection is closed mid-reply
#   "long ..."   "progress" notifications before the reply
#   "evict ..."  the turn-map reports evicted tokens
#
# usage: t-client-mockd.py SOCKET [--major N]
import os
import socket
import sys
import threading
import time

try:
    import msgpack
except ImportError:
    for py in ('/usr/bin/python3',):
        if os.path.exists(py) and os.path.realpath(py) != os.path.realpath(sys.executable):
            os.execv(py, [py] + sys.argv)
    sys.exit('t-client-mockd.py: python3-msgpack is not installed')

MAJOR = 1
E_INVALID_PARAMS, E_METHOD_NOT_FOUND, E_VERSION_MISMATCH = 4, 3, 6
E_NO_SUCH_SESSION, E_AMBIGUOUS, E_EXISTS = 7, 8, 9


class Failure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.sessions = {}      # id -> dict
        self.counter = 0

    def resolve(self, what):
        if not isinstance(what, str):
            raise Failure(E_INVALID_PARAMS, "argument 'session' has the wrong type")
        if what in self.sessions:
            return self.sessions[what]
        named = [s for s in self.sessions.values() if s['name'] == what]
        if named:
            return named[0]
        pref = [s for s in self.sessions.values() if len(what) >= 4 and s['id'].startswith(what)]
        if len(pref) > 1:
            raise Failure(E_AMBIGUOUS, "'%s' matches several sessions" % what)
        if pref:
            return pref[0]
        raise Failure(E_NO_SUCH_SESSION, "no such session '%s'" % what)

    def create(self, args):
        with self.lock:
            self.counter += 1
            sid = '%016x' % (0xabc0000000000000 + self.counter * 0x1111)
            name = args.get('name') or ''
            if name and any(s['name'] == name for s in self.sessions.values()):
                raise Failure(E_EXISTS, "name '%s' already in use" % name)
            s = {'id': sid, 'name': name, 'system': args.get('system') or '',
                 'params': dict(args.get('params') or {}), 'messages': [],
                 'created': int(time.time()), 'updated': int(time.time()),
                 'window': args.get('window') or 4096, 'n_global': args.get('n_global') or 0,
                 'template': args.get('template') or 'mistral'}
            self.sessions[sid] = s
            return s


def info(s):
    toks = sum(len(m['text'].split()) + 1 for m in s['messages'])
    return {'id': s['id'], 'name': s['name'], 'owner': os.getuid(),
            'created': s['created'], 'updated': s['updated'],
            'turns': sum(1 for m in s['messages'] if m['role'] == 'user'),
            'tokens': toks, 'window': s['window'], 'n_global': s['n_global'],
            'in_window': toks, 'mode': 'exact', 'state': 'resident',
            'bytes_memory': 65536, 'bytes_disk': 4096, 'system': s['system'],
            'template': s['template'], 'params': s['params']}


class Conn:
    def __init__(self, sock, state):
        self.sock = sock
        self.state = state
        self.wlock = threading.Lock()
        self.cancel = {}        # msgid -> Event
        self.closed = False

    def send(self, obj):
        data = msgpack.packb(obj, use_bin_type=True)
        with self.wlock:
            if not self.closed:
                try:
                    self.sock.sendall(data)
                except OSError:
                    self.closed = True

    def run(self):
        up = msgpack.Unpacker(raw=False, max_buffer_size=8 << 20)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            up.feed(data)
            for msg in up:
                self.dispatch(msg)
        self.closed = True
        for ev in self.cancel.values():
            ev.set()

    def dispatch(self, msg):
        if not (isinstance(msg, list) and len(msg) == 4 and msg[0] == 0):
            return
        _, msgid, method, params = msg
        args = params[0] if params else {}
        if method in ('chat', 'generate'):
            ev = threading.Event()
            self.cancel[msgid] = ev
            threading.Thread(target=self.turn, args=(msgid, method, args, ev), daemon=True).start()
            return
        try:
            result = self.call(method, args)
            self.send([1, msgid, None, result])
        except Failure as f:
            self.send([1, msgid, {'code': f.code, 'message': f.message}, None])

    def call(self, method, a):
        st = self.state
        if method == 'hello':
            proto = a.get('proto', [MAJOR, 0])
            if proto[0] != MAJOR:
                raise Failure(E_VERSION_MISMATCH, 'mistrald speaks protocol %d.0, not %d' % (MAJOR, proto[0]))
            return {'proto': [MAJOR, 0], 'server': 'client-mock 0', 'uid': os.getuid(),
                    'model': {'name': 'mock', 'arch': 'llama', 'file_type': 'F32'}}
        if method == 'session.create':
            return info(st.create(a))
        if method == 'session.list':
            return {'sessions': [info(s) for s in sorted(st.sessions.values(), key=lambda s: -s['updated'])]}
        if method == 'session.get':
            s = st.resolve(a.get('session'))
            r = info(s)
            n = a.get('messages')
            msgs = s['messages'] if n is None else (s['messages'][-n:] if n > 0 else [])
            r['messages'] = msgs
            return r
        if method == 'session.set':
            s = st.resolve(a.get('session'))
            if 'name' in a:
                s['name'] = a['name']
            if 'system' in a:
                s['system'] = a['system']
            for k, v in (a.get('params') or {}).items():
                if v is None:
                    s['params'].pop(k, None)
                else:
                    s['params'][k] = v
            return info(s)
        if method == 'session.delete':
            s = st.resolve(a.get('session'))
            del st.sessions[s['id']]
            return {'id': s['id']}
        if method == 'session.fork':
            s = st.resolve(a.get('session'))
            n = st.create({'name': a.get('name'), 'system': s['system'], 'params': s['params']})
            n['messages'] = [dict(m) for m in s['messages']]
            return info(n)
        if method == 'session.export':
            s = st.resolve(a.get('session'))
            return {'format': 'mistrald-session', 'version': 1, 'name': s['name'],
                    'system': s['system'], 'params': s['params'], 'window': s['window'],
                    'n_global': s['n_global'], 'template': s['template'], 'model': 'mock',
                    'messages': [{'role': m['role'], 'text': m['text']} for m in s['messages']]}
        if method == 'session.import':
            d = a.get('document')
            if not isinstance(d, dict) or d.get('format') != 'mistrald-session':
                raise Failure(E_INVALID_PARAMS, 'not a mistrald-session document')
            s = st.create({'name': a.get('name') or d.get('name'), 'system': d.get('system'),
                           'params': d.get('params')})
            s['messages'] = [{'role': m['role'], 'text': m['text'], 'tokens': 1, 'time': 0}
                             for m in d.get('messages', [])]
            return info(s)
        if method == 'status':
            return {'server': 'client-mock 0', 'proto': [MAJOR, 0], 'uptime': 3725,
                    'model': {'name': 'mock', 'arch': 'llama', 'file_type': 'F32', 'params': 260000,
                              'window': 512, 'template': 'raw', 'demo': False},
                    'sessions': {'resident': len(st.sessions), 'stored': len(st.sessions), 'active': 0},
                    'connections': 1, 'memory': {'kv_bytes': 1 << 20, 'kv_budget': 1 << 30, 'rss': 50 << 20},
                    'disk': {'bytes': 12345, 'snapshot_lag': 0, 'last_snapshot': int(time.time())},
                    'throughput': {'prefill_tps': 1000.5, 'decode_tps': 100.25},
                    'queue': {'waiting': 0, 'running': 0}, 'kernels': 'mock'}
        if method == 'tokenize':
            text = a.get('text')
            if not isinstance(text, str):
                raise Failure(E_INVALID_PARAMS, "argument 'text' is missing")
            words = text.split(' ')
            ids = ([1] if a.get('bos') else []) + [100 + i for i in range(len(words))]
            return {'ids': ids, 'pieces': (['<s>'] if a.get('bos') else []) + words}
        if method == 'cancel':
            ev = self.cancel.get(a.get('request'))
            if ev is None:
                raise Failure(15, 'no such request')
            ev.set()
            return {'cancelled': True}
        raise Failure(E_METHOD_NOT_FOUND, "no such method '%s'" % method)

    def turn(self, msgid, method, a, ev):
        try:
            s = self.state.resolve(a['session']) if a.get('session') is not None else None
            text = a.get('text' if method == 'chat' else 'prompt')
            if not isinstance(text, str):
                raise Failure(E_INVALID_PARAMS, "argument 'text' is missing")
        except Failure as f:
            self.send([1, msgid, {'code': f.code, 'message': f.message}, None])
            return
        stream = a.get('stream', True)
        reply = 'echo: ' + text if method == 'chat' else ' and then some'
        if text.startswith('long'):
            for done in range(0, 401, 100):
                self.send([2, 'progress', [{'request': msgid, 'done': done, 'total': 400}]])
                time.sleep(0.05)
        pieces = [reply[i:i + 3] for i in range(0, len(reply), 3)]
        maxt = (a.get('params') or {}).get('max_tokens') or (s['params'].get('max_tokens') if s else None)
        finish = 'stop'
        out = ''
        for i, p in enumerate(pieces):
            if ev.is_set():
                finish = 'cancelled'
                break
            if maxt is not None and i >= maxt:
                finish = 'length'
                break
            if text.startswith('die') and i == 2:
                with self.wlock:
                    self.closed = True
                    self.sock.shutdown(socket.SHUT_RDWR)
                return
            out += p
            if stream:
                self.send([2, 'token', [{'request': msgid, 'text': p, 'ids': [7, 8]}]])
            time.sleep(0.2 if text.startswith('slow') else 0.001)
        if s is not None:
            s['messages'].append({'role': 'user' if method == 'chat' else 'prompt', 'text': text,
                                  'tokens': 3, 'time': int(time.time())})
            s['messages'].append({'role': 'assistant' if method == 'chat' else 'completion',
                                  'text': out, 'tokens': len(pieces), 'time': int(time.time())})
            s['updated'] = int(time.time())
        self.send([1, msgid, None, {
            'finish': finish, 'text': out, 'mode': 'exact', 'rebuilt': False,
            'evicted': 42 if text.startswith('evict') else 0,
            'usage': {'prompt_tokens': 5, 'completion_tokens': len(out) // 3,
                      'prefill_ms': 1, 'decode_ms': 2}}])


def main():
    global MAJOR
    path = sys.argv[1]
    if '--major' in sys.argv:
        MAJOR = int(sys.argv[sys.argv.index('--major') + 1])
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    state = State()
    print('ready', flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=Conn(c, state).run, daemon=True).start()


if __name__ == '__main__':
    main()
