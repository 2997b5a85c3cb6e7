/*
 * rpc.c: msgpack-RPC messages: the name tables of protocol.h, taking a
 * decoded message apart (proto_parse and the typed argument getters), and
 * packing requests, responses and notifications.
 *
 * The getters exist so that a method handler validates each argument with
 * one call and one check; nothing here trusts a type or a length it has
 * not looked at, and nothing allocates.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "protocol.h"

static const char *const rpc_methods[PROTO_M_COUNT] = {
	[PROTO_M_HELLO] = "hello",
	[PROTO_M_SESSION_CREATE] = "session.create",
	[PROTO_M_SESSION_LIST] = "session.list",
	[PROTO_M_SESSION_GET] = "session.get",
	[PROTO_M_SESSION_SET] = "session.set",
	[PROTO_M_SESSION_DELETE] = "session.delete",
	[PROTO_M_SESSION_FORK] = "session.fork",
	[PROTO_M_SESSION_EXPORT] = "session.export",
	[PROTO_M_SESSION_IMPORT] = "session.import",
	[PROTO_M_CHAT] = "chat",
	[PROTO_M_GENERATE] = "generate",
	[PROTO_M_CANCEL] = "cancel",
	[PROTO_M_TOKENIZE] = "tokenize",
	[PROTO_M_DETOKENIZE] = "detokenize",
	[PROTO_M_STATUS] = "status",
};

static const char *const rpc_finishes[] = {
	[PROTO_FINISH_STOP] = "stop",
	[PROTO_FINISH_LENGTH] = "length",
	[PROTO_FINISH_CANCELLED] = "cancelled",
	[PROTO_FINISH_ERROR] = "error",
};
#define RPC_NFINISH (sizeof rpc_finishes / sizeof rpc_finishes[0])

static const struct {
	const char	*name;
	const char	*message;
} rpc_errors[PROTO_E_MAX + 1] = {
	[PROTO_E_PARSE] = { "PARSE_ERROR", "malformed message" },
	[PROTO_E_INVALID_REQUEST] = { "INVALID_REQUEST",
	    "not a msgpack-RPC request" },
	[PROTO_E_METHOD_NOT_FOUND] = { "METHOD_NOT_FOUND", "no such method" },
	[PROTO_E_INVALID_PARAMS] = { "INVALID_PARAMS", "invalid arguments" },
	[PROTO_E_TOO_LARGE] = { "TOO_LARGE", "message too large" },
	[PROTO_E_VERSION_MISMATCH] = { "VERSION_MISMATCH",
	    "incompatible protocol version" },
	[PROTO_E_NO_SUCH_SESSION] = { "NO_SUCH_SESSION", "no such session" },
	[PROTO_E_AMBIGUOUS] = { "AMBIGUOUS",
	    "session prefix matches several sessions" },
	[PROTO_E_EXISTS] = { "EXISTS", "name already in use" },
	[PROTO_E_PERMISSION_DENIED] = { "PERMISSION_DENIED",
	    "permission denied" },
	[PROTO_E_BUSY] = { "BUSY", "session is busy with another request" },
	[PROTO_E_LIMIT_EXCEEDED] = { "LIMIT_EXCEEDED", "limit exceeded" },
	[PROTO_E_NO_MEMORY] = { "NO_MEMORY", "not enough memory" },
	[PROTO_E_CANCELLED] = { "CANCELLED", "cancelled" },
	[PROTO_E_NO_SUCH_REQUEST] = { "NO_SUCH_REQUEST", "no such request" },
	[PROTO_E_UNAVAILABLE] = { "UNAVAILABLE", "service unavailable" },
	[PROTO_E_STORAGE] = { "STORAGE", "session storage failed" },
	[PROTO_E_INTERNAL] = { "INTERNAL", "internal error" },
};

int
proto_method_find(const char *name, size_t len)
{
	int	i;

	for (i = 0; i < PROTO_M_COUNT; i++) {
		if (strlen(rpc_methods[i]) == len &&
		    memcmp(rpc_methods[i], name, len) == 0)
			return i;
	}
	return -1;
}

const char *
proto_method_name(enum proto_method m)
{
	if ((unsigned)m >= PROTO_M_COUNT)
		return "?";
	return rpc_methods[m];
}

const char *
proto_finish_name(enum proto_finish f)
{
	if ((unsigned)f >= RPC_NFINISH)
		return "error";
	return rpc_finishes[f];
}

int
proto_finish_find(const char *name, size_t len)
{
	size_t	i;

	for (i = 0; i < RPC_NFINISH; i++) {
		if (strlen(rpc_finishes[i]) == len &&
		    memcmp(rpc_finishes[i], name, len) == 0)
			return (int)i;
	}
	return -1;
}

const char *
proto_error_message(int code)
{
	if (code < 1 || code > PROTO_E_MAX || rpc_errors[code].name == NULL)
		return "unknown error";
	return rpc_errors[code].message;
}

const char *
proto_error_name(int code)
{
	if (code < 1 || code > PROTO_E_MAX || rpc_errors[code].name == NULL)
		return "UNKNOWN";
	return rpc_errors[code].name;
}

/* Take the params array apart: [] or [map]. */
static int
rpc_params(const msgpack_object *p, const msgpack_object **args)
{
	if (p->type != MSGPACK_OBJECT_ARRAY)
		return PROTO_E_INVALID_PARAMS;
	if (p->via.array.size == 0) {
		*args = NULL;
		return 0;
	}
	if (p->via.array.size != 1)
		return PROTO_E_INVALID_PARAMS;
	if (p->via.array.ptr[0].type == MSGPACK_OBJECT_NIL) {
		*args = NULL;
		return 0;
	}
	if (p->via.array.ptr[0].type != MSGPACK_OBJECT_MAP)
		return PROTO_E_INVALID_PARAMS;
	*args = &p->via.array.ptr[0];
	return 0;
}

int
proto_parse(const msgpack_object *o, struct proto_msg *m)
{
	const msgpack_object	*e;
	uint32_t		 n;

	memset(m, 0, sizeof *m);
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return PROTO_E_INVALID_REQUEST;
	e = o->via.array.ptr;
	n = o->via.array.size;
	if (n < 3 || e[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    e[0].via.u64 > PROTO_NOTIFICATION)
		return PROTO_E_INVALID_REQUEST;
	m->type = (enum proto_type)e[0].via.u64;

	if (m->type == PROTO_NOTIFICATION) {
		if (n != 3 || e[1].type != MSGPACK_OBJECT_STR)
			return PROTO_E_INVALID_REQUEST;
		m->method = e[1].via.str.ptr;
		m->method_len = e[1].via.str.size;
		return rpc_params(&e[2], &m->args);
	}

	if (n != 4 || e[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    e[1].via.u64 > UINT32_MAX)
		return PROTO_E_INVALID_REQUEST;
	m->msgid = (uint32_t)e[1].via.u64;

	if (m->type == PROTO_REQUEST) {
		if (e[2].type != MSGPACK_OBJECT_STR)
			return PROTO_E_INVALID_REQUEST;
		m->method = e[2].via.str.ptr;
		m->method_len = e[2].via.str.size;
		return rpc_params(&e[3], &m->args);
	}

	if (e[2].type != MSGPACK_OBJECT_NIL) {
		m->error = &e[2];
		return 0;
	}
	m->result = &e[3];
	return 0;
}

const msgpack_object *
proto_arg(const msgpack_object *map, const char *key)
{
	const msgpack_object_kv	*kv;
	size_t			 klen = strlen(key);
	uint32_t		 i;

	if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (i = 0; i < map->via.map.size; i++) {
		kv = &map->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR &&
		    kv->key.via.str.size == klen &&
		    memcmp(kv->key.via.str.ptr, key, klen) == 0) {
			if (kv->val.type == MSGPACK_OBJECT_NIL)
				return NULL;
			return &kv->val;
		}
	}
	return NULL;
}

int
proto_arg_str(const msgpack_object *map, const char *key, const char **s,
    size_t *len)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type != MSGPACK_OBJECT_STR)
		return PROTO_ARG_WRONG_TYPE;
	*s = o->via.str.ptr;
	*len = o->via.str.size;
	return PROTO_ARG_OK;
}

int
proto_arg_cstr(const msgpack_object *map, const char *key, char *buf,
    size_t cap)
{
	const char	*s;
	size_t		 len;
	int		 r;

	if ((r = proto_arg_str(map, key, &s, &len)) != PROTO_ARG_OK)
		return r;
	if (len >= cap || memchr(s, '\0', len) != NULL)
		return PROTO_ARG_RANGE;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return PROTO_ARG_OK;
}

int
proto_arg_int(const msgpack_object *map, const char *key, int64_t *v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*v = o->via.i64;
		return PROTO_ARG_OK;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return PROTO_ARG_WRONG_TYPE;
	if (o->via.u64 > INT64_MAX)
		return PROTO_ARG_RANGE;
	*v = (int64_t)o->via.u64;
	return PROTO_ARG_OK;
}

int
proto_arg_uint(const msgpack_object *map, const char *key, uint64_t *v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return PROTO_ARG_RANGE;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return PROTO_ARG_WRONG_TYPE;
	*v = o->via.u64;
	return PROTO_ARG_OK;
}

int
proto_arg_double(const msgpack_object *map, const char *key, double *v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	switch (o->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		*v = o->via.f64;
		return PROTO_ARG_OK;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		*v = (double)o->via.u64;
		return PROTO_ARG_OK;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		*v = (double)o->via.i64;
		return PROTO_ARG_OK;
	default:
		return PROTO_ARG_WRONG_TYPE;
	}
}

int
proto_arg_bool(const msgpack_object *map, const char *key, bool *v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return PROTO_ARG_WRONG_TYPE;
	*v = o->via.boolean;
	return PROTO_ARG_OK;
}

int
proto_arg_map(const msgpack_object *map, const char *key,
    const msgpack_object **v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type != MSGPACK_OBJECT_MAP)
		return PROTO_ARG_WRONG_TYPE;
	*v = o;
	return PROTO_ARG_OK;
}

int
proto_arg_array(const msgpack_object *map, const char *key,
    const msgpack_object **v)
{
	const msgpack_object	*o = proto_arg(map, key);

	if (o == NULL)
		return PROTO_ARG_MISSING;
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return PROTO_ARG_WRONG_TYPE;
	*v = o;
	return PROTO_ARG_OK;
}

const char *
proto_arg_explain(const char *key, int result, char *buf, size_t cap)
{
	const char	*what;

	switch (result) {
	case PROTO_ARG_OK:
		what = "is valid";
		break;
	case PROTO_ARG_MISSING:
		what = "is missing";
		break;
	case PROTO_ARG_WRONG_TYPE:
		what = "has the wrong type";
		break;
	default:
		what = "is out of range";
		break;
	}
	snprintf(buf, cap, "argument '%s' %s", key, what);
	return buf;
}

int
proto_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
	return msgpack_pack_str_with_body(pk, s, len) != 0 ? -1 : 0;
}

int
proto_pack_cstr(msgpack_packer *pk, const char *s)
{
	if (s == NULL)
		return msgpack_pack_nil(pk) != 0 ? -1 : 0;
	return proto_pack_str(pk, s, strlen(s));
}

/* The params array with a map of nargs pairs to follow, or []. */
static int
rpc_pack_params(msgpack_packer *pk, uint32_t nargs)
{
	if (nargs == 0)
		return msgpack_pack_array(pk, 0) != 0 ? -1 : 0;
	if (msgpack_pack_array(pk, 1) != 0 || msgpack_pack_map(pk, nargs) != 0)
		return -1;
	return 0;
}

int
proto_pack_request(msgpack_packer *pk, uint32_t msgid, const char *method,
    uint32_t nargs)
{
	if (msgpack_pack_array(pk, 4) != 0 ||
	    msgpack_pack_uint8(pk, PROTO_REQUEST) != 0 ||
	    msgpack_pack_uint32(pk, msgid) != 0 ||
	    proto_pack_cstr(pk, method) != 0)
		return -1;
	return rpc_pack_params(pk, nargs);
}

int
proto_pack_notification(msgpack_packer *pk, const char *method,
    uint32_t nargs)
{
	if (msgpack_pack_array(pk, 3) != 0 ||
	    msgpack_pack_uint8(pk, PROTO_NOTIFICATION) != 0 ||
	    proto_pack_cstr(pk, method) != 0)
		return -1;
	return rpc_pack_params(pk, nargs);
}

int
proto_pack_response_ok(msgpack_packer *pk, uint32_t msgid)
{
	if (msgpack_pack_array(pk, 4) != 0 ||
	    msgpack_pack_uint8(pk, PROTO_RESPONSE) != 0 ||
	    msgpack_pack_uint32(pk, msgid) != 0 ||
	    msgpack_pack_nil(pk) != 0)
		return -1;
	return 0;
}

int
proto_pack_error_map(msgpack_packer *pk, int code, const char *message)
{
	if (message == NULL)
		message = proto_error_message(code);
	if (msgpack_pack_map(pk, 2) != 0 ||
	    proto_pack_kv_int(pk, "code", code) != 0 ||
	    proto_pack_kv_str(pk, "message", message) != 0)
		return -1;
	return 0;
}

int
proto_pack_response_error(msgpack_packer *pk, uint32_t msgid, int code,
    const char *message)
{
	if (msgpack_pack_array(pk, 4) != 0 ||
	    msgpack_pack_uint8(pk, PROTO_RESPONSE) != 0 ||
	    msgpack_pack_uint32(pk, msgid) != 0 ||
	    proto_pack_error_map(pk, code, message) != 0 ||
	    msgpack_pack_nil(pk) != 0)
		return -1;
	return 0;
}

int
proto_pack_token(msgpack_packer *pk, uint32_t request, const char *text,
    size_t len, const int32_t *ids, size_t n_ids)
{
	size_t	i;

	if (n_ids > UINT32_MAX ||
	    proto_pack_notification(pk, PROTO_N_TOKEN, 3) != 0 ||
	    proto_pack_kv_uint(pk, "request", request) != 0 ||
	    proto_pack_cstr(pk, "text") != 0 ||
	    proto_pack_str(pk, text, len) != 0 ||
	    proto_pack_cstr(pk, "ids") != 0 ||
	    msgpack_pack_array(pk, (size_t)n_ids) != 0)
		return -1;
	for (i = 0; i < n_ids; i++) {
		if (msgpack_pack_int32(pk, ids[i]) != 0)
			return -1;
	}
	return 0;
}

int
proto_pack_progress(msgpack_packer *pk, uint32_t request, uint64_t done,
    uint64_t total)
{
	if (proto_pack_notification(pk, PROTO_N_PROGRESS, 3) != 0 ||
	    proto_pack_kv_uint(pk, "request", request) != 0 ||
	    proto_pack_kv_uint(pk, "done", done) != 0 ||
	    proto_pack_kv_uint(pk, "total", total) != 0)
		return -1;
	return 0;
}

int
proto_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
	if (proto_pack_cstr(pk, key) != 0 || proto_pack_cstr(pk, value) != 0)
		return -1;
	return 0;
}

int
proto_pack_kv_int(msgpack_packer *pk, const char *key, int64_t v)
{
	if (proto_pack_cstr(pk, key) != 0 || msgpack_pack_int64(pk, v) != 0)
		return -1;
	return 0;
}

int
proto_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
	if (proto_pack_cstr(pk, key) != 0 || msgpack_pack_uint64(pk, v) != 0)
		return -1;
	return 0;
}

int
proto_pack_kv_double(msgpack_packer *pk, const char *key, double v)
{
	if (proto_pack_cstr(pk, key) != 0 || msgpack_pack_double(pk, v) != 0)
		return -1;
	return 0;
}

int
proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool v)
{
	if (proto_pack_cstr(pk, key) != 0 ||
	    (v ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) != 0)
		return -1;
	return 0;
}
