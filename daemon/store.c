/*
 * store.c: sessions, transcripts, sampler state and KV snapshots in one
 * SQLite database (STATE_DIR/mistrald.db): the connection, the schema and
 * its migrations, the helpers the other store files share, statistics and
 * integrity checks.
 *
 * DESIGN
 *
 * 1. One connection per struct store, opened with SQLITE_OPEN_NOMUTEX: a
 *    store is used by one thread at a time.  WAL journal, synchronous FULL
 *    (every commit is durable across power loss: metadata is small and the
 *    user sees it; a snapshot commit pays one extra fsync of data that must
 *    be written anyway), secure_delete OFF (Debian turns it on, and then
 *    dropping a 512 MB chain rewrites 512 MB of zeros), foreign keys on,
 *    and a journal_size_limit so the WAL shrinks back after a big snapshot.
 *
 * 2. Every write transaction starts with BEGIN IMMEDIATE: a deferred one
 *    that read first fails at once with "database is locked" if another
 *    connection committed meanwhile, without calling the busy handler.
 *    Multi-statement reads (store_kv_load) run in one read transaction so
 *    they see one snapshot of the database.
 *
 * 3. Schema versions live in PRAGMA user_version, and the database is
 *    marked as ours by PRAGMA application_id.  store_migrations[v] takes a
 *    database from version v to v + 1; store_open() applies them in order
 *    inside one transaction.  A database whose version is above
 *    STORE_SCHEMA_VERSION is refused, never modified.  tests/fixtures-store
 *    keeps a version-1 database that must keep opening.
 *
 * 4. Sessions, parameters and transcripts are in store-session.c, KV
 *    snapshot chains in store-kv.c.
 *
 * 5. Checkpoints.  Left to SQLite, the commit that takes the WAL past 1000
 *    pages also copies the WAL into the database and fsyncs it before
 *    COMMIT returns: with a few MB of KV delta per turn, every turn or
 *    every few turns waits for that copy.  store_wal_manual() turns it
 *    off for one connection (its WAL hook replaces SQLite's automatic one
 *    and only counts: wal_frames is the WAL's length after each commit),
 *    and its owner runs store_checkpoint() when nobody waits for it
 *    (persist.c DESIGN 6).  store_wal_pending() is about what the
 *    connection's commits have added since the last complete checkpoint,
 *    in bytes: a complete checkpoint counts as emptying the WAL, since the
 *    next writer starts it over unless a reader still uses it, and if one
 *    does the count is too high and the next checkpoint finds little to
 *    copy.
 *    Only the persistence thread's connection writes during a run; the
 *    loop's, which reads, keeps the default, never used.
 */

#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"
#include "store-internal.h"

#define STORE_APPLICATION_ID	0x4d53544c	/* "MSTL" */
#define STORE_CHUNK_DEFAULT	(16u << 20)
#define STORE_CHUNK_MAX		(256u << 20)	/* far below SQLite's 1e9 */
#define STORE_BUSY_DEFAULT	10000
#define STORE_LINKS_DEFAULT	32
#define STORE_WAL_LIMIT		(64 << 20)	/* journal_size_limit */
#define STORE_CKPT_BUSY		200		/* ms a TRUNCATE checkpoint
						   waits for readers */
#define STORE_DELAY_ENV		"MISTRALD_TEST_SNAPSHOT_DELAY_MS"

/* ---- schema --------------------------------------------------------- */

static const char *const store_migrations[STORE_SCHEMA_VERSION] = {
	/* 0 -> 1: the first schema. */
	"CREATE TABLE sessions ("
	"  id TEXT PRIMARY KEY NOT NULL,"
	"  owner INTEGER NOT NULL,"
	"  name TEXT,"
	"  created INTEGER NOT NULL,"
	"  updated INTEGER NOT NULL,"
	"  params TEXT NOT NULL,"
	"  fingerprint INTEGER NOT NULL DEFAULT 0,"
	"  base INTEGER NOT NULL DEFAULT 0,"
	"  pos INTEGER NOT NULL DEFAULT 0,"
	"  UNIQUE (owner, name));"
	"CREATE TABLE messages ("
	"  session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
	"  seq INTEGER NOT NULL,"
	"  role TEXT NOT NULL,"
	"  text TEXT NOT NULL,"
	"  tokens BLOB,"		/* little-endian int32 ids */
	"  pos INTEGER NOT NULL DEFAULT -1,"
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (session, seq));"
	"CREATE TABLE samplers ("
	"  session TEXT PRIMARY KEY NOT NULL"
	"    REFERENCES sessions(id) ON DELETE CASCADE,"
	"  state BLOB NOT NULL,"
	"  updated INTEGER NOT NULL);"
	"CREATE TABLE kv_streams ("
	"  id INTEGER PRIMARY KEY,"
	"  bytes INTEGER NOT NULL,"
	"  n_chunks INTEGER NOT NULL);"
	"CREATE TABLE kv_chunks ("
	"  stream INTEGER NOT NULL REFERENCES kv_streams(id) ON DELETE CASCADE,"
	"  seq INTEGER NOT NULL,"
	"  len INTEGER NOT NULL,"
	"  crc INTEGER NOT NULL,"	/* CRC32C of data */
	"  data BLOB NOT NULL,"
	"  PRIMARY KEY (stream, seq));"
	"CREATE TABLE kv_links ("
	"  session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
	"  link INTEGER NOT NULL,"	/* 0: full; 1..: deltas in order */
	"  generation INTEGER NOT NULL,"
	"  format INTEGER NOT NULL,"
	"  fingerprint INTEGER NOT NULL,"
	"  n_layers INTEGER NOT NULL,"
	"  n_kv_heads INTEGER NOT NULL,"
	"  head_dim INTEGER NOT NULL,"
	"  kv_type INTEGER NOT NULL,"
	"  window INTEGER NOT NULL,"
	"  n_global INTEGER NOT NULL,"
	"  base INTEGER NOT NULL,"
	"  since INTEGER NOT NULL,"
	"  pos INTEGER NOT NULL,"
	"  stream INTEGER NOT NULL REFERENCES kv_streams(id),"
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (session, link));"
	"CREATE INDEX kv_links_stream ON kv_links(stream);"
	"CREATE TRIGGER kv_links_gc AFTER DELETE ON kv_links"
	"  WHEN NOT EXISTS (SELECT 1 FROM kv_links WHERE stream = OLD.stream)"
	"  BEGIN DELETE FROM kv_streams WHERE id = OLD.stream; END;",
};

/* ---- small helpers -------------------------------------------------- */

int64_t
store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
store_set_cause(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return;
	free(*cause);
	*cause = NULL;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		*cause = NULL;
	va_end(ap);
}

/*
 * After an I/O error on a write: was it for want of space?  SQLite's
 * sqlite3_system_errno() reads errno after its own cleanup, so an EFBIG
 * from a WAL write at COMMIT often comes back as 0; look at the likely
 * causes instead: the file-size limit reached by the database or its WAL,
 * or a full file system.
 */
static int
store_io_full(const struct store *s)
{
	struct rlimit rl;
	struct statvfs vfs;
	struct stat sb;
	char wal[PATH_MAX];

	if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		if (stat(s->path, &sb) == 0 &&
		    (rlim_t)sb.st_size + 65536 >= rl.rlim_cur)
			return 1;
		snprintf(wal, sizeof wal, "%s-wal", s->path);
		if (stat(wal, &sb) == 0 &&
		    (rlim_t)sb.st_size + 65536 >= rl.rlim_cur)
			return 1;
	}
	return statvfs(s->path, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < (1u << 20);
}

/* Map an SQLite result (extended code) to a negative errno code. */
static int
store_errno(const struct store *s, int rc)
{
	int sys = s->db != NULL ? sqlite3_system_errno(s->db) : 0;

	switch (rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EROFS;
	case SQLITE_CANTOPEN:
		return sys == ENOENT || sys == ENOTDIR ? -ENOENT : -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_TOOBIG:
	case SQLITE_RANGE:
	case SQLITE_MISMATCH:
		return -EINVAL;
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			return -ENOENT;
		if (rc == SQLITE_CONSTRAINT_UNIQUE ||
		    rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return -EEXIST;
		return -EINVAL;
	case SQLITE_IOERR:
		/* A write refused for space (EFBIG past RLIMIT_FSIZE, EDQUOT)
		 * or for permission comes back as a plain I/O error. */
		if (sys == ENOSPC || sys == EFBIG || sys == EDQUOT)
			return -ENOSPC;
		if (sys == EROFS || sys == EACCES || sys == EPERM)
			return -EROFS;
		if ((rc == SQLITE_IOERR_WRITE || rc == SQLITE_IOERR_FSYNC ||
		    rc == SQLITE_IOERR_TRUNCATE || rc == SQLITE_IOERR_SHMSIZE)
		    && store_io_full(s))
			return -ENOSPC;
		return -EIO;
	default:
		return -EIO;
	}
}

/* Report an SQLite failure of call `what` (on statement st, or NULL). */
int
store_fail(struct store *s, char **cause, const char *what,
    sqlite3_stmt *st, int rc)
{
	const char *sql = st != NULL ? sqlite3_sql(st) : NULL;
	int sys = sqlite3_system_errno(s->db), code;

	code = store_errno(s, rc);
	store_set_cause(cause, "%s%s%.48s%s%s: %s%s%s", what,
	    sql != NULL ? "(" : "", sql != NULL ? sql : "",
	    sql != NULL && strlen(sql) > 48 ? "..." : "",
	    sql != NULL ? ")" : "", sqlite3_errmsg(s->db),
	    sys != 0 ? ": " : (code == -ENOSPC && (rc & 0xff) != SQLITE_FULL ?
	    ": out of space (file size limit or file system full)" : ""),
	    sys != 0 ? strerror(sys) : "");
	return code;
}

int
store_prepare(struct store *s, const char *sql, sqlite3_stmt **st,
    char **cause)
{
	int rc;

	rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
	if (rc != SQLITE_OK) {
		*st = NULL;
		store_set_cause(cause, "sqlite3_prepare_v2(%.48s): %s", sql,
		    sqlite3_errmsg(s->db));
		return store_errno(s, rc);
	}
	return 0;
}

/* Check the OR of a statement's bind results. */
int
store_bound(struct store *s, sqlite3_stmt *st, int rc, char **cause)
{
	if (rc == SQLITE_OK)
		return 0;
	return store_fail(s, cause, "sqlite3_bind",
	    st, sqlite3_errcode(s->db));
}

/*
 * Step a prepared, bound statement to its end, decoding each row with
 * row() into a growing array of elt-byte elements, and finalize it.
 * On success *v (malloc'd, NULL when empty) and *n hold the rows; on
 * failure the rows decoded so far are released with free_rows().
 */
int
store_rows(struct store *s, sqlite3_stmt *st, size_t elt, store_row_fn *row,
    store_rows_free_fn *free_rows, void **v, size_t *n, char **cause)
{
	char *arr = NULL, *na;
	size_t len = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap != 0 ? cap * 2 : 16;
			if ((na = realloc(arr, cap * elt)) == NULL) {
				rc = -ENOMEM;
				goto fail;
			}
			arr = na;
		}
		if ((rc = row(st, arr + len * elt)) != 0)
			goto fail;
		len++;
	}
	if (rc != SQLITE_DONE) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		goto fail;
	}
	sqlite3_finalize(st);
	*v = arr;
	*n = len;
	return 0;
fail:
	sqlite3_finalize(st);
	free_rows(arr, len);
	return rc;
}

/* Step a statement that returns no rows, and finalize it. */
int
store_step_done(struct store *s, sqlite3_stmt *st, char **cause)
{
	int rc;

	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		sqlite3_finalize(st);
		return rc;
	}
	sqlite3_finalize(st);
	return 0;
}

int
store_exec(struct store *s, const char *sql, char **cause)
{
	char *msg = NULL, what[80];
	int rc;

	rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		rc = sqlite3_extended_errcode(s->db);
		snprintf(what, sizeof what, "sqlite3_exec(%.48s)", sql);
		sqlite3_free(msg);
		return store_fail(s, cause, what, NULL, rc);
	}
	return 0;
}

int
store_begin(struct store *s, char **cause)
{
	return store_exec(s, "BEGIN IMMEDIATE", cause);
}

/* Roll back whatever transaction is open (SQLite may already have). */
void
store_rollback(struct store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int
store_commit(struct store *s, char **cause)
{
	int rc;

	rc = store_exec(s, "COMMIT", cause);
	if (rc != 0)
		store_rollback(s);
	return rc;
}

char *
store_strdup_col(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t != NULL ? strdup((const char *)t) : NULL;
}

/* The pointer first, then the length, as sqlite3_column_bytes() asks: a
 * TEXT value (UTF-8 in our databases) through sqlite3_column_text(), so
 * that it is never converted to a BLOB and back; a BLOB as it is. */
char *
store_bytes_col(sqlite3_stmt *st, int col, size_t *len)
{
	const void *p;
	char *out;
	int n;

	*len = 0;
	if (sqlite3_column_type(st, col) == SQLITE_BLOB)
		p = sqlite3_column_blob(st, col);
	else
		p = sqlite3_column_text(st, col);
	n = sqlite3_column_bytes(st, col);
	if (p == NULL && sqlite3_column_type(st, col) != SQLITE_NULL &&
	    sqlite3_errcode(sqlite3_db_handle(st)) == SQLITE_NOMEM)
		return NULL;
	if (p == NULL || n <= 0)
		return strdup("");
	if ((out = malloc((size_t)n + 1)) == NULL)
		return NULL;
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	return out;
}

int
store_check_id(const char *id, char **cause)
{
	if (id == NULL || !store_id_valid(id)) {
		store_set_cause(cause, "malformed session id");
		return -EINVAL;
	}
	return 0;
}

/* ---- ids, errors, records ------------------------------------------- */

int
store_new_id(char id[STORE_ID_SIZE])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[STORE_ID_LEN / 2];
	size_t got = 0;
	ssize_t n;
	int i;

	while (got < sizeof r) {
		n = getrandom(r + got, sizeof r - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	for (i = 0; i < STORE_ID_LEN / 2; i++) {
		id[2 * i] = hex[r[i] >> 4];
		id[2 * i + 1] = hex[r[i] & 15];
	}
	id[STORE_ID_LEN] = '\0';
	return 0;
}

int
store_id_valid(const char *id)
{
	int i;

	for (i = 0; i < STORE_ID_LEN; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') ||
		    (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	}
	return id[STORE_ID_LEN] == '\0';
}

int
store_kv_rebuildable(int rc)
{
	switch (rc) {
	case -EBADMSG:
	case -ESTALE:
	case -EPROTO:
	case -EINVAL:
	case -ERANGE:
	case -ENOENT:
		return 1;
	default:
		return 0;
	}
}

void
store_params_default(struct store_params *p)
{
	memset(p, 0, sizeof *p);
	sampler_params_default(&p->sampling);
	p->kv_type = KV_TYPE_F16;
}

int
store_params_copy(struct store_params *dst, const struct store_params *src)
{
	*dst = *src;
	dst->system_prompt = NULL;
	dst->template = NULL;
	if (src->system_prompt != NULL &&
	    (dst->system_prompt = strdup(src->system_prompt)) == NULL)
		return -ENOMEM;
	if (src->template != NULL &&
	    (dst->template = strdup(src->template)) == NULL) {
		free(dst->system_prompt);
		dst->system_prompt = NULL;
		return -ENOMEM;
	}
	return 0;
}

void
store_params_clear(struct store_params *p)
{
	free(p->system_prompt);
	free(p->template);
	p->system_prompt = NULL;
	p->template = NULL;
}

void
store_session_clear(struct store_session *ss)
{
	if (ss == NULL)
		return;
	free(ss->name);
	ss->name = NULL;
	store_params_clear(&ss->params);
}

void
store_session_list_free(struct store_session *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		store_session_clear(&v[i]);
	free(v);
}

void
store_message_clear(struct store_message *m)
{
	if (m == NULL)
		return;
	free(m->role);
	free(m->text);
	free(m->tokens);
	m->role = m->text = NULL;
	m->text_len = 0;
	m->tokens = NULL;
	m->n_tokens = 0;
}

void
store_messages_free(struct store_message *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		store_message_clear(&v[i]);
	free(v);
}

/* ---- growing text buffers ------------------------------------------ */

void
store_buf_add(struct store_buf *b, const char *s, size_t n)
{
	char *np;
	size_t cap;

	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		cap = b->cap != 0 ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
store_buf_printf(struct store_buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof tmp)
		b->failed = 1;
	else
		store_buf_add(b, tmp, (size_t)n);
}

/* ---- open, close, migrations ---------------------------------------- */

static int
store_pragma_int(struct store *s, const char *sql, int64_t *out,
    char **cause)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = store_prepare(s, sql, &st, cause)) != 0)
		return rc;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		sqlite3_finalize(st);
		return rc;
	}
	*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return 0;
}

int
store_schema_version(struct store *s)
{
	int64_t v;

	if (store_pragma_int(s, "PRAGMA user_version", &v, NULL) != 0)
		return -1;
	return (int)v;
}

/*
 * Bring the schema to STORE_SCHEMA_VERSION in one write transaction (the
 * version is read again under the lock, in case another process migrated
 * meanwhile).
 */
static int
store_migrate(struct store *s, char **cause)
{
	int64_t version, app, objects;
	char sql[96];
	int rc;

	if ((rc = store_begin(s, cause)) != 0)
		return rc;
	if ((rc = store_pragma_int(s, "PRAGMA user_version", &version,
	    cause)) != 0 ||
	    (rc = store_pragma_int(s, "PRAGMA application_id", &app,
	    cause)) != 0 ||
	    (rc = store_pragma_int(s, "SELECT count(*) FROM sqlite_schema",
	    &objects, cause)) != 0)
		goto fail;
	if (app != STORE_APPLICATION_ID && (app != 0 || objects != 0)) {
		store_set_cause(cause, "%s is not a mistrald database "
		    "(application_id %" PRId64 ")", s->path, app);
		rc = -ENOTSUP;
		goto fail;
	}
	if (version > STORE_SCHEMA_VERSION) {
		store_set_cause(cause, "%s has schema version %" PRId64
		    ", newer than this mistrald supports (%d): refusing to "
		    "open it; run a newer mistrald or use another state "
		    "directory", s->path, version, STORE_SCHEMA_VERSION);
		rc = -ENOTSUP;
		goto fail;
	}
	if (version < 0) {
		store_set_cause(cause, "%s has a negative schema version",
		    s->path);
		rc = -ENOTSUP;
		goto fail;
	}
	if (version == STORE_SCHEMA_VERSION) {
		store_rollback(s);
		return 0;
	}
	for (; version < STORE_SCHEMA_VERSION; version++) {
		if ((rc = store_exec(s, store_migrations[version],
		    cause)) != 0)
			goto fail;
	}
	snprintf(sql, sizeof sql, "PRAGMA application_id = %d; "
	    "PRAGMA user_version = %d", STORE_APPLICATION_ID,
	    STORE_SCHEMA_VERSION);
	if ((rc = store_exec(s, sql, cause)) != 0)
		goto fail;
	return store_commit(s, cause);
fail:
	store_rollback(s);
	return rc;
}

int
store_open(const char *dir, const struct store_options *opt,
    struct store **out, char **cause)
{
	struct store *s;
	struct stat sb;
	const char *delay;
	char *mode = NULL;
	char sql[64];
	int64_t v;
	int rc, fd;

	*out = NULL;
	if (stat(dir, &sb) != 0) {
		rc = -errno;
		store_set_cause(cause, "%s: %s", dir, strerror(errno));
		return rc;
	}
	if (!S_ISDIR(sb.st_mode)) {
		store_set_cause(cause, "%s: not a directory", dir);
		return -ENOTDIR;
	}
	if ((s = calloc(1, sizeof *s)) == NULL)
		return -ENOMEM;
	if (asprintf(&s->path, "%s/%s", dir, STORE_DB_NAME) < 0) {
		free(s);
		return -ENOMEM;
	}
	s->chunk_bytes = STORE_CHUNK_DEFAULT;
	s->max_links = STORE_LINKS_DEFAULT;
	if (opt != NULL && opt->chunk_bytes != 0)
		s->chunk_bytes = opt->chunk_bytes < STORE_CHUNK_MAX ?
		    opt->chunk_bytes : STORE_CHUNK_MAX;
	if (opt != NULL && opt->max_links > 0)
		s->max_links = opt->max_links;
	if ((delay = getenv(STORE_DELAY_ENV)) != NULL)
		s->delay_ms = (unsigned)strtoul(delay, NULL, 10) % 100000;

	/* Conversations are private: create the file 0600 ourselves (SQLite
	 * would use 0644 less the umask), and its -wal and -shm follow.  An
	 * existing file is left as it is. */
	fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (fd >= 0)
		close(fd);
	else if (errno == EACCES || errno == EROFS || errno == EPERM) {
		store_set_cause(cause, "cannot create %s: %s", s->path,
		    strerror(errno));
		rc = -EROFS;
		goto fail;
	} else if (errno != EEXIST) {
		rc = -errno;
		store_set_cause(cause, "%s: %s", s->path, strerror(errno));
		goto fail;
	}

	rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		if (s->db == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = store_fail(s, cause, "sqlite3_open_v2", NULL,
		    sqlite3_extended_errcode(s->db));
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	s->busy_ms = opt != NULL && opt->busy_timeout_ms > 0 ?
	    opt->busy_timeout_ms : STORE_BUSY_DEFAULT;
	sqlite3_busy_timeout(s->db, s->busy_ms);
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		store_set_cause(cause, "%s: database is read-only", s->path);
		rc = -EROFS;
		goto fail;
	}

	/* journal_mode returns the mode now in force. */
	{
		sqlite3_stmt *st;

		if ((rc = store_prepare(s, "PRAGMA journal_mode = WAL", &st,
		    cause)) != 0)
			goto fail;
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			rc = store_fail(s, cause, "sqlite3_step", st, rc);
			sqlite3_finalize(st);
			goto fail;
		}
		mode = store_strdup_col(st, 0);
		sqlite3_finalize(st);
		if (mode == NULL || strcmp(mode, "wal") != 0) {
			store_set_cause(cause, "%s: cannot use WAL mode "
			    "(journal_mode is %s)", s->path,
			    mode != NULL ? mode : "?");
			rc = -EIO;
			goto fail;
		}
	}
	if ((rc = store_exec(s, "PRAGMA foreign_keys = ON; "
	    "PRAGMA secure_delete = OFF; PRAGMA synchronous = FULL; "
	    "PRAGMA temp_store = MEMORY", cause)) != 0)
		goto fail;
	snprintf(sql, sizeof sql, "PRAGMA journal_size_limit = %d",
	    STORE_WAL_LIMIT);
	if ((rc = store_exec(s, sql, cause)) != 0)
		goto fail;
	if ((rc = store_migrate(s, cause)) != 0)
		goto fail;
	if ((rc = store_pragma_int(s, "PRAGMA page_size", &v, cause)) != 0)
		goto fail;
	s->page_size = v > 0 && v <= 65536 ? (int)v : 4096;
	free(mode);
	*out = s;
	return 0;
fail:
	free(mode);
	store_close(s);
	return rc;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	sqlite3_close_v2(s->db);
	free(s->path);
	free(s);
}

/* ---- checkpoints (DESIGN 5) ----------------------------------------- */

/* After each commit on a connection in manual mode: remember how far the
 * WAL reaches.  Returning SQLITE_OK is all SQLite asks. */
static int
store_wal_cb(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct store *s = arg;

	if (strcmp(name, "main") == 0)
		s->wal_frames = frames;
	return SQLITE_OK;
}

void
store_wal_manual(struct store *s)
{
	/* Replaces the automatic checkpointer, itself a WAL hook. */
	sqlite3_wal_hook(s->db, store_wal_cb, s);
}

int64_t
store_wal_pending(const struct store *s)
{
	if (s->wal_frames <= s->wal_done)
		return 0;
	return (s->wal_frames - s->wal_done) * (int64_t)s->page_size;
}

int
store_checkpoint(struct store *s, int truncate, char **cause)
{
	int rc, frames = -1, done = -1;

	if (truncate)
		sqlite3_busy_timeout(s->db, STORE_CKPT_BUSY);
	rc = sqlite3_wal_checkpoint_v2(s->db, "main", truncate ?
	    SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE, &frames,
	    &done);
	if (truncate)
		sqlite3_busy_timeout(s->db, s->busy_ms);
	/* Even a busy checkpoint copied what it could and says so. */
	if (frames >= 0 && done >= 0) {
		if (done >= frames)
			s->wal_frames = s->wal_done = 0;
		else {
			s->wal_frames = frames;
			s->wal_done = done;
		}
	}
	if (rc != SQLITE_OK)
		return store_fail(s, cause, truncate ?
		    "sqlite3_wal_checkpoint_v2(TRUNCATE)" :
		    "sqlite3_wal_checkpoint_v2(PASSIVE)", NULL,
		    sqlite3_extended_errcode(s->db));
	return 0;
}

/* ---- stats and checks ----------------------------------------------- */

int
store_stats(struct store *s, struct store_stats *out, char **cause)
{
	sqlite3_stmt *st;
	struct stat sb;
	char *wal;
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = store_prepare(s, "SELECT (SELECT count(*) FROM sessions),"
	    " (SELECT count(*) FROM messages), (SELECT count(*) FROM kv_links),"
	    " (SELECT coalesce(sum(bytes), 0) FROM kv_streams),"
	    " (SELECT coalesce(max(created), 0) FROM kv_links)", &st,
	    cause)) != 0)
		return rc;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		sqlite3_finalize(st);
		return rc;
	}
	out->sessions = sqlite3_column_int64(st, 0);
	out->messages = sqlite3_column_int64(st, 1);
	out->kv_links = sqlite3_column_int64(st, 2);
	out->kv_bytes = sqlite3_column_int64(st, 3);
	out->last_snapshot = sqlite3_column_int64(st, 4);
	sqlite3_finalize(st);
	if (stat(s->path, &sb) == 0)
		out->file_bytes += sb.st_size;
	if (asprintf(&wal, "%s-wal", s->path) >= 0) {
		if (stat(wal, &sb) == 0)
			out->file_bytes += sb.st_size;
		free(wal);
	}
	return 0;
}

int
store_integrity_check(struct store *s, int deep, char **cause)
{
	struct store_buf b = { 0 };
	sqlite3_stmt *st;
	const unsigned char *txt, *data;
	int64_t bad = 0, len;
	int rc, n;

	if ((rc = store_prepare(s, "PRAGMA integrity_check", &st,
	    cause)) != 0)
		return rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		txt = sqlite3_column_text(st, 0);
		if (txt != NULL && strcmp((const char *)txt, "ok") != 0) {
			if (b.len != 0)
				store_buf_add(&b, "; ", 2);
			store_buf_add(&b, (const char *)txt,
			    strlen((const char *)txt));
		}
	}
	if (rc != SQLITE_DONE) {
		rc = store_fail(s, cause, "sqlite3_step", st, rc);
		sqlite3_finalize(st);
		free(b.p);
		return rc;
	}
	sqlite3_finalize(st);
	if (deep) {
		if ((rc = store_prepare(s, "SELECT len, crc, data FROM"
		    " kv_chunks", &st, cause)) != 0) {
			free(b.p);
			return rc;
		}
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			len = sqlite3_column_int64(st, 0);
			data = sqlite3_column_blob(st, 2);
			n = sqlite3_column_bytes(st, 2);
			if (len != n || (int64_t)store_crc32c(0, data,
			    (size_t)n) != sqlite3_column_int64(st, 1))
				bad++;
		}
		if (rc != SQLITE_DONE) {
			rc = store_fail(s, cause, "sqlite3_step", st, rc);
			sqlite3_finalize(st);
			free(b.p);
			return rc;
		}
		sqlite3_finalize(st);
		if (bad > 0 && b.len != 0)
			store_buf_add(&b, "; ", 2);
		if (bad > 0)
			store_buf_printf(&b, "%" PRId64 " KV chunks fail "
			    "their checksum or length", bad);
	}
	if (b.len == 0 && !b.failed) {
		free(b.p);
		return 0;
	}
	store_set_cause(cause, "%s: %s", s->path,
	    b.p != NULL ? b.p : "integrity check failed");
	free(b.p);
	return -EIO;
}
