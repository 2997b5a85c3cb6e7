/*
 * cmd-send.c: the one-shot commands: send (one chat turn), generate (raw
 * completion), status and tokenize.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* Longest text read from standard input: a string's own limit. */
#define SEND_STDIN_MAX	PROTO_MAX_STR

/*
 * The text of a turn: the arguments joined by spaces, or standard input
 * (without one trailing newline, which echo and here-documents add).
 * Returns a malloc'd string or NULL after a message.
 */
static char *
send_text(int argc, char **argv, size_t *len, int *status)
{
	char	*text;
	size_t	 n = 0;
	int	 i;

	if (argc > 0) {
		for (i = 0; i < argc; i++)
			n += strlen(argv[i]) + 1;
		if ((text = malloc(n)) == NULL) {
			client_error("out of memory");
			*status = CLIENT_EXIT_DAEMON;
			return NULL;
		}
		text[0] = '\0';
		for (i = 0; i < argc; i++) {
			if (i > 0)
				strcat(text, " ");
			strcat(text, argv[i]);
		}
		*len = strlen(text);
		return text;
	}
	text = read_all(stdin, SEND_STDIN_MAX, len);
	if (text == NULL) {
		if (conn_interrupted()) {
			*status = CLIENT_EXIT_INTERRUPTED;
			return NULL;
		}
		client_error("standard input: %s", errno == EFBIG ?
		    "too long" : strerror(errno));
		*status = CLIENT_EXIT_DAEMON;
		return NULL;
	}
	if (*len > 0 && text[*len - 1] == '\n')
		text[--*len] = '\0';
	return text;
}

/* Run a chat or generate turn and map its end to an exit status. */
static int
send_turn(struct turn *t)
{
	struct turn_result	tr;
	int			status;

	t->stream = client.tty_out && !client.json;
	status = turn_run(t, &tr);
	if (status != CLIENT_EXIT_OK)
		return status;
	turn_notice(&tr);
	if (strcmp(tr.finish, "cancelled") == 0)
		return CLIENT_EXIT_INTERRUPTED;
	return CLIENT_EXIT_OK;
}

int
cmd_send(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "set", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	struct params	params = { NULL, 0 };
	struct turn	t;
	char		*text;
	int		 ch, status = CLIENT_EXIT_USAGE;

	memset(&t, 0, sizeof t);
	while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (ch != 'p')
			goto usage;
		if (params_add_kv(&params, optarg) != 0)
			goto out;
	}
	if (optind >= argc)
		goto usage;
	t.method = "chat";
	t.session = argv[optind];
	t.params = &params;
	if ((text = send_text(argc - optind - 1, argv + optind + 1, &t.len,
	    &status)) == NULL)
		goto out;
	if (t.len == 0) {
		free(text);
		status = client_usage_error("nothing to send");
		goto out;
	}
	t.text = text;
	status = send_turn(&t);
	free(text);
	goto out;

usage:
	status = client_usage_error("usage: mistral send [--set KEY=VALUE]... "
	    "SESSION [TEXT...]");
out:
	params_free(&params);
	return status;
}

int
cmd_generate(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "session", required_argument, NULL, 's' },
		{ "set", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	struct params	params = { NULL, 0 };
	struct turn	t;
	char		*text = NULL;
	int		 ch, status = CLIENT_EXIT_USAGE;

	memset(&t, 0, sizeof t);
	t.method = "generate";
	t.params = &params;
	while ((ch = getopt_long(argc, argv, "+s:", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			t.session = optarg;
			break;
		case 'p':
			if (params_add_kv(&params, optarg) != 0)
				goto out;
			break;
		default:
			status = client_usage_error("usage: mistral generate "
			    "[-s SESSION] [--set KEY=VALUE]... [PROMPT...]");
			goto out;
		}
	}
	if (optind < argc || !client.tty_in) {
		if ((text = send_text(argc - optind, argv + optind, &t.len,
		    &status)) == NULL)
			goto out;
	} else if (t.session == NULL) {
		status = client_usage_error("generate needs a PROMPT (or a "
		    "session to continue)");
		goto out;
	}
	t.text = text != NULL ? text : "";
	status = send_turn(&t);
out:
	free(text);
	params_free(&params);
	return status;
}

/* One "label  value" line of the status report. */
static void
status_line(const char *label, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
status_line(const char *label, const char *fmt, ...)
{
	va_list	ap;

	printf("%s%-10s%s", c_bold(), label, c_off());
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

static void
status_print(const msgpack_object *r)
{
	const msgpack_object	*model = obj_get(r, "model");
	const msgpack_object	*o;
	const char		*p;
	char			 s[256], s2[64], s3[64], b1[32], b2[32], b3[32];
	int64_t			 up = obj_int(r, "uptime", 0);
	size_t			 len;

	status_line("server", "%s, up %" PRId64 "h%02" PRId64 "m%02" PRId64
	    "s", obj_str(r, "server", s, sizeof s), up / 3600, up / 60 % 60,
	    up % 60);
	status_line("model", "%s (%s, %s, %.2fB parameters)%s",
	    obj_str(model, "name", s, sizeof s),
	    obj_str(model, "arch", s2, sizeof s2),
	    obj_str(model, "file_type", s3, sizeof s3),
	    (double)obj_int(model, "params", 0) / 1e9,
	    obj_bool(model, "demo", false) ? " [demo model, random weights]" :
	    "");
	/* Present once the model file was damaged under the daemon, which
	 * then refuses every turn: the line a person most needs.  It names a
	 * file, so control characters are shown escaped. */
	if (proto_arg_str(r, "model_error", &p, &len) == PROTO_ARG_OK) {
		printf("%s%-10s%s", c_bold(), "error", c_off());
		put_escaped(stdout, p, len);
		fputc('\n', stdout);
	}
	status_line("context", "window %" PRId64 ", template %s",
	    obj_int(model, "window", 0),
	    obj_str(model, "template", s, sizeof s));
	o = obj_get(r, "sessions");
	status_line("sessions", "%" PRId64 " resident, %" PRId64 " stored, %"
	    PRId64 " active; %" PRId64 " connections",
	    obj_int(o, "resident", 0), obj_int(o, "stored", 0),
	    obj_int(o, "active", 0), obj_int(r, "connections", 0));
	o = obj_get(r, "memory");
	status_line("memory", "KV caches %s of %s; process %s",
	    fmt_bytes((uint64_t)obj_int(o, "kv_bytes", 0), b1, sizeof b1),
	    fmt_bytes((uint64_t)obj_int(o, "kv_budget", 0), b2, sizeof b2),
	    fmt_bytes((uint64_t)obj_int(o, "rss", 0), b3, sizeof b3));
	o = obj_get(r, "disk");
	status_line("disk", "%s; %" PRId64 " sessions awaiting a snapshot, "
	    "last at %s",
	    fmt_bytes((uint64_t)obj_int(o, "bytes", 0), b1, sizeof b1),
	    obj_int(o, "snapshot_lag", 0),
	    fmt_time(obj_int(o, "last_snapshot", 0), s, sizeof s));
	o = obj_get(r, "throughput");
	status_line("speed", "prefill %.1f tokens/s, decode %.1f tokens/s",
	    obj_double(o, "prefill_tps", 0), obj_double(o, "decode_tps", 0));
	o = obj_get(r, "queue");
	status_line("queue", "%" PRId64 " waiting, %" PRId64 " running",
	    obj_int(o, "waiting", 0), obj_int(o, "running", 0));
	if (obj_str(r, "kernels", s, sizeof s)[0] != '\0')
		status_line("kernels", "%s", s);
}

int
cmd_status(int argc, char **argv)
{
	struct call	 call;
	struct conn	*c;
	int		 status;

	(void)argv;
	if (argc != 1)
		return client_usage_error("usage: mistral status");
	if ((c = client_conn(&status)) == NULL)
		return status;
	conn_request(c, "status", 0);
	if ((status = conn_call(c, &call, NULL, NULL)) != CLIENT_EXIT_OK)
		return client_fail(status, &call);
	if (client.json) {
		json_write(stdout, call.result, false);
		fputc('\n', stdout);
	} else
		status_print(call.result);
	return CLIENT_EXIT_OK;
}

int
cmd_tokenize(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "bos", no_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 }
	};
	const msgpack_object	*ids, *pieces = NULL;
	const msgpack_object	*p;
	struct call		 call;
	struct conn		*c;
	msgpack_packer		*pk;
	char			*text;
	size_t			 len;
	uint32_t		 i;
	bool			 bos = false;
	int			 ch, status = CLIENT_EXIT_USAGE;

	while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (ch != 'b')
			return client_usage_error("usage: mistral tokenize "
			    "[--bos] TEXT...");
		bos = true;
	}
	if (optind >= argc && client.tty_in)
		return client_usage_error("usage: mistral tokenize [--bos] "
		    "TEXT...");
	if ((text = send_text(argc - optind, argv + optind, &len,
	    &status)) == NULL)
		return status;
	if ((c = client_conn(&status)) == NULL) {
		free(text);
		return status;
	}
	pk = conn_request(c, "tokenize", 2);
	proto_pack_cstr(pk, "text");
	proto_pack_str(pk, text, len);
	proto_pack_kv_bool(pk, "bos", bos);
	free(text);
	if ((status = conn_call(c, &call, NULL, NULL)) != CLIENT_EXIT_OK)
		return client_fail(status, &call);
	if (client.json) {
		json_write(stdout, call.result, false);
		fputc('\n', stdout);
		return CLIENT_EXIT_OK;
	}
	if (proto_arg_array(call.result, "ids", &ids) != PROTO_ARG_OK) {
		client_error("malformed reply from mistrald");
		return CLIENT_EXIT_DAEMON;
	}
	if (proto_arg_array(call.result, "pieces", &pieces) != PROTO_ARG_OK ||
	    pieces->via.array.size != ids->via.array.size)
		pieces = NULL;
	for (i = 0; i < ids->via.array.size; i++) {
		json_write(stdout, &ids->via.array.ptr[i], false);
		if (pieces != NULL) {
			p = &pieces->via.array.ptr[i];
			fputc('\t', stdout);
			if (p->type == MSGPACK_OBJECT_STR)
				put_escaped(stdout, p->via.str.ptr,
				    p->via.str.size);
		}
		fputc('\n', stdout);
	}
	if (client.tty_out)
		client_info("%" PRIu32 " tokens", ids->via.array.size);
	return CLIENT_EXIT_OK;
}
