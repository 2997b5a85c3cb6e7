/*
 * method-turn.c: the methods that run the model: chat, generate, cancel.
 *
 * chat and generate check their arguments and limits, render the new input
 * to tokens (chat.h for chat, the tokenizer for generate), and build a
 * turn (turn.c).  If the session's cache is not in memory it is read back
 * first (residency.c); the turn then goes to the engine and is answered
 * when it ends and is stored (turn.c DESIGN 4).  cancel stops a turn
 * still running; one that is only waiting for its save has finished.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

/* Resolve the request's session for a turn; replies on failure. */
static struct session *
method_turn_session(struct request *req, const char *key)
{
	struct session *s;
	int code;

	if ((s = session_find(req->c, key, &code)) == NULL) {
		reply_error(req->c, req->msgid, code, "%s: %s", key,
		    proto_error_message(code));
		return NULL;
	}
	if (s->state != SESSION_IDLE) {
		reply_error(req->c, req->msgid, PROTO_E_BUSY,
		    "session %s is running another turn", s->id);
		return NULL;
	}
	return s;
}

/* Per-connection and per-uid request limits; replies when exceeded. */
int
method_turn_limits(struct request *req)
{
	if ((uint32_t)req->c->n_requests >= cfg.max_requests_per_connection) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "this connection already has %d requests running "
		    "(max-requests-per-connection)", req->c->n_requests);
		return -1;
	}
	if ((uint32_t)turn_uid_count(req->c->uid) >= cfg.max_requests_per_uid) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "uid %u already has %u requests running "
		    "(max-requests-per-uid)", (unsigned)req->c->uid,
		    cfg.max_requests_per_uid);
		return -1;
	}
	return 0;
}

/* A string argument without NUL bytes, as a C string (malloc'd). */
static char *
method_turn_text(struct request *req, const char *key)
{
	const char *p;
	size_t len;

	if (proto_arg_str(req->args, key, &p, &len) != PROTO_ARG_OK)
		p = "", len = 0;
	if (memchr(p, '\0', len) != NULL || !proto_utf8_valid(p, len)) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "argument '%s' must be UTF-8 text without NUL bytes", key);
		return NULL;
	}
	return xstrndup(p, len);
}

/*
 * Sampling and limits for a turn: the session's parameters (or the
 * defaults) with the request's params on top.  Fills t->params,
 * t->reseed, the job's max_new and stop strings.  Replies on failure.
 */
static int
method_turn_params(struct request *req, struct turn *t,
    const struct store_params *base)
{
	const msgpack_object *p = NULL;
	int32_t max_tokens;
	char *cause = NULL;

	if (base != NULL) {
		t->params = base->sampling;
		max_tokens = base->max_tokens;
	} else {
		sampler_params_default(&t->params);
		max_tokens = 0;
	}
	proto_arg_map(req->args, "params", &p);
	if (method_arg_params(req, p, &t->params, &max_tokens, &t->job.stop,
	    &t->job.n_stop, &t->reseed, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS, "%s",
		    cause);
		free(cause);
		return -1;
	}
	if (max_tokens <= 0)
		max_tokens = (int32_t)cfg.max_tokens;
	if ((uint32_t)max_tokens > cfg.max_tokens) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "max_tokens %d is over the limit of %u (max-tokens)",
		    max_tokens, cfg.max_tokens);
		return -1;
	}
	t->job.max_new = max_tokens;
	return 0;
}

static int
method_turn_stream(struct request *req)
{
	bool b = true;

	proto_arg_bool(req->args, "stream", &b);
	return b;
}

/* The session's cache is back (or rebuilt): run the turn. */
static void
method_turn_loaded_cb(struct session *s, int rc, int rebuilt,
    const char *cause, void *arg)
{
	struct turn *t = arg;

	s->state = SESSION_BUSY;
	t->rebuilt = rebuilt;
	turn_start(t);
}

/*
 * Bring t's session into memory if needed and start t.  The session is
 * marked busy here.  On failure the turn is answered and freed.
 */
void
method_turn_go(struct turn *t)
{
	struct session *s = t->s;
	char *cause = NULL;
	int need_load, rc;

	s->state = SESSION_BUSY;
	s->turn = t;
	session_touch(s);
	if (residency_make_resident(s, &need_load, &cause) != 0) {
		turn_fail(t, PROTO_E_NO_MEMORY, "%s", cause);
		free(cause);
		return;
	}
	if (need_load) {
		s->state = SESSION_LOADING;
		if ((rc = residency_load_cache(s, method_turn_loaded_cb,
		    t)) != 0) {
			turn_fail(t, PROTO_E_STORAGE, "cannot read the stored "
			    "cache: %s", strerror(-rc));
		}
		return;
	}
	if (s->need_full && s->n_tokens > 0 && s->chain_pos < 0)
		t->rebuilt = 1;
	turn_start(t);
}

/* Encode len bytes of text with the tokenizer into a malloc'd array.
 * Returns the count, or a negative errno. */
int64_t
method_turn_encode(const char *text, size_t len, int flags, int32_t **out)
{
	const struct tokenizer *tok = daemon_tokenizer();
	int64_t n, m;

	*out = NULL;
	n = tokenizer_encode(tok, text, len, flags, NULL, 0);
	if (n < 0)
		return n;
	if ((*out = malloc(((size_t)n + 1) * sizeof **out)) == NULL)
		return -ENOMEM;
	m = tokenizer_encode(tok, text, len, flags, *out, n);
	if (m != n) {
		free(*out);
		*out = NULL;
		return m < 0 ? m : -EIO;
	}
	return n;
}

int
method_chat(struct request *req)
{
	const struct tokenizer *tok = daemon_tokenizer();
	struct session *s;
	struct turn *t;
	char key[128], *text, *cause = NULL;
	int rc, n_stop;

	if (proto_arg_cstr(req->args, "session", key, sizeof key) !=
	    PROTO_ARG_OK) {
		reply_error(req->c, req->msgid, PROTO_E_NO_SUCH_SESSION,
		    "no such session");
		return 0;
	}
	if ((s = method_turn_session(req, key)) == NULL)
		return 0;
	if (method_turn_limits(req) != 0)
		return 0;
	if ((text = method_turn_text(req, "text")) == NULL)
		return 0;
	if (residency_load_transcript(s, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_STORAGE, "%s", cause);
		free(cause);
		free(text);
		return 0;
	}
	t = turn_new(req->c, req->msgid, PROTO_M_CHAT);
	t->s = s;
	t->input_text = text;
	t->in_role = "user";
	t->out_role = "assistant";
	t->stream = method_turn_stream(req);
	if (method_turn_params(req, t, &s->params) != 0) {
		turn_free(t);
		return 0;
	}
	rc = chat_render_turn(s->tmpl, tok, s->params.system_prompt,
	    session_first_turn(s), session_last_closed(s), text, &t->input,
	    &t->n_input);
	if (rc != 0) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "cannot render the turn: %s", strerror(-rc));
		turn_free(t);
		return 0;
	}
	if (t->n_input > (int64_t)cfg.max_prompt_tokens) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "the message is %lld tokens; the limit is %u "
		    "(max-prompt-tokens)", (long long)t->n_input,
		    cfg.max_prompt_tokens);
		turn_free(t);
		return 0;
	}
	n_stop = chat_stop_ids(s->tmpl, tok, t->job.stop_ids);
	t->job.n_stop_ids = n_stop > 0 ? n_stop : 0;
	t->job.decode_flags = DECODE_STRIP_LEADING;
	method_turn_go(t);
	return 0;
}

/* A one-off completion: its own cache, freed at the end. */
static int
method_generate_oneoff(struct request *req, struct turn *t)
{
	struct kv_params kp;
	int exact, rc;

	memset(&kp, 0, sizeof kp);
	kp.window = model_window(model, 0, cfg.window, &exact);
	if (kv_type_parse(cfg.kv_type, &kp.type) != 0)
		kp.type = KV_TYPE_F16;
	t->kv_charge = kvcache_size_for(model, &kp);
	if (residency_reserve(t->kv_charge, NULL) != 0) {
		turn_fail(t, PROTO_E_NO_MEMORY, "the KV memory budget is full "
		    "(kv-budget, %llu MiB, in use by busy or unsaved "
		    "sessions); try again shortly",
		    (unsigned long long)(cfg.kv_budget >> 20));
		return 0;
	}
	if ((rc = kvcache_create(model, &kp, &t->job.kv)) != 0) {
		t->job.kv = NULL;
		turn_fail(t, PROTO_E_NO_MEMORY, "cannot allocate a cache: %s",
		    strerror(-rc));
		return 0;
	}
	kv_resident_bytes += t->kv_charge;
	t->job.sampler = sampler_create(&t->params,
	    (int32_t)model_hparams(model)->n_vocab);
	if (t->job.sampler == NULL) {
		turn_fail(t, PROTO_E_NO_MEMORY, "cannot allocate a sampler");
		return 0;
	}
	t->job.session_params = t->params;
	turn_start(t);
	return 0;
}

int
method_generate(struct request *req)
{
	const struct tokenizer *tok = daemon_tokenizer();
	struct session *s = NULL;
	struct turn *t;
	char key[128], *prompt, *cause = NULL;
	int flags = 0, n_stop;
	int64_t n;
	bool bos = true;

	if (proto_arg_cstr(req->args, "session", key, sizeof key) ==
	    PROTO_ARG_OK && (s = method_turn_session(req, key)) == NULL)
		return 0;
	if (method_turn_limits(req) != 0)
		return 0;
	if ((prompt = method_turn_text(req, "prompt")) == NULL)
		return 0;
	if (s != NULL && residency_load_transcript(s, &cause) != 0) {
		reply_error(req->c, req->msgid, PROTO_E_STORAGE, "%s", cause);
		free(cause);
		free(prompt);
		return 0;
	}
	t = turn_new(req->c, req->msgid, PROTO_M_GENERATE);
	t->s = s;
	t->input_text = prompt;
	t->in_role = "prompt";
	t->out_role = "completion";
	t->stream = method_turn_stream(req);
	if (method_turn_params(req, t, s != NULL ? &s->params : NULL) != 0) {
		turn_free(t);
		return 0;
	}
	if (s == NULL) {
		proto_arg_bool(req->args, "bos", &bos);
		if (bos && tokenizer_bos(tok) >= 0)
			flags |= TOKENIZE_ADD_BOS;
	} else if (session_first_turn(s)) {
		if (tokenizer_bos(tok) >= 0)
			flags |= TOKENIZE_ADD_BOS;
	} else
		flags |= TOKENIZE_NO_PREFIX;
	if (*prompt != '\0' || (flags & TOKENIZE_ADD_BOS)) {
		if (*prompt == '\0') {
			t->input = xmalloc(sizeof *t->input);
			t->input[0] = tokenizer_bos(tok);
			n = 1;
		} else
			n = method_turn_encode(prompt, strlen(prompt), flags,
			    &t->input);
		if (n < 0) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "cannot tokenize the prompt: %s", strerror((int)-n));
			turn_free(t);
			return 0;
		}
		t->n_input = n;
	}
	if (t->n_input > (int64_t)cfg.max_prompt_tokens) {
		reply_error(req->c, req->msgid, PROTO_E_LIMIT_EXCEEDED,
		    "the prompt is %lld tokens; the limit is %u "
		    "(max-prompt-tokens)", (long long)t->n_input,
		    cfg.max_prompt_tokens);
		turn_free(t);
		return 0;
	}
	if (t->n_input == 0 && (s == NULL || s->n_tokens == 0)) {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "nothing to continue: the prompt is empty");
		turn_free(t);
		return 0;
	}
	n_stop = chat_stop_ids(CHAT_TEMPLATE_RAW, tok, t->job.stop_ids);
	t->job.n_stop_ids = n_stop > 0 ? n_stop : 0;
	if (*prompt == '\0' && (s == NULL || s->n_tokens == 0))
		t->job.decode_flags = DECODE_STRIP_LEADING;
	if (s == NULL)
		return method_generate_oneoff(req, t);
	method_turn_go(t);
	return 0;
}

int
method_cancel(struct request *req)
{
	struct session *s;
	struct turn *t, *found = NULL;
	struct reply r;
	char key[128];
	uint64_t id;
	int code;

	if (proto_arg_uint(req->args, "request", &id) == PROTO_ARG_OK) {
		TAILQ_FOREACH(t, &req->c->turns, centry) {
			if (t->msgid == id)
				found = t;
		}
	} else if (proto_arg_cstr(req->args, "session", key, sizeof key) ==
	    PROTO_ARG_OK) {
		if ((s = session_find(req->c, key, &code)) == NULL) {
			reply_error(req->c, req->msgid, code, "%s: %s", key,
			    proto_error_message(code));
			return 0;
		}
		found = s->turn;
	} else {
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "cancel needs 'request' or 'session'");
		return 0;
	}
	if (found == NULL || found->save_seq != 0) {
		reply_error(req->c, req->msgid, PROTO_E_NO_SUCH_REQUEST,
		    "nothing to cancel");
		return 0;
	}
	turn_cancel(found);
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 1);
	proto_pack_kv_bool(&r.pk, "cancelled", true);
	reply_send(&r, req->c);
	return 0;
}
