/*
 * t-store.c: the SQLite store and the persistence thread.
 *
 * Sessions, messages and sampler bytes round trip; KV chains (a full stream
 * and deltas, in several chunks) come back byte for byte, and damage
 * (a flipped byte, a truncated or missing chunk, another model, another
 * format) is reported as such; forks are independent and share chunks;
 * the committed schema-1 fixture still opens; a newer or foreign database
 * is refused; a read-only directory and a full disk fail cleanly and damage
 * nothing; kill -9 in the middle of a snapshot leaves the previous one; the
 * persistence thread saves, loads, retries and flushes through a real uv
 * loop; text holding NUL bytes is kept whole; commits leave checkpoints
 * to the persistence thread, whose WAL stays bounded and empties when
 * idle.  With a working lib/kvcache.c and forward pass, a real cache's full
 * + incremental chain restores to an identical cache.
 *
 * `t-store --write-fixture DIR` wrote tests/fixtures-store/mistrald-v1.db
 * (at schema version 1); it refuses to run once the schema has moved on.
 */

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"
#include "sampler.h"
#include "store.h"
#include "tap.h"

static char t_root[] = "/tmp/t-store.XXXXXX";
static char *t_dirs[32];		/* made by t_dir(), freed at exit */
static int t_ndirs;

/* ---- helpers -------------------------------------------------------- */

static int
t_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
	return remove(path);
}

static void
t_cleanup(void)
{
	nftw(t_root, t_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	while (t_ndirs > 0)
		free(t_dirs[--t_ndirs]);
}

/* tap_ok(), then show and clear the store's cause (read only now, after
 * the condition has been evaluated). */
static void
t_check(char **cause, int cond, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	tap_ok(cond, "%s", msg);
	if (*cause != NULL)
		tap_diag("  cause: %s", *cause);
	free(*cause);
	*cause = NULL;
}

/* A fresh directory under the test root, valid until exit. */
static char *
t_dir(const char *name)
{
	char *p;

	if (t_ndirs == 32 || asprintf(&p, "%s/%s", t_root, name) < 0 ||
	    mkdir(p, 0700) != 0) {
		perror("t_dir");
		exit(1);
	}
	return t_dirs[t_ndirs++] = p;
}

static char *
t_db(const char *dir)
{
	static char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, STORE_DB_NAME);
	return path;
}

/* Run SQL on dir's database through a separate connection. */
static int
t_sql(const char *dir, const char *sql)
{
	sqlite3 *db;
	char *err = NULL;
	int rc;

	if (sqlite3_open(t_db(dir), &db) != SQLITE_OK)
		return -1;
	sqlite3_busy_timeout(db, 5000);
	rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		tap_diag("t_sql(%s): %s", sql, err != NULL ? err : "?");
	sqlite3_free(err);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

static int64_t
t_sql_int(const char *dir, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_open(t_db(dir), &db) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

/* Deterministic bytes: stream `seed`, n bytes. */
static unsigned char *
t_bytes(uint64_t seed, size_t n)
{
	unsigned char *p = malloc(n != 0 ? n : 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)(x >> 24);
	}
	return p;
}

static struct store *
t_open(const char *dir, size_t chunk)
{
	struct store_options opt = { .chunk_bytes = chunk };
	struct store *s = NULL;
	char *cause = NULL;
	int rc;

	rc = store_open(dir, &opt, &s, &cause);
	if (rc != 0) {
		tap_diag("store_open(%s): %d %s", dir, rc,
		    cause != NULL ? cause : "");
		free(cause);
		return NULL;
	}
	return s;
}

static void
t_session_init(struct store_session *ss, const char *name, int64_t owner)
{
	memset(ss, 0, sizeof *ss);
	store_new_id(ss->id);
	ss->name = name != NULL ? strdup(name) : NULL;
	ss->owner = owner;
	store_params_default(&ss->params);
}

static struct store_kv_info
t_info(int64_t since, int64_t pos)
{
	struct store_kv_info i = {
		.fingerprint = 0x0123456789abcdefull,
		.n_layers = 2, .n_kv_heads = 2, .head_dim = 16,
		.type = KV_TYPE_F16, .window = 64, .n_global = 4,
		.format = KVCACHE_VERSION, .base = 0,
		.since = since, .pos = pos,
	};
	return i;
}

/* Consumer for synthetic streams: keeps every link's bytes. */
struct t_collect {
	unsigned char	*buf[64];
	size_t		 len[64];
	int64_t		 pos[64];
	int		 n;
	int		 read_extra;	/* ask for one byte too many */
	int		 read_short;	/* leave one byte unread */
};

static int
t_collect_cb(void *ctx, const struct store_kv_info *info,
    kvcache_read_fn *read, void *rctx)
{
	struct t_collect *c = ctx;
	size_t n = (size_t)info->bytes;
	unsigned char *b;
	int rc;

	if (c->n == 64 || info->bytes < 0)
		return -EINVAL;
	if (c->read_short && n > 0)
		n--;
	if ((b = malloc(n + 1)) == NULL)
		return -ENOMEM;
	rc = read(rctx, b, n + (c->read_extra ? 1 : 0));
	if (rc != 0) {
		free(b);
		return rc;
	}
	c->buf[c->n] = b;
	c->len[c->n] = n;
	c->pos[c->n] = info->pos;
	c->n++;
	return 0;
}

static void
t_collect_free(struct t_collect *c)
{
	int i;

	for (i = 0; i < c->n; i++)
		free(c->buf[i]);
	memset(c, 0, sizeof *c);
}

static int
t_load(struct store *s, const char *id, const struct store_kv_info *expect,
    struct t_collect *c, int64_t *applied, char **cause)
{
	free(*cause);
	*cause = NULL;
	t_collect_free(c);
	return store_kv_load(s, id, expect, t_collect_cb, c, applied, cause);
}

static int
t_same(const struct t_collect *c, int i, const void *b, size_t n)
{
	return i < c->n && c->len[i] == n && memcmp(c->buf[i], b, n) == 0;
}

/* ---- basics --------------------------------------------------------- */

static void
t_ids(void)
{
	char a[STORE_ID_SIZE], b[STORE_ID_SIZE];

	tap_ok(store_new_id(a) == 0 && store_new_id(b) == 0 &&
	    strlen(a) == STORE_ID_LEN && store_id_valid(a) &&
	    store_id_valid(b) && strcmp(a, b) != 0,
	    "store_new_id gives distinct 32-hex-digit ids");
	tap_ok(!store_id_valid("0123") && !store_id_valid(
	    "0123456789ABCDEF0123456789abcdef") && !store_id_valid(
	    "0123456789abcdef0123456789abcdef0"), "malformed ids refused");
	tap_ok(store_crc32c(0, "123456789", 9) == 0xe3069283u,
	    "CRC32C check value");
	tap_ok(store_crc32c(store_crc32c(0, "1234", 4), "56789", 5) ==
	    0xe3069283u, "CRC32C continues across pieces");
}

static void
t_sessions(void)
{
	char *dir = t_dir("sessions"), *cause = NULL;
	struct store_session a, b, got, *v = NULL;
	struct store *s = t_open(dir, 0);
	struct stat sb;
	size_t n = 0;
	int rc;

	tap_ok(s != NULL && store_schema_version(s) == STORE_SCHEMA_VERSION,
	    "a fresh database opens at schema version %d",
	    STORE_SCHEMA_VERSION);
	memset(&sb, 0, sizeof sb);
	stat(t_db(dir), &sb);
	tap_ok((sb.st_mode & 077) == 0, "the database file is private "
	    "(mode %03o)", (unsigned)(sb.st_mode & 0777));
	tap_ok(t_sql_int(dir, "SELECT count(*) FROM pragma_journal_mode"
	    " WHERE journal_mode = 'wal'") == 1, "in WAL mode");
	if (s == NULL)
		return;

	t_session_init(&a, "alpha", 1000);
	a.params.sampling.temperature = 0.25f;
	a.params.sampling.top_k = 7;
	a.params.sampling.seed = UINT64_MAX - 5;
	a.params.system_prompt = strdup("Be brief.\nUse \\n literally: \\n");
	a.params.template = strdup("mistral");
	a.params.window = 4096;
	a.params.n_global = 16;
	a.params.kv_type = KV_TYPE_Q8_0;
	a.params.max_tokens = 321;
	a.fingerprint = 0xfedcba9876543210ull;
	a.base = 0;
	a.pos = 77;
	rc = store_session_create(s, &a, &cause);
	t_check(&cause, rc == 0, "create session");
	rc = store_session_get(s, a.id, &got, &cause);
	tap_ok(rc == 0 && got.name != NULL && strcmp(got.name, "alpha") == 0 &&
	    got.owner == 1000 && got.pos == 77 &&
	    got.fingerprint == a.fingerprint && got.created > 0 &&
	    got.kv_pos == -1 && got.n_messages == 0 && !got.damaged,
	    "get returns the row");
	tap_ok(rc == 0 && got.params.sampling.temperature == 0.25f &&
	    got.params.sampling.top_k == 7 &&
	    got.params.sampling.seed == UINT64_MAX - 5 &&
	    got.params.system_prompt != NULL &&
	    strcmp(got.params.system_prompt, a.params.system_prompt) == 0 &&
	    got.params.template != NULL &&
	    strcmp(got.params.template, "mistral") == 0 &&
	    got.params.window == 4096 && got.params.n_global == 16 &&
	    got.params.kv_type == KV_TYPE_Q8_0 &&
	    got.params.max_tokens == 321 &&
	    got.params.sampling.top_p == a.params.sampling.top_p &&
	    got.params.sampling.repeat_penalty ==
	    a.params.sampling.repeat_penalty,
	    "parameters round trip exactly (escapes, u64 seed, floats)");
	store_session_clear(&got);

	t_session_init(&b, "alpha", 1000);
	rc = store_session_create(s, &b, &cause);
	t_check(&cause, rc == -EEXIST,
	    "a second 'alpha' for the same owner: -EEXIST");
	b.owner = 1001;
	tap_ok(store_session_create(s, &b, &cause) == 0,
	    "the same name for another owner is fine");
	tap_ok(store_session_lookup(s, 1001, "alpha", &got, &cause) == 0 &&
	    strcmp(got.id, b.id) == 0, "lookup by name within an owner");
	store_session_clear(&got);
	tap_ok(store_session_lookup(s, STORE_ANY_OWNER, "alpha", &got,
	    &cause) == -ENOENT, "a name shared by two owners is ambiguous "
	    "for an any-owner lookup");
	tap_ok(store_session_lookup(s, 5, a.id, &got, &cause) == 0 &&
	    strcmp(got.id, a.id) == 0, "lookup by id");
	store_session_clear(&got);

	tap_ok(store_session_list(s, 1000, &v, &n, &cause) == 0 && n == 1 &&
	    strcmp(v[0].id, a.id) == 0, "list with an owner filter");
	store_session_list_free(v, n);
	tap_ok(store_session_list(s, STORE_ANY_OWNER, &v, &n, &cause) == 0 &&
	    n == 2, "list everyone's");
	store_session_list_free(v, n);

	free(a.name);
	a.name = strdup("beta");
	a.pos = 99;
	a.params.sampling.top_k = 3;
	tap_ok(store_session_update(s, &a, &cause) == 0 &&
	    store_session_get(s, a.id, &got, &cause) == 0 &&
	    strcmp(got.name, "beta") == 0 && got.pos == 99 &&
	    got.params.sampling.top_k == 3 && got.owner == 1000,
	    "update rewrites name, positions and parameters");
	store_session_clear(&got);
	free(a.name);
	a.name = NULL;
	tap_ok(store_session_update(s, &a, &cause) == 0 &&
	    store_session_get(s, a.id, &got, &cause) == 0 && got.name == NULL,
	    "a session can become unnamed");
	store_session_clear(&got);

	tap_ok(store_session_delete(s, b.id, &cause) == 0 &&
	    store_session_get(s, b.id, &got, &cause) == -ENOENT,
	    "delete, then get: -ENOENT");
	tap_ok(store_session_delete(s, b.id, &cause) == -ENOENT,
	    "delete again: -ENOENT");
	tap_ok(store_session_get(s, "nope", &got, &cause) == -EINVAL,
	    "a malformed id: -EINVAL");

	t_sql(dir, "UPDATE sessions SET params = 'temperature=hot\n"
	    "top_k=5\nsomething_new=1\n'");
	tap_ok(store_session_get(s, a.id, &got, &cause) == 0 && got.damaged &&
	    got.params.sampling.top_k == 5,
	    "a damaged parameter row still loads (flagged, defaults used, "
	    "unknown keys ignored)");
	store_session_clear(&got);

	store_session_clear(&a);
	store_session_clear(&b);
	store_close(s);
	free(cause);
}

/*
 * A model may generate a NUL byte (a byte-fallback token <0x00>): such a
 * reply is stored whole, read back whole, copied whole by a fork, and kept
 * as a BLOB so that sqlite3's .dump keeps it whole too.  s holds session
 * id with one message (seq 0).
 */
static void
t_messages_nul(const char *dir, struct store *s, const char *id)
{
	static const char nul[] = "a\0b\0\0c", lead[] = "\0";
	struct store_message m[2], *v = NULL;
	char kid[STORE_ID_SIZE], *cause = NULL, sql[160];
	size_t n = 0;
	int rc;

	memset(m, 0, sizeof m);
	m[0] = (struct store_message){ .seq = 1, .role = "assistant",
	    .text = (char *)nul, .text_len = sizeof nul - 1 };
	m[1] = (struct store_message){ .seq = 2, .role = "completion",
	    .text = (char *)lead, .text_len = sizeof lead - 1 };
	rc = store_messages_put(s, id, m, 2, &cause);
	if (rc == 0)
		rc = store_messages_get(s, id, 1, &v, &n, &cause);
	t_check(&cause, rc == 0 && n == 2 && v[0].text_len == 6 &&
	    memcmp(v[0].text, nul, sizeof nul) == 0 && v[1].text_len == 1 &&
	    memcmp(v[1].text, lead, sizeof lead) == 0,
	    "text holding NUL bytes reads back byte for byte (%zu and %zu "
	    "bytes)", n == 2 ? v[0].text_len : 0, n == 2 ? v[1].text_len : 0);
	store_messages_free(v, n);
	snprintf(sql, sizeof sql, "SELECT typeof(text) = 'blob' AND"
	    " hex(text) = '610062000063' FROM messages WHERE session = '%s'"
	    " AND seq = 1", id);
	tap_ok(t_sql_int(dir, sql) == 1 && t_sql_int(dir, "SELECT count(*)"
	    " FROM messages WHERE seq = 0 AND typeof(text) = 'text'") == 1,
	    "it is stored as a BLOB of its bytes; text without NUL as TEXT");
	store_new_id(kid);
	rc = store_session_fork(s, id, kid, 1, NULL, &cause);
	t_check(&cause, rc == 0 && store_messages_get(s, kid, 1, &v, &n,
	    &cause) == 0 && n == 2 && v[0].text_len == 6 &&
	    memcmp(v[0].text, nul, sizeof nul) == 0,
	    "a fork copies it whole");
	store_messages_free(v, n);
	store_session_delete(s, kid, &cause);
	store_messages_truncate(s, id, 1, &cause);
	free(cause);
}

static void
t_messages(void)
{
	char *dir = t_dir("messages"), *cause = NULL;
	int32_t toks[] = { 1, 2, 0x7fffffff, -5, 300 };
	struct store_message m[3], *v = NULL;
	struct store_session a;
	struct store *s = t_open(dir, 0);
	unsigned char samp[40];
	void *sb = NULL;
	size_t n = 0, sl = 0;

	if (s == NULL)
		return;
	t_session_init(&a, NULL, 1);
	store_session_create(s, &a, &cause);
	memset(m, 0, sizeof m);
	m[0] = (struct store_message){ .seq = 0, .role = "user",
	    .text = "Hello", .tokens = toks, .n_tokens = 2, .pos = 0 };
	m[1] = (struct store_message){ .seq = 1, .role = "assistant",
	    .text = "", .tokens = toks + 2, .n_tokens = 3, .pos = 2 };
	m[2] = (struct store_message){ .seq = 2, .role = "user",
	    .text = "no tokens" };
	tap_ok(store_messages_put(s, a.id, m, 2, &cause) == 0 &&
	    store_message_append(s, a.id, &m[2], &cause) == 0,
	    "messages stored");
	tap_ok(store_messages_get(s, a.id, 0, &v, &n, &cause) == 0 && n == 3 &&
	    strcmp(v[0].role, "user") == 0 && strcmp(v[0].text, "Hello") == 0 &&
	    v[0].n_tokens == 2 && v[0].tokens[1] == 2 && v[1].n_tokens == 3 &&
	    v[1].tokens[0] == 0x7fffffff && v[1].tokens[1] == -5 &&
	    v[1].tokens[2] == 300 && v[1].pos == 2 && *v[1].text == '\0' &&
	    v[2].n_tokens == 0 && v[2].tokens == NULL && v[2].pos == -1 &&
	    v[0].created > 0, "messages round trip with their token ids");
	store_messages_free(v, n);
	tap_ok(t_sql_int(dir, "SELECT hex(tokens) = '01000000020000000000"
	    "0000000000000000' OR hex(tokens) = '0100000002000000' FROM"
	    " messages WHERE seq = 0") == 1,
	    "token ids are stored as little-endian int32");
	tap_ok(store_messages_get(s, a.id, 1, &v, &n, &cause) == 0 && n == 2 &&
	    v[0].seq == 1, "messages from a given seq");
	store_messages_free(v, n);
	tap_ok(store_messages_truncate(s, a.id, 1, &cause) == 0 &&
	    store_messages_get(s, a.id, 0, &v, &n, &cause) == 0 && n == 1,
	    "truncate drops an abandoned turn");
	store_messages_free(v, n);
	m[0].role = "";
	tap_ok(store_message_append(s, a.id, &m[0], &cause) == -EINVAL,
	    "an empty role is refused");
	m[0].role = "user";
	tap_ok(store_message_append(s, "0123456789abcdef0123456789abcdef",
	    &m[0], &cause) == -ENOENT, "a message for no session: -ENOENT");
	t_sql(dir, "UPDATE messages SET tokens = x'010203'");
	tap_ok(store_messages_get(s, a.id, 0, &v, &n, &cause) == 0 && n == 1 &&
	    v[0].n_tokens == 0 && v[0].pos == -1,
	    "a malformed token blob comes back as no tokens");
	store_messages_free(v, n);
	t_messages_nul(dir, s, a.id);

	for (n = 0; n < sizeof samp; n++)
		samp[n] = (unsigned char)(n * 37 + (n == 5 ? 200 : 0));
	samp[3] = 0;
	tap_ok(store_sampler_get(s, a.id, &sb, &sl, &cause) == -ENOENT,
	    "no sampler state yet: -ENOENT");
	tap_ok(store_sampler_put(s, a.id, samp, sizeof samp, &cause) == 0 &&
	    store_sampler_put(s, a.id, samp, sizeof samp, &cause) == 0 &&
	    store_sampler_get(s, a.id, &sb, &sl, &cause) == 0 &&
	    sl == sizeof samp && memcmp(sb, samp, sl) == 0,
	    "sampler bytes round trip (and replace)");
	free(sb);
	tap_ok(store_session_delete(s, a.id, &cause) == 0 &&
	    t_sql_int(dir, "SELECT (SELECT count(*) FROM messages) +"
	    " (SELECT count(*) FROM samplers)") == 0,
	    "deleting a session deletes its messages and sampler");
	store_session_clear(&a);
	store_close(s);
	free(cause);
}

/* ---- KV chains ------------------------------------------------------ */

struct t_producer {
	const unsigned char	*buf;
	size_t			 len;
	size_t			 piece;	/* write in pieces of this size */
	int			 fail_at; /* return -EIO at this piece, or -1 */
};

static int
t_produce_cb(void *ctx, kvcache_write_fn *write, void *wctx)
{
	struct t_producer *p = ctx;
	size_t off, n;
	int rc, i = 0;

	for (off = 0; off < p->len; off += n, i++) {
		n = p->len - off < p->piece ? p->len - off : p->piece;
		if (i == p->fail_at)
			return -EIO;
		if ((rc = write(wctx, p->buf + off, n)) != 0)
			return rc;
	}
	return 0;
}

static void
t_kv(void)
{
	char *dir = t_dir("kv"), *cause = NULL;
	struct store *s = t_open(dir, 1000);
	struct store_kv_state st;
	struct store_kv_info in, ex;
	struct store_session a;
	struct t_collect c = { 0 };
	struct t_producer pr;
	unsigned char *full, *d1, *d2, *d3, *full2;
	int64_t applied;
	int rc;

	if (s == NULL)
		return;
	t_session_init(&a, "kv", 1);
	store_session_create(s, &a, &cause);
	full = t_bytes(1, 4500);
	d1 = t_bytes(2, 1000);
	d2 = t_bytes(3, 1);
	d3 = t_bytes(4, 2400);
	full2 = t_bytes(5, 3000);

	ex = t_info(0, 0);
	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == -ENOENT &&
	    applied == -1, "no snapshot yet: -ENOENT");
	in = t_info(0, 100);
	rc = store_kv_put_buf(s, a.id, &in, full, 4500, &st, &cause);
	t_check(&cause, rc == 0 && st.links == 1 && st.pos == 100 &&
	    st.base_bytes == 4500 && !st.want_full,
	    "full snapshot stored");
	tap_ok(t_sql_int(dir, "SELECT count(*) FROM kv_chunks") == 5 &&
	    t_sql_int(dir, "SELECT max(length(data)) FROM kv_chunks") == 1000,
	    "in chunks of the configured size");
	in = t_info(100, 130);
	pr = (struct t_producer){ d1, 1000, 7, -1 };
	rc = store_kv_put(s, a.id, &in, t_produce_cb, &pr, &st, &cause);
	tap_ok(rc == 0 && st.links == 2 && st.pos == 130 &&
	    st.delta_bytes == 1000, "a delta from a producer writing 7 bytes "
	    "at a time");
	in = t_info(130, 131);
	tap_ok(store_kv_put_buf(s, a.id, &in, d2, 1, &st, &cause) == 0,
	    "a one-byte delta");
	in = t_info(120, 140);
	t_check(&cause, store_kv_put_buf(s, a.id, &in, d3, 2400, &st, &cause) ==
	    -ERANGE, "a delta that does not start at the chain's end: -ERANGE"
	    "");
	in = t_info(131, 140);
	in.fingerprint ^= 1;
	tap_ok(store_kv_put_buf(s, a.id, &in, d3, 2400, &st, &cause) ==
	    -ERANGE, "a delta from another model: -ERANGE");
	in = t_info(131, 140);
	rc = store_kv_put_buf(s, a.id, &in, d3, 2400, &st, &cause);
	tap_ok(rc == 0 && st.links == 4 && st.delta_bytes == 3401 &&
	    !st.want_full, "third delta");

	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == 0 && c.n == 4 && t_same(&c, 0, full, 4500) &&
	    t_same(&c, 1, d1, 1000) && t_same(&c, 2, d2, 1) &&
	    t_same(&c, 3, d3, 2400) && applied == 140 && c.pos[3] == 140,
	    "the chain comes back in order, byte for byte");
	tap_ok(store_kv_state(s, a.id, &st, &cause) == 0 && st.links == 4 &&
	    st.pos == 140 && st.time > 0, "store_kv_state");
	tap_ok(t_load(s, a.id, NULL, &c, &applied, &cause) == 0 && c.n == 4,
	    "load without expectations");

	/* Consumer misbehaviour is a stream error, not silence. */
	c.read_extra = 1;
	rc = store_kv_load(s, a.id, &ex, t_collect_cb, &c, &applied, &cause);
	tap_ok(rc == -EBADMSG, "reading past a link's end: -EBADMSG");
	t_collect_free(&c);
	c.read_short = 1;
	rc = store_kv_load(s, a.id, &ex, t_collect_cb, &c, &applied, &cause);
	tap_ok(rc == -EBADMSG, "leaving bytes unread: -EBADMSG");
	t_collect_free(&c);

	in = t_info(140, 150);
	pr = (struct t_producer){ d1, 1000, 100, 3 };
	tap_ok(store_kv_put(s, a.id, &in, t_produce_cb, &pr, &st, &cause) ==
	    -EIO && store_kv_state(s, a.id, &st, &cause) == 0 &&
	    st.links == 4 && st.pos == 140,
	    "a producer failing midway leaves the chain unchanged");

	in = t_info(140, 141);
	store_kv_put_buf(s, a.id, &in, d3, 2400, &st, &cause);
	tap_ok(st.want_full && st.delta_bytes > st.base_bytes,
	    "deltas outgrowing the base ask for a full snapshot");
	in = t_info(0, 141);
	rc = store_kv_put_buf(s, a.id, &in, full2, 3000, &st, &cause);
	tap_ok(rc == 0 && st.links == 1 && !st.want_full &&
	    t_sql_int(dir, "SELECT count(*) FROM kv_chunks") == 3 &&
	    t_sql_int(dir, "SELECT count(*) FROM kv_streams") == 1 &&
	    t_sql_int(dir, "SELECT generation FROM kv_links") == 2,
	    "compaction: a full snapshot replaces the chain, old chunks go");
	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == 0 && c.n == 1 &&
	    t_same(&c, 0, full2, 3000), "and loads");

	/* Chain length limit. */
	{
		struct store_options o = { .chunk_bytes = 1000,
		    .max_links = 3 };
		struct store *s2 = NULL;
		int i, want = 0;

		store_open(dir, &o, &s2, &cause);
		for (i = 0; s2 != NULL && i < 3; i++) {
			in = t_info(141 + i, 142 + i);
			store_kv_put_buf(s2, a.id, &in, d2, 1, &st, &cause);
			want |= st.want_full << i;
		}
		tap_ok(want == 4, "a long chain asks for a full snapshot "
		    "(max_links)");
		store_close(s2);
	}

	/* Damage. */
	in = t_info(0, 200);
	store_kv_put_buf(s, a.id, &in, full, 4500, NULL, &cause);
	in = t_info(200, 210);
	store_kv_put_buf(s, a.id, &in, d3, 2400, NULL, &cause);
	t_sql(dir, "UPDATE kv_chunks SET data = substr(data, 1, 10) ||"
	    " x'ff' || substr(data, 12) WHERE seq = 1 AND stream ="
	    " (SELECT stream FROM kv_links WHERE link = 1)");
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == -EBADMSG && applied == 200 && c.n == 1 &&
	    store_kv_rebuildable(rc), "a flipped byte in a delta's chunk: "
	    "-EBADMSG, the full link before it was applied");
	tap_ok(store_integrity_check(s, 0, &cause) == 0,
	    "SQLite's integrity check does not see checksums");
	t_check(&cause, store_integrity_check(s, 1, &cause) == -EIO,
	    "the deep check does");

	in = t_info(0, 300);
	store_kv_put_buf(s, a.id, &in, full, 4500, NULL, &cause);
	t_sql(dir, "UPDATE kv_chunks SET data = substr(data, 1, 900),"
	    " crc = 0 WHERE seq = 2");
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == -EBADMSG && applied == -1 && c.n == 0,
	    "a truncated chunk: -EBADMSG before any byte is handed out");

	store_kv_put_buf(s, a.id, &in, full, 4500, NULL, &cause);
	t_sql(dir, "DELETE FROM kv_chunks WHERE seq = 4");
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == -EBADMSG, "a missing last chunk: -EBADMSG");
	store_kv_put_buf(s, a.id, &in, full, 4500, NULL, &cause);
	t_sql(dir, "DELETE FROM kv_chunks WHERE seq = 2");
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == -EBADMSG, "a missing middle chunk: -EBADMSG");

	store_kv_put_buf(s, a.id, &in, full, 4500, NULL, &cause);
	ex.fingerprint ^= 0x10;
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	t_check(&cause, rc == -ESTALE && c.n == 0 && store_kv_rebuildable(rc),
	    "another model's fingerprint: -ESTALE");
	ex = t_info(0, 0);
	ex.window = 128;
	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == -ESTALE,
	    "another window: -ESTALE");
	ex = t_info(0, 0);
	ex.format = KVCACHE_VERSION + 1;
	rc = t_load(s, a.id, &ex, &c, &applied, &cause);
	tap_ok(rc == -EPROTO && store_kv_rebuildable(rc),
	    "another stream format: -EPROTO");
	ex = t_info(0, 0);
	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == 0 &&
	    store_kv_delete(s, a.id, &cause) == 0 &&
	    t_load(s, a.id, &ex, &c, &applied, &cause) == -ENOENT &&
	    t_sql_int(dir, "SELECT count(*) FROM kv_chunks") == 0,
	    "store_kv_delete drops the chain and its chunks");

	t_collect_free(&c);
	store_session_clear(&a);
	free(full);
	free(d1);
	free(d2);
	free(d3);
	free(full2);
	store_close(s);
	free(cause);
}

static void
t_fork(void)
{
	char *dir = t_dir("fork"), *cause = NULL, kid[STORE_ID_SIZE];
	struct store *s = t_open(dir, 1000);
	struct store_message m = { .seq = 0, .role = "user", .text = "hi" };
	struct store_message m2 = { .seq = 1, .role = "assistant",
	    .text = "only in the fork" };
	struct store_session a, got;
	struct store_message *v;
	struct store_kv_info in, ex = t_info(0, 0);
	struct t_collect c = { 0 };
	unsigned char *full = t_bytes(10, 2500), *d = t_bytes(11, 700);
	void *sb = NULL;
	size_t n, sl;
	int64_t applied;
	int rc;

	if (s == NULL)
		return;
	t_session_init(&a, "parent", 7);
	a.pos = 50;
	store_session_create(s, &a, &cause);
	store_message_append(s, a.id, &m, &cause);
	store_sampler_put(s, a.id, "SAMP", 4, &cause);
	in = t_info(0, 50);
	store_kv_put_buf(s, a.id, &in, full, 2500, NULL, &cause);
	store_new_id(kid);
	rc = store_session_fork(s, a.id, kid, 7, "child", &cause);
	t_check(&cause, rc == 0, "fork");
	tap_ok(t_sql_int(dir, "SELECT count(*) FROM kv_chunks") == 3 &&
	    t_sql_int(dir, "SELECT count(DISTINCT stream) FROM kv_links") == 1,
	    "the fork shares the snapshot's chunks (no copy)");
	tap_ok(store_session_get(s, kid, &got, &cause) == 0 && got.pos == 50 &&
	    got.n_messages == 1 && got.kv_pos == 50 &&
	    strcmp(got.name, "child") == 0,
	    "the fork has the parent's metadata, messages and snapshot");
	store_session_clear(&got);
	tap_ok(store_sampler_get(s, kid, &sb, &sl, &cause) == 0 && sl == 4 &&
	    memcmp(sb, "SAMP", 4) == 0, "and its sampler state");
	free(sb);
	tap_ok(store_session_fork(s, a.id, kid, 7, "other", &cause) ==
	    -EEXIST, "forking onto an existing id: -EEXIST");

	store_message_append(s, kid, &m2, &cause);
	store_sampler_put(s, kid, "KID!", 4, &cause);
	in = t_info(50, 60);
	store_kv_put_buf(s, kid, &in, d, 700, NULL, &cause);
	tap_ok(store_messages_get(s, a.id, 0, &v, &n, &cause) == 0 && n == 1,
	    "the parent's transcript is unchanged by the fork's turn");
	store_messages_free(v, n);
	tap_ok(store_sampler_get(s, a.id, &sb, &sl, &cause) == 0 &&
	    memcmp(sb, "SAMP", 4) == 0, "and its sampler");
	free(sb);
	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == 0 && c.n == 1 &&
	    applied == 50, "and its chain");
	tap_ok(store_session_delete(s, a.id, &cause) == 0 &&
	    t_load(s, kid, &ex, &c, &applied, &cause) == 0 && c.n == 2 &&
	    t_same(&c, 0, full, 2500) && t_same(&c, 1, d, 700),
	    "deleting the parent leaves the fork's chain whole");
	tap_ok(store_session_delete(s, kid, &cause) == 0 &&
	    t_sql_int(dir, "SELECT (SELECT count(*) FROM kv_chunks) +"
	    " (SELECT count(*) FROM kv_streams)") == 0,
	    "deleting the last user of the chunks deletes them");
	t_collect_free(&c);
	store_session_clear(&a);
	free(full);
	free(d);
	store_close(s);
	free(cause);
}

/* ---- schema versions and the fixture -------------------------------- */

static const char t_fix_id[] = "0123456789abcdef0123456789abcdef";

/* Write the schema-1 fixture into dir.  Returns 0 on success. */
static int
t_write_fixture(const char *dir)
{
	int32_t t0[] = { 1, 22, 333 }, t1[] = { 0x7fffffff, 44, 0 };
	struct store_message m[2] = {
		{ .seq = 0, .role = "user", .text = "Hello", .tokens = t0,
		  .n_tokens = 3, .pos = 0, .created = 1700000000000 },
		{ .seq = 1, .role = "assistant", .text = "Hi there",
		  .tokens = t1, .n_tokens = 3, .pos = 3,
		  .created = 1700000001000 },
	};
	struct store_session ss;
	struct store_kv_info in;
	struct store *s;
	unsigned char *b;
	char *cause = NULL;
	int rc = -1;

	if (STORE_SCHEMA_VERSION != 1) {
		fprintf(stderr, "the fixture is schema version 1; this build "
		    "writes %d\n", STORE_SCHEMA_VERSION);
		return -1;
	}
	if ((s = t_open(dir, 1024)) == NULL)
		return -1;
	memset(&ss, 0, sizeof ss);
	memcpy(ss.id, t_fix_id, sizeof ss.id);
	ss.name = "fixture";
	ss.owner = 1000;
	ss.created = 1700000000000;
	ss.updated = 1700000002000;
	store_params_default(&ss.params);
	ss.params.sampling.temperature = 0.5f;
	ss.params.sampling.top_k = 7;
	ss.params.sampling.seed = 12345678901234ull;
	ss.params.system_prompt = "Be brief.\nReally.";
	ss.params.template = "mistral";
	ss.params.window = 64;
	ss.params.n_global = 4;
	ss.params.kv_type = KV_TYPE_F16;
	ss.fingerprint = 0x1122334455667788ull;
	ss.pos = 6;
	if (store_session_create(s, &ss, &cause) != 0 ||
	    store_messages_put(s, t_fix_id, m, 2, &cause) != 0 ||
	    store_sampler_put(s, t_fix_id, "SAMPLER-STATE-V1", 16,
	    &cause) != 0)
		goto out;
	in = t_info(0, 3);
	b = t_bytes(100, 3000);
	rc = store_kv_put_buf(s, t_fix_id, &in, b, 3000, NULL, &cause);
	free(b);
	if (rc != 0)
		goto out;
	in = t_info(3, 6);
	b = t_bytes(101, 500);
	rc = store_kv_put_buf(s, t_fix_id, &in, b, 500, NULL, &cause);
	free(b);
	if (rc != 0)
		goto out;
	store_close(s);
	s = NULL;
	/* One self-contained, compact file. */
	rc = t_sql(dir, "PRAGMA journal_mode = DELETE; VACUUM");
out:
	if (cause != NULL)
		fprintf(stderr, "%s\n", cause);
	free(cause);
	store_close(s);
	return rc;
}

static int
t_copy(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	char buf[65536];
	size_t n;
	int rc = 0;

	if (in == NULL || out == NULL)
		rc = -1;
	while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	if (in != NULL)
		fclose(in);
	if (out != NULL && fclose(out) != 0)
		rc = -1;
	return rc;
}

static void
t_versions(void)
{
	char *dir = t_dir("fixture"), *cause = NULL, src[4096];
	const char *top = getenv("top_srcdir");
	struct store_session *v = NULL;
	struct store_message *m = NULL;
	struct store_kv_info ex = t_info(0, 0);
	struct t_collect c = { 0 };
	struct store *s;
	unsigned char *b0, *b1;
	size_t n = 0;
	int64_t applied;
	void *sb = NULL;
	size_t sl = 0;
	int rc;

	snprintf(src, sizeof src, "%s/tests/fixtures-store/mistrald-v1.db",
	    top != NULL ? top : "..");
	if (t_copy(src, t_db(dir)) != 0) {
		tap_skip("the schema-1 fixture is missing (top_srcdir unset?)");
	} else {
		s = t_open(dir, 0);
		tap_ok(s != NULL && store_schema_version(s) ==
		    STORE_SCHEMA_VERSION, "the schema-1 fixture opens "
		    "(migrated to %d)", STORE_SCHEMA_VERSION);
		if (s != NULL) {
			rc = store_session_list(s, STORE_ANY_OWNER, &v, &n,
			    &cause);
			tap_ok(rc == 0 && n == 1 &&
			    strcmp(v[0].id, t_fix_id) == 0 &&
			    strcmp(v[0].name, "fixture") == 0 &&
			    v[0].owner == 1000 &&
			    v[0].created == 1700000000000 && v[0].pos == 6 &&
			    v[0].fingerprint == 0x1122334455667788ull &&
			    v[0].params.sampling.top_k == 7 &&
			    v[0].params.sampling.seed == 12345678901234ull &&
			    strcmp(v[0].params.system_prompt,
			    "Be brief.\nReally.") == 0 &&
			    v[0].params.window == 64 &&
			    v[0].params.n_global == 4 && v[0].kv_pos == 6 &&
			    v[0].n_messages == 2 && !v[0].damaged,
			    "its session reads back");
			store_session_list_free(v, n);
			rc = store_messages_get(s, t_fix_id, 0, &m, &n,
			    &cause);
			tap_ok(rc == 0 && n == 2 &&
			    strcmp(m[0].text, "Hello") == 0 &&
			    m[0].text_len == 5 &&
			    strcmp(m[1].text, "Hi there") == 0 &&
			    m[1].text_len == 8 &&
			    m[1].n_tokens == 3 &&
			    m[1].tokens[0] == 0x7fffffff && m[1].pos == 3,
			    "its messages read back");
			store_messages_free(m, n);
			tap_ok(store_sampler_get(s, t_fix_id, &sb, &sl,
			    &cause) == 0 && sl == 16 &&
			    memcmp(sb, "SAMPLER-STATE-V1", 16) == 0,
			    "its sampler state reads back");
			free(sb);
			b0 = t_bytes(100, 3000);
			b1 = t_bytes(101, 500);
			rc = t_load(s, t_fix_id, &ex, &c, &applied, &cause);
			t_check(&cause, rc == 0 && c.n == 2 &&
			    t_same(&c, 0, b0, 3000) &&
			    t_same(&c, 1, b1, 500) && applied == 6,
			    "its KV chain loads and verifies");
			free(b0);
			free(b1);
			t_collect_free(&c);
			tap_ok(store_integrity_check(s, 1, &cause) == 0,
			    "it passes the deep integrity check");
			store_close(s);
		}
	}

	dir = t_dir("newer");
	s = t_open(dir, 0);
	store_close(s);
	t_sql(dir, "PRAGMA user_version = 99");
	s = NULL;
	rc = store_open(dir, NULL, &s, &cause);
	t_check(&cause, rc == -ENOTSUP && s == NULL && cause != NULL &&
	    strstr(cause, "newer") != NULL, "a newer schema is refused");
	tap_ok(t_sql_int(dir, "PRAGMA user_version") == 99,
	    "and left untouched");

	dir = t_dir("foreign");
	t_sql(dir, "CREATE TABLE notes (x TEXT)");
	rc = store_open(dir, NULL, &s, &cause);
	t_check(&cause, rc == -ENOTSUP && s == NULL,
	    "another program's database is refused");
	free(cause);
}

/* ---- read-only, disk full, kill -9 ---------------------------------- */

/* In a child, as an unprivileged user: a read-only state directory. */
static int
t_readonly_child(const char *dir)
{
	struct store_session a, got;
	struct store *s;
	char *cause = NULL;
	int rc;

	if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
		return 10;
	if (chmod(dir, 0555) != 0)
		return 19;
	rc = store_open(dir, NULL, &s, &cause);
	printf("# empty read-only directory: %d %s\n", rc, cause ? cause : "");
	fflush(stdout);
	free(cause);
	cause = NULL;
	if (rc != -EROFS || chmod(dir, 0755) != 0)
		return 20;
	if ((s = t_open(dir, 0)) == NULL)
		return 11;
	t_session_init(&a, "ro", 1);
	rc = store_session_create(s, &a, &cause);
	store_session_clear(&a);
	if (rc != 0)
		return 12;
	store_close(s);
	if (chmod(dir, 0555) != 0)
		return 13;
	rc = store_open(dir, NULL, &s, &cause);
	printf("# read-only directory: %d %s\n", rc, cause ? cause : "");
	fflush(stdout);
	free(cause);
	cause = NULL;
	if (rc != -EROFS)
		return 14;
	if (chmod(t_db(dir), 0400) != 0 || chmod(dir, 0755) != 0)
		return 15;
	rc = store_open(dir, NULL, &s, &cause);
	printf("# read-only database file: %d %s\n", rc, cause ? cause : "");
	fflush(stdout);
	free(cause);
	cause = NULL;
	if (rc != -EROFS)
		return 16;
	if (chmod(t_db(dir), 0600) != 0 || (s = t_open(dir, 0)) == NULL)
		return 17;
	rc = store_session_get(s, a.id, &got, &cause);
	store_close(s);
	free(cause);
	rc = rc == 0 && strcmp(got.name, "ro") == 0 ? 0 : 18;
	store_session_clear(&got);
	return rc;
}

static void
t_readonly(void)
{
	char *dir = t_dir("readonly");
	int status;
	pid_t pid;

	if (chown(dir, 65534, 65534) != 0 && geteuid() == 0) {
		tap_skip("cannot chown the test directory");
		return;
	}
	fflush(stdout);
	if ((pid = fork()) == 0)
		_exit(t_readonly_child(dir));
	waitpid(pid, &status, 0);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "read-only directory or database: -EROFS at open, and the data "
	    "is intact once writable again (child status %d)",
	    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void
t_fsize(rlim_t limit)
{
	struct rlimit rl;

	getrlimit(RLIMIT_FSIZE, &rl);
	rl.rlim_cur = limit < rl.rlim_max ? limit : rl.rlim_max;
	setrlimit(RLIMIT_FSIZE, &rl);
}

static void
t_diskfull(void)
{
	char *dir = t_dir("diskfull"), *cause = NULL;
	struct store *s = t_open(dir, 64 << 10);
	struct store_message m = { .seq = 1, .role = "user", .text = "x" };
	struct store_kv_info in, ex = t_info(0, 0);
	struct store_session a, got;
	struct t_collect c = { 0 };
	unsigned char *full, *big;
	struct stat sb;
	int64_t applied;
	int rc;

	if (s == NULL)
		return;
	signal(SIGXFSZ, SIG_IGN);
	full = t_bytes(20, 100000);
	big = t_bytes(21, 2 << 20);
	t_session_init(&a, "full", 1);
	store_session_create(s, &a, &cause);
	in = t_info(0, 10);
	store_kv_put_buf(s, a.id, &in, full, 100000, NULL, &cause);
	t_sql(dir, "PRAGMA wal_checkpoint(TRUNCATE)");
	stat(t_db(dir), &sb);

	t_fsize((rlim_t)sb.st_size + (256 << 10));
	in = t_info(10, 20);
	rc = store_kv_put_buf(s, a.id, &in, big, 2 << 20, NULL, &cause);
	t_check(&cause, rc == -ENOSPC, "a snapshot that does not fit: -ENOSPC");
	in = t_info(0, 20);
	rc = store_kv_put_buf(s, a.id, &in, big, 2 << 20, NULL, &cause);
	tap_ok(rc == -ENOSPC, "a full one neither, although it frees the "
	    "old chain first");
	t_fsize(RLIM_INFINITY);

	tap_ok(t_load(s, a.id, &ex, &c, &applied, &cause) == 0 && c.n == 1 &&
	    t_same(&c, 0, full, 100000) && applied == 10,
	    "the previous snapshot is intact");
	tap_ok(store_integrity_check(s, 1, &cause) == 0,
	    "integrity check passes");
	tap_ok(store_message_append(s, a.id, &m, &cause) == 0 &&
	    store_session_get(s, a.id, &got, &cause) == 0 &&
	    got.n_messages == 1, "the same connection writes again once "
	    "space returns");
	store_session_clear(&got);
	in = t_info(10, 20);
	tap_ok(store_kv_put_buf(s, a.id, &in, big, 2 << 20, NULL,
	    &cause) == 0 && t_load(s, a.id, &ex, &c, &applied, &cause) == 0 &&
	    c.n == 2 && t_same(&c, 1, big, 2 << 20),
	    "and the snapshot that failed now goes through");
	t_collect_free(&c);
	store_session_clear(&a);
	free(full);
	free(big);
	store_close(s);
	free(cause);
}

/* kill -9 while a snapshot transaction is writing its chunks. */
static void
t_kill9(void)
{
	char *dir = t_dir("kill9"), *cause = NULL;
	struct store *s = t_open(dir, 4096);
	struct store_kv_info in, ex = t_info(0, 0);
	struct store_session a;
	struct t_collect c = { 0 };
	static const int when_ms[] = { 15, 60, 140, 260, 420 };
	unsigned char *full = t_bytes(30, 20000), *next = t_bytes(31, 120000);
	int64_t applied;
	int i, status, ok = 1, killed = 0;
	pid_t pid;

	if (s == NULL)
		return;
	t_session_init(&a, "kill", 1);
	store_session_create(s, &a, &cause);
	in = t_info(0, 10);
	store_kv_put_buf(s, a.id, &in, full, 20000, NULL, &cause);
	store_close(s);

	for (i = 0; i < (int)(sizeof when_ms / sizeof when_ms[0]); i++) {
		fflush(stdout);
		if ((pid = fork()) == 0) {
			struct store_kv_info ci = t_info(10, 40);

			/* 30 chunks x 20 ms: killed somewhere inside. */
			setenv("MISTRALD_TEST_SNAPSHOT_DELAY_MS", "20", 1);
			if ((s = t_open(dir, 4096)) == NULL)
				_exit(2);
			store_kv_put_buf(s, a.id, &ci, next, 120000, NULL,
			    NULL);
			_exit(3);
		}
		usleep(when_ms[i] * 1000);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		killed += WIFSIGNALED(status);
		if ((s = t_open(dir, 4096)) == NULL) {
			ok = 0;
			break;
		}
		if (store_integrity_check(s, 1, &cause) != 0 ||
		    t_load(s, a.id, &ex, &c, &applied, &cause) != 0 ||
		    c.n != 1 || !t_same(&c, 0, full, 20000) || applied != 10) {
			tap_diag("after kill at %d ms: %s", when_ms[i],
			    cause != NULL ? cause : "wrong chain");
			ok = 0;
		}
		store_close(s);
	}
	tap_ok(ok && killed == 5, "kill -9 at 5 points inside a snapshot "
	    "transaction: integrity check passes, the previous snapshot "
	    "loads intact (%d killed)", killed);
	t_collect_free(&c);
	store_session_clear(&a);
	free(full);
	free(next);
	free(cause);
}

/* ---- the persistence thread ----------------------------------------- */

struct t_ploop {
	struct persist	*p;
	pthread_t	 loop_thread;
	int		 on_loop;	/* every callback ran on the loop */
	int		 order[16];
	int		 n;
	int		 rc[16];
	int		 retrying[16];
	int64_t		 applied;
	struct store_kv_state kv;
	int		 saves_ok;
	struct t_collect c;
	int		 phase;		/* disk-full scenario */
	const char	*dir;
};

static void
t_record(struct t_ploop *t, const struct persist_result *r, int tag)
{
	if (!pthread_equal(pthread_self(), t->loop_thread))
		t->on_loop = 0;
	if (t->n < 16) {
		t->order[t->n] = tag;
		t->rc[t->n] = r->rc;
		t->retrying[t->n] = r->retrying;
		t->n++;
	}
	if (r->cause != NULL)
		tap_diag("persist report %d: rc %d retrying %d: %s", tag,
		    r->rc, r->retrying, r->cause);
}

static void
t_save_cb(const struct persist_result *r, void *arg)
{
	struct t_ploop *t = arg;

	t_record(t, r, 1);
	t->kv = r->kv;
	if (r->rc == 0)
		t->saves_ok++;
}

static void
t_load_cb(const struct persist_result *r, void *arg)
{
	struct t_ploop *t = arg;

	t_record(t, r, 2);
	t->applied = r->applied;
}

static int
t_count_fn(struct store *s, void *arg, char **cause)
{
	struct store_session *v;
	size_t n;
	int rc;

	if ((rc = store_session_list(s, STORE_ANY_OWNER, &v, &n, cause)) != 0)
		return rc;
	store_session_list_free(v, n);
	return (int)n;		/* > 0 on purpose: passed through as rc */
}

static void
t_call_cb(const struct persist_result *r, void *arg)
{
	t_record(arg, r, 3);
}

static void
t_flush_cb(const struct persist_result *r, void *arg)
{
	struct t_ploop *t = arg;

	t_record(t, r, 4);
	persist_destroy(t->p);
}

static struct store_turn *
t_turn(const struct store_session *ss, int64_t since, int64_t pos,
    const unsigned char *kv, size_t kvlen, int64_t seq)
{
	struct store_turn *t = store_turn_new(ss->id);

	t->session = calloc(1, sizeof *t->session);
	*t->session = *ss;
	t->session->name = ss->name != NULL ? strdup(ss->name) : NULL;
	store_params_copy(&t->session->params, &ss->params);
	t->session->pos = pos;
	t->messages = calloc(1, sizeof *t->messages);
	t->messages[0].seq = seq;
	t->messages[0].role = strdup("user");
	t->messages[0].text = strdup("turn text");
	t->n_messages = 1;
	t->sampler = malloc(8);
	memcpy(t->sampler, "SAMPLER!", 8);
	t->sampler_len = 8;
	t->has_kv = 1;
	t->kv_info = t_info(since, pos);
	t->kv_buf = malloc(kvlen);
	memcpy(t->kv_buf, kv, kvlen);
	t->kv_len = kvlen;
	return t;
}

static void
t_persist(void)
{
	char *dir = t_dir("persist"), *cause = NULL;
	struct store_session a, got;
	struct store_kv_info ex = t_info(0, 0);
	struct store_options opt = { .chunk_bytes = 1000 };
	struct t_ploop t;
	struct store *s;
	unsigned char *full = t_bytes(40, 5000), *d = t_bytes(41, 300);
	uv_loop_t loop;
	int rc;

	memset(&t, 0, sizeof t);
	t.loop_thread = pthread_self();
	t.on_loop = 1;
	uv_loop_init(&loop);
	rc = persist_create(&loop, dir, &opt, &t.p, &cause);
	tap_ok(rc == 0, "persist_create (%s)", cause != NULL ? cause : "");
	if (rc != 0)
		return;
	t_session_init(&a, "persisted", 42);
	persist_submit_save(t.p, t_turn(&a, 0, 10, full, 5000, 0), t_save_cb,
	    &t);
	persist_submit_save(t.p, t_turn(&a, 10, 12, d, 300, 1), t_save_cb,
	    &t);
	persist_submit_load(t.p, a.id, &ex, t_collect_cb, &t.c, t_load_cb,
	    &t);
	persist_submit_call(t.p, NULL, t_count_fn, NULL, t_call_cb, &t);
	persist_flush(t.p, t_flush_cb, &t);
	uv_run(&loop, UV_RUN_DEFAULT);
	tap_ok(t.n == 5 && t.order[0] == 1 && t.order[1] == 1 &&
	    t.order[2] == 2 && t.order[3] == 3 && t.order[4] == 4 &&
	    t.rc[0] == 0 && t.rc[1] == 0 && t.rc[2] == 0 && t.rc[3] == 1,
	    "save, save, load, call, flush complete in order "
	    "(%d reports)", t.n);
	tap_ok(t.on_loop, "every callback ran on the loop thread");
	tap_ok(t.kv.links == 2 && t.kv.pos == 12 && t.applied == 12 &&
	    t.c.n == 2 && t_same(&t.c, 0, full, 5000) &&
	    t_same(&t.c, 1, d, 300), "the load saw both saves' chain");
	tap_ok(uv_loop_close(&loop) == 0,
	    "persist_destroy released its handle");
	t_collect_free(&t.c);

	s = t_open(dir, 0);
	tap_ok(s != NULL && store_session_get(s, a.id, &got, &cause) == 0 &&
	    got.pos == 12 && got.n_messages == 2 && got.kv_pos == 12,
	    "a second connection sees the turns");
	store_session_clear(&got);
	store_close(s);

	/* Shutdown flushes: destroy right after submitting. */
	memset(&t, 0, sizeof t);
	t.loop_thread = pthread_self();
	t.on_loop = 1;
	uv_loop_init(&loop);
	persist_create(&loop, dir, &opt, &t.p, &cause);
	persist_submit_save(t.p, t_turn(&a, 12, 13, d, 300, 2), t_save_cb,
	    &t);
	persist_submit_save(t.p, t_turn(&a, 13, 14, d, 300, 3), t_save_cb,
	    &t);
	persist_destroy(t.p);
	tap_ok(t.saves_ok == 2 && t.n == 2 && t.on_loop,
	    "persist_destroy runs pending saves and reports them");
	{
		struct store_turn *late = t_turn(&a, 14, 15, d, 300, 4);

		tap_ok(persist_submit_save(t.p, late, NULL, NULL) ==
		    -ESHUTDOWN, "nothing is accepted after destroy");
		store_turn_free(late);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	tap_ok(uv_loop_close(&loop) == 0, "loop closes");
	s = t_open(dir, 0);
	tap_ok(s != NULL && store_session_get(s, a.id, &got, &cause) == 0 &&
	    got.pos == 14 && got.n_messages == 4 && got.kv_pos == 14,
	    "both saves are on disk");
	store_session_clear(&got);
	store_close(s);
	store_session_clear(&a);
	free(full);
	free(d);
	free(cause);
}

/* Disk full through the thread: reported, kept, retried on flush; only
 * the failing session waits. */
struct t_tag {
	struct t_ploop	*t;
	int		 tag;
};

static void
t_retry_save_cb(const struct persist_result *r, void *arg)
{
	struct t_tag *g = arg;
	struct t_ploop *t = g->t;

	t_record(t, r, g->tag);
	if (r->retrying && t->phase == 0) {
		t->phase = 1;
		t_fsize(RLIM_INFINITY);		/* space comes back */
		persist_flush(t->p, t_flush_cb, t);
	}
	if (r->rc == 0)
		t->saves_ok++;
}

static void
t_persist_retry(void)
{
	char *dir = t_dir("persist-retry"), *cause = NULL;
	struct store_options opt = { .chunk_bytes = 64 << 10 };
	struct store_session a, b, got;
	struct t_tag ga = { NULL, 1 }, ga2 = { NULL, 5 }, gb = { NULL, 6 };
	struct store_turn *small;
	struct t_ploop t;
	struct store *s;
	unsigned char *big = t_bytes(50, 2 << 20), *d = t_bytes(51, 100);
	struct stat sb;
	uv_loop_t loop;

	memset(&t, 0, sizeof t);
	t.loop_thread = pthread_self();
	t.on_loop = 1;
	ga.t = ga2.t = gb.t = &t;
	signal(SIGXFSZ, SIG_IGN);
	uv_loop_init(&loop);
	if (persist_create(&loop, dir, &opt, &t.p, &cause) != 0)
		return;
	t_sql(dir, "PRAGMA wal_checkpoint(TRUNCATE)");
	stat(t_db(dir), &sb);
	t_fsize((rlim_t)sb.st_size + (256 << 10));
	t_session_init(&a, "retry", 42);
	t_session_init(&b, "bystander", 42);
	persist_submit_save(t.p, t_turn(&a, 0, 10, big, 2 << 20, 0),
	    t_retry_save_cb, &ga);
	persist_submit_save(t.p, t_turn(&a, 10, 11, d, 100, 1),
	    t_retry_save_cb, &ga2);
	small = t_turn(&b, 0, 1, d, 100, 0);
	persist_submit_save(t.p, small, t_retry_save_cb, &gb);
	uv_run(&loop, UV_RUN_DEFAULT);
	t_fsize(RLIM_INFINITY);
	tap_ok(t.n == 5 && t.order[0] == 1 && t.rc[0] == -ENOSPC &&
	    t.retrying[0] == 1, "disk full: the save is reported (-ENOSPC, "
	    "retrying) and kept");
	tap_ok(t.n == 5 && t.order[1] == 6 && t.rc[1] == 0 &&
	    t.order[2] == 1 && t.rc[2] == 0 && t.order[3] == 5 &&
	    t.rc[3] == 0 && t.order[4] == 4 && t.saves_ok == 3,
	    "another session's save goes through meanwhile; the failed one "
	    "succeeds on the flush once space returns, then its session's "
	    "next save runs");
	uv_loop_close(&loop);
	s = t_open(dir, 0);
	tap_ok(s != NULL && store_session_get(s, a.id, &got, &cause) == 0 &&
	    got.kv_pos == 11 && got.kv_bytes == (2 << 20) + 100 &&
	    got.n_messages == 2, "and both turns are stored, in order");
	store_session_clear(&got);
	store_session_clear(&a);
	store_session_clear(&b);
	store_close(s);
	free(big);
	free(d);
	free(cause);
}

/* ---- checkpoints ---------------------------------------------------- */

static int64_t
t_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static char *
t_wal(const char *dir)
{
	static char path[4200];

	snprintf(path, sizeof path, "%s-wal", t_db(dir));
	return path;
}

/*
 * A 6 MiB commit: by default SQLite copies the WAL into the database
 * inside that commit (its caller waits for it); in manual mode it stays in
 * the WAL until store_checkpoint(), and TRUNCATE empties the WAL file.
 */
static void
t_checkpoint(void)
{
	char *dir, *cause = NULL;
	struct store_session a;
	struct store_kv_info in = t_info(0, 10), ex = t_info(0, 0);
	struct t_collect c = { 0 };
	struct store *s;
	unsigned char *b = t_bytes(60, 6 << 20);
	int64_t pending, applied;
	int rc, manual;

	for (manual = 0; manual <= 1; manual++) {
		dir = t_dir(manual ? "ckpt-manual" : "ckpt-auto");
		if ((s = t_open(dir, 1 << 20)) == NULL)
			break;
		t_session_init(&a, "big", 1);
		store_session_create(s, &a, &cause);
		if (manual)
			store_wal_manual(s);
		rc = store_kv_put_buf(s, a.id, &in, b, 6 << 20, NULL, &cause);
		pending = store_wal_pending(s);
		if (!manual) {
			t_check(&cause, rc == 0 && t_size(t_db(dir)) >= 6 << 20,
			    "by default a 6 MiB commit checkpoints (the "
			    "database holds %lld bytes when it returns)",
			    (long long)t_size(t_db(dir)));
		} else {
			t_check(&cause, rc == 0 && pending >= 6 << 20 &&
			    t_size(t_db(dir)) < 1 << 20 &&
			    t_size(t_wal(dir)) >= 6 << 20, "manual "
			    "checkpoints: it stays in the WAL (%lld bytes "
			    "pending, database %lld bytes)",
			    (long long)pending, (long long)t_size(t_db(dir)));
			rc = store_checkpoint(s, 0, &cause);
			t_check(&cause, rc == 0 && store_wal_pending(s) == 0 &&
			    t_size(t_db(dir)) >= 6 << 20, "a PASSIVE "
			    "checkpoint copies it into the database");
			rc = store_checkpoint(s, 1, &cause);
			t_check(&cause, rc == 0 && t_size(t_wal(dir)) == 0,
			    "a TRUNCATE checkpoint empties the WAL file");
			rc = t_load(s, a.id, &ex, &c, &applied, &cause);
			t_check(&cause, rc == 0 && c.n == 1 &&
			    t_same(&c, 0, b, 6 << 20) &&
			    store_integrity_check(s, 1, &cause) == 0,
			    "and the snapshot reads back whole");
			t_collect_free(&c);
		}
		store_session_clear(&a);
		store_close(s);
	}
	free(b);
	free(cause);
}

/* The persistence thread with a queue that never empties: 32 saves of a
 * 1 MiB snapshot submitted at once, then 3 s of quiet. */
struct t_walrun {
	struct persist	*p;
	const char	*dir;
	uv_timer_t	 timer;
	int		 n, ok;
	int64_t		 wal_busy;	/* WAL file after the last save */
	int64_t		 wal_idle;	/* after the quiet */
};

static void
t_walrun_close_cb(uv_handle_t *h)
{
}

static void
t_walrun_timer_cb(uv_timer_t *h)
{
	struct t_walrun *w = h->data;

	w->wal_idle = t_size(t_wal(w->dir));
	persist_destroy(w->p);
	uv_close((uv_handle_t *)h, t_walrun_close_cb);
}

static void
t_walrun_save_cb(const struct persist_result *r, void *arg)
{
	struct t_walrun *w = arg;

	if (r->retrying)
		return;
	w->ok += r->rc == 0;
	if (++w->n < 32)
		return;
	w->wal_busy = t_size(t_wal(w->dir));
	uv_timer_start(&w->timer, t_walrun_timer_cb, 3000, 0);
}

static void
t_persist_wal(void)
{
	char *dir = t_dir("persist-wal"), *cause = NULL;
	struct store_options opt = { .chunk_bytes = 256 << 10 };
	struct store_kv_info ex = t_info(0, 0);
	struct t_collect c = { 0 };
	struct store_session a;
	struct t_walrun w;
	struct store *s;
	unsigned char *kv = t_bytes(70, 1 << 20);
	int64_t applied;
	uv_loop_t loop;
	int i, rc;

	memset(&w, 0, sizeof w);
	w.dir = dir;
	uv_loop_init(&loop);
	uv_timer_init(&loop, &w.timer);
	w.timer.data = &w;
	if (persist_create(&loop, dir, &opt, &w.p, &cause) != 0) {
		tap_diag("persist_create: %s", cause != NULL ? cause : "?");
		free(cause);
		free(kv);
		return;
	}
	t_session_init(&a, "busy", 7);
	for (i = 0; i < 32; i++) {
		kv[0] = (unsigned char)i;
		persist_submit_save(w.p, t_turn(&a, 0, i + 1, kv, 1 << 20, i),
		    t_walrun_save_cb, &w);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	tap_ok(w.ok == 32 && w.wal_busy > 0 && w.wal_busy < 20 << 20,
	    "32 MiB of snapshots with jobs always queued: the WAL stays "
	    "bounded (%lld bytes at the end)", (long long)w.wal_busy);
	tap_ok(w.wal_idle == 0, "after 3 s of quiet the WAL file is empty "
	    "(%lld bytes)", (long long)w.wal_idle);
	s = t_open(dir, 0);
	rc = s != NULL ? t_load(s, a.id, &ex, &c, &applied, &cause) : -1;
	t_check(&cause, rc == 0 && c.n == 1 && applied == 32 &&
	    t_same(&c, 0, kv, 1 << 20) &&
	    store_integrity_check(s, 1, &cause) == 0,
	    "the last snapshot reads back, the database checks out");
	t_collect_free(&c);
	store_close(s);
	store_session_clear(&a);
	free(kv);
	free(cause);
}

/* ---- a real KV cache ------------------------------------------------ */

struct t_kvsave {
	const struct kvcache	*kv;
	int64_t			 since;
};

static int
t_kvsave_cb(void *ctx, kvcache_write_fn *write, void *wctx)
{
	struct t_kvsave *k = ctx;

	return kvcache_save(k->kv, k->since, write, wctx);
}

static int
t_kvrestore_cb(void *ctx, const struct store_kv_info *info,
    kvcache_read_fn *read, void *rctx)
{
	return kvcache_restore(ctx, read, rctx);
}

static struct store_kv_info
t_kvinfo(const struct model *m, const struct kvcache *kv, int64_t since)
{
	const struct model_hparams *hp = model_hparams(m);
	const struct kv_params *kp = kvcache_params(kv);
	struct store_kv_info i = {
		.fingerprint = model_fingerprint(m),
		.n_layers = hp->n_layers, .n_kv_heads = hp->n_kv_heads,
		.head_dim = hp->head_dim, .type = kp->type,
		.window = kp->window, .n_global = kp->n_global,
		.format = KVCACHE_VERSION, .base = kvcache_base(kv),
		.since = since, .pos = kvcache_pos(kv),
	};
	return i;
}

static void
t_real_kv(void)
{
	char *dir = t_dir("realkv"), *cause = NULL, path[4096], err[256];
	struct kv_params kp = { .window = 16, .n_global = 2,
	    .type = KV_TYPE_F16 };
	struct mkmodel_params mp;
	struct store_kv_info in;
	struct store_session a;
	struct t_kvsave ks;
	struct model *m = NULL;
	struct kvcache *kv = NULL, *back = NULL;
	struct fwd *f = NULL;
	struct store *s = NULL;
	void *b1 = NULL, *b2 = NULL;
	size_t l1 = 0, l2 = 0;
	int32_t toks[40];
	int64_t applied, marks[3] = { 0 };
	int i, rc, ok = 1;

	mkmodel_defaults(&mp);
	snprintf(path, sizeof path, "%s/tiny.gguf", dir);
	if (mkmodel_write(&mp, path, err, sizeof err) != 0 ||
	    model_load(path, &m, err, sizeof err) != 0 ||
	    kvcache_create(m, &kp, &kv) != 0 ||
	    kvcache_create(m, &kp, &back) != 0 ||
	    fwd_create(m, 16, 1, &f) != 0) {
		tap_skip("a real KV cache needs lib/kvcache.c, mkmodel and "
		    "the forward pass");
		goto out;
	}
	for (i = 0; i < 40; i++)
		toks[i] = 3 + (i * 37) % 200;
	if ((s = t_open(dir, 1000)) == NULL)
		goto out;
	t_session_init(&a, "real", 1);
	store_session_create(s, &a, &cause);

	/* 10 tokens, full; +7, delta; +20 (wraps the ring of 16), delta. */
	rc = fwd_prefill(f, kv, toks, 10, 0, 0, NULL);
	ks = (struct t_kvsave){ kv, kvcache_base(kv) };
	in = t_kvinfo(m, kv, ks.since);
	ok &= rc == 0 && store_kv_put(s, a.id, &in, t_kvsave_cb, &ks, NULL,
	    &cause) == 0;
	marks[0] = kvcache_pos(kv);
	rc = fwd_prefill(f, kv, toks + 10, 7, 0, 0, NULL);
	ks.since = marks[0];
	in = t_kvinfo(m, kv, ks.since);
	ok &= rc == 0 && store_kv_put(s, a.id, &in, t_kvsave_cb, &ks, NULL,
	    &cause) == 0;
	marks[1] = kvcache_pos(kv);
	rc = fwd_prefill(f, kv, toks + 17, 20, 0, 0, NULL);
	ks.since = marks[1];
	in = t_kvinfo(m, kv, ks.since);
	ok &= rc == 0 && store_kv_put(s, a.id, &in, t_kvsave_cb, &ks, NULL,
	    &cause) == 0;
	t_check(&cause, ok, "a real cache: full + 2 incremental snapshots "
	    "stored");
	in = t_kvinfo(m, kv, 0);
	rc = store_kv_load(s, a.id, &in, t_kvrestore_cb, back, &applied,
	    &cause);
	t_check(&cause, rc == 0 && applied == kvcache_pos(kv) &&
	    kvcache_pos(back) == kvcache_pos(kv), "restored into a fresh "
	    "cache through kvcache_restore");
	tap_ok(kvcache_save_buf(kv, kvcache_base(kv), &b1, &l1) == 0 &&
	    kvcache_save_buf(back, kvcache_base(back), &b2, &l2) == 0 &&
	    l1 == l2 && memcmp(b1, b2, l1) == 0,
	    "the restored cache is byte-identical to the original");
	in.fingerprint ^= 1;
	kvcache_reset(back, 0);
	rc = store_kv_load(s, a.id, &in, t_kvrestore_cb, back, &applied,
	    &cause);
	tap_ok(rc == -ESTALE && kvcache_pos(back) == 0,
	    "another model's fingerprint: -ESTALE, cache untouched");
	store_session_clear(&a);
out:
	free(b1);
	free(b2);
	store_close(s);
	fwd_free(f);
	kvcache_free(kv);
	kvcache_free(back);
	model_free(m);
	free(cause);
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-fixture") == 0)
		return t_write_fixture(argv[2]) == 0 ? 0 : 1;
	tap_timeout(120);
	if (mkdtemp(t_root) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	chmod(t_root, 0755);	/* the read-only child must get through */
	atexit(t_cleanup);
	t_ids();
	t_sessions();
	t_messages();
	t_kv();
	t_fork();
	t_versions();
	t_readonly();
	t_diskfull();
	t_kill9();
	t_persist();
	t_persist_retry();
	t_checkpoint();
	t_persist_wal();
	t_real_kv();
	return tap_done();
}
