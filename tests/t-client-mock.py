#!/usr/bin/env python3
"""t-client-mock.py: the mistral client against a stand-in daemon
(tests/t-client-mockd.py), for what a real model cannot do on demand:
exact replies, a daemon that dies mid-reply, a prefill status line, an
eviction notice, an incompatible protocol version, JSON round trips.
Needs no model and no daemon build, so it always runs.
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
mistral = os.path.join(pc.builddir(), 'client', 'mistral')
if not os.access(mistral, os.X_OK):
    t.skip_all('client/mistral is not built')
signal.alarm(120)
tmp = tempfile.mkdtemp(prefix='t-client-mock.')
sock = os.path.join(tmp, 'mock.sock')
env = dict(os.environ, TERM='xterm', HOME=tmp, XDG_STATE_HOME=os.path.join(tmp, 'xdg'),
           MISTRALD_SOCKET=sock)
env.pop('NO_COLOR', None)
mocks = []


def start_mock(*extra):
    p = subprocess.Popen([sys.executable, os.path.join(here, 't-client-mockd.py'), sock] + list(extra),
                         stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    mocks.append(p)
    return p


def stop_mock(p):
    p.kill()
    p.wait()


def run(*args, input=None, extra_env=None):
    e = dict(env, **(extra_env or {}))
    return subprocess.run([mistral] + list(args), input=input, env=e, capture_output=True,
                          text=True, timeout=30)


def tests():
    m = start_mock('--major', '2')
    r = run('status')
    t.ok(r.returncode == 1 and 'incompatible protocol' in r.stderr and r.stderr.count('\n') == 1,
         'a daemon of another major version: exit 1, one clear line (%r)' % r.stderr)
    stop_mock(m)
    m = start_mock()

    r = run('new', 'm1', '--system', 'Be kind.', '--set', 'top_p=0.9', '--set', 'stop=\\n\\n')
    sid = r.stdout.strip()
    t.ok(r.returncode == 0 and len(sid) == 16, 'new prints the id')
    r = run('--json', 'show', 'm1')
    info = json.loads(r.stdout)
    t.ok(info['params'] == {'top_p': 0.9, 'stop': ['\n\n']} and info['system'] == 'Be kind.',
         '--set values are typed and stop strings unescaped: %r' % info['params'])
    r = run('send', 'm1', 'hi', 'there')
    t.ok(r.returncode == 0 and r.stdout == 'echo: hi there\n', 'send joins its words: %r' % r.stdout)
    r = run('send', 'm1', input='from stdin\n')
    t.ok(r.stdout == 'echo: from stdin\n', 'send reads stdin, dropping one newline')
    r = run('--json', 'send', 'm1', 'j')
    d = json.loads(r.stdout)
    t.ok(d['text'] == 'echo: j' and d['finish'] == 'stop' and d['usage']['completion_tokens'] == 2,
         '--json send is the turn-map')
    r = run('send', 'm1', 'evict me')
    t.ok('[42 earlier tokens left the context window]' in r.stderr, 'evicted tokens are reported')
    r = run('-q', 'send', 'm1', 'evict me')
    t.ok(r.stderr == '', '-q silences notices')
    r = run('send', 'm1', 'die now')
    t.ok(r.returncode == 3 and r.stdout == '' and r.stderr.count('\n') == 1 and sock in r.stderr,
         'daemon gone mid-reply: exit 3, nothing on stdout, one line naming the socket')
    r = run('generate', '-s', 'm1', input='Once')
    t.ok(r.returncode == 0 and r.stdout == ' and then some\n', 'generate reads its prompt from stdin')
    r = run('tokenize', '--bos', 'a', 'b')
    t.ok(r.stdout == '1\t<s>\n100\ta\n101\tb\n', 'tokenize: id<TAB>piece lines')

    # JSON: odd characters out and back in.
    odd = 'tab\there "quoted" \\ back \x01 ctl \u00e9 \U0001F600'
    run('send', 'm1', odd)
    r = run('export', 'm1', os.path.join(tmp, 'm1.json'))
    doc = json.load(open(os.path.join(tmp, 'm1.json')))
    t.ok(r.returncode == 0 and any(x['text'] == odd for x in doc['messages']),
         'export writes valid JSON that keeps every character')
    with open(os.path.join(tmp, 'in.json'), 'w') as f:
        f.write('{"format": "mistrald-session", "version": 1, "system": "s\\u00e9",\n'
                ' "messages": [{"role": "user", "text": "\\ud83d\\ude00 \\"x\\"\\n"},'
                ' {"role": "assistant", "text": "n\\u0000l", "big": 123456789012, "f": -1.5e3}]}')
    r = run('import', '--name', 'imp', os.path.join(tmp, 'in.json'))
    t.ok(r.returncode == 0, 'import parses JSON escapes and surrogate pairs')
    info = json.loads(run('--json', 'show', 'imp').stdout)
    t.ok(info['system'] == 's\u00e9' and info['messages'][0]['text'] == '\U0001F600 "x"\n'
         and info['messages'][1]['text'] == 'n\x00l', 'and the daemon got the exact strings')
    for bad in ('{"a": }', '[1, 2', '{"a": "\\x"}', '"\x01"', '{"a": 1} 2', '[' * 40 + ']' * 40):
        with open(os.path.join(tmp, 'bad.json'), 'w') as f:
            f.write(bad)
        r = run('import', os.path.join(tmp, 'bad.json'))
        if r.returncode != 1 or 'JSON' not in r.stderr:
            break
    t.ok(r.returncode == 1 and 'JSON' in r.stderr, 'broken JSON is refused with a clear line (%r)' % bad)

    # chat without a terminal: lines in, replies out, nothing else.
    r = run('chat', 'm1', input='first\n/name renamed\n//slash\nmulti \\\nline\n"""\na\nb\n"""\n')
    t.ok(r.returncode == 0 and r.stdout == 'echo: first\necho: /slash\necho: multi \nline\necho: a\nb\n',
         'piped chat: one reply per message, no prompts (%r)' % r.stdout)
    t.ok(run('show', 'renamed').returncode == 0, 'slash commands work in a piped chat')
    r = run('chat', 'renamed', input='/bogus\nnot reached\n')
    t.ok(r.returncode == 2 and 'echo' not in r.stdout, 'a piped chat stops at a bad command, exit 2')

    # chat on a terminal.
    p = pc.Pty([mistral, 'chat'], env)
    t.ok(p.expect(rb'new session ([0-9a-f]{16})') is not None, 'chat starts a session')
    p.expect(rb'>>> ')
    p.send(b'long prompt\r')
    t.ok(p.expect(rb'reading prompt: \d+/400 tokens') is not None, 'a prefill status line on a terminal')
    t.ok(p.expect(rb'\r\x1b\[K(\x1b\[[0-9;]*m)*echo: long prompt\r\n') is not None,
         'cleared before the reply is printed')
    p.send(b'/set max_tokens 2\r')
    p.expect(rb'>>> ')
    p.send(b'abcdefghijkl\r')
    t.ok(p.expect(rb'echo: \r\n.*\[stopped at max_tokens\]') is not None, 'the max_tokens notice')
    p.send(b'/set max_tokens default\r/system Be nice.\r/clear\r')
    t.ok(p.expect(rb'new session ([0-9a-f]{16})') is not None, '/clear starts a new session')
    p.expect(rb'>>> ')
    p.send(b'/show\r')
    t.ok(p.expect(rb'system\S*\s+Be nice\..*>>> ') is not None, '... with the same system prompt')
    p.send(b'one\r')
    p.expect(rb'echo: one')
    p.send(b'/fork forked\r')
    t.ok(p.expect(rb'forked into session [0-9a-f]{16} \(forked\)') is not None, '/fork NAME')
    p.send(b'/history 2\r')
    t.ok(p.expect(rb'>>> one\x1b\[0m\r\necho: one') is not None, '/history N shows the last turns')
    p.send(b'/switch renamed\r')
    t.ok(p.expect(rb'resuming session ' + sid.encode()) is not None, '/switch by name')
    p.send(b'/export ' + os.path.join(tmp, 'x.json').encode() + b'\r')
    t.ok(p.expect(rb'exported to') is not None and os.path.exists(os.path.join(tmp, 'x.json')), '/export FILE')
    p.send(b'/sessions\r')
    t.ok(p.expect(rb'ID\s+NAME\s+UPDATED.*forked') is not None, '/sessions lists with a header on a terminal')
    p.send(b'/nope\r')
    t.ok(p.expect(rb'mistral: unknown command /nope; /help lists them\r\n>>> ') is not None,
         'an unknown slash command is explained')
    p.send(b'slow and then cancelled\r')
    p.expect(rb'echo: ')
    p.send(b'\x03')
    t.ok(p.expect(rb'\[cancelled\].*>>> ') is not None, 'Ctrl-C cancels a streaming reply')
    p.send(b'die here\r')
    t.ok(p.expect(rb'echo: \r\nmistral: connection to mistrald lost.*reconnect.*>>> ') is not None,
         'daemon gone mid-reply: the line is ended, the error said, the chat goes on')
    p.send(b'back again\r')
    t.ok(p.expect(rb'echo: back again') is not None, 'the next message reconnects')
    p.send(b'/quit\r')
    t.ok(p.wait() == 0, '/quit leaves, exit 0')

    r = run('sessions', extra_env={'NO_COLOR': '1'})
    t.ok('\x1b' not in r.stdout + r.stderr, 'nothing decorated when not a terminal')
    stop_mock(m)
    r = run('sessions')
    t.ok(r.returncode == 3 and 'is mistrald running' in r.stderr, 'no daemon: exit 3 with a hint')


try:
    tests()
except Exception as e:
    t.ok(False, 'raised %r' % e)
finally:
    for p in mocks:
        if p.poll() is None:
            stop_mock(p)
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
