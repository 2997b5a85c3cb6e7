#!/usr/bin/env python3
"""t-client-pty.py: "mistral chat" driven through a pseudo-terminal against
a real mistrald: the prompt, a streamed reply, slash commands, multi-line
input, Ctrl-C cancelling a reply, leaving, and resuming the session after
the daemon restarts.  Skips when daemon/mistrald has not been built.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location('pc', os.path.join(here, 'proto-client.py'))
pc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pc)

t = pc.Tap()
if pc.daemon_path() is None:
    t.skip_all('daemon/mistrald is not built')
signal.alarm(240)
mistral = os.path.join(pc.builddir(), 'client', 'mistral')
tmp = tempfile.mkdtemp(prefix='t-client-pty.')
d = pc.Daemon(tmp, pc.test_model(tmp))
env = dict(os.environ, TERM='xterm', HOME=tmp, XDG_STATE_HOME=os.path.join(tmp, 'xdg-state'),
           MISTRALD_SOCKET=d.sock)
env.pop('NO_COLOR', None)


def cli_json(*args):
    r = subprocess.run([mistral, '--json'] + list(args), env=env, capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else None


def chat(t):
    p = pc.Pty([mistral, 'chat'], env)
    m = p.expect(rb'new session ([0-9a-f]+)')
    t.ok(m is not None, 'chat with no session starts one and says its id')
    sid = m.group(1).decode() if m else ''
    t.ok(p.expect(rb'>>> ') is not None, 'the prompt is ">>> "')

    p.send(b'/set max_tokens 60\r')
    t.ok(p.expect(rb'>>> ') is not None, '/set max_tokens 60')
    p.send(b'Hello there\r')
    start = len(p.out)
    t.ok(p.expect(rb'\r\n>>> $', timeout=60) is not None, 'a reply, then the prompt again')
    reply = p.out[start:]
    info = cli_json('show', sid)
    last = info['messages'][-1] if info else {}
    t.ok(last.get('role') == 'assistant' and len(last.get('text', '')) > 0,
         'the reply was stored (%d characters)' % len(last.get('text', '')))
    shown = ''.join('\ufffd' if (ord(ch) < 32 and ch not in '\n\t') or 0x7f <= ord(ch) <= 0x9f else ch
                    for ch in last.get('text', '\0'))
    t.ok(shown.replace('\n', '\r\n').encode() in reply,
         'what was printed is the stored reply (control characters made harmless)')

    p.send(b'/name pty-chat\r')
    t.ok(p.expect(rb'>>> ') is not None, '/name pty-chat')
    p.send(b'/show\r')
    m = p.expect(rb'session\S*\s+' + sid.encode() + rb' \(pty-chat\).*tokens.*params.*max_tokens=60.*>>> ')
    t.ok(m is not None, '/show: id, name, tokens, params')
    p.send(b'"""\rline one\rline two\r"""\r')
    t.ok(p.expect(rb'\.\.\. line two.*\r\n>>> $') is not None, 'a """ block is one message')
    info = cli_json('show', sid)
    users = [x['text'] for x in info['messages'] if x['role'] == 'user'] if info else []
    t.ok(users[-1:] == ['line one\nline two'], 'and reaches the daemon with its newline: %r' % users[-1:])

    p.send(b'/set max_tokens 4000\r')
    p.expect(rb'>>> ')
    p.send(b'Tell me a long story\r')
    seen = p.expect(rb'long story\r\n.', timeout=20)
    time.sleep(0.1)
    p.send(b'\x03')
    t.ok(p.expect(rb'\[cancelled\].*>>> ', timeout=20) is not None, 'Ctrl-C cancels the reply, back at the prompt')
    t.ok(seen is not None, 'it streamed: reply text was on the screen before the reply ended')
    info = cli_json('show', sid)
    t.ok(info is not None and info['messages'][-1]['role'] == 'assistant' and info['state'] != 'busy',
         'the session is consistent after the cancel')
    p.send(b'/set max_tokens 5\r')
    p.expect(rb'>>> ')
    p.send(b'Still there?\r')
    t.ok(p.expect(rb'Still there\?\r\n.+\r\n>>> ') is not None, 'and the next turn works')
    p.settle()
    p.send(b'half a line\x03')
    if not t.ok(p.expect(rb'\r\n>>> $') is not None, 'Ctrl-C on a typed line drops it'):
        t.diag(repr(p.out[-300:]))
    p.settle()
    p.send(b'\x03')
    rc = p.wait()
    t.ok(rc == 0, 'Ctrl-C at an empty prompt leaves, exit 0')
    if rc != 0:
        t.diag(repr(p.out[-300:]))
    hist = os.path.join(tmp, 'xdg-state', 'mistral', 'history')
    t.ok(os.path.exists(hist) and 'Hello' in open(hist, errors='replace').read(),
         'history is kept in $XDG_STATE_HOME/mistral/history')
    return sid


def resume(t, sid):
    t.ok(d.stop() == 0, 'mistrald stops on SIGTERM')
    d.start()
    p = pc.Pty([mistral, 'chat', 'pty-chat'], env)
    t.ok(p.expect(rb'resuming session ' + sid.encode() + rb' \(pty-chat\)') is not None,
         'after a restart, chat NAME resumes the session')
    t.ok(p.expect(rb'>>> Still there\?.*>>> $') is not None, 'and shows its last turns')
    p.send(b'After the restart\r')
    t.ok(p.expect(rb'After the restart\r\n.+\r\n>>> $') is not None, 'a turn after the restart')
    p.settle()
    p.send(b'\x04')
    rc = p.wait()
    if not t.ok(rc == 0, 'Ctrl-D leaves, exit 0'):
        t.diag('%r %r' % (rc, p.out[-300:]))
    info = cli_json('show', sid)
    t.ok(info is not None and [x['text'] for x in info['messages'] if x['role'] == 'user'][-1] == 'After the restart',
         'the turn was stored')


try:
    d.start()
    resume(t, chat(t))
except Exception as e:
    t.ok(False, 'raised %r' % e)
    t.diag(d.logtext())
finally:
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
