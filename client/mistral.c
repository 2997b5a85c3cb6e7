/*
 * mistral.c: the mistral client's entry point: global options, the
 * command table, the connection (with the protocol handshake) and the
 * one-line error reporting every command shares.
 *
 * Exit statuses: 0 success, 1 the daemon reported an error, 2 usage,
 * 3 the daemon cannot be reached (or went away), 130 interrupted.
 */
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "client.h"

struct client	client;

static const struct cmd_entry {
	const char	*name;
	int		(*fn)(int, char **);
	const char	*usage;
} cmd_table[] = {
	{ "chat", cmd_chat, "chat [SESSION]" },
	{ "send", cmd_send, "send [--set KEY=VALUE]... SESSION [TEXT...]" },
	{ "generate", cmd_generate,
	    "generate [-s SESSION] [--set KEY=VALUE]... [PROMPT...]" },
	{ "sessions", cmd_sessions, "sessions [--all]" },
	{ "show", cmd_show, "show SESSION" },
	{ "new", cmd_new,
	    "new [NAME] [--system TEXT] [--set KEY=VALUE]..." },
	{ "rm", cmd_rm, "rm SESSION..." },
	{ "rename", cmd_rename, "rename SESSION NAME" },
	{ "fork", cmd_fork, "fork SESSION [NAME]" },
	{ "export", cmd_export, "export SESSION [FILE]" },
	{ "import", cmd_import, "import [--name NAME] FILE" },
	{ "status", cmd_status, "status" },
	{ "tokenize", cmd_tokenize, "tokenize [--bos] TEXT..." },
};
#define NCMDS (sizeof cmd_table / sizeof cmd_table[0])

static void
usage(FILE *fp)
{
	size_t	i;

	fprintf(fp, "usage: mistral [-q] [--json] [-s SOCKET] COMMAND "
	    "[ARGS]\n       mistral --version | --help\ncommands:\n");
	for (i = 0; i < NCMDS; i++)
		fprintf(fp, "  mistral %s\n", cmd_table[i].usage);
	fprintf(fp, "A SESSION is an id, a unique id prefix or a name.  "
	    "See mistral(1).\n");
}

void
client_error(const char *fmt, ...)
{
	va_list	ap;

	fflush(stdout);
	fputs("mistral: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
client_info(const char *fmt, ...)
{
	va_list	ap;

	if (client.quiet || client.json)
		return;
	fputs(c_dim(), stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", c_off());
}

int
client_usage_error(const char *fmt, ...)
{
	va_list	ap;

	fputs("mistral: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see mistral --help)\n", stderr);
	return CLIENT_EXIT_USAGE;
}

int
client_fail(int status, const struct call *call)
{
	switch (status) {
	case CLIENT_EXIT_OK:
		break;
	case CLIENT_EXIT_INTERRUPTED:
		break;
	case CLIENT_EXIT_UNREACHABLE:
		client_error("%s (socket %s)", call->message, client.socket);
		break;
	default:
		client_error("%s", call->message);
		break;
	}
	return status;
}

/* Say hello: check the protocol's major version. */
static int
client_hello(struct conn *c)
{
	struct call	 call;
	msgpack_packer	*pk;
	int		 status;

	pk = conn_request(c, "hello", 2);
	proto_pack_cstr(pk, "proto");
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, PROTO_VERSION_MAJOR);
	msgpack_pack_uint32(pk, PROTO_VERSION_MINOR);
	proto_pack_kv_str(pk, "client", "mistral " PACKAGE_VERSION);
	status = conn_call(c, &call, NULL, NULL);
	if (status == CLIENT_EXIT_DAEMON &&
	    call.code == PROTO_E_VERSION_MISMATCH) {
		client_error("mistrald at %s speaks an incompatible protocol: "
		    "%s (this client speaks %d.%d)", client.socket,
		    call.message, PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
		return status;
	}
	return client_fail(status, &call);
}

struct conn *
client_conn(int *status)
{
	char	cause[256];
	int	r;

	if (conn_alive(client.conn))
		return client.conn;
	/* A connection lost earlier (a daemon restart) is made again. */
	conn_close(client.conn);
	client.conn = NULL;
	r = conn_open(client.socket, &client.conn, cause, sizeof cause);
	if (r != 0) {
		client_error("%s", cause);
		if (r == -ENOENT || r == -ECONNREFUSED)
			fprintf(stderr, "mistral: is mistrald running?  Start "
			    "it with 'mistrald -m MODEL' (or 'systemctl start "
			    "mistrald'), or name its socket with -s or "
			    "$MISTRALD_SOCKET.\n");
		*status = CLIENT_EXIT_UNREACHABLE;
		return NULL;
	}
	if ((*status = client_hello(client.conn)) != CLIENT_EXIT_OK) {
		conn_close(client.conn);
		client.conn = NULL;
		return NULL;
	}
	return client.conn;
}

int
main(int argc, char **argv)
{
	static const struct option	 opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char	*sock = NULL, *term;
	size_t		 i;
	int		 ch, status;

	setlocale(LC_CTYPE, "");
	while ((ch = getopt_long(argc, argv, "+s:qhV", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			sock = optarg;
			break;
		case 'j':
			client.json = true;
			break;
		case 'q':
			client.quiet = true;
			break;
		case 'V':
			printf("mistral %s (protocol %d.%d)\n", PACKAGE_VERSION,
			    PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
			return CLIENT_EXIT_OK;
		case 'h':
			usage(stdout);
			return CLIENT_EXIT_OK;
		default:
			usage(stderr);
			return CLIENT_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stderr);
		return CLIENT_EXIT_USAGE;
	}

	if (sock != NULL) {
		if (strlen(sock) >= sizeof client.socket)
			return client_usage_error("socket path too long: %s",
			    sock);
		strcpy(client.socket, sock);
	} else if (proto_socket_path(client.socket, sizeof client.socket) != 0)
		return client_usage_error("the socket path from $%s or "
		    "$XDG_RUNTIME_DIR is too long", PROTO_SOCKET_ENV);

	client.tty_in = isatty(STDIN_FILENO);
	client.tty_out = isatty(STDOUT_FILENO);
	client.tty_err = isatty(STDERR_FILENO);
	term = getenv("TERM");
	client.color = client.tty_out && client.tty_err &&
	    getenv("NO_COLOR") == NULL && term != NULL &&
	    strcmp(term, "dumb") != 0;
	conn_signals();

	for (i = 0; i < NCMDS; i++) {
		if (strcmp(argv[0], cmd_table[i].name) == 0)
			break;
	}
	if (i == NCMDS)
		return client_usage_error("unknown command '%s'", argv[0]);
	optind = 0;	/* let the command parse its own options */
	status = cmd_table[i].fn(argc, argv);
	conn_close(client.conn);
	/*
	 * Output lost on the way to a file or a pipe must not pass for
	 * success.  (On a terminal a SIGINT can interrupt a write, which
	 * stdio records as an error; nothing is lost that matters.)
	 */
	if (!client.tty_out && (fflush(stdout) != 0 || ferror(stdout))) {
		client_error("write error on standard output");
		if (status == CLIENT_EXIT_OK)
			status = CLIENT_EXIT_DAEMON;
	}
	return status;
}
