/*
 * cmd-chat.c: "mistral chat", the interactive chat: line editing and
 * history (libedit), multi-line input, streamed replies, slash commands.
 *
 * DESIGN
 *  1. Interactive only when both stdin and stdout are terminals; then the
 *     prompt is libedit's, with the terminal's ISIG turned off while a
 *     line is edited so that Ctrl-C arrives as a key (chat_ctrl_c_fn): on
 *     an empty prompt it leaves, otherwise it drops the line.  While a
 *     reply streams the terminal is back in its normal mode, Ctrl-C is a
 *     SIGINT, and conn_call() turns it into a "cancel" for that reply.
 *  2. Otherwise lines are read plainly from stdin (no prompt, no
 *     decorations), each line or block is one turn, and the first error
 *     ends the chat with its exit status.
 *  3. Multi-line input: a line that is exactly """ opens a block that the
 *     next """ line closes; a line ending in a backslash continues on the
 *     next line.
 *  4. The chat holds the session's id, not what the user typed, so a name
 *     or prefix is resolved once, by the daemon, when the chat starts or
 *     switches.  A connection lost between turns (a daemon restart) is
 *     made again at the next request.
 */
#include <sys/stat.h>

#include <errno.h>
#include <histedit.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define CHAT_RESUME_MESSAGES	6	/* shown when resuming */
#define CHAT_HISTORY_DEFAULT	10	/* /history without N */

struct chat {
	char		 session[64];	/* the current session's id */
	bool		 interactive;
	EditLine	*el;
	History		*hist;
	char		 histfile[PATH_MAX];
	bool		 continuation;	/* prompt "... " */
	bool		 ctrl_c;	/* Ctrl-C typed at the prompt */
	bool		 ctrl_c_empty;	/*  on an empty line */
	int		 status;	/* exit status when leaving */
};

static const char *
chat_prompt_cb(EditLine *el)
{
	struct chat	*chat;

	el_get(el, EL_CLIENTDATA, &chat);
	return chat->continuation ? "... " : ">>> ";
}

static unsigned char
chat_ctrl_c_fn(EditLine *el, int ch)
{
	struct chat	*chat;
	const LineInfo	*li = el_line(el);

	(void)ch;
	el_get(el, EL_CLIENTDATA, &chat);
	chat->ctrl_c = true;
	chat->ctrl_c_empty = li->lastchar == li->buffer;
	return CC_NEWLINE;
}

/* $XDG_STATE_HOME/mistral/history, or ~/.local/state/mistral/history. */
static void
chat_history_path(struct chat *chat)
{
	const char	*state = getenv("XDG_STATE_HOME");
	const char	*home = getenv("HOME");
	char		 dir[PATH_MAX];

	chat->histfile[0] = '\0';
	if (state != NULL && state[0] == '/')
		snprintf(dir, sizeof dir, "%s", state);
	else if (home != NULL && home[0] == '/')
		snprintf(dir, sizeof dir, "%s/.local/state", home);
	else
		return;
	/* Create the missing levels, private to the user. */
	if (home != NULL && (state == NULL || state[0] != '/')) {
		char	up[PATH_MAX];

		snprintf(up, sizeof up, "%s/.local", home);
		mkdir(up, 0700);
	}
	mkdir(dir, 0700);
	if ((size_t)snprintf(chat->histfile, sizeof chat->histfile,
	    "%s/mistral", dir) >= sizeof chat->histfile) {
		chat->histfile[0] = '\0';
		return;
	}
	mkdir(chat->histfile, 0700);
	strncat(chat->histfile, "/history",
	    sizeof chat->histfile - strlen(chat->histfile) - 1);
}

static void
chat_editor_open(struct chat *chat)
{
	HistEvent	ev;

	chat->hist = history_init();
	history(chat->hist, &ev, H_SETSIZE, 1000);
	history(chat->hist, &ev, H_SETUNIQUE, 1);
	chat_history_path(chat);
	if (chat->histfile[0] != '\0')
		history(chat->hist, &ev, H_LOAD, chat->histfile);

	chat->el = el_init("mistral", stdin, stdout, stderr);
	el_set(chat->el, EL_CLIENTDATA, chat);
	el_set(chat->el, EL_EDITOR, "emacs");
	el_set(chat->el, EL_PROMPT, chat_prompt_cb);
	el_set(chat->el, EL_HIST, history, chat->hist);
	el_set(chat->el, EL_SIGNAL, 1);
	el_set(chat->el, EL_SETTY, "-d", "-isig", NULL);
	/* Wide strings: el_set() would copy them and never free the copies. */
	el_wset(chat->el, EL_ADDFN, L"mistral-interrupt",
	    L"cancel the line, or leave on an empty one", chat_ctrl_c_fn);
	el_set(chat->el, EL_BIND, "^C", "mistral-interrupt", NULL);
	el_source(chat->el, NULL);
}

static void
chat_editor_close(struct chat *chat)
{
	HistEvent	ev;

	if (chat->hist != NULL && chat->histfile[0] != '\0')
		history(chat->hist, &ev, H_SAVE, chat->histfile);
	if (chat->el != NULL)
		el_end(chat->el);
	if (chat->hist != NULL)
		history_end(chat->hist);
}

/*
 * One line without its newline, into a malloc'd *line.  Returns 1, 0 at
 * end of input (or Ctrl-D), 2 when Ctrl-C dropped the line, -1 when
 * Ctrl-C on an empty prompt (or SIGINT while reading) means leave.
 */
static int
chat_getline(struct chat *chat, char **line)
{
	const LineInfo	*li;
	const char	*s;
	size_t		 cap = 0;
	ssize_t		 n;
	int		 count;

	*line = NULL;
	if (chat->interactive) {
		chat->ctrl_c = false;
		conn_clear_interrupt();
		s = el_gets(chat->el, &count);
		/*
		 * Ctrl-C comes as a key, or as SIGINT when typed in the moment
		 * before libedit has turned ISIG off (el_gets then fails).
		 */
		if (!chat->ctrl_c && s == NULL && conn_interrupted()) {
			li = el_line(chat->el);
			chat->ctrl_c = true;
			chat->ctrl_c_empty = li->lastchar == li->buffer;
		}
		if (chat->ctrl_c) {
			conn_clear_interrupt();
			if (chat->ctrl_c_empty && !chat->continuation)
				return -1;
			return 2;
		}
		if (s == NULL || count <= 0)
			return 0;
		if ((*line = strdup(s)) == NULL)
			return 0;
		n = (ssize_t)strlen(*line);
	} else {
		n = getline(line, &cap, stdin);
		if (n < 0) {
			free(*line);
			*line = NULL;
			return conn_interrupted() ? -1 : 0;
		}
	}
	if (n > 0 && (*line)[n - 1] == '\n')
		(*line)[--n] = '\0';
	return 1;
}

/* Append s and a newline (unless last) to the growing buffer. */
static int
chat_append(char **buf, size_t *len, const char *s, bool newline)
{
	size_t	 n = strlen(s);
	char	*p;

	if ((p = realloc(*buf, *len + n + 2)) == NULL)
		return -1;
	memcpy(p + *len, s, n);
	*len += n;
	if (newline)
		p[(*len)++] = '\n';
	p[*len] = '\0';
	*buf = p;
	return 0;
}

/*
 * The next input: a line, a """ block, or backslash-continued lines.
 * Returns 1 with *text set, 0 to leave, or 2 to prompt again.
 */
static int
chat_read(struct chat *chat, char **text)
{
	HistEvent	 ev;
	char		*line, *buf = NULL;
	size_t		 len = 0, n;
	bool		 block = false;
	int		 r;

	*text = NULL;
	chat->continuation = false;
	for (;;) {
		r = chat_getline(chat, &line);
		if (r != 1) {
			/* End of input, Ctrl-C, Ctrl-D: drop what was typed. */
			free(buf);
			chat->continuation = false;
			return r == 2 ? 2 : 0;
		}
		n = strlen(line);
		if (!block && !chat->continuation &&
		    strcmp(line, "\"\"\"") == 0) {
			block = true;
			chat->continuation = true;
			free(line);
			continue;
		}
		if (block && strcmp(line, "\"\"\"") == 0) {
			free(line);
			break;
		}
		if (!block && n > 0 && line[n - 1] == '\\') {
			line[n - 1] = '\0';
			chat->continuation = true;
			if (chat_append(&buf, &len, line, true) != 0)
				goto nomem;
			free(line);
			continue;
		}
		if (chat_append(&buf, &len, line, block) != 0)
			goto nomem;
		free(line);
		if (!block)
			break;
	}
	chat->continuation = false;
	if (buf == NULL && (buf = strdup("")) == NULL) {
		client_error("out of memory");
		return 0;
	}
	/* A block's last newline is the closing """ line's, not the text's. */
	if (block && len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if (chat->interactive && len > 0)
		history(chat->hist, &ev, H_ENTER, buf);
	*text = buf;
	return 1;

nomem:
	free(line);
	free(buf);
	client_error("out of memory");
	return 0;
}

/* Make the session info's id the current session. */
static void
chat_switch(struct chat *chat, const msgpack_object *info, const char *how)
{
	char	name[128];

	obj_str(info, "id", chat->session, sizeof chat->session);
	obj_str(info, "name", name, sizeof name);
	if (name[0] != '\0')
		client_info("%s session %s (%s)", how, chat->session, name);
	else
		client_info("%s session %s", how, chat->session);
}

/*
 * session.get for what (an id, prefix or name), with the last n messages
 * (n < 0: none asked).  On success the result is in call->result.
 */
static int
chat_get(const char *what, int n, struct call *call)
{
	struct conn	*c;
	msgpack_packer	*pk;
	int		 status;

	if ((c = client_conn(&status)) == NULL)
		return status;
	pk = conn_request(c, "session.get", 2);
	proto_pack_kv_str(pk, "session", what);
	proto_pack_kv_int(pk, "messages", n < 0 ? 0 : n);
	return client_fail(conn_call(c, call, NULL, NULL), call);
}

/* Resume a session: switch to it and show its last turns. */
static int
chat_resume(struct chat *chat, const char *what)
{
	struct call	call;
	int		status;

	if ((status = chat_get(what, CHAT_RESUME_MESSAGES, &call)) != 0)
		return status;
	chat_switch(chat, call.result, "resuming");
	if (client.tty_out)
		session_messages_print(obj_get(call.result, "messages"));
	return CLIENT_EXIT_OK;
}

/* session.create, optionally copying another session's settings. */
static int
chat_create(struct chat *chat, const char *name, const msgpack_object *like)
{
	static const char *const copy[] = { "system", "params", "window",
	    "n_global", "template" };
	const msgpack_object	*o[5];
	struct call		 call;
	struct conn		*c;
	msgpack_packer		*pk;
	uint32_t		 n = name != NULL;
	size_t			 i;
	int			 status;

	for (i = 0; i < 5; i++) {
		o[i] = like != NULL ? obj_get(like, copy[i]) : NULL;
		n += o[i] != NULL;
	}
	if ((c = client_conn(&status)) == NULL)
		return status;
	pk = conn_request(c, "session.create", n);
	if (name != NULL)
		proto_pack_kv_str(pk, "name", name);
	for (i = 0; i < 5; i++) {
		if (o[i] != NULL) {
			proto_pack_cstr(pk, copy[i]);
			msgpack_pack_object(pk, *o[i]);
		}
	}
	if ((status = client_fail(conn_call(c, &call, NULL, NULL), &call)) != 0)
		return status;
	chat_switch(chat, call.result, "new");
	return CLIENT_EXIT_OK;
}

/*
 * /clear: a new session with the settings of info.  info lives in the
 * connection's buffer until the next call, so it is first copied through
 * a buffer of its own.
 */
static int
chat_clear(struct chat *chat, const msgpack_object *info)
{
	msgpack_sbuffer		sb;
	msgpack_packer		pk;
	msgpack_unpacked	u;
	int			status;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_unpacked_init(&u);
	if (msgpack_pack_object(&pk, *info) != 0 ||
	    proto_decode((const uint8_t *)sb.data, sb.size, &u) != 0) {
		client_error("out of memory");
		status = CLIENT_EXIT_DAEMON;
	} else
		status = chat_create(chat, NULL, &u.data);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	return status;
}

/* session.set on the current session with one argument. */
static int
chat_set(struct chat *chat, const char *key, const char *value,
    const struct params *params)
{
	struct call	 call;
	struct conn	*c;
	msgpack_packer	*pk;
	int		 status;

	if ((c = client_conn(&status)) == NULL)
		return status;
	pk = conn_request(c, "session.set", 2);
	proto_pack_kv_str(pk, "session", chat->session);
	if (params != NULL) {
		proto_pack_cstr(pk, "params");
		params_pack(params, pk);
	} else
		proto_pack_kv_str(pk, key, value);
	return client_fail(conn_call(c, &call, NULL, NULL), &call);
}

/* A slash command used wrongly: one line, and the usage status. */
static int	chat_usage(const char *fmt, ...)
		    __attribute__((format(printf, 1, 2)));

static int
chat_usage(const char *fmt, ...)
{
	char	buf[256];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	client_error("%s", buf);
	return CLIENT_EXIT_USAGE;
}

static void
chat_help(void)
{
	printf("Type a message and press Enter; the reply streams back.\n"
	    "A line of \"\"\" starts and ends a multi-line message; a line "
	    "ending in \\ continues.\nCtrl-C stops a reply; Ctrl-C on an empty "
	    "prompt or Ctrl-D leaves.\n\n"
	    "/sessions           list your sessions\n"
	    "/new [NAME]         start a new session\n"
	    "/switch SESSION     continue another session\n"
	    "/name NAME          rename this session\n"
	    "/system TEXT        set the system prompt\n"
	    "/set KEY VALUE      temperature, top_k, top_p, min_p, "
	    "repeat_penalty,\n"
	    "                    seed, max_tokens or stop (VALUE \"default\" "
	    "resets)\n"
	    "/show               parameters, window, storage\n"
	    "/fork [NAME]        copy this session and continue in the copy\n"
	    "/history [N]        the last N messages (default %d)\n"
	    "/export FILE        write the transcript as JSON\n"
	    "/clear              a fresh session with the same settings\n"
	    "/quit               leave\n", CHAT_HISTORY_DEFAULT);
}

/*
 * Run a slash command.  Returns 1 to leave, 0 to go on; a failure has
 * been reported and sets chat->status.
 */
static int
chat_slash(struct chat *chat, char *line)
{
	struct params	 params = { NULL, 0 };
	struct call	 call;
	struct conn	*c;
	msgpack_packer	*pk;
	char		*cmd = line + 1, *arg, *val, *end;
	long		 n;
	int		 st = CLIENT_EXIT_OK;

	arg = cmd + strcspn(cmd, " \t");
	if (*arg != '\0')
		*arg++ = '\0';
	arg += strspn(arg, " \t");

	if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0 ||
	    strcmp(cmd, "bye") == 0)
		return 1;
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "?") == 0)
		chat_help();
	else if (strcmp(cmd, "sessions") == 0)
		st = session_list_print();
	else if (strcmp(cmd, "new") == 0)
		st = chat_create(chat, *arg != '\0' ? arg : NULL, NULL);
	else if (strcmp(cmd, "switch") == 0) {
		if (*arg == '\0')
			st = chat_usage("usage: /switch SESSION");
		else
			st = chat_resume(chat, arg);
	} else if (strcmp(cmd, "name") == 0) {
		if (*arg == '\0')
			st = chat_usage("usage: /name NAME");
		else
			st = chat_set(chat, "name", arg, NULL);
	} else if (strcmp(cmd, "system") == 0)
		st = chat_set(chat, "system", arg, NULL);
	else if (strcmp(cmd, "set") == 0) {
		val = arg + strcspn(arg, " \t");
		if (*val != '\0')
			*val++ = '\0';
		if (*arg == '\0')
			st = chat_usage("usage: /set KEY VALUE");
		else if (params_add(&params, arg, val) != 0)
			st = CLIENT_EXIT_USAGE;
		else
			st = chat_set(chat, NULL, NULL, &params);
		params_free(&params);
	} else if (strcmp(cmd, "show") == 0) {
		if ((st = chat_get(chat->session, -1, &call)) == 0)
			session_info_print(call.result);
	} else if (strcmp(cmd, "fork") == 0) {
		if ((c = client_conn(&st)) != NULL) {
			pk = conn_request(c, "session.fork",
			    *arg != '\0' ? 2 : 1);
			proto_pack_kv_str(pk, "session", chat->session);
			if (*arg != '\0')
				proto_pack_kv_str(pk, "name", arg);
			st = client_fail(conn_call(c, &call, NULL, NULL),
			    &call);
			if (st == CLIENT_EXIT_OK)
				chat_switch(chat, call.result, "forked into");
		}
	} else if (strcmp(cmd, "history") == 0) {
		n = CHAT_HISTORY_DEFAULT;
		if (*arg != '\0') {
			n = strtol(arg, &end, 10);
			if (*end != '\0' || n <= 0 || n > INT_MAX)
				n = -1;
		}
		if (n < 0)
			st = chat_usage("usage: /history [N]");
		else if ((st = chat_get(chat->session, (int)n, &call)) == 0)
			session_messages_print(obj_get(call.result,
			    "messages"));
	} else if (strcmp(cmd, "export") == 0) {
		if (*arg == '\0')
			st = chat_usage("usage: /export FILE");
		else if ((st = session_export_to(chat->session, arg)) == 0)
			client_info("exported to %s", arg);
	} else if (strcmp(cmd, "clear") == 0) {
		if ((st = chat_get(chat->session, -1, &call)) == 0)
			st = chat_clear(chat, call.result);
	} else
		st = chat_usage("unknown command /%s; /help lists them",
		    cmd);
	if (st != CLIENT_EXIT_OK)
		chat->status = st;
	return 0;
}

/* One turn.  Returns the exit status of the turn. */
static int
chat_turn(struct chat *chat, const char *text)
{
	struct turn		t;
	struct turn_result	tr;
	int			status;

	memset(&t, 0, sizeof t);
	t.method = "chat";
	t.session = chat->session;
	t.text = text;
	t.len = strlen(text);
	t.stream = client.tty_out && !client.json;
	status = turn_run(&t, &tr);
	if (status == CLIENT_EXIT_OK)
		turn_notice(&tr);
	if (chat->interactive)
		fputc('\n', stdout);
	return status;
}

int
cmd_chat(int argc, char **argv)
{
	struct chat	 chat;
	char		*text;
	int		 r, status;

	if (argc > 2)
		return client_usage_error("usage: mistral chat [SESSION]");
	memset(&chat, 0, sizeof chat);
	chat.interactive = client.tty_in && client.tty_out;

	if (argc == 2)
		status = chat_resume(&chat, argv[1]);
	else
		status = chat_create(&chat, NULL, NULL);
	if (status != CLIENT_EXIT_OK)
		return status;
	if (chat.interactive) {
		chat_editor_open(&chat);
		client_info("/help for help, Ctrl-D or /quit to leave");
	}

	for (;;) {
		fflush(stdout);
		r = chat_read(&chat, &text);
		if (r == 0)
			break;
		if (r == 2) {
			if (chat.interactive)
				fputs("^C\n", stdout);
			continue;
		}
		if (text[0] == '/' && text[1] != '/' && text[1] != '\0' &&
		    text[1] != ' ') {
			r = chat_slash(&chat, text);
			free(text);
			if (r != 0)
				break;
			if (!chat.interactive && chat.status != 0)
				break;
			continue;
		}
		if (text[0] == '\0') {
			free(text);
			continue;
		}
		/* "//..." sends a message that starts with a slash. */
		status = chat_turn(&chat, text[0] == '/' ? text + 1 : text);
		free(text);
		if (status == CLIENT_EXIT_UNREACHABLE && chat.interactive)
			client_info("the next message will try to reconnect");
		if (status != CLIENT_EXIT_OK) {
			chat.status = status;
			if (!chat.interactive)
				break;
		}
	}
	if (chat.interactive) {
		chat_editor_close(&chat);
		return CLIENT_EXIT_OK;
	}
	if (conn_interrupted())
		return CLIENT_EXIT_INTERRUPTED;
	return chat.status;
}
