/*
 * store-kv.c: KV snapshot chains in the store (see store.h): chunked,
 * checksummed streams from kvcache_save(), a full one followed by
 * incremental ones, shared between forks; and store_save_turn(), which
 * commits a whole turn in one transaction.
 *
 * DESIGN
 *
 * 1. Layout.  A stream (the bytes of one kvcache_save() call) lives
 *    in kv_streams (one row) and kv_chunks (rows of at most chunk_bytes,
 *    each with its length and CRC32C, keyed by (stream, seq)).  A session's
 *    chain is its kv_links rows: link 0 is a full stream, links 1.. are
 *    incremental ones, applied in order; each names its stream.  Streams
 *    are shared: a fork copies only link rows, and the kv_links_gc trigger
 *    deletes a stream (and, by cascade, its chunks) when its last link goes,
 *    whatever deleted the link (a new full snapshot, store_kv_delete, or a
 *    session delete cascading).  A snapshot is one transaction, so a crash
 *    mid-write leaves the previous chain.
 *
 * 2. A full snapshot first deletes the old chain, then writes the new one,
 *    in the same transaction: the pages freed by the delete are reused by
 *    the writes, so the file does not grow to twice the cache.
 *
 * 3. Nothing read back is trusted: chunk lengths and checksums are checked
 *    before any byte reaches the consumer, sequence gaps and length
 *    mismatches are -EBADMSG, a link that does not match what the caller
 *    expects is -ESTALE or -EPROTO.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "store.h"
#include "store-internal.h"

/* One row of kv_links joined with its stream. */
struct store_link {
	struct store_kv_info	 info;
	int64_t			 link;
	int64_t			 generation;
	int64_t			 stream;
	int64_t			 bytes;
	int64_t			 n_chunks;
	int64_t			 created;
};

/* ---- CRC32C (Castagnoli, reflected 0x82f63b78), slicing by 8 -------- */

static uint32_t store_crc_table[8][256];
static pthread_once_t store_crc_once = PTHREAD_ONCE_INIT;

static void
store_crc_init(void)
{
	uint32_t c;
	int i, j, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (j = 0; j < 8; j++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		store_crc_table[0][i] = c;
	}
	for (i = 0; i < 256; i++) {
		for (k = 1; k < 8; k++) {
			c = store_crc_table[k - 1][i];
			store_crc_table[k][i] = (c >> 8) ^
			    store_crc_table[0][c & 0xff];
		}
	}
}

uint32_t
store_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t (*t)[256] = store_crc_table;
	uint32_t lo, hi;

	pthread_once(&store_crc_once, store_crc_init);
	crc = ~crc;
	while (len >= 8) {
		lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
		    (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
		    (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
		crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^
		    t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
		    t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
		    t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- KV snapshot chains --------------------------------------------- */

/* One row of the chain query in store_links_get(). */
static int
store_link_row(sqlite3_stmt *st, void *dst)
{
	struct store_link *l = dst;

	l->link = sqlite3_column_int64(st, 0);
	l->generation = sqlite3_column_int64(st, 1);
	l->info.format = (uint32_t)sqlite3_column_int64(st, 2);
	l->info.fingerprint = (uint64_t)sqlite3_column_int64(st, 3);
	l->info.n_layers = (uint32_t)sqlite3_column_int64(st, 4);
	l->info.n_kv_heads = (uint32_t)sqlite3_column_int64(st, 5);
	l->info.head_dim = (uint32_t)sqlite3_column_int64(st, 6);
	l->info.type = (enum kv_type)sqlite3_column_int(st, 7);
	l->info.window = (uint32_t)sqlite3_column_int64(st, 8);
	l->info.n_global = (uint32_t)sqlite3_column_int64(st, 9);
	l->info.base = sqlite3_column_int64(st, 10);
	l->info.since = sqlite3_column_int64(st, 11);
	l->info.pos = sqlite3_column_int64(st, 12);
	l->stream = sqlite3_column_int64(st, 13);
	l->bytes = sqlite3_column_int64(st, 14);
	l->info.bytes = l->bytes;
	l->n_chunks = sqlite3_column_int64(st, 15);
	l->created = sqlite3_column_int64(st, 16);
	return 0;
}

static void
store_links_free_cb(void *rows, size_t n)
{
	free(rows);
}

/* Read session id's chain (ordered by link).  *v malloc'd. */
static int
store_links_get(struct store *s, const char *id, struct store_link **v,
    size_t *n, char **cause)
{
	sqlite3_stmt *st;
	void *rows;
	int rc;

	*v = NULL;
	*n = 0;
	if ((rc = store_prepare(s, "SELECT k.link, k.generation, k.format,"
	    " k.fingerprint, k.n_layers, k.n_kv_heads, k.head_dim, k.kv_type,"
	    " k.window, k.n_global, k.base, k.since, k.pos, k.stream,"
	    " t.bytes, t.n_chunks, k.created FROM kv_links k JOIN kv_streams t"
	    " ON t.id = k.stream WHERE k.session = ?1 ORDER BY k.link",
	    &st, cause)) != 0)
		return rc;
	if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
	    SQLITE_STATIC), cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	if ((rc = store_rows(s, st, sizeof **v, store_link_row,
	    store_links_free_cb, &rows, n, cause)) == 0)
		*v = rows;
	return rc;
}

static void
store_links_state(struct store *s, const struct store_link *v, size_t n,
    struct store_kv_state *out)
{
	size_t i;

	memset(out, 0, sizeof *out);
	out->links = (int)n;
	out->pos = n > 0 ? v[n - 1].info.pos : -1;
	for (i = 0; i < n; i++) {
		if (i == 0)
			out->base_bytes = v[i].bytes;
		else
			out->delta_bytes += v[i].bytes;
		if (v[i].created > out->time)
			out->time = v[i].created;
	}
	out->want_full = n > 1 && (out->delta_bytes > out->base_bytes ||
	    (int)n - 1 >= s->max_links);
}

int
store_kv_state(struct store *s, const char *id, struct store_kv_state *out,
    char **cause)
{
	struct store_link *v;
	size_t n;
	int rc;

	memset(out, 0, sizeof *out);
	out->pos = -1;
	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if ((rc = store_links_get(s, id, &v, &n, cause)) != 0)
		return rc;
	store_links_state(s, v, n, out);
	free(v);
	return 0;
}

static int
store_kv_same_layout(const struct store_kv_info *a,
    const struct store_kv_info *b)
{
	return a->fingerprint == b->fingerprint &&
	    a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads &&
	    a->head_dim == b->head_dim && a->type == b->type &&
	    a->window == b->window && a->n_global == b->n_global;
}

/* Chunking writer state: the producer's write callback. */
struct store_writer {
	struct store	*s;
	sqlite3_stmt	*st;		/* INSERT INTO kv_chunks */
	int64_t		 stream;
	int64_t		 seq;
	int64_t		 bytes;
	unsigned char	*buf;		/* chunk_bytes, allocated on need */
	size_t		 fill;
	int		 sql_rc;	/* an SQL failure: fails the turn */
	char		**cause;
};

static int
store_writer_chunk(struct store_writer *w, const void *data, size_t len)
{
	struct store *s = w->s;
	struct timespec ts;
	int rc;

	sqlite3_reset(w->st);
	rc = sqlite3_bind_int64(w->st, 1, w->stream);
	rc |= sqlite3_bind_int64(w->st, 2, w->seq);
	rc |= sqlite3_bind_int64(w->st, 3, (int64_t)len);
	rc |= sqlite3_bind_int64(w->st, 4, store_crc32c(0, data, len));
	rc |= sqlite3_bind_blob(w->st, 5, data, (int)len, SQLITE_STATIC);
	if ((rc = store_bound(s, w->st, rc, w->cause)) != 0)
		return w->sql_rc = rc;
	rc = sqlite3_step(w->st);
	if (rc != SQLITE_DONE)
		return w->sql_rc = store_fail(s, w->cause, "sqlite3_step",
		    w->st, rc);
	w->seq++;
	w->bytes += (int64_t)len;
	if (s->delay_ms != 0) {
		ts.tv_sec = s->delay_ms / 1000;
		ts.tv_nsec = (long)(s->delay_ms % 1000) * 1000000;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	return 0;
}

static int
store_writer_write_cb(void *ctx, const void *data, size_t len)
{
	struct store_writer *w = ctx;
	const unsigned char *p = data;
	size_t chunk = w->s->chunk_bytes, n;
	int rc;

	while (len > 0) {
		if (w->fill == 0 && len >= chunk) {
			if ((rc = store_writer_chunk(w, p, chunk)) != 0)
				return rc;
			p += chunk;
			len -= chunk;
			continue;
		}
		if (w->buf == NULL && (w->buf = malloc(chunk)) == NULL)
			return -ENOMEM;
		n = chunk - w->fill < len ? chunk - w->fill : len;
		memcpy(w->buf + w->fill, p, n);
		w->fill += n;
		p += n;
		len -= n;
		if (w->fill == chunk) {
			if ((rc = store_writer_chunk(w, w->buf, chunk)) != 0)
				return rc;
			w->fill = 0;
		}
	}
	return 0;
}

struct store_bufsrc {
	const void	*buf;
	size_t		 len;
};

static int
store_bufsrc_produce(void *ctx, kvcache_write_fn *write, void *wctx)
{
	struct store_bufsrc *b = ctx;

	return b->len != 0 ? write(wctx, b->buf, b->len) : 0;
}

/*
 * The snapshot write, inside the caller's transaction.  Returns 0, -ERANGE
 * (does not continue the chain; nothing written), the producer's error
 * (*sql_failed 0: only the KV part should be dropped) or an SQL error
 * (*sql_failed 1).
 */
static int
store_kv_write(struct store *s, const char *id,
    const struct store_kv_info *info, store_kv_producer *produce, void *ctx,
    int *sql_failed, char **cause)
{
	struct store_writer w = { .s = s, .cause = cause };
	struct store_link *v = NULL;
	sqlite3_stmt *st = NULL;
	int64_t generation;
	size_t n;
	int full = info->since <= info->base, rc;

	*sql_failed = 1;
	if ((rc = store_links_get(s, id, &v, &n, cause)) != 0)
		return rc;
	*sql_failed = 0;
	if (!full && (n == 0 || !store_kv_same_layout(info, &v[0].info) ||
	    info->base != v[0].info.base ||
	    info->format != v[0].info.format ||
	    info->since != v[n - 1].info.pos)) {
		if (n == 0)
			store_set_cause(cause, "incremental snapshot of %s "
			    "from %" PRId64 " but no full snapshot is stored",
			    id, info->since);
		else
			store_set_cause(cause, "incremental snapshot of %s "
			    "from %" PRId64 " does not continue the stored "
			    "chain (at %" PRId64 ", or another layout)", id,
			    info->since, v[n - 1].info.pos);
		free(v);
		return -ERANGE;
	}
	*sql_failed = 1;
	generation = n > 0 ? v[0].generation + (full ? 1 : 0) : 1;
	if (full && n > 0) {
		/* DESIGN 2: free the old chain's pages first. */
		if ((rc = store_prepare(s, "DELETE FROM kv_links WHERE"
		    " session = ?1", &st, cause)) != 0)
			goto out;
		if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
		    SQLITE_STATIC), cause)) != 0) {
			sqlite3_finalize(st);
			goto out;
		}
		if ((rc = store_step_done(s, st, cause)) != 0)
			goto out;
	}
	if ((rc = store_exec(s, "INSERT INTO kv_streams (bytes, n_chunks)"
	    " VALUES (0, 0)", cause)) != 0)
		goto out;
	w.stream = sqlite3_last_insert_rowid(s->db);
	if ((rc = store_prepare(s, "INSERT INTO kv_chunks (stream, seq, len,"
	    " crc, data) VALUES (?1, ?2, ?3, ?4, ?5)", &w.st, cause)) != 0)
		goto out;
	rc = produce(ctx, store_writer_write_cb, &w);
	if (rc == 0 && w.fill > 0)
		rc = store_writer_chunk(&w, w.buf, w.fill);
	sqlite3_finalize(w.st);
	if (rc != 0) {
		if (w.sql_rc == 0) {
			*sql_failed = 0;
			if (cause != NULL && *cause == NULL)
				store_set_cause(cause, "serialising the KV "
				    "cache of %s: %s", id, strerror(-rc));
		}
		goto out;
	}
	if ((rc = store_prepare(s, "UPDATE kv_streams SET bytes = ?2,"
	    " n_chunks = ?3 WHERE id = ?1", &st, cause)) != 0)
		goto out;
	rc = sqlite3_bind_int64(st, 1, w.stream);
	rc |= sqlite3_bind_int64(st, 2, w.bytes);
	rc |= sqlite3_bind_int64(st, 3, w.seq);
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		goto out;
	}
	if ((rc = store_step_done(s, st, cause)) != 0)
		goto out;
	if ((rc = store_prepare(s, "INSERT INTO kv_links (session, link,"
	    " generation, format, fingerprint, n_layers, n_kv_heads, head_dim,"
	    " kv_type, window, n_global, base, since, pos, stream, created)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	    " ?14, ?15, ?16)", &st, cause)) != 0)
		goto out;
	rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 2, full ? 0 : (int64_t)n);
	rc |= sqlite3_bind_int64(st, 3, generation);
	rc |= sqlite3_bind_int64(st, 4, info->format);
	rc |= sqlite3_bind_int64(st, 5, (int64_t)info->fingerprint);
	rc |= sqlite3_bind_int64(st, 6, info->n_layers);
	rc |= sqlite3_bind_int64(st, 7, info->n_kv_heads);
	rc |= sqlite3_bind_int64(st, 8, info->head_dim);
	rc |= sqlite3_bind_int64(st, 9, (int64_t)info->type);
	rc |= sqlite3_bind_int64(st, 10, info->window);
	rc |= sqlite3_bind_int64(st, 11, info->n_global);
	rc |= sqlite3_bind_int64(st, 12, info->base);
	rc |= sqlite3_bind_int64(st, 13, full ? info->base : info->since);
	rc |= sqlite3_bind_int64(st, 14, info->pos);
	rc |= sqlite3_bind_int64(st, 15, w.stream);
	rc |= sqlite3_bind_int64(st, 16, store_now_ms());
	if ((rc = store_bound(s, st, rc, cause)) != 0) {
		sqlite3_finalize(st);
		goto out;
	}
	rc = store_step_done(s, st, cause);
out:
	free(w.buf);
	free(v);
	return rc;
}

static int
store_kv_info_check(const char *id, const struct store_kv_info *info,
    char **cause)
{
	int rc;

	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	if (info->base < 0 || info->pos < info->base ||
	    info->pos < info->since) {
		store_set_cause(cause, "snapshot positions out of order");
		return -EINVAL;
	}
	return 0;
}

/* Fail with -ENOENT unless session id exists (inside a transaction). */
static int
store_session_exists(struct store *s, const char *id, char **cause)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = store_prepare(s, "SELECT 1 FROM sessions WHERE id = ?1",
	    &st, cause)) != 0)
		return rc;
	if ((rc = store_bound(s, st, sqlite3_bind_text(st, 1, id, -1,
	    SQLITE_STATIC), cause)) != 0) {
		sqlite3_finalize(st);
		return rc;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = 0;
	else if (rc == SQLITE_DONE) {
		store_set_cause(cause, "no session %s", id);
		rc = -ENOENT;
	} else
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
	sqlite3_finalize(st);
	return rc;
}

/* After a commit: the chain's state (best effort; zeroed on failure). */
static void
store_kv_state_after(struct store *s, const char *id,
    struct store_kv_state *state)
{
	if (state != NULL && store_kv_state(s, id, state, NULL) != 0) {
		memset(state, 0, sizeof *state);
		state->pos = -1;
	}
}

int
store_kv_put(struct store *s, const char *id,
    const struct store_kv_info *info, store_kv_producer *produce, void *ctx,
    struct store_kv_state *state, char **cause)
{
	int rc, sql_failed;

	if ((rc = store_kv_info_check(id, info, cause)) != 0)
		return rc;
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_session_exists(s, id, cause)) != 0 ||
	    (rc = store_kv_write(s, id, info, produce, ctx, &sql_failed,
	    cause)) != 0 ||
	    (rc = store_commit(s, cause)) != 0) {
		store_rollback(s);
		return rc;
	}
	store_kv_state_after(s, id, state);
	return 0;
}

int
store_kv_put_buf(struct store *s, const char *id,
    const struct store_kv_info *info, const void *buf, size_t len,
    struct store_kv_state *state, char **cause)
{
	struct store_bufsrc b = { buf, len };

	return store_kv_put(s, id, info, store_bufsrc_produce, &b, state,
	    cause);
}

int
store_kv_delete(struct store *s, const char *id, char **cause)
{
	return store_id_write(s, id, "DELETE FROM kv_links WHERE"
	    " session = ?1", NULL, cause);
}

/* Reader state: the consumer's read callback over one link's chunks. */
struct store_reader {
	struct store		*s;
	sqlite3_stmt		*st;	/* the link's chunks, by seq */
	const char		*id;
	const struct store_link	*link;
	const unsigned char	*data;	/* current verified chunk */
	size_t			 len;
	size_t			 off;
	int64_t			 seq;	/* next chunk expected */
	int64_t			 done;	/* bytes handed out */
	int			 rc;	/* first failure */
	char			**cause;
};

/* Load and verify the next chunk.  Returns 0, 1 at the end, or < 0. */
static int
store_reader_next(struct store_reader *r)
{
	const struct store_link *l = r->link;
	int64_t seq, len, crc;
	int rc;

	rc = sqlite3_step(r->st);
	if (rc == SQLITE_DONE)
		return 1;
	if (rc != SQLITE_ROW)
		return r->rc = store_fail(r->s, r->cause, "sqlite3_step",
		    r->st, rc);
	seq = sqlite3_column_int64(r->st, 0);
	len = sqlite3_column_int64(r->st, 1);
	crc = sqlite3_column_int64(r->st, 2);
	r->data = sqlite3_column_blob(r->st, 3);
	r->len = (size_t)sqlite3_column_bytes(r->st, 3);
	r->off = 0;
	if (seq != r->seq) {
		store_set_cause(r->cause, "KV snapshot of %s, link %" PRId64
		    ": chunk %" PRId64 " is missing", r->id, l->link, r->seq);
		return r->rc = -EBADMSG;
	}
	if (len < 0 || (int64_t)r->len != len || (len > 0 && r->data == NULL)) {
		store_set_cause(r->cause, "KV snapshot of %s, link %" PRId64
		    ": chunk %" PRId64 " is truncated (%zu of %" PRId64
		    " bytes)", r->id, l->link, seq, r->len, len);
		return r->rc = -EBADMSG;
	}
	if ((int64_t)store_crc32c(0, r->data, r->len) != crc) {
		store_set_cause(r->cause, "KV snapshot of %s, link %" PRId64
		    ": chunk %" PRId64 " fails its checksum", r->id, l->link,
		    seq);
		return r->rc = -EBADMSG;
	}
	r->seq++;
	return 0;
}

static int
store_reader_read_cb(void *ctx, void *buf, size_t len)
{
	struct store_reader *r = ctx;
	unsigned char *p = buf;
	size_t n;
	int rc;

	if (r->rc != 0)
		return r->rc;
	while (len > 0) {
		if (r->off == r->len) {
			if ((rc = store_reader_next(r)) < 0)
				return rc;
			if (rc == 1) {
				store_set_cause(r->cause, "KV snapshot of %s,"
				    " link %" PRId64 ": stream ends after %"
				    PRId64 " of %" PRId64 " bytes", r->id,
				    r->link->link, r->done, r->link->bytes);
				return r->rc = -EBADMSG;
			}
			continue;
		}
		n = r->len - r->off < len ? r->len - r->off : len;
		memcpy(p, r->data + r->off, n);
		r->off += n;
		r->done += (int64_t)n;
		p += n;
		len -= n;
	}
	return 0;
}

/* Check link l against what the caller expects. */
static int
store_kv_expect(const char *id, const struct store_link *l,
    const struct store_link *first, const struct store_kv_info *expect,
    int64_t prev_pos, char **cause)
{
	if (expect != NULL && l->info.format != expect->format) {
		store_set_cause(cause, "KV snapshot of %s has format %" PRIu32
		    ", expected %" PRIu32, id, l->info.format, expect->format);
		return -EPROTO;
	}
	if (expect != NULL && l->info.fingerprint != expect->fingerprint) {
		store_set_cause(cause, "KV snapshot of %s was made by another "
		    "model (fingerprint %016" PRIx64 ", this one is %016"
		    PRIx64 ")", id, l->info.fingerprint, expect->fingerprint);
		return -ESTALE;
	}
	if (expect != NULL && !store_kv_same_layout(&l->info, expect)) {
		store_set_cause(cause, "KV snapshot of %s has another cache "
		    "layout, element type, window or global count", id);
		return -ESTALE;
	}
	if (l != first && (!store_kv_same_layout(&l->info, &first->info) ||
	    l->info.since != prev_pos || l->info.base != first->info.base)) {
		store_set_cause(cause, "KV snapshot of %s: link %" PRId64
		    " does not continue the chain", id, l->link);
		return -EBADMSG;
	}
	if (l->bytes < 0 || l->n_chunks < 0 || l->info.pos < l->info.since) {
		store_set_cause(cause, "KV snapshot of %s: link %" PRId64
		    " header is malformed", id, l->link);
		return -EBADMSG;
	}
	return 0;
}

int
store_kv_load(struct store *s, const char *id,
    const struct store_kv_info *expect, store_kv_consumer *consume,
    void *ctx, int64_t *applied, char **cause)
{
	struct store_reader r;
	struct store_link *v = NULL;
	sqlite3_stmt *st = NULL;
	int64_t prev = -1;
	size_t n, i;
	int rc;

	if (applied != NULL)
		*applied = -1;
	if ((rc = store_check_id(id, cause)) != 0)
		return rc;
	/* store.c DESIGN 2: one read transaction, one snapshot of the chain. */
	if ((rc = store_exec(s, "BEGIN", cause)) != 0)
		return rc;
	if ((rc = store_links_get(s, id, &v, &n, cause)) != 0)
		goto out;
	if (n == 0) {
		store_set_cause(cause, "no KV snapshot stored for %s", id);
		rc = -ENOENT;
		goto out;
	}
	if ((rc = store_prepare(s, "SELECT seq, len, crc, data FROM kv_chunks"
	    " WHERE stream = ?1 ORDER BY seq", &st, cause)) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		if (v[i].link != (int64_t)i) {
			store_set_cause(cause, "KV snapshot of %s: link %zu "
			    "is missing", id, i);
			rc = -EBADMSG;
			goto out;
		}
		if ((rc = store_kv_expect(id, &v[i], &v[0], expect, prev,
		    cause)) != 0)
			goto out;
		memset(&r, 0, sizeof r);
		r.s = s;
		r.st = st;
		r.id = id;
		r.link = &v[i];
		r.cause = cause;
		sqlite3_reset(st);
		if ((rc = store_bound(s, st, sqlite3_bind_int64(st, 1,
		    v[i].stream), cause)) != 0)
			goto out;
		rc = consume(ctx, &v[i].info, store_reader_read_cb, &r);
		if (r.rc != 0) {
			rc = r.rc;	/* ours, not the consumer's view */
			goto out;
		}
		if (rc != 0) {
			if (cause != NULL && *cause == NULL)
				store_set_cause(cause, "restoring the KV "
				    "snapshot of %s, link %zu: %s", id, i,
				    strerror(-rc));
			goto out;
		}
		/* Every byte of the link must have been consumed, and the
		 * chunks must add up to the header's length. */
		if (r.off == r.len && (rc = store_reader_next(&r)) < 0)
			goto out;
		if (r.done != v[i].bytes || r.off != r.len || rc == 0 ||
		    r.seq != v[i].n_chunks) {
			store_set_cause(cause, "KV snapshot of %s, link %zu: "
			    "%" PRId64 " bytes in %" PRId64 " chunks, header "
			    "says %" PRId64 " in %" PRId64, id, i, r.done,
			    r.seq, v[i].bytes, v[i].n_chunks);
			rc = -EBADMSG;
			goto out;
		}
		rc = 0;
		prev = v[i].info.pos;
		if (applied != NULL)
			*applied = prev;
	}
out:
	sqlite3_finalize(st);
	free(v);
	store_rollback(s);
	return rc;
}

/* ---- turns ---------------------------------------------------------- */

struct store_turn *
store_turn_new(const char *id)
{
	struct store_turn *t;

	if ((t = calloc(1, sizeof *t)) == NULL)
		return NULL;
	snprintf(t->id, sizeof t->id, "%s", id != NULL ? id : "");
	t->truncate_from = -1;
	return t;
}

void
store_turn_free(struct store_turn *t)
{
	if (t == NULL)
		return;
	if (t->session != NULL) {
		store_session_clear(t->session);
		free(t->session);
	}
	store_messages_free(t->messages, t->n_messages);
	free(t->sampler);
	free(t->kv_buf);
	free(t);
}

int
store_save_turn(struct store *s, const struct store_turn *t,
    struct store_kv_state *state, int *kv_rc, char **cause)
{
	struct store_bufsrc b = { t->kv_buf, t->kv_len };
	char *kv_cause = NULL;
	int rc, sql_failed;

	if (kv_rc != NULL)
		*kv_rc = 0;
	if ((rc = store_check_id(t->id, cause)) != 0)
		return rc;
	if (t->session != NULL && (strcmp(t->session->id, t->id) != 0 ||
	    (rc = store_session_validate(t->session, cause)) != 0)) {
		if (rc == 0)
			store_set_cause(cause, "turn and session ids differ");
		return -EINVAL;
	}
	if (t->has_kv && (rc = store_kv_info_check(t->id, &t->kv_info,
	    cause)) != 0)
		return rc;
	if (t->has_kv && t->kv_buf == NULL && t->kv_produce == NULL) {
		store_set_cause(cause, "turn has no KV stream");
		return -EINVAL;
	}
	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if (t->session != NULL)
		rc = store_session_write(s, t->session, store_sql_session_put,
		    cause);
	else
		rc = store_session_exists(s, t->id, cause);
	if (rc != 0)
		goto fail;
	if (t->truncate_from >= 0 &&
	    (rc = store_messages_cut(s, t->id, t->truncate_from, cause)) != 0)
		goto fail;
	if (t->n_messages > 0 && (rc = store_messages_write(s, t->id,
	    t->messages, t->n_messages, cause)) != 0)
		goto fail;
	if (t->sampler != NULL && (rc = store_sampler_write(s, t->id,
	    t->sampler, t->sampler_len, cause)) != 0)
		goto fail;
	if (t->has_kv) {
		if ((rc = store_exec(s, "SAVEPOINT kv", cause)) != 0)
			goto fail;
		rc = store_kv_write(s, t->id, &t->kv_info,
		    t->kv_produce != NULL ? t->kv_produce :
		    store_bufsrc_produce, t->kv_produce != NULL ? t->kv_ctx :
		    &b, &sql_failed, &kv_cause);
		if (rc != 0 && sql_failed) {
			if (cause != NULL) {
				free(*cause);
				*cause = kv_cause;
				kv_cause = NULL;
			}
			goto fail;
		}
		if (rc != 0) {
			/* Keep the rest of the turn; the caller sends a full
			 * snapshot next time. */
			if (kv_rc != NULL)
				*kv_rc = rc;
			if ((rc = store_exec(s, "ROLLBACK TO kv", cause)) != 0)
				goto fail;
		}
		if ((rc = store_exec(s, "RELEASE kv", cause)) != 0)
			goto fail;
	}
	if ((rc = store_commit(s, cause)) != 0)
		goto fail;
	if (kv_cause != NULL && cause != NULL && *cause == NULL) {
		*cause = kv_cause;
		kv_cause = NULL;
	}
	free(kv_cause);
	store_kv_state_after(s, t->id, state);
	return 0;
fail:
	free(kv_cause);
	store_rollback(s);
	return rc;
}

