/*
 * store-session.c: sessions, their parameters, transcripts and sampler
 * state in the store (see store.h and store.c).
 *
 * DESIGN
 *
 * 1. The parameters column is key=value text, one per line, values escaped
 *    (\\ and \n), so a person can read it with sqlite3(1) and a field can be
 *    added without a schema change.  Numbers are written and read in the C
 *    locale's format (the daemon never calls setlocale for LC_NUMERIC).
 *
 * 2. Session rows are read as a whole plus summary columns computed in
 *    SQL (message count, snapshot position, bytes and time), so listing
 *    every session never touches a transcript or a chunk.
 *
 * 3. A message's text is bytes with a length, and a model may generate a
 *    NUL byte (a byte-fallback token <0x00>).  Text without NUL is stored
 *    as TEXT, as it always was; text holding a NUL as a BLOB of the same
 *    UTF-8 bytes (the column's TEXT affinity leaves a BLOB as it is).
 *    SQLite keeps NULs inside TEXT too, but its own functions and
 *    sqlite3(1) stop at the first one (`.dump` would write "a" for
 *    "a\0b": a backup would lose the rest), while a BLOB is dumped whole.
 *    Reading takes the column's bytes with sqlite3_column_bytes() whatever
 *    its type, so databases written before (TEXT only) read as they did.
 *    The schema is unchanged: a build that predates this reads such a
 *    text up to its first NUL, as it wrote it.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "store-internal.h"

/* ---- parameters as key=value text ----------------------------------- */

static void
store_buf_escaped(struct store_buf *b, const char *key, const char *v)
{
	const char *q;

	if (v == NULL)
		return;
	store_buf_add(b, key, strlen(key));
	store_buf_add(b, "=", 1);
	for (q = v; *q != '\0'; q++) {
		if (*q == '\\')
			store_buf_add(b, "\\\\", 2);
		else if (*q == '\n')
			store_buf_add(b, "\\n", 2);
		else
			store_buf_add(b, q, 1);
	}
	store_buf_add(b, "\n", 1);
}

/* key=value for a float, in the fewest digits that read back exactly
 * (9 always do), so 0.95 is stored as "0.95", not "0.949999988". */
static void
store_buf_float(struct store_buf *b, const char *key, float v)
{
	char tmp[64];
	int prec;

	for (prec = 6; prec < 9; prec++) {
		snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
		if ((float)strtod(tmp, NULL) == v)
			break;
	}
	store_buf_printf(b, "%s=%.*g\n", key, prec, (double)v);
}

/* Returns a malloc'd text, or NULL on allocation failure. */
static char *
store_params_encode(const struct store_params *p)
{
	struct store_buf b = { 0 };
	const struct sampler_params *sp = &p->sampling;

	store_buf_float(&b, "temperature", sp->temperature);
	store_buf_printf(&b, "top_k=%" PRId32 "\n", sp->top_k);
	store_buf_float(&b, "top_p", sp->top_p);
	store_buf_float(&b, "min_p", sp->min_p);
	store_buf_float(&b, "repeat_penalty", sp->repeat_penalty);
	store_buf_printf(&b, "repeat_last_n=%" PRId32 "\n", sp->repeat_last_n);
	store_buf_printf(&b, "seed=%" PRIu64 "\n", sp->seed);
	store_buf_printf(&b, "max_tokens=%" PRId32 "\n", p->max_tokens);
	store_buf_printf(&b, "window=%" PRIu32 "\n", p->window);
	store_buf_printf(&b, "n_global=%" PRIu32 "\n", p->n_global);
	store_buf_printf(&b, "kv_type=%d\n", (int)p->kv_type);
	store_buf_escaped(&b, "system_prompt", p->system_prompt);
	store_buf_escaped(&b, "template", p->template);
	if (b.failed || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static int
store_parse_i64(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

static int
store_parse_float(const char *v, float *out)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0')
		return -1;
	*out = (float)x;
	return 0;
}

/* Unescape in place. */
static char *
store_unescape(char *v)
{
	char *r = v, *w = v;

	while (*r != '\0') {
		if (r[0] == '\\' && r[1] == 'n') {
			*w++ = '\n';
			r += 2;
		} else if (r[0] == '\\' && r[1] == '\\') {
			*w++ = '\\';
			r += 2;
		} else
			*w++ = *r++;
	}
	*w = '\0';
	return strdup(v);
}

/*
 * Parse text into *p (defaults first).  Unknown keys are ignored; a
 * malformed value leaves that field at its default and returns 1.
 * Returns 0, 1 or -ENOMEM.
 */
static int
store_params_decode(const char *text, struct store_params *p)
{
	struct sampler_params *sp = &p->sampling;
	char *copy, *line, *next, *eq, *key, *v;
	int64_t x;
	int bad = 0, r;
	uint64_t u;
	char *end;

	store_params_default(p);
	if (text == NULL)
		return 1;
	if ((copy = strdup(text)) == NULL)
		return -ENOMEM;
	for (line = copy; line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if ((eq = strchr(line, '=')) == NULL) {
			bad = 1;
			continue;
		}
		*eq = '\0';
		key = line;
		v = eq + 1;
		r = 0;
		if (strcmp(key, "temperature") == 0)
			r = store_parse_float(v, &sp->temperature);
		else if (strcmp(key, "top_p") == 0)
			r = store_parse_float(v, &sp->top_p);
		else if (strcmp(key, "min_p") == 0)
			r = store_parse_float(v, &sp->min_p);
		else if (strcmp(key, "repeat_penalty") == 0)
			r = store_parse_float(v, &sp->repeat_penalty);
		else if (strcmp(key, "top_k") == 0) {
			if ((r = store_parse_i64(v, INT32_MIN, INT32_MAX,
			    &x)) == 0)
				sp->top_k = (int32_t)x;
		} else if (strcmp(key, "repeat_last_n") == 0) {
			if ((r = store_parse_i64(v, INT32_MIN, INT32_MAX,
			    &x)) == 0)
				sp->repeat_last_n = (int32_t)x;
		} else if (strcmp(key, "max_tokens") == 0) {
			if ((r = store_parse_i64(v, INT32_MIN, INT32_MAX,
			    &x)) == 0)
				p->max_tokens = (int32_t)x;
		} else if (strcmp(key, "window") == 0) {
			if ((r = store_parse_i64(v, 0, UINT32_MAX, &x)) == 0)
				p->window = (uint32_t)x;
		} else if (strcmp(key, "n_global") == 0) {
			if ((r = store_parse_i64(v, 0, UINT32_MAX, &x)) == 0)
				p->n_global = (uint32_t)x;
		} else if (strcmp(key, "kv_type") == 0) {
			if ((r = store_parse_i64(v, 0, 255, &x)) == 0)
				p->kv_type = (enum kv_type)x;
		} else if (strcmp(key, "seed") == 0) {
			errno = 0;
			u = strtoull(v, &end, 10);
			if (errno != 0 || end == v || *end != '\0' ||
			    *v == '-')
				r = -1;
			else
				sp->seed = u;
		} else if (strcmp(key, "system_prompt") == 0) {
			free(p->system_prompt);
			if ((p->system_prompt = store_unescape(v)) == NULL)
				goto nomem;
		} else if (strcmp(key, "template") == 0) {
			free(p->template);
			if ((p->template = store_unescape(v)) == NULL)
				goto nomem;
		}
		if (r != 0)
			bad = 1;
	}
	free(copy);
	return bad;
nomem:
	free(copy);
	store_params_clear(p);
	return -ENOMEM;
}

/* ---- sessions ------------------------------------------------------- */

#define STORE_SESSION_COLS						\
	"s.id, s.owner, s.name, s.created, s.updated, s.params,"	\
	" s.fingerprint, s.base, s.pos,"				\
	" (SELECT count(*) FROM messages m WHERE m.session = s.id),"	\
	" (SELECT k.pos FROM kv_links k WHERE k.session = s.id"		\
	"   ORDER BY k.link DESC LIMIT 1),"				\
	" (SELECT sum(t.bytes) FROM kv_links k JOIN kv_streams t"	\
	"   ON t.id = k.stream WHERE k.session = s.id),"		\
	" (SELECT max(k.created) FROM kv_links k WHERE k.session = s.id)"

/* Fill *ss from a row of STORE_SESSION_COLS.  0 or -ENOMEM. */
static int
store_session_row(sqlite3_stmt *st, struct store_session *ss)
{
	const unsigned char *id;
	int rc;

	memset(ss, 0, sizeof *ss);
	id = sqlite3_column_text(st, 0);
	if (id != NULL)
		snprintf(ss->id, sizeof ss->id, "%s", (const char *)id);
	ss->owner = sqlite3_column_int64(st, 1);
	if (sqlite3_column_type(st, 2) != SQLITE_NULL &&
	    (ss->name = store_strdup_col(st, 2)) == NULL)
		return -ENOMEM;
	ss->created = sqlite3_column_int64(st, 3);
	ss->updated = sqlite3_column_int64(st, 4);
	rc = store_params_decode((const char *)sqlite3_column_text(st, 5),
	    &ss->params);
	if (rc < 0) {
		store_session_clear(ss);
		return rc;
	}
	ss->damaged = rc;
	ss->fingerprint = (uint64_t)sqlite3_column_int64(st, 6);
	ss->base = sqlite3_column_int64(st, 7);
	ss->pos = sqlite3_column_int64(st, 8);
	ss->n_messages = sqlite3_column_int64(st, 9);
	ss->kv_pos = sqlite3_column_type(st, 10) == SQLITE_NULL ? -1 :
	    sqlite3_column_int64(st, 10);
	ss->kv_bytes = sqlite3_column_int64(st, 11);
	ss->kv_time = sqlite3_column_int64(st, 12);
	return 0;
}

/* Bind id, owner, name, created, updated, params, fingerprint, base, pos
 * to parameters 1..9.  *params_text is the encoded text to free. */
static int
store_session_bind(struct store *s, sqlite3_stmt *st,
    const struct store_session *ss, char **params_text, char **cause)
{
	int64_t now = store_now_ms();
	int rc;

	if ((*params_text = store_params_encode(&ss->params)) == NULL)
		return -ENOMEM;
	rc = sqlite3_bind_text(st, 1, ss->id, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 2, ss->owner);
	rc |= sqlite3_bind_text(st, 3, ss->name, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 4, ss->created != 0 ? ss->created : now);
	rc |= sqlite3_bind_int64(st, 5, ss->updated != 0 ? ss->updated : now);
	rc |= sqlite3_bind_text(st, 6, *params_text, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 7, (int64_t)ss->fingerprint);
	rc |= sqlite3_bind_int64(st, 8, ss->base);
	rc |= sqlite3_bind_int64(st, 9, ss->pos);
	return store_bound(s, st, rc, cause);
}

int
store_session_validate(const struct store_session *ss, char **cause)
{
	int rc;

	if ((rc = store_check_id(ss->id, cause)) != 0)
		return rc;
	if (ss->name != NULL && (*ss->name == '\0' ||
	    strlen(ss->name) > 256)) {
		store_set_cause(cause, "session name must be 1 to 256 bytes");
		return -EINVAL;
	}
	if (ss->pos < ss->base || ss->base < 0) {
		store_set_cause(cause, "session positions out of order");
		return -EINVAL;
	}
	return 0;
}

static const char store_sql_session_insert[] =
    "INSERT INTO sessions (id, owner, name, created, updated, params,"
    " fingerprint, base, pos) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/* The write itself, inside the caller's transaction. */
int
store_session_write(struct store *s, const struct store_session *ss,
    const char *sql, char **cause)
{
	sqlite3_stmt *st;
	char *text = NULL;
	int rc;

	if ((rc = store_prepare(s, sql, &st, cause)) != 0)
		return rc;
	if ((rc = store_session_bind(s, st, ss, &text, cause)) != 0) {
		sqlite3_finalize(st);
		free(text);
		return rc;
	}
	rc = store_step_done(s, st, cause);
	free(text);
	if (rc == 0 && sqlite3_changes(s->db) == 0) {
		store_set_cause(cause, "no session %s", ss->id);
		rc = -ENOENT;
	}
	return rc;
}

int
store_session_create(struct store *s, const struct store_session *ss,
    char **cause)
{
	int rc;

	if ((rc = store_session_validate(ss, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_session_write(s, ss, store_sql_session_insert,
	    cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

/* Binds like the insert; owner (?2) and created (?4) never change. */
static const char store_sql_session_update[] =
    "UPDATE sessions SET name = ?3, updated = ?5, params = ?6,"
    " fingerprint = ?7, base = ?8, pos = ?9 WHERE id = ?1";

const char store_sql_session_put[] =
    "INSERT INTO sessions (id, owner, name, created, updated, params,"
    " fingerprint, base, pos) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
    " updated = excluded.updated, params = excluded.params,"
    " fingerprint = excluded.fingerprint, base = excluded.base,"
    " pos = excluded.pos";

int
store_session_update(struct store *s, const struct store_session *ss,
    char **cause)
{
	int rc;

	if ((rc = store_session_validate(ss, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_session_write(s, ss, store_sql_session_update,
	    cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

int
store_session_put(struct store *s, const struct store_session *ss,
    char **cause)
{
	int rc;

	if ((rc = store_session_validate(ss, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_session_write(s, ss, store_sql_session_put,
	    cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

/* Run a one-statement write on session id in its own transaction; the
 * statement's ?1 is the id.  *changes gets the rows changed. */
int
store_id_write(struct store *s, const char *id, const char *sql,
    int64_t *changes, char **cause)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_prepare(s, sql, &st, cause)) != 0)
		goto fail;
	if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
	    SQLITE_STATIC), cause)) != 0) {
		sqlite3_finalize(st);
		goto fail;
	}
	if ((rc = store_step_done(s, st, cause)) != 0)
		goto fail;
	if (changes != NULL)
		*changes = sqlite3_changes64(s->db);
	return store_commit(s, cause);
fail:
	store_rollback(s);
	return rc;
}

int
store_session_delete(struct store *s, const char *id, char **cause)
{
	int64_t changes = 0;
	int rc;

	rc = store_id_write(s, id, "DELETE FROM sessions WHERE id = ?1",
	    &changes, cause);
	if (rc == 0 && changes == 0) {
		store_set_cause(cause, "no session %s", id);
		return -ENOENT;
	}
	return rc;
}

static int
store_session_row_cb(sqlite3_stmt *st, void *dst)
{
	return store_session_row(st, dst);
}

static void
store_session_rows_free_cb(void *rows, size_t n)
{
	store_session_list_free(rows, n);
}

/* Run a session query (bound by the caller) and take its rows. */
static int
store_session_rows(struct store *s, sqlite3_stmt *st,
    struct store_session **v, size_t *n, char **cause)
{
	void *rows;
	int rc;

	if ((rc = store_rows(s, st, sizeof **v, store_session_row_cb,
	    store_session_rows_free_cb, &rows, n, cause)) == 0)
		*v = rows;
	return rc;
}

int
store_session_list(struct store *s, int64_t owner, struct store_session **v,
    size_t *n, char **cause)
{
	sqlite3_stmt *st;
	int rc;

	*v = NULL;
	*n = 0;
	if ((rc = store_prepare(s, "SELECT " STORE_SESSION_COLS
	    " FROM sessions s WHERE ?1 < 0 OR s.owner = ?1"
	    " ORDER BY s.created, s.id", &st, cause)) != 0)
		return rc;
	if ((rc = store_bound(s, st, sqlite3_bind_int64(st, 1, owner),
	    cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	return store_session_rows(s, st, v, n, cause);
}

/* Exactly one session from a query with ?1 (and ?2) bound by the caller:
 * -ENOENT for none, and for several (an ambiguous name). */
static int
store_session_one(struct store *s, sqlite3_stmt *st, const char *key,
    struct store_session *out, char **cause)
{
	struct store_session *v;
	size_t n;
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = store_session_rows(s, st, &v, &n, cause)) != 0)
		return rc;
	if (n != 1) {
		store_set_cause(cause, n == 0 ? "no session %s" :
		    "session name %s is ambiguous (several owners)", key);
		store_session_list_free(v, n);
		return -ENOENT;
	}
	*out = v[0];
	free(v);
	return 0;
}

int
store_session_get(struct store *s, const char *id, struct store_session *out,
    char **cause)
{
	sqlite3_stmt *st;
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_prepare(s, "SELECT " STORE_SESSION_COLS
	    " FROM sessions s WHERE s.id = ?1", &st, cause)) != 0)
		return rc;
	if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
	    SQLITE_STATIC), cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	return store_session_one(s, st, id, out, cause);
}

int
store_session_lookup(struct store *s, int64_t owner, const char *id_or_name,
    struct store_session *out, char **cause)
{
	sqlite3_stmt *st;
	int rc;

	memset(out, 0, sizeof *out);
	if (id_or_name == NULL || *id_or_name == '\0') {
		store_set_cause(cause, "empty session name");
		return -EINVAL;
	}
	if (store_id_valid(id_or_name)) {
		rc = store_session_get(s, id_or_name, out, cause);
		if (rc != -ENOENT)
			return rc;
	}
	if ((rc = store_prepare(s, "SELECT " STORE_SESSION_COLS
	    " FROM sessions s WHERE s.name = ?1 AND (?2 < 0 OR s.owner = ?2)",
	    &st, cause)) != 0)
		return rc;
	rc = sqlite3_bind_text(st, 1, id_or_name, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 2, owner);
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	return store_session_one(s, st, id_or_name, out, cause);
}

int
store_session_fork(struct store *s, const char *src, const char *new_id,
    int64_t owner, const char *name, char **cause)
{
	static const char *const sql[] = {
		"INSERT INTO sessions (id, owner, name, created, updated,"
		" params, fingerprint, base, pos) SELECT ?2, ?3, ?4, ?5, ?5,"
		" params, fingerprint, base, pos FROM sessions WHERE id = ?1",
		"INSERT INTO messages (session, seq, role, text, tokens, pos,"
		" created) SELECT ?2, seq, role, text, tokens, pos, created"
		" FROM messages WHERE session = ?1",
		"INSERT INTO samplers (session, state, updated) SELECT ?2,"
		" state, updated FROM samplers WHERE session = ?1",
		"INSERT INTO kv_links (session, link, generation, format,"
		" fingerprint, n_layers, n_kv_heads, head_dim, kv_type, window,"
		" n_global, base, since, pos, stream, created) SELECT ?2, link,"
		" generation, format, fingerprint, n_layers, n_kv_heads,"
		" head_dim, kv_type, window, n_global, base, since, pos,"
		" stream, created FROM kv_links WHERE session = ?1",
	};
	sqlite3_stmt *st;
	size_t i;
	int rc;

	if ((rc = store_check_id(src, cause)) != 0 ||
	    (rc = store_check_id(new_id, cause)) != 0)
		return rc;
	if (name != NULL && (*name == '\0' || strlen(name) > 256)) {
		store_set_cause(cause, "session name must be 1 to 256 bytes");
		return -EINVAL;
	}
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	for (i = 0; i < sizeof sql / sizeof sql[0]; i++) {
		if ((rc = store_prepare(s, sql[i], &st, cause)) != 0)
			goto fail;
		rc = sqlite3_bind_text(st, 1, src, -1, SQLITE_STATIC);
		rc |= sqlite3_bind_text(st, 2, new_id, -1, SQLITE_STATIC);
		if (i == 0) {
			rc |= sqlite3_bind_int64(st, 3, owner);
			rc |= sqlite3_bind_text(st, 4, name, -1,
			    SQLITE_STATIC);
			rc |= sqlite3_bind_int64(st, 5, store_now_ms());
		}
		if ((rc = store_bound(s, st, rc, cause)) != 0) {
			sqlite3_finalize(st);
			goto fail;
		}
		if ((rc = store_step_done(s, st, cause)) != 0)
			goto fail;
		if (i == 0 && sqlite3_changes(s->db) == 0) {
			store_set_cause(cause, "no session %s", src);
			rc = -ENOENT;
			goto fail;
		}
	}
	return store_commit(s, cause);
fail:
	store_rollback(s);
	return rc;
}

/* ---- messages and sampler ------------------------------------------- */

/* Insert messages inside the caller's transaction. */
int
store_messages_write(struct store *s, const char *id,
    const struct store_message *v, size_t n, char **cause)
{
	sqlite3_stmt *st = NULL;
	unsigned char *blob = NULL;
	size_t i, j, cap = 0, len;
	uint32_t u;
	int rc;

	for (i = 0; i < n; i++) {
		if (v[i].role == NULL || *v[i].role == '\0' ||
		    v[i].text == NULL || v[i].seq < 0 ||
		    (v[i].n_tokens != 0 && v[i].tokens == NULL) ||
		    v[i].n_tokens > (size_t)INT_MAX / 4 ||
		    v[i].text_len > (size_t)INT_MAX) {
			store_set_cause(cause, "malformed message %zu", i);
			return -EINVAL;
		}
	}
	if ((rc = store_prepare(s, "INSERT OR REPLACE INTO messages (session,"
	    " seq, role, text, tokens, pos, created) VALUES"
	    " (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &st, cause)) != 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (v[i].n_tokens * 4 > cap) {
			free(blob);
			cap = v[i].n_tokens * 4;
			if ((blob = malloc(cap)) == NULL) {
				rc = -ENOMEM;
				goto out;
			}
		}
		for (j = 0; j < v[i].n_tokens; j++) {
			u = (uint32_t)v[i].tokens[j];
			blob[4 * j] = u & 0xff;
			blob[4 * j + 1] = (u >> 8) & 0xff;
			blob[4 * j + 2] = (u >> 16) & 0xff;
			blob[4 * j + 3] = u >> 24;
		}
		sqlite3_reset(st);
		rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		rc |= sqlite3_bind_int64(st, 2, v[i].seq);
		rc |= sqlite3_bind_text(st, 3, v[i].role, -1, SQLITE_STATIC);
		len = v[i].text_len != 0 ? v[i].text_len : strlen(v[i].text);
		if (memchr(v[i].text, '\0', len) != NULL)	/* DESIGN 3 */
			rc |= sqlite3_bind_blob64(st, 4, v[i].text, len,
			    SQLITE_STATIC);
		else
			rc |= sqlite3_bind_text64(st, 4, v[i].text, len,
			    SQLITE_STATIC, SQLITE_UTF8);
		if (v[i].n_tokens != 0)
			rc |= sqlite3_bind_blob(st, 5, blob,
			    (int)(v[i].n_tokens * 4), SQLITE_STATIC);
		else
			rc |= sqlite3_bind_null(st, 5);
		rc |= sqlite3_bind_int64(st, 6, v[i].n_tokens != 0 ?
		    v[i].pos : -1);
		rc |= sqlite3_bind_int64(st, 7, v[i].created != 0 ?
		    v[i].created : store_now_ms());
		if ((rc = store_bound(s, st, rc, cause)) != 0)
			goto out;
		rc = sqlite3_step(st);
		if (rc != SQLITE_DONE) {
			rc = store_fail(s, cause, "sqlite3_step", st, rc);
			goto out;
		}
		rc = 0;
	}
out:
	sqlite3_finalize(st);
	free(blob);
	return rc;
}

/* Delete messages with seq >= from, inside the caller's transaction. */
int
store_messages_cut(struct store *s, const char *id, int64_t from,
    char **cause)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = store_prepare(s, "DELETE FROM messages WHERE session = ?1"
	    " AND seq >= ?2", &st, cause)) != 0)
		return rc;
	rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 2, from);
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	return store_step_done(s, st, cause);
}

int
store_messages_put(struct store *s, const char *id,
    const struct store_message *v, size_t n, char **cause)
{
	int rc;

	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_messages_write(s, id, v, n, cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

int
store_message_append(struct store *s, const char *id,
    const struct store_message *m, char **cause)
{
	return store_messages_put(s, id, m, 1, cause);
}

int
store_messages_truncate(struct store *s, const char *id, int64_t from_seq,
    char **cause)
{
	int rc;

	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_messages_cut(s, id, from_seq, cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

/* Fill *m from a messages row (seq, role, text, tokens, pos, created). */
static int
store_message_row(sqlite3_stmt *st, struct store_message *m)
{
	const unsigned char *b;
	size_t i, len;

	memset(m, 0, sizeof *m);
	m->seq = sqlite3_column_int64(st, 0);
	m->role = store_strdup_col(st, 1);
	if (m->role == NULL)
		m->role = strdup("unknown");
	m->text = store_bytes_col(st, 2, &m->text_len);	/* DESIGN 3 */
	if (m->role == NULL || m->text == NULL)
		goto nomem;
	b = sqlite3_column_blob(st, 3);
	len = (size_t)sqlite3_column_bytes(st, 3);
	m->pos = sqlite3_column_int64(st, 4);
	m->created = sqlite3_column_int64(st, 5);
	if (b == NULL || len == 0 || len % 4 != 0) {
		m->pos = -1;	/* malformed or absent: no tokens */
		return 0;
	}
	if ((m->tokens = malloc(len)) == NULL)
		goto nomem;
	m->n_tokens = len / 4;
	for (i = 0; i < m->n_tokens; i++)
		m->tokens[i] = (int32_t)((uint32_t)b[4 * i] |
		    (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
		    (uint32_t)b[4 * i + 3] << 24);
	return 0;
nomem:
	store_message_clear(m);
	return -ENOMEM;
}

static int
store_message_row_cb(sqlite3_stmt *st, void *dst)
{
	return store_message_row(st, dst);
}

static void
store_messages_free_cb(void *rows, size_t n)
{
	store_messages_free(rows, n);
}

int
store_messages_get(struct store *s, const char *id, int64_t from_seq,
    struct store_message **v, size_t *n, char **cause)
{
	sqlite3_stmt *st;
	void *rows;
	int rc;

	*v = NULL;
	*n = 0;
	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_prepare(s, "SELECT seq, role, text, tokens, pos,"
	    " created FROM messages WHERE session = ?1 AND seq >= ?2"
	    " ORDER BY seq", &st, cause)) != 0)
		return rc;
	rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 2, from_seq);
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	if ((rc = store_rows(s, st, sizeof **v, store_message_row_cb,
	    store_messages_free_cb, &rows, n, cause)) == 0)
		*v = rows;
	return rc;
}

/* Upsert the sampler row inside the caller's transaction. */
int
store_sampler_write(struct store *s, const char *id, const void *buf,
    size_t len, char **cause)
{
	sqlite3_stmt *st;
	int rc;

	if (buf == NULL || len == 0 || len > (size_t)INT_MAX) {
		store_set_cause(cause, "empty or oversized sampler state");
		return -EINVAL;
	}
	if ((rc = store_prepare(s, "INSERT OR REPLACE INTO samplers (session,"
	    " state, updated) VALUES (?1, ?2, ?3)", &st, cause)) != 0)
		return rc;
	rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_blob(st, 2, buf, (int)len, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 3, store_now_ms());
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	return store_step_done(s, st, cause);
}

int
store_sampler_put(struct store *s, const char *id, const void *buf,
    size_t len, char **cause)
{
	int rc;

	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_sampler_write(s, id, buf, len, cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s, cause);
}

int
store_sampler_get(struct store *s, const char *id, void **buf, size_t *len,
    char **cause)
{
	sqlite3_stmt *st;
	const void *b;
	int rc, n;

	*buf = NULL;
	*len = 0;
	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_prepare(s, "SELECT state FROM samplers WHERE"
	    " session = ?1", &st, cause)) != 0)
		return rc;
	if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
	    SQLITE_STATIC), cause)) != 0)
		goto out;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		store_set_cause(cause, "no sampler state for %s", id);
		rc = -ENOENT;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		goto out;
	}
	b = sqlite3_column_blob(st, 0);
	n = sqlite3_column_bytes(st, 0);
	if (b == NULL || n <= 0) {
		store_set_cause(cause, "empty sampler state for %s", id);
		rc = -ENOENT;
		goto out;
	}
	if ((*buf = malloc((size_t)n)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(*buf, b, (size_t)n);
	*len = (size_t)n;
	rc = 0;
out:
	sqlite3_finalize(st);
	return rc;
}

