/*
 * method.c: the method table, argument checking and the reply helpers.
 *
 * Every RPC method is one entry of method_table: the arguments it takes
 * (checked for presence and type here, before the handler runs), its
 * handler, and flags.  Handlers live one family per file (method-*.c) and
 * always answer, at once or, for turns, when the turn ends.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

enum method_arg_type {
	ARG_STR,
	ARG_INT,
	ARG_UINT,
	ARG_NUM,
	ARG_BOOL,
	ARG_MAP,
	ARG_ARRAY,
};

struct method_arg {
	const char		*name;
	enum method_arg_type	 type;
	int			 required;
};

#define METHOD_SERVING	0x1	/* refused once shutting down */
#define METHOD_MODEL	0x2	/* runs the model: refused once the model
				   file is damaged (watch.c) */

struct method_entry {
	const struct method_arg	*args;		/* ends with a NULL name */
	int			(*handler)(struct request *);
	int			 flags;
};

#define SAMPLING	{ "params", ARG_MAP, 0 }
static const struct method_arg args_hello[] = {
	{ "proto", ARG_ARRAY, 0 }, { "client", ARG_STR, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_create[] = {
	{ "name", ARG_STR, 0 }, { "system", ARG_STR, 0 }, SAMPLING,
	{ "window", ARG_UINT, 0 }, { "n_global", ARG_UINT, 0 },
	{ "template", ARG_STR, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_list[] = {
	{ "all", ARG_BOOL, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_get[] = {
	{ "session", ARG_STR, 1 }, { "messages", ARG_UINT, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_set[] = {
	{ "session", ARG_STR, 1 }, { "name", ARG_STR, 0 },
	{ "system", ARG_STR, 0 }, SAMPLING, { "window", ARG_UINT, 0 },
	{ "n_global", ARG_UINT, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_session[] = {
	{ "session", ARG_STR, 1 }, { NULL, 0, 0 }
};
static const struct method_arg args_fork[] = {
	{ "session", ARG_STR, 1 }, { "name", ARG_STR, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_import[] = {
	{ "document", ARG_MAP, 1 }, { "name", ARG_STR, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_chat[] = {
	{ "session", ARG_STR, 1 }, { "text", ARG_STR, 1 }, SAMPLING,
	{ "stream", ARG_BOOL, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_generate[] = {
	{ "session", ARG_STR, 0 }, { "prompt", ARG_STR, 1 }, SAMPLING,
	{ "stream", ARG_BOOL, 0 }, { "bos", ARG_BOOL, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_cancel[] = {
	{ "request", ARG_UINT, 0 }, { "session", ARG_STR, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_tokenize[] = {
	{ "text", ARG_STR, 1 }, { "bos", ARG_BOOL, 0 }, { NULL, 0, 0 }
};
static const struct method_arg args_detokenize[] = {
	{ "ids", ARG_ARRAY, 1 }, { NULL, 0, 0 }
};
static const struct method_arg args_none[] = { { NULL, 0, 0 } };

static const struct method_entry method_table[PROTO_M_COUNT] = {
	[PROTO_M_HELLO] = {
		.args = args_hello, .handler = method_hello },
	[PROTO_M_SESSION_CREATE] = {
		.args = args_create, .handler = method_session_create,
		.flags = METHOD_SERVING },
	[PROTO_M_SESSION_LIST] = {
		.args = args_list, .handler = method_session_list },
	[PROTO_M_SESSION_GET] = {
		.args = args_get, .handler = method_session_get },
	[PROTO_M_SESSION_SET] = {
		.args = args_set, .handler = method_session_set,
		.flags = METHOD_SERVING },
	[PROTO_M_SESSION_DELETE] = {
		.args = args_session, .handler = method_session_delete,
		.flags = METHOD_SERVING },
	[PROTO_M_SESSION_FORK] = {
		.args = args_fork, .handler = method_session_fork,
		.flags = METHOD_SERVING },
	[PROTO_M_SESSION_EXPORT] = {
		.args = args_session, .handler = method_session_export },
	[PROTO_M_SESSION_IMPORT] = {
		.args = args_import, .handler = method_session_import,
		.flags = METHOD_SERVING | METHOD_MODEL },
	[PROTO_M_CHAT] = {
		.args = args_chat, .handler = method_chat,
		.flags = METHOD_SERVING | METHOD_MODEL },
	[PROTO_M_GENERATE] = {
		.args = args_generate, .handler = method_generate,
		.flags = METHOD_SERVING | METHOD_MODEL },
	[PROTO_M_CANCEL] = {
		.args = args_cancel, .handler = method_cancel },
	[PROTO_M_TOKENIZE] = {
		.args = args_tokenize, .handler = method_tokenize },
	[PROTO_M_DETOKENIZE] = {
		.args = args_detokenize, .handler = method_detokenize },
	[PROTO_M_STATUS] = {
		.args = args_none, .handler = method_status },
};

/* Start a success response: the caller packs exactly one result object. */
void
reply_begin(struct reply *r, uint32_t msgid)
{
	r->msgid = msgid;
	msgpack_sbuffer_init(&r->sb);
	msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
	proto_pack_response_ok(&r->pk, msgid);
}

/* Send a finished reply; one over what clients must accept becomes an
 * error instead. */
void
reply_send(struct reply *r, struct client *c)
{
	if (r->sb.size > PROTO_MAX_MESSAGE_OUT) {
		msgpack_sbuffer_destroy(&r->sb);
		reply_error(c, r->msgid, PROTO_E_TOO_LARGE, "the reply would "
		    "be over %u bytes", PROTO_MAX_MESSAGE_OUT);
		return;
	}
	server_send(c, &r->sb);
}

/* A whole error response; fmt NULL uses the code's default message. */
void
reply_error(struct client *c, uint32_t msgid, int code, const char *fmt, ...)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char *msg = NULL;
	va_list ap;

	if (c == NULL || c->closing)
		return;
	if (fmt != NULL) {
		va_start(ap, fmt);
		xvasprintf(&msg, fmt, ap);
		va_end(ap);
		/* A message may quote what the client sent (a session key, a
		 * method name), which need not be UTF-8; ours must be. */
		if (!proto_utf8_valid(msg, strlen(msg))) {
			size_t len = strlen(msg), cap = 3 * len + 1;
			char *fixed = xmalloc(cap);

			fixed[proto_utf8_repair(msg, len, fixed, cap - 1)] =
			    '\0';
			free(msg);
			msg = fixed;
		}
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_response_error(&pk, msgid, code, msg);
	free(msg);
	server_send(c, &sb);
}

/* Check one argument's type; returns a PROTO_ARG_* result. */
static int
method_check_arg(const msgpack_object *args, const struct method_arg *a)
{
	const msgpack_object *o;
	const char *s;
	size_t len;
	int64_t i;
	uint64_t u;
	double d;
	bool b;

	switch (a->type) {
	case ARG_STR:
		return proto_arg_str(args, a->name, &s, &len);
	case ARG_INT:
		return proto_arg_int(args, a->name, &i);
	case ARG_UINT:
		return proto_arg_uint(args, a->name, &u);
	case ARG_NUM:
		return proto_arg_double(args, a->name, &d);
	case ARG_BOOL:
		return proto_arg_bool(args, a->name, &b);
	case ARG_MAP:
		return proto_arg_map(args, a->name, &o);
	case ARG_ARRAY:
		return proto_arg_array(args, a->name, &o);
	}
	return PROTO_ARG_WRONG_TYPE;
}

/* Run one request from c (loop thread). */
void
method_dispatch(struct client *c, const struct proto_msg *m)
{
	const struct method_entry *e;
	struct request req;
	char why[256];
	int id, rc;

	if (c->closing)
		return;
	id = proto_method_find(m->method, m->method_len);
	if (id < 0 || id >= PROTO_M_COUNT || method_table[id].handler == NULL) {
		reply_error(c, m->msgid, PROTO_E_METHOD_NOT_FOUND,
		    "unknown method \"%.*s\"", (int)proto_utf8_complete(
		    m->method, m->method_len > 64 ? 64 : m->method_len),
		    m->method);
		return;
	}
	e = &method_table[id];
	for (const struct method_arg *a = e->args; a->name != NULL; a++) {
		rc = method_check_arg(m->args, a);
		if (rc == PROTO_ARG_OK ||
		    (rc == PROTO_ARG_MISSING && !a->required))
			continue;
		reply_error(c, m->msgid, PROTO_E_INVALID_PARAMS, "%s: %s",
		    proto_method_name(id), proto_arg_explain(a->name, rc, why,
		    sizeof why));
		return;
	}
	if ((e->flags & METHOD_SERVING) && shutting_down) {
		reply_error(c, m->msgid, PROTO_E_UNAVAILABLE,
		    "the daemon is shutting down");
		return;
	}
	if ((e->flags & METHOD_MODEL) && watch_error() != NULL) {
		reply_error(c, m->msgid, PROTO_E_UNAVAILABLE, "%s",
		    watch_error());
		return;
	}
	req.c = c;
	req.msgid = m->msgid;
	req.args = m->args;
	log_debug("client %llu: %s #%u", (unsigned long long)c->id,
	    proto_method_name(id), m->msgid);
	e->handler(&req);
}

/* A float argument from a sampling map: OK, MISSING or an error. */
static int
method_param_float(const msgpack_object *p, const char *key, float *out,
    float dflt, double lo, double hi, char **cause)
{
	const msgpack_object *o = proto_arg(p, key);
	double d;
	int rc;

	if (o != NULL && o->type == MSGPACK_OBJECT_NIL) {
		*out = dflt;
		return 0;
	}
	rc = proto_arg_double(p, key, &d);
	if (rc == PROTO_ARG_MISSING)
		return 0;
	if (rc != PROTO_ARG_OK || !isfinite(d) || d < lo || d > hi) {
		xasprintf(cause, "params.%s must be a number from %g to %g",
		    key, lo, hi);
		return -1;
	}
	*out = (float)d;
	return 0;
}

static int
method_param_int(const msgpack_object *p, const char *key, int32_t *out,
    int32_t dflt, int64_t lo, int64_t hi, char **cause)
{
	const msgpack_object *o = proto_arg(p, key);
	int64_t v;
	int rc;

	if (o != NULL && o->type == MSGPACK_OBJECT_NIL) {
		*out = dflt;
		return 0;
	}
	rc = proto_arg_int(p, key, &v);
	if (rc == PROTO_ARG_MISSING)
		return 0;
	if (rc != PROTO_ARG_OK || v < lo || v > hi) {
		xasprintf(cause, "params.%s must be an integer from %lld to "
		    "%lld", key, (long long)lo, (long long)hi);
		return -1;
	}
	*out = (int32_t)v;
	return 0;
}

#define METHOD_MAX_STOP		16
#define METHOD_MAX_STOP_LEN	256

/*
 * Merge a "params" map into *sp and *max_tokens (either may be NULL to
 * refuse nothing but skip it).  Nil values take the default.  If stop is
 * not NULL, stop strings are returned as a malloc'd array of n_stop
 * strings.  *reseed is set when a seed was given.  Returns 0, or -1 with
 * a message in cause.
 */
int
method_arg_params(const struct request *req, const msgpack_object *p,
    struct sampler_params *sp, int32_t *max_tokens, char ***stop,
    int *n_stop, int *reseed, char **cause)
{
	struct sampler_params d;
	const msgpack_object *o, *arr;
	uint64_t seed;
	int rc;

	sampler_params_default(&d);
	if (reseed != NULL)
		*reseed = 0;
	if (p == NULL)
		return 0;
	if (method_param_float(p, "temperature", &sp->temperature,
	    d.temperature, 0, 100, cause) != 0 ||
	    method_param_int(p, "top_k", &sp->top_k, d.top_k, 0, 1 << 30,
	    cause) != 0 ||
	    method_param_float(p, "top_p", &sp->top_p, d.top_p, 0, 1,
	    cause) != 0 ||
	    method_param_float(p, "min_p", &sp->min_p, d.min_p, 0, 1,
	    cause) != 0 ||
	    method_param_float(p, "repeat_penalty", &sp->repeat_penalty,
	    d.repeat_penalty, 0.01, 100, cause) != 0 ||
	    method_param_int(p, "repeat_last_n", &sp->repeat_last_n,
	    d.repeat_last_n, 0, 1 << 20, cause) != 0)
		return -1;
	if (max_tokens != NULL && method_param_int(p, "max_tokens", max_tokens,
	    0, 0, INT32_MAX, cause) != 0)
		return -1;
	o = proto_arg(p, "seed");
	if (o != NULL && o->type == MSGPACK_OBJECT_NIL) {
		sp->seed = d.seed;
	} else if ((rc = proto_arg_uint(p, "seed", &seed)) == PROTO_ARG_OK) {
		sp->seed = seed;
		if (reseed != NULL)
			*reseed = 1;
	} else if (rc != PROTO_ARG_MISSING) {
		xasprintf(cause, "params.seed must be an unsigned integer");
		return -1;
	}
	if (stop == NULL)
		return 0;
	*stop = NULL;
	*n_stop = 0;
	rc = proto_arg_array(p, "stop", &arr);
	if (rc == PROTO_ARG_MISSING)
		return 0;
	if (rc != PROTO_ARG_OK || arr->via.array.size > METHOD_MAX_STOP) {
		xasprintf(cause, "params.stop must be an array of at most %d "
		    "strings", METHOD_MAX_STOP);
		return -1;
	}
	*stop = xcalloc(arr->via.array.size + 1, sizeof **stop);
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		const msgpack_object *e = &arr->via.array.ptr[i];

		if (e->type != MSGPACK_OBJECT_STR || e->via.str.size == 0 ||
		    e->via.str.size > METHOD_MAX_STOP_LEN ||
		    memchr(e->via.str.ptr, '\0', e->via.str.size) != NULL ||
		    !proto_utf8_valid(e->via.str.ptr, e->via.str.size)) {
			xasprintf(cause, "params.stop[%u] must be a UTF-8 "
			    "string of 1 to %d bytes", i, METHOD_MAX_STOP_LEN);
			for (int k = 0; k < *n_stop; k++)
				free((*stop)[k]);
			free(*stop);
			*stop = NULL;
			*n_stop = 0;
			return -1;
		}
		(*stop)[(*n_stop)++] = xstrndup(e->via.str.ptr, e->via.str.size);
	}
	return 0;
}
