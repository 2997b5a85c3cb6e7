/*
 * session.c: the session table (loop thread only).
 *
 * A session is a conversation: id, name, owner uid, parameters, chat
 * template, transcript (messages), token history, and, while resident,
 * its rolling KV cache and sampler.  Sessions are found by exact id, then
 * exact name, then a unique id prefix of at least 4 characters, among the
 * sessions the caller may see.
 *
 * Ownership: a session belongs to the uid that created it.  The owner,
 * root and members of admin-group may act on it; to anyone else it does
 * not exist (NO_SUCH_SESSION, never PERMISSION_DENIED), so that ids and
 * names of other users' sessions cannot be probed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

struct session_list sessions = TAILQ_HEAD_INITIALIZER(sessions);

/* A new, empty, non-resident session for uid with default parameters. */
struct session *
session_new(uid_t owner)
{
	struct session *s;

	s = xcalloc(1, sizeof *s);
	if (store_new_id(s->id) != 0)
		fatalx("session_new: no random bytes for an id");
	s->owner = owner;
	s->created = s->updated = (int64_t)now_ms();
	store_params_default(&s->params);
	s->loaded = 1;
	s->chain_pos = -1;
	s->stored_pos = 0;
	s->last_use = uv_now(loop);
	TAILQ_INSERT_TAIL(&sessions, s, entry);
	return s;
}

/* Free a session's transcript and history (it stays in the table). */
static void
session_clear_transcript(struct session *s)
{
	for (size_t i = 0; i < s->n_msgs; i++) {
		free(s->msgs[i].role);
		free(s->msgs[i].text);
		free(s->msgs[i].tokens);
	}
	free(s->msgs);
	free(s->tokens);
	s->msgs = NULL;
	s->n_msgs = s->msgs_cap = 0;
	s->tokens = NULL;
	s->n_tokens = s->tokens_cap = 0;
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	residency_drop(s);
	session_clear_transcript(s);
	store_params_clear(&s->params);
	free(s->name);
	free(s->persist_error);
	free(s);
}

/* Take s out of the table and free it (it must be idle). */
void
session_remove(struct session *s)
{
	TAILQ_REMOVE(&sessions, s, entry);
	session_free(s);
}

int
session_visible(const struct client *c, const struct session *s)
{
	if (s->deleted)
		return 0;
	return c->uid == s->owner || server_client_is_admin(c);
}

/* Names: 1..64 bytes of [A-Za-z0-9._-] (protocol.h). */
int
session_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 64)
		return 0;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-") == len;
}

/* The session of owner uid named name, or NULL. */
struct session *
session_find_name(uid_t uid, const char *name)
{
	struct session *s;

	TAILQ_FOREACH(s, &sessions, entry) {
		if (!s->deleted && s->owner == uid && s->name != NULL &&
		    strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

/*
 * Resolve "session" for client c: exact id, then exact name (the
 * caller's own first), then a unique prefix.  Returns the session, or
 * NULL with *code set (NO_SUCH_SESSION or AMBIGUOUS).
 */
struct session *
session_find(const struct client *c, const char *key, int *code)
{
	struct session *s, *found = NULL;
	size_t len = strlen(key);
	int n = 0;

	*code = PROTO_E_NO_SUCH_SESSION;
	TAILQ_FOREACH(s, &sessions, entry) {
		if (strcmp(s->id, key) == 0)
			return session_visible(c, s) ? s : NULL;
	}
	if ((s = session_find_name(c->uid, key)) != NULL)
		return s;
	TAILQ_FOREACH(s, &sessions, entry) {
		if (s->name != NULL && strcmp(s->name, key) == 0 &&
		    session_visible(c, s)) {
			found = s;
			n++;
		}
	}
	if (n == 1)
		return found;
	if (n > 1) {
		*code = PROTO_E_AMBIGUOUS;
		return NULL;
	}
	if (len < 4 || len >= STORE_ID_SIZE)
		return NULL;
	TAILQ_FOREACH(s, &sessions, entry) {
		if (strncmp(s->id, key, len) == 0 && session_visible(c, s)) {
			found = s;
			n++;
		}
	}
	if (n == 1)
		return found;
	if (n > 1)
		*code = PROTO_E_AMBIGUOUS;
	return NULL;
}

size_t
session_count_uid(uid_t uid)
{
	struct session *s;
	size_t n = 0;

	TAILQ_FOREACH(s, &sessions, entry) {
		if (!s->deleted && s->owner == uid)
			n++;
	}
	return n;
}

void
session_touch(struct session *s)
{
	s->last_use = uv_now(loop);
}

const char *
session_state_name(const struct session *s)
{
	if (s->state != SESSION_IDLE)
		return "busy";
	return s->kv != NULL ? "resident" : "stored";
}

/* Append n ids to the history.  Returns 0 or -ENOMEM. */
int
session_push_tokens(struct session *s, const int32_t *ids, int64_t n)
{
	int32_t *p;
	int64_t cap;

	if (s->n_tokens + n > s->tokens_cap) {
		cap = s->tokens_cap ? s->tokens_cap : 256;
		while (cap < s->n_tokens + n)
			cap *= 2;
		p = realloc(s->tokens, (size_t)cap * sizeof *p);
		if (p == NULL)
			return -ENOMEM;
		s->tokens = p;
		s->tokens_cap = cap;
	}
	if (n > 0)
		memcpy(s->tokens + s->n_tokens, ids, (size_t)n * sizeof *ids);
	s->n_tokens += n;
	return 0;
}

/*
 * Append a message of len bytes of text (NULs included: a reply may hold
 * one) whose tokens (n, may be 0) also go onto the history.  Returns 0 or
 * -ENOMEM (nothing changed then).
 */
int
session_push_msg(struct session *s, const char *role, const char *text,
    size_t len, const int32_t *ids, int64_t n)
{
	struct session_msg *m;
	int64_t pos = s->n_tokens;

	if (s->n_msgs == s->msgs_cap) {
		s->msgs_cap = s->msgs_cap ? s->msgs_cap * 2 : 16;
		s->msgs = xreallocarray(s->msgs, s->msgs_cap, sizeof *s->msgs);
	}
	if (session_push_tokens(s, ids, n) != 0)
		return -ENOMEM;
	m = &s->msgs[s->n_msgs];
	memset(m, 0, sizeof *m);
	m->role = xstrdup(role);
	m->text = malloc(len + 1);
	m->tokens = n > 0 ? malloc((size_t)n * sizeof *ids) : NULL;
	if (m->text == NULL || (n > 0 && m->tokens == NULL)) {
		free(m->role);
		free(m->text);
		free(m->tokens);
		s->n_tokens = pos;
		return -ENOMEM;
	}
	memcpy(m->text, text, len);
	m->text[len] = '\0';
	m->text_len = len;
	if (n > 0)
		memcpy(m->tokens, ids, (size_t)n * sizeof *ids);
	m->n_tokens = n;
	m->pos = pos;
	m->created = (int64_t)now_ms();
	s->n_msgs++;
	return 0;
}

/* Nothing rendered yet: the next chat turn is the first. */
int
session_first_turn(const struct session *s)
{
	return s->n_tokens == 0;
}

/* Did the last reply end with a stop token (chat_reply_closed)? */
int
session_last_closed(const struct session *s)
{
	const struct session_msg *m;

	if (s->n_msgs == 0)
		return 1;
	m = &s->msgs[s->n_msgs - 1];
	if (strcmp(m->role, "assistant") != 0 &&
	    strcmp(m->role, "completion") != 0)
		return 0;
	return chat_reply_closed(s->tmpl, daemon_tokenizer(), m->tokens,
	    m->n_tokens);
}

/*
 * Settle the cache geometry: the window W (request, capped by the window
 * setting, else the model's) and the global tokens G (as stored, or, for a
 * new session, BOS plus the system prompt's part of the first turn).
 * Returns 0, or -1 with cause.
 */
int
session_setup_cache_params(struct session *s, char **cause)
{
	const struct tokenizer *tok = daemon_tokenizer();
	int32_t *a = NULL, *b = NULL;
	int64_t na = 0, nb = 0, k;
	uint32_t g;

	s->window = model_window(model, s->params.window, cfg.window,
	    &s->exact);
	if (s->window == 0) {
		xasprintf(cause, "the model gives no usable window");
		return -1;
	}
	g = s->params.n_global;
	if (g == 0 && s->n_tokens == 0) {
		/* The tokens before the user's text in the first turn. */
		if (chat_render_turn(s->tmpl, tok, s->params.system_prompt, 1,
		    1, "", &a, &na) == 0 &&
		    chat_render_turn(s->tmpl, tok, s->params.system_prompt, 1,
		    1, "a", &b, &nb) == 0) {
			for (k = 0; k < na && k < nb && a[k] == b[k]; k++)
				;
			g = (uint32_t)k;
		}
		free(a);
		free(b);
		if (g > s->window / 2)
			g = s->window / 2;
		if (s->exact)
			g = 0;
		s->params.n_global = g;
	}
	s->n_global = s->params.n_global;
	return 0;
}
