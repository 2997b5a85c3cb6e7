/*
 * cmd-session.c: the session commands: sessions, show, new, rm, rename,
 * fork, export, import, and the listing and transcript printers the
 * chat's slash commands share.
 *
 * Output rules: on a terminal, aligned columns with a header; otherwise
 * tab-separated fields and no header; with --json, one JSON object per
 * line.  Commands that create a session print its id alone, so that
 * S=$(mistral new) works.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* Largest JSON file import reads: a message's own limit. */
#define SESSION_IMPORT_MAX	PROTO_MAX_MESSAGE

/* Make one call with nothing streamed; returns CLIENT_EXIT_*. */
static int
session_call(msgpack_packer *(*pack)(struct conn *, void *), void *arg,
    struct call *call)
{
	struct conn	*c;
	int		 status;

	if ((c = client_conn(&status)) == NULL)
		return status;
	pack(c, arg);
	return client_fail(conn_call(c, call, NULL, NULL), call);
}

static void
session_print_row(const msgpack_object *info)
{
	char	id[64], name[128], state[32], when[32];
	int64_t	turns = obj_int(info, "turns", 0);
	int64_t	tokens = obj_int(info, "tokens", 0);

	obj_str(info, "id", id, sizeof id);
	obj_str(info, "name", name, sizeof name);
	obj_str(info, "state", state, sizeof state);
	fmt_time(obj_int(info, "updated", 0), when, sizeof when);
	if (name[0] == '\0')
		strcpy(name, "-");
	if (client.tty_out)
		printf("%-16s  %-20s  %-16s  %5" PRId64 "  %7" PRId64 "  %s\n",
		    id, name, when, turns, tokens, state);
	else
		printf("%s\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%s\n", id, name,
		    when, turns, tokens, state);
}

static msgpack_packer *
session_pack_list(struct conn *c, void *arg)
{
	const bool	*all = arg;
	msgpack_packer	*pk;

	pk = conn_request(c, "session.list", *all ? 1 : 0);
	if (*all)
		proto_pack_kv_bool(pk, "all", true);
	return pk;
}

static int
session_list(bool all)
{
	struct call		 call;
	const msgpack_object	*list;
	uint32_t		 i;
	int			 status;

	if ((status = session_call(session_pack_list, &all, &call)) != 0)
		return status;
	if (proto_arg_array(call.result, "sessions", &list) != PROTO_ARG_OK) {
		client_error("malformed reply from mistrald");
		return CLIENT_EXIT_DAEMON;
	}
	if (client.tty_out && !client.json && list->via.array.size > 0)
		printf("%s%-16s  %-20s  %-16s  %5s  %7s  %s%s\n", c_bold(),
		    "ID", "NAME", "UPDATED", "TURNS", "TOKENS", "STATE",
		    c_off());
	for (i = 0; i < list->via.array.size; i++) {
		if (client.json) {
			json_write(stdout, &list->via.array.ptr[i], false);
			fputc('\n', stdout);
		} else
			session_print_row(&list->via.array.ptr[i]);
	}
	if (list->via.array.size == 0 && client.tty_out && !client.json)
		client_info("no sessions yet: start one with 'mistral chat'");
	return CLIENT_EXIT_OK;
}

int
session_list_print(void)
{
	return session_list(false);
}

int
cmd_sessions(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 }
	};
	bool	all = false;
	int	ch;

	while ((ch = getopt_long(argc, argv, "a", opts, NULL)) != -1) {
		if (ch != 'a')
			return client_usage_error("usage: mistral sessions "
			    "[--all]");
		all = true;
	}
	if (optind != argc)
		return client_usage_error("usage: mistral sessions [--all]");
	return session_list(all);
}

/* "temperature=0.8 top_k=40 stop=["\n"]" from a params map. */
static void
session_params_print(const msgpack_object *params)
{
	const msgpack_object_kv	*kv;
	uint32_t		 i;

	if (params == NULL || params->type != MSGPACK_OBJECT_MAP) {
		fputs("(defaults)", stdout);
		return;
	}
	for (i = 0; i < params->via.map.size; i++) {
		kv = &params->via.map.ptr[i];
		if (i > 0)
			fputc(' ', stdout);
		if (kv->key.type == MSGPACK_OBJECT_STR)
			fwrite(kv->key.via.str.ptr, 1, kv->key.via.str.size,
			    stdout);
		fputc('=', stdout);
		json_write(stdout, &kv->val, false);
	}
}

void
session_info_print(const msgpack_object *info)
{
	char	s[256], t1[32], t2[32], b1[32], b2[32], mode[16], sys[1024];

	obj_str(info, "id", s, sizeof s);
	printf("%ssession%s   %s", c_bold(), c_off(), s);
	obj_str(info, "name", s, sizeof s);
	if (s[0] != '\0')
		printf(" (%s)", s);
	obj_str(info, "state", s, sizeof s);
	printf("  %s\n", s);
	printf("%screated%s   %s, updated %s\n", c_bold(), c_off(),
	    fmt_time(obj_int(info, "created", 0), t1, sizeof t1),
	    fmt_time(obj_int(info, "updated", 0), t2, sizeof t2));
	obj_str(info, "mode", mode, sizeof mode);
	printf("%stokens%s    %" PRId64 " in %" PRId64 " turns; %" PRId64
	    " visible in a window of %" PRId64 " (+%" PRId64 " global), %s\n",
	    c_bold(), c_off(), obj_int(info, "tokens", 0),
	    obj_int(info, "turns", 0), obj_int(info, "in_window", 0),
	    obj_int(info, "window", 0), obj_int(info, "n_global", 0),
	    mode[0] != '\0' ? mode : "exact");
	printf("%sparams%s    ", c_bold(), c_off());
	session_params_print(obj_get(info, "params"));
	fputc('\n', stdout);
	obj_str(info, "template", s, sizeof s);
	if (s[0] != '\0')
		printf("%stemplate%s  %s\n", c_bold(), c_off(), s);
	obj_str(info, "system", sys, sizeof sys);
	if (sys[0] != '\0') {
		printf("%ssystem%s    ", c_bold(), c_off());
		put_escaped(stdout, sys, strlen(sys));
		fputc('\n', stdout);
	}
	printf("%sstorage%s   %s on disk, %s in memory\n", c_bold(), c_off(),
	    fmt_bytes((uint64_t)obj_int(info, "bytes_disk", 0), b1, sizeof b1),
	    fmt_bytes((uint64_t)obj_int(info, "bytes_memory", 0), b2,
	    sizeof b2));
}

/*
 * The transcript as the chat showed it: user turns after ">>> ", replies
 * as they are; raw generate text as it is (the prompt dimmed).
 */
void
session_messages_print(const msgpack_object *messages)
{
	const msgpack_object	*m;
	const char		*role, *text;
	size_t			 rlen, tlen;
	uint32_t		 i;

	if (messages == NULL || messages->type != MSGPACK_OBJECT_ARRAY)
		return;
	for (i = 0; i < messages->via.array.size; i++) {
		m = &messages->via.array.ptr[i];
		if (proto_arg_str(m, "role", &role, &rlen) != PROTO_ARG_OK ||
		    proto_arg_str(m, "text", &text, &tlen) != PROTO_ARG_OK)
			continue;
		if (rlen == 4 && memcmp(role, "user", 4) == 0)
			printf("%s>>> ", c_bold());
		else if (rlen == 6 && memcmp(role, "system", 6) == 0)
			printf("%ssystem: ", c_dim());
		else if (rlen == 6 && memcmp(role, "prompt", 6) == 0)
			fputs(c_dim(), stdout);
		put_text(stdout, text, tlen);
		fputs(c_off(), stdout);
		if (rlen == 6 && memcmp(role, "prompt", 6) == 0)
			continue;	/* its completion follows on */
		if (tlen == 0 || text[tlen - 1] != '\n')
			fputc('\n', stdout);
		if (rlen == 9 && memcmp(role, "assistant", 9) == 0)
			fputc('\n', stdout);
	}
	fflush(stdout);
}

static msgpack_packer *
session_pack_one(struct conn *c, void *arg)
{
	const char	**a = arg;	/* method, session */
	msgpack_packer	*pk;

	pk = conn_request(c, a[0], 1);
	proto_pack_kv_str(pk, "session", a[1]);
	return pk;
}

int
cmd_show(int argc, char **argv)
{
	struct call	 call;
	const char	*a[2] = { "session.get", NULL };
	int		 status;

	if (argc != 2)
		return client_usage_error("usage: mistral show SESSION");
	a[1] = argv[1];
	if ((status = session_call(session_pack_one, a, &call)) != 0)
		return status;
	if (client.json) {
		json_write(stdout, call.result, false);
		fputc('\n', stdout);
		return CLIENT_EXIT_OK;
	}
	if (client.tty_out) {
		session_info_print(call.result);
		fputc('\n', stdout);
	}
	session_messages_print(obj_get(call.result, "messages"));
	return CLIENT_EXIT_OK;
}

/* Print a session-info result: its id, or the whole map with --json. */
static void
session_print_created(const msgpack_object *info)
{
	char	id[64], name[128];

	if (client.json) {
		json_write(stdout, info, false);
		fputc('\n', stdout);
		return;
	}
	printf("%s\n", obj_str(info, "id", id, sizeof id));
	obj_str(info, "name", name, sizeof name);
	if (client.tty_out && name[0] != '\0')
		client_info("session %s is named '%s'", id, name);
}

struct session_new {
	const char		*name;
	const char		*system;
	const struct params	*params;
};

static msgpack_packer *
session_pack_new(struct conn *c, void *arg)
{
	const struct session_new	*n = arg;
	msgpack_packer			*pk;

	pk = conn_request(c, "session.create", (n->name != NULL) +
	    (n->system != NULL) + (n->params->n > 0));
	if (n->name != NULL)
		proto_pack_kv_str(pk, "name", n->name);
	if (n->system != NULL)
		proto_pack_kv_str(pk, "system", n->system);
	if (n->params->n > 0) {
		proto_pack_cstr(pk, "params");
		params_pack(n->params, pk);
	}
	return pk;
}

int
cmd_new(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "system", required_argument, NULL, 'S' },
		{ "set", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	struct params		params = { NULL, 0 };
	struct session_new	n = { NULL, NULL, &params };
	struct call		call;
	int			ch, status;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'S':
			n.system = optarg;
			break;
		case 'p':
			if (params_add_kv(&params, optarg) != 0) {
				params_free(&params);
				return CLIENT_EXIT_USAGE;
			}
			break;
		default:
			params_free(&params);
			return client_usage_error("usage: mistral new [NAME] "
			    "[--system TEXT] [--set KEY=VALUE]...");
		}
	}
	if (argc - optind > 1) {
		params_free(&params);
		return client_usage_error("usage: mistral new [NAME] "
		    "[--system TEXT] [--set KEY=VALUE]...");
	}
	if (optind < argc)
		n.name = argv[optind];
	status = session_call(session_pack_new, &n, &call);
	if (status == CLIENT_EXIT_OK)
		session_print_created(call.result);
	params_free(&params);
	return status;
}

int
cmd_rm(int argc, char **argv)
{
	struct call	 call;
	const char	*a[2] = { "session.delete", NULL };
	char		 id[64];
	int		 i, status, worst = CLIENT_EXIT_OK;

	if (argc < 2)
		return client_usage_error("usage: mistral rm SESSION...");
	for (i = 1; i < argc; i++) {
		a[1] = argv[i];
		status = session_call(session_pack_one, a, &call);
		if (status == CLIENT_EXIT_UNREACHABLE ||
		    status == CLIENT_EXIT_INTERRUPTED)
			return status;
		if (status != CLIENT_EXIT_OK) {
			worst = status;
			continue;
		}
		if (client.json) {
			fputs("{\"id\":", stdout);
			if (obj_get(call.result, "id") != NULL)
				json_write(stdout, obj_get(call.result, "id"),
				    false);
			else
				fputs("null", stdout);
			fputs(",\"deleted\":true}\n", stdout);
		} else if (client.tty_out)
			client_info("deleted %s", obj_str(call.result, "id",
			    id, sizeof id));
	}
	return worst;
}

struct session_set {
	const char	*session;
	const char	*key;
	const char	*value;
};

static msgpack_packer *
session_pack_set(struct conn *c, void *arg)
{
	const struct session_set	*s = arg;
	msgpack_packer			*pk;

	pk = conn_request(c, "session.set", 2);
	proto_pack_kv_str(pk, "session", s->session);
	proto_pack_kv_str(pk, s->key, s->value);
	return pk;
}

int
cmd_rename(int argc, char **argv)
{
	struct session_set	s;
	struct call		call;
	int			status;

	if (argc != 3)
		return client_usage_error("usage: mistral rename SESSION NAME");
	s.session = argv[1];
	s.key = "name";
	s.value = argv[2];
	if ((status = session_call(session_pack_set, &s, &call)) != 0)
		return status;
	if (client.json) {
		json_write(stdout, call.result, false);
		fputc('\n', stdout);
	}
	return CLIENT_EXIT_OK;
}

static msgpack_packer *
session_pack_fork(struct conn *c, void *arg)
{
	const char	**a = arg;	/* session, name or NULL */
	msgpack_packer	*pk;

	pk = conn_request(c, "session.fork", a[1] != NULL ? 2 : 1);
	proto_pack_kv_str(pk, "session", a[0]);
	if (a[1] != NULL)
		proto_pack_kv_str(pk, "name", a[1]);
	return pk;
}

int
cmd_fork(int argc, char **argv)
{
	struct call	 call;
	const char	*a[2];
	int		 status;

	if (argc < 2 || argc > 3)
		return client_usage_error("usage: mistral fork SESSION [NAME]");
	a[0] = argv[1];
	a[1] = argc == 3 ? argv[2] : NULL;
	if ((status = session_call(session_pack_fork, a, &call)) != 0)
		return status;
	session_print_created(call.result);
	return CLIENT_EXIT_OK;
}

int
session_export_to(const char *session, const char *file)
{
	struct call	 call;
	const char	*a[2] = { "session.export", session };
	char		*data = NULL;
	size_t		 len = 0;
	FILE		*mem;
	int		 status;

	if ((status = session_call(session_pack_one, a, &call)) != 0)
		return status;
	if (file == NULL || strcmp(file, "-") == 0) {
		json_write(stdout, call.result, !client.json);
		fputc('\n', stdout);
		return CLIENT_EXIT_OK;
	}
	if ((mem = open_memstream(&data, &len)) == NULL) {
		client_error("out of memory");
		return CLIENT_EXIT_DAEMON;
	}
	json_write(mem, call.result, true);
	fputc('\n', mem);
	fclose(mem);
	if (write_file_atomic(file, data, len) != 0) {
		client_error("%s: %s", file, strerror(errno));
		free(data);
		return CLIENT_EXIT_DAEMON;
	}
	free(data);
	return CLIENT_EXIT_OK;
}

int
cmd_export(int argc, char **argv)
{
	if (argc < 2 || argc > 3)
		return client_usage_error("usage: mistral export SESSION "
		    "[FILE]");
	return session_export_to(argv[1], argc == 3 ? argv[2] : NULL);
}

static void
session_import_cb(const struct proto_msg *m, void *arg)
{
	(void)arg;
	if (!client.tty_err || client.quiet || client.json ||
	    m->method_len != strlen(PROTO_N_PROGRESS) ||
	    memcmp(m->method, PROTO_N_PROGRESS, m->method_len) != 0)
		return;
	fprintf(stderr, "\r%sreading transcript: %" PRId64 "/%" PRId64
	    " tokens%s\033[K", c_dim(), obj_int(m->args, "done", 0),
	    obj_int(m->args, "total", 0), c_off());
	fflush(stderr);
}

int
cmd_import(int argc, char **argv)
{
	static const struct option	opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	struct call	 call;
	struct conn	*c;
	msgpack_packer	*pk;
	const char	*name = NULL, *file;
	char		*text, err[256];
	size_t		 len;
	FILE		*fp;
	int		 ch, status;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'n')
			return client_usage_error("usage: mistral import "
			    "[--name NAME] FILE");
		name = optarg;
	}
	if (argc - optind != 1)
		return client_usage_error("usage: mistral import [--name NAME] "
		    "FILE");
	file = argv[optind];
	fp = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	if (fp == NULL) {
		client_error("%s: %s", file, strerror(errno));
		return CLIENT_EXIT_DAEMON;
	}
	text = read_all(fp, SESSION_IMPORT_MAX, &len);
	if (fp != stdin)
		fclose(fp);
	if (text == NULL) {
		client_error("%s: %s", file, errno == EFBIG ?
		    "too large to import" : strerror(errno));
		return CLIENT_EXIT_DAEMON;
	}
	if ((c = client_conn(&status)) == NULL) {
		free(text);
		return status;
	}
	pk = conn_request(c, "session.import", name != NULL ? 2 : 1);
	proto_pack_cstr(pk, "document");
	if (json_pack(text, len, pk, err, sizeof err) != 0) {
		free(text);
		client_error("%s: %s", file, err);
		return CLIENT_EXIT_DAEMON;
	}
	free(text);
	if (name != NULL)
		proto_pack_kv_str(pk, "name", name);
	status = conn_call(c, &call, session_import_cb, NULL);
	if (client.tty_err && !client.quiet && !client.json)
		fputs("\r\033[K", stderr);
	if (status != CLIENT_EXIT_OK)
		return client_fail(status, &call);
	session_print_created(call.result);
	return CLIENT_EXIT_OK;
}
