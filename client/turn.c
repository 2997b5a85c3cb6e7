/*
 * turn.c: one chat or generate turn: the request, the streamed reply, the
 * prefill status line, and the notices after it.
 *
 * When stdout is a terminal the reply is printed token by token (the
 * daemon only ever sends whole UTF-8 characters).  Otherwise the client
 * asks for no streaming and prints the whole reply once it is complete,
 * so a script or a pipe sees all of a reply or none of it.
 */
#include <string.h>

#include "client.h"

struct turn_ctx {
	bool		 stream;
	bool		 printed;	/* some reply text is on stdout */
	bool		 status;	/* the status line is on stderr */
	char		 last;		/* last byte printed */
};

static void
turn_clear_status(struct turn_ctx *ctx)
{
	if (!ctx->status)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	ctx->status = false;
}

static void
turn_notify_cb(const struct proto_msg *m, void *arg)
{
	struct turn_ctx	*ctx = arg;
	const char	*s;
	size_t		 len;
	int64_t		 done, total;

	if (m->method_len == strlen(PROTO_N_TOKEN) &&
	    memcmp(m->method, PROTO_N_TOKEN, m->method_len) == 0) {
		if (!ctx->stream ||
		    proto_arg_str(m->args, "text", &s, &len) != PROTO_ARG_OK ||
		    len == 0)
			return;
		turn_clear_status(ctx);
		put_text(stdout, s, len);
		fflush(stdout);
		ctx->printed = true;
		ctx->last = s[len - 1];
		return;
	}
	if (m->method_len == strlen(PROTO_N_PROGRESS) &&
	    memcmp(m->method, PROTO_N_PROGRESS, m->method_len) == 0) {
		if (!client.tty_err || client.quiet || client.json)
			return;
		done = obj_int(m->args, "done", 0);
		total = obj_int(m->args, "total", 0);
		fprintf(stderr, "\r%sreading prompt: %lld/%lld tokens%s\033[K",
		    c_dim(), (long long)done, (long long)total, c_off());
		fflush(stderr);
		ctx->status = true;
	}
}

/* Fill tr from a turn-map. */
static void
turn_decode(const msgpack_object *r, struct turn_result *tr)
{
	const msgpack_object	*usage = obj_get(r, "usage");

	obj_str(r, "finish", tr->finish, sizeof tr->finish);
	obj_str(r, "mode", tr->mode, sizeof tr->mode);
	tr->prompt_tokens = (uint64_t)obj_int(usage, "prompt_tokens", 0);
	tr->completion_tokens = (uint64_t)obj_int(usage, "completion_tokens",
	    0);
	tr->prefill_ms = (uint64_t)obj_int(usage, "prefill_ms", 0);
	tr->decode_ms = (uint64_t)obj_int(usage, "decode_ms", 0);
	tr->evicted = (uint64_t)obj_int(r, "evicted", 0);
	tr->rebuilt = obj_bool(r, "rebuilt", false);
}

int
turn_run(const struct turn *t, struct turn_result *tr)
{
	struct turn_ctx		 ctx;
	struct call		 call;
	struct conn		*c;
	msgpack_packer		*pk;
	const msgpack_object	*err;
	const char		*s;
	size_t			 len;
	uint32_t		 nargs = 2;
	int			 status;
	bool			 generate = strcmp(t->method, "generate") == 0;

	memset(tr, 0, sizeof *tr);
	memset(&ctx, 0, sizeof ctx);
	ctx.stream = t->stream;
	if ((c = client_conn(&status)) == NULL)
		return status;

	nargs += t->session != NULL;
	nargs += t->params != NULL && t->params->n > 0;
	pk = conn_request(c, t->method, nargs);
	if (t->session != NULL)
		proto_pack_kv_str(pk, "session", t->session);
	proto_pack_cstr(pk, generate ? "prompt" : "text");
	proto_pack_str(pk, t->text, t->len);
	proto_pack_kv_bool(pk, "stream", t->stream);
	if (t->params != NULL && t->params->n > 0) {
		proto_pack_cstr(pk, "params");
		params_pack(t->params, pk);
	}

	conn_clear_interrupt();
	status = conn_call(c, &call, turn_notify_cb, &ctx);
	turn_clear_status(&ctx);
	if (status != CLIENT_EXIT_OK) {
		/* Never leave a half-written line behind the error. */
		if (ctx.printed && ctx.last != '\n')
			fputc('\n', stdout);
		fflush(stdout);
		return client_fail(status, &call);
	}

	turn_decode(call.result, tr);
	if (client.json) {
		json_write(stdout, call.result, false);
		fputc('\n', stdout);
	} else if (!t->stream &&
	    proto_arg_str(call.result, "text", &s, &len) == PROTO_ARG_OK) {
		put_text(stdout, s, len);
		if (len > 0 && s[len - 1] != '\n')
			fputc('\n', stdout);
	} else if (ctx.printed && ctx.last != '\n')
		fputc('\n', stdout);
	fflush(stdout);

	if (strcmp(tr->finish, "error") == 0) {
		err = obj_get(call.result, "error");
		obj_str(err, "message", call.message, sizeof call.message);
		client_error("the reply failed: %s", call.message[0] != '\0' ?
		    call.message : "unknown error");
		return CLIENT_EXIT_DAEMON;
	}
	return CLIENT_EXIT_OK;
}

void
turn_notice(const struct turn_result *tr)
{
	if (client.quiet || client.json)
		return;
	if (tr->evicted > 0)
		fprintf(stderr, "%s[%llu earlier tokens left the context window"
		    "]%s\n", c_dim(), (unsigned long long)tr->evicted, c_off());
	if (tr->rebuilt)
		fprintf(stderr, "%s[the session's cache was rebuilt from its "
		    "transcript]%s\n", c_dim(), c_off());
	if (!client.tty_err)
		return;
	if (strcmp(tr->finish, "cancelled") == 0)
		fprintf(stderr, "%s[cancelled]%s\n", c_dim(), c_off());
	else if (strcmp(tr->finish, "length") == 0)
		fprintf(stderr, "%s[stopped at max_tokens]%s\n", c_dim(),
		    c_off());
}
