/*
 * method-session.c: the session.* methods: create, list, get, set,
 * delete, fork, export and import.
 *
 * Every change is applied in memory at once and handed to the persistence
 * thread (residency.c); replies never wait for the disk.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

#define SESSION_EXPORT_FORMAT	"mistrald-session"
#define SESSION_EXPORT_VERSION	1

void
method_pack_params(msgpack_packer *pk, const struct store_params *p)
{
	msgpack_pack_map(pk, 8);
	proto_pack_kv_double(pk, "temperature", p->sampling.temperature);
	proto_pack_kv_int(pk, "top_k", p->sampling.top_k);
	proto_pack_kv_double(pk, "top_p", p->sampling.top_p);
	proto_pack_kv_double(pk, "min_p", p->sampling.min_p);
	proto_pack_kv_double(pk, "repeat_penalty", p->sampling.repeat_penalty);
	proto_pack_kv_int(pk, "repeat_last_n", p->sampling.repeat_last_n);
	proto_pack_kv_uint(pk, "seed", p->sampling.seed);
	proto_pack_kv_int(pk, "max_tokens", p->max_tokens);
}

static int64_t
method_session_turns(const struct session *s)
{
	int64_t n = 0;

	if (!s->loaded)
		return s->stored_messages / 2;
	for (size_t i = 0; i < s->n_msgs; i++) {
		if (strcmp(s->msgs[i].role, "user") == 0 ||
		    strcmp(s->msgs[i].role, "prompt") == 0)
			n++;
	}
	return n;
}

/* The session-info map (extra: further pairs the caller adds). */
void
method_pack_info(msgpack_packer *pk, struct session *s, int extra)
{
	int64_t tokens = s->loaded ? s->n_tokens : s->stored_pos;
	uint32_t w = s->window, g = s->n_global;
	int exact = s->exact;
	int64_t seen;

	if (w == 0) {
		w = model_window(model, s->params.window, cfg.window, &exact);
		g = s->params.n_global;
	}
	seen = tokens < (int64_t)(w + g) ? tokens : (int64_t)(w + g);
	msgpack_pack_map(pk, (size_t)(17 + extra));
	proto_pack_kv_str(pk, "id", s->id);
	proto_pack_kv_str(pk, "name", s->name != NULL ? s->name : "");
	proto_pack_kv_uint(pk, "owner", s->owner);
	proto_pack_kv_int(pk, "created", s->created / 1000);
	proto_pack_kv_int(pk, "updated", s->updated / 1000);
	proto_pack_kv_int(pk, "turns", method_session_turns(s));
	proto_pack_kv_int(pk, "tokens", tokens);
	proto_pack_kv_uint(pk, "window", w);
	proto_pack_kv_uint(pk, "n_global", g);
	proto_pack_kv_int(pk, "in_window", seen);
	proto_pack_kv_str(pk, "mode", exact ? "exact" : "evicting");
	proto_pack_kv_str(pk, "state", session_state_name(s));
	proto_pack_kv_uint(pk, "bytes_memory", s->kv != NULL ?
	    kvcache_bytes(s->kv) : 0);
	proto_pack_kv_int(pk, "bytes_disk", s->disk_bytes);
	proto_pack_kv_str(pk, "system", s->params.system_prompt != NULL ?
	    s->params.system_prompt : "");
	proto_pack_kv_str(pk, "template", chat_template_name(s->tmpl));
	proto_pack_cstr(pk, "params");
	method_pack_params(pk, &s->params);
}

static void
method_reply_info(struct request *req, struct session *s)
{
	struct reply r;

	reply_begin(&r, req->msgid);
	method_pack_info(&r.pk, s, 0);
	reply_send(&r, req->c);
}

/* Resolve "session"; replies on failure. */
static struct session *
method_session_arg(struct request *req)
{
	struct session *s;
	char key[128];
	int code = PROTO_E_NO_SUCH_SESSION;

	if (proto_arg_cstr(req->args, "session", key, sizeof key) !=
	    PROTO_ARG_OK || (s = session_find(req->c, key, &code)) == NULL) {
		reply_error(req->c, req->msgid, code, NULL);
		return NULL;
	}
	return s;
}

/* Optional string argument as a C string; replies and returns -1 when it
 * is malformed.  *out is NULL when absent. */
static int
method_session_str(struct request *req, const char *key, size_t max,
    char **out)
{
	const char *p;
	size_t len;
	int rc;

	*out = NULL;
	rc = proto_arg_str(req->args, key, &p, &len);
	if (rc == PROTO_ARG_MISSING)
		return 0;
	if (rc != PROTO_ARG_OK || len > max || memchr(p, '\0', len) != NULL ||
	    !proto_utf8_valid(p, len)) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "argument '%s' must be UTF-8 text of at most %zu bytes "
		    "without NUL", key, max);
		return -1;
	}
	*out = xstrndup(p, len);
	return 0;
}

/* Check a new name for owner; replies on failure. */
static int
method_session_name_ok(struct request *req, uid_t owner, const char *name,
    const struct session *self)
{
	struct session *o;

	if (!session_name_valid(name)) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "a name is 1 to 64 characters of A-Z a-z 0-9 . _ -");
		return -1;
	}
	if ((o = session_find_name(owner, name)) != NULL && o != self) {
		reply_error(req->c, req->msgid, PROTO_E_EXISTS,
		    "a session named %s already exists", name);
		return -1;
	}
	return 0;
}

static int
method_session_quota(struct request *req)
{
	if (session_count_uid(req->c->uid) >= cfg.max_sessions_per_uid) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "uid %u already has %u sessions (max-sessions-per-uid)",
		    (unsigned)req->c->uid, cfg.max_sessions_per_uid);
		return -1;
	}
	return 0;
}

/*
 * Apply the settings shared by create, set and import from args: system,
 * params, window, n_global.  *geometry is set when the cache geometry or
 * the rendered history changes.  Replies and returns -1 on bad input.
 */
static int
method_session_apply(struct request *req, const msgpack_object *args,
    struct session *s, int *rerender)
{
	const msgpack_object *p = NULL;
	const char *sys;
	size_t len;
	uint64_t u;
	char *cause = NULL;
	int rc;

	*rerender = 0;
	rc = proto_arg_str(args, "system", &sys, &len);
	if (rc == PROTO_ARG_OK) {
		if (memchr(sys, '\0', len) != NULL || len > cfg.max_message ||
		    !proto_utf8_valid(sys, len)) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "argument 'system' must be UTF-8 text without NUL "
			    "bytes");
			return -1;
		}
		if (s->params.system_prompt == NULL ||
		    strlen(s->params.system_prompt) != len ||
		    memcmp(s->params.system_prompt, sys, len) != 0) {
			free(s->params.system_prompt);
			s->params.system_prompt = len > 0 ? xstrndup(sys, len) :
			    NULL;
			*rerender = 1;
		}
	}
	proto_arg_map(args, "params", &p);
	if (method_arg_params(req, p, &s->params.sampling, &s->params.max_tokens,
	    NULL, NULL, NULL, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS, "%s",
		    cause);
		free(cause);
		return -1;
	}
	if (s->params.max_tokens < 0 ||
	    (uint32_t)s->params.max_tokens > cfg.max_tokens) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "max_tokens is over the limit of %u", cfg.max_tokens);
		return -1;
	}
	if (proto_arg_uint(args, "window", &u) == PROTO_ARG_OK) {
		if (u > UINT32_MAX) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "window is too large");
			return -1;
		}
		if (s->params.window != (uint32_t)u)
			*rerender = 1;
		s->params.window = (uint32_t)u;
	}
	if (proto_arg_uint(args, "n_global", &u) == PROTO_ARG_OK) {
		if (u > 1u << 20) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "n_global is too large");
			return -1;
		}
		if (s->params.n_global != (uint32_t)u)
			*rerender = 1;
		s->params.n_global = (uint32_t)u;
	}
	return 0;
}

int
method_session_create(struct request *req)
{
	struct session *s;
	char *name = NULL, *tmpl = NULL, *cause = NULL;
	enum chat_template t;
	int rerender;

	if (method_session_quota(req) != 0)
		return 0;
	if (method_session_str(req, "name", 64, &name) != 0 ||
	    method_session_str(req, "template", 32, &tmpl) != 0)
		goto out;
	if (name != NULL && method_session_name_ok(req, req->c->uid, name,
	    NULL) != 0)
		goto out;
	if (tmpl != NULL && chat_template_parse(tmpl, &t) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "unknown template \"%s\" (raw, mistral, llama2, chatml)",
		    tmpl);
		goto out;
	}
	s = session_new(req->c->uid);
	if (kv_type_parse(cfg.kv_type, &s->params.kv_type) != 0)
		s->params.kv_type = KV_TYPE_F16;
	s->name = name;
	name = NULL;
	s->params.template = tmpl;
	tmpl = NULL;
	s->tmpl = residency_default_template(s->params.template);
	if (method_session_apply(req, req->args, s, &rerender) != 0 ||
	    session_setup_cache_params(s, &cause) != 0) {
		if (cause != NULL) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "%s", cause);
			free(cause);
		}
		session_remove(s);
		goto out;
	}
	log_info("session %s created by uid %u", s->id, (unsigned)s->owner);
	residency_save_meta(s);
	method_reply_info(req, s);
out:
	free(name);
	free(tmpl);
	return 0;
}

static int
method_session_cmp(const void *a, const void *b)
{
	const struct session *x = *(struct session *const *)a;
	const struct session *y = *(struct session *const *)b;

	return (x->updated < y->updated) - (x->updated > y->updated);
}

int
method_session_list(struct request *req)
{
	struct session *s, **v;
	struct reply r;
	size_t n = 0, i = 0;
	bool all = false;

	proto_arg_bool(req->args, "all", &all);
	if (all && !server_client_is_admin(req->c)) {
		reply_error(req->c, req->msgid, PROTO_E_PERMISSION_DENIED,
		    "only root and the admin group may list every session");
		return 0;
	}
	TAILQ_FOREACH(s, &sessions, entry)
		n++;
	v = xcalloc(n + 1, sizeof *v);
	TAILQ_FOREACH(s, &sessions, entry) {
		if (!s->deleted && (s->owner == req->c->uid || all))
			v[i++] = s;
	}
	qsort(v, i, sizeof *v, method_session_cmp);
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 1);
	proto_pack_cstr(&r.pk, "sessions");
	msgpack_pack_array(&r.pk, i);
	for (size_t k = 0; k < i; k++)
		method_pack_info(&r.pk, v[k], 0);
	free(v);
	reply_send(&r, req->c);
	return 0;
}

/* Load a stored session's transcript; replies on failure. */
static int
method_session_load(struct request *req, struct session *s)
{
	char *cause = NULL;

	if (residency_load_transcript(s, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_STORAGE, "%s", cause);
		free(cause);
		return -1;
	}
	return 0;
}

int
method_session_get(struct request *req)
{
	struct session *s;
	struct reply r;
	uint64_t last = UINT64_MAX;
	size_t from = 0;

	if ((s = method_session_arg(req)) == NULL ||
	    method_session_load(req, s) != 0)
		return 0;
	proto_arg_uint(req->args, "messages", &last);
	if (last < s->n_msgs)
		from = s->n_msgs - (size_t)last;
	reply_begin(&r, req->msgid);
	method_pack_info(&r.pk, s, 1);
	proto_pack_cstr(&r.pk, "messages");
	msgpack_pack_array(&r.pk, s->n_msgs - from);
	for (size_t i = from; i < s->n_msgs; i++) {
		const struct session_msg *m = &s->msgs[i];

		msgpack_pack_map(&r.pk, 4);
		proto_pack_kv_str(&r.pk, "role", m->role);
		proto_pack_cstr(&r.pk, "text");
		proto_pack_str(&r.pk, m->text, m->text_len);
		proto_pack_kv_int(&r.pk, "tokens", m->n_tokens);
		proto_pack_kv_int(&r.pk, "time", m->created / 1000);
	}
	reply_send(&r, req->c);
	return 0;
}

/*
 * Render the whole transcript again into token ids (after the system
 * prompt changed, or for an import): user turns through chat.h, prompts
 * with the tokenizer, replies keep their ids (or their text encoded as it
 * stands).  The cache is then empty and must be re-prefilled.  Returns 0
 * or a negative errno.
 */
static int
method_session_rerender(struct session *s)
{
	const struct tokenizer *tok = daemon_tokenizer();
	struct session_msg *old = s->msgs;
	size_t n = s->n_msgs;
	int32_t *ids;
	int64_t nid;
	int rc = 0, first = 1, closed = 1;

	s->msgs = NULL;
	s->n_msgs = s->msgs_cap = 0;
	s->n_tokens = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct session_msg *m = &old[i];

		ids = NULL;
		nid = 0;
		if (strcmp(m->role, "user") == 0) {
			rc = chat_render_turn(s->tmpl, tok,
			    s->params.system_prompt, first, closed, m->text,
			    &ids, &nid);
		} else if (strcmp(m->role, "prompt") == 0) {
			int fl = first ? (tokenizer_bos(tok) >= 0 ?
			    TOKENIZE_ADD_BOS : 0) : TOKENIZE_NO_PREFIX;

			if (m->text_len != 0)
				nid = method_turn_encode(m->text, m->text_len,
				    fl, &ids);
			else if (first && tokenizer_bos(tok) >= 0) {
				ids = xmalloc(sizeof *ids);
				ids[0] = tokenizer_bos(tok);
				nid = 1;
			}
			if (nid < 0)
				rc = (int)nid;
		} else if (m->n_tokens > 0) {
			ids = xreallocarray(NULL, (size_t)m->n_tokens,
			    sizeof *ids);
			memcpy(ids, m->tokens, (size_t)m->n_tokens *
			    sizeof *ids);
			nid = m->n_tokens;
		} else if (m->text_len != 0) {
			nid = method_turn_encode(m->text, m->text_len,
			    TOKENIZE_NO_PREFIX, &ids);
			if (nid < 0)
				rc = (int)nid;
		}
		if (rc == 0)
			rc = session_push_msg(s, m->role, m->text,
			    m->text_len, ids, nid);
		if (rc == 0) {
			s->msgs[s->n_msgs - 1].created = m->created;
			first = first && nid == 0;
			closed = strcmp(m->role, "assistant") == 0 ||
			    strcmp(m->role, "completion") == 0 ?
			    chat_reply_closed(s->tmpl, tok, ids, nid) : 0;
		}
		free(ids);
	}
	for (size_t i = 0; i < n; i++) {
		free(old[i].role);
		free(old[i].text);
		free(old[i].tokens);
	}
	free(old);
	if (s->kv != NULL)
		kvcache_reset(s->kv, 0);
	s->need_full = 1;
	s->chain_pos = -1;
	s->n_msgs_stored = 0;
	return rc;
}

int
method_session_set(struct request *req)
{
	struct session *s;
	char *name = NULL, *cause = NULL;
	uint32_t old_w, old_g;
	int rerender;

	if ((s = method_session_arg(req)) == NULL)
		return 0;
	if (s->state != SESSION_IDLE) {
		reply_error(req->c, req->msgid, PROTO_E_BUSY,
		    "session %s is running a turn", s->id);
		return 0;
	}
	if (method_session_load(req, s) != 0 ||
	    method_session_str(req, "name", 64, &name) != 0)
		return 0;
	if (name != NULL && method_session_name_ok(req, s->owner, name, s) != 0) {
		free(name);
		return 0;
	}
	old_w = s->params.window;
	old_g = s->params.n_global;
	if (method_session_apply(req, req->args, s, &rerender) != 0) {
		free(name);
		return 0;
	}
	if (name != NULL) {
		free(s->name);
		s->name = name;
	}
	if (rerender) {
		/* New geometry or system prompt: a new cache, re-prefilled
		 * from the transcript on the next turn. */
		residency_drop(s);
		if (s->params.window != old_w || s->params.n_global != old_g)
			s->window = 0;
		if (s->n_tokens > 0 && method_session_rerender(s) != 0)
			log_warnx("session %s: cannot re-render", s->id);
		if (session_setup_cache_params(s, &cause) != 0) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "%s", cause);
			free(cause);
			return 0;
		}
	}
	if (s->sampler != NULL)
		sampler_set_params(s->sampler, &s->params.sampling, 0);
	s->updated = (int64_t)now_ms();
	residency_save_meta(s);
	method_reply_info(req, s);
	return 0;
}

int
method_session_delete(struct request *req)
{
	struct session *s;
	struct reply r;

	if ((s = method_session_arg(req)) == NULL)
		return 0;
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 1);
	proto_pack_kv_str(&r.pk, "id", s->id);
	log_info("session %s deleted by uid %u", s->id, (unsigned)req->c->uid);
	residency_delete(s);
	s->deleted = 1;
	if (s->turn != NULL)
		turn_cancel(s->turn);	/* removed when the turn ends */
	else if (s->state == SESSION_IDLE)
		session_remove(s);
	reply_send(&r, req->c);
	return 0;
}

int
method_session_fork(struct request *req)
{
	struct session *src, *dst;
	char *name = NULL, *cause = NULL;

	if ((src = method_session_arg(req)) == NULL)
		return 0;
	if (src->state != SESSION_IDLE) {
		reply_error(req->c, req->msgid, PROTO_E_BUSY,
		    "session %s is running a turn", src->id);
		return 0;
	}
	if (method_session_quota(req) != 0 || method_session_load(req, src) != 0 ||
	    method_session_str(req, "name", 64, &name) != 0)
		return 0;
	if (name != NULL && method_session_name_ok(req, req->c->uid, name,
	    NULL) != 0) {
		free(name);
		return 0;
	}
	dst = session_new(req->c->uid);
	dst->name = name;
	if (residency_fork(src, dst, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_NO_MEMORY, "%s", cause);
		free(cause);
		session_remove(dst);
		return 0;
	}
	log_info("session %s forked from %s", dst->id, src->id);
	method_reply_info(req, dst);
	return 0;
}

int
method_session_export(struct request *req)
{
	struct session *s;
	struct reply r;

	if ((s = method_session_arg(req)) == NULL ||
	    method_session_load(req, s) != 0)
		return 0;
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 10);
	proto_pack_kv_str(&r.pk, "format", SESSION_EXPORT_FORMAT);
	proto_pack_kv_int(&r.pk, "version", SESSION_EXPORT_VERSION);
	proto_pack_kv_str(&r.pk, "name", s->name != NULL ? s->name : "");
	proto_pack_kv_str(&r.pk, "system", s->params.system_prompt != NULL ?
	    s->params.system_prompt : "");
	proto_pack_cstr(&r.pk, "params");
	method_pack_params(&r.pk, &s->params);
	proto_pack_kv_uint(&r.pk, "window", s->params.window);
	proto_pack_kv_uint(&r.pk, "n_global", s->params.n_global);
	proto_pack_kv_str(&r.pk, "template", chat_template_name(s->tmpl));
	proto_pack_kv_str(&r.pk, "model", model_name(model));
	proto_pack_cstr(&r.pk, "messages");
	msgpack_pack_array(&r.pk, s->n_msgs);
	for (size_t i = 0; i < s->n_msgs; i++) {
		msgpack_pack_map(&r.pk, 2);
		proto_pack_kv_str(&r.pk, "role", s->msgs[i].role);
		proto_pack_cstr(&r.pk, "text");
		proto_pack_str(&r.pk, s->msgs[i].text, s->msgs[i].text_len);
	}
	reply_send(&r, req->c);
	return 0;
}

int
method_session_import(struct request *req)
{
	const msgpack_object *doc, *msgs;
	struct session *s;
	struct turn *t;
	char role[16], *name = NULL, *tmpl_s = NULL, *cause = NULL;
	const char *fmt, *text;
	size_t len;
	int64_t version;
	enum chat_template tmpl;
	int rerender;

	proto_arg_map(req->args, "document", &doc);
	if (proto_arg_str(doc, "format", &fmt, &len) != PROTO_ARG_OK ||
	    len != strlen(SESSION_EXPORT_FORMAT) ||
	    memcmp(fmt, SESSION_EXPORT_FORMAT, len) != 0 ||
	    proto_arg_int(doc, "version", &version) != PROTO_ARG_OK ||
	    version != SESSION_EXPORT_VERSION ||
	    proto_arg_array(doc, "messages", &msgs) != PROTO_ARG_OK) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "document: not a %s version %d document",
		    SESSION_EXPORT_FORMAT, SESSION_EXPORT_VERSION);
		return 0;
	}
	if (method_session_quota(req) != 0 || method_turn_limits(req) != 0)
		return 0;
	if (method_session_str(req, "name", 64, &name) != 0)
		return 0;
	if (name == NULL && proto_arg_str(doc, "name", &text, &len) ==
	    PROTO_ARG_OK && len > 0 && len <= 64)
		name = xstrndup(text, len);
	if (name != NULL && (!session_name_valid(name) ||
	    session_find_name(req->c->uid, name) != NULL)) {
		reply_error(req->c, req->msgid, PROTO_E_EXISTS,
		    "a session named %s already exists (or the name is "
		    "invalid): pass another 'name'", name);
		free(name);
		return 0;
	}
	tmpl = residency_default_template(NULL);
	if (proto_arg_str(doc, "template", &text, &len) == PROTO_ARG_OK &&
	    len < 32) {
		tmpl_s = xstrndup(text, len);
		if (chat_template_parse(tmpl_s, &tmpl) != 0) {
			free(tmpl_s);
			tmpl_s = NULL;
		}
	}
	s = session_new(req->c->uid);
	s->name = name;
	s->params.template = tmpl_s;
	s->tmpl = tmpl;
	if (kv_type_parse(cfg.kv_type, &s->params.kv_type) != 0)
		s->params.kv_type = KV_TYPE_F16;
	if (method_session_apply(req, doc, s, &rerender) != 0)
		goto fail;
	for (uint32_t i = 0; i < msgs->via.array.size; i++) {
		const msgpack_object *m = &msgs->via.array.ptr[i];

		/* What the model wrote may hold a NUL byte, as it did in the
		 * session exported; what a person wrote (user, prompt) may
		 * not, as in chat and generate. */
		if (m->type != MSGPACK_OBJECT_MAP ||
		    proto_arg_cstr(m, "role", role, sizeof role) != PROTO_ARG_OK ||
		    (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
		    strcmp(role, "prompt") != 0 &&
		    strcmp(role, "completion") != 0) ||
		    proto_arg_str(m, "text", &text, &len) != PROTO_ARG_OK ||
		    (memchr(text, '\0', len) != NULL &&
		    strcmp(role, "assistant") != 0 &&
		    strcmp(role, "completion") != 0) ||
		    !proto_utf8_valid(text, len)) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "document: messages[%u] must be {role: user|"
			    "assistant|prompt|completion, text: str}", i);
			goto fail;
		}
		session_push_msg(s, role, text, len, NULL, 0);
	}
	if (method_session_rerender(s) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "document: the messages cannot be rendered");
		goto fail;
	}
	if (s->n_tokens > (int64_t)cfg.max_prompt_tokens * 4) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "the transcript is %lld tokens", (long long)s->n_tokens);
		goto fail;
	}
	if (session_setup_cache_params(s, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS, "%s",
		    cause);
		free(cause);
		goto fail;
	}
	log_info("session %s imported by uid %u (%zu messages, %lld tokens)",
	    s->id, (unsigned)s->owner, s->n_msgs, (long long)s->n_tokens);
	t = turn_new(req->c, req->msgid, PROTO_M_SESSION_IMPORT);
	t->s = s;
	t->import = 1;
	t->params = s->params.sampling;
	t->job.max_new = 0;
	if (s->n_tokens == 0) {
		residency_save_meta(s);
		turn_free(t);
		method_reply_info(req, s);
		return 0;
	}
	method_turn_go(t);
	return 0;
fail:
	session_remove(s);
	return 0;
}
