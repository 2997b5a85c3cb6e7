/*
 * store-internal.h: what store.c, store-session.c and store-kv.c share:
 * the connection struct, the SQLite helpers (store.c) and the session
 * writes that a turn reuses (store-session.c).  Nothing else includes
 * this; the store's interface is store.h.
 *
 * Helpers that take char **cause fill it as store.h describes, and return
 * 0 or a negative errno code mapped from SQLite's result.
 */
#ifndef STORE_INTERNAL_H
#define STORE_INTERNAL_H

#include <stdint.h>

#include <sqlite3.h>

#include "store.h"

struct store {
	sqlite3		*db;
	char		*path;		/* DIR/mistrald.db */
	size_t		 chunk_bytes;	/* KV chunk size */
	int		 max_links;	/* chain length asking for compaction */
	unsigned	 delay_ms;	/* test hook, between chunk writes */
	int		 busy_ms;	/* busy timeout */
	int		 page_size;	/* bytes */
	int64_t		 wal_frames;	/* frames in the WAL after our last
					   commit or checkpoint */
	int64_t		 wal_done;	/* of those, copied to the database */
};

/* store.c: helpers */
int64_t	 store_now_ms(void);
void	 store_set_cause(char **cause, const char *fmt, ...)
	     __attribute__((format(printf, 2, 3)));
/* Report a failed SQLite call `what` (on statement st, or NULL). */
int	 store_fail(struct store *s, char **cause, const char *what,
	     sqlite3_stmt *st, int rc);
int	 store_prepare(struct store *s, const char *sql, sqlite3_stmt **st,
	     char **cause);
/* rc: the OR of a statement's sqlite3_bind_* results. */
int	 store_bound(struct store *s, sqlite3_stmt *st, int rc, char **cause);
typedef int store_row_fn(sqlite3_stmt *st, void *dst);
typedef void store_rows_free_fn(void *rows, size_t n);
int	 store_rows(struct store *s, sqlite3_stmt *st, size_t elt,
	     store_row_fn *row, store_rows_free_fn *free_rows, void **v,
	     size_t *n, char **cause);
/* Step a statement that returns no rows, and finalize it. */
int	 store_step_done(struct store *s, sqlite3_stmt *st, char **cause);
int	 store_exec(struct store *s, const char *sql, char **cause);
int	 store_begin(struct store *s, char **cause);	/* BEGIN IMMEDIATE */
void	 store_rollback(struct store *s);	/* if a transaction is open */
int	 store_commit(struct store *s, char **cause);	/* rolls back on
							   failure */
int	 store_check_id(const char *id, char **cause);	/* -EINVAL */

/* A growing NUL-terminated text; failed is set (and sticks) when an
 * allocation fails.  Free p. */
struct store_buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
	int	 failed;
};
void	 store_buf_add(struct store_buf *b, const char *s, size_t n);
void	 store_buf_printf(struct store_buf *b, const char *fmt, ...)
	     __attribute__((format(printf, 2, 3)));
/* A malloc'd copy of a text column, NULL for NULL (or ENOMEM). */
char	*store_strdup_col(sqlite3_stmt *st, int col);
/* A malloc'd, NUL-terminated copy of every byte of a TEXT or BLOB column
 * (NULs included), its length in *len; "" for NULL; NULL on ENOMEM. */
char	*store_bytes_col(sqlite3_stmt *st, int col, size_t *len);

/* store-session.c: writes inside the caller's transaction */
extern const char store_sql_session_put[];	/* INSERT .. ON CONFLICT */
int	 store_session_validate(const struct store_session *ss, char **cause);
int	 store_session_write(struct store *s, const struct store_session *ss,
	     const char *sql, char **cause);
/* One statement with ?1 = id in its own transaction; *changes (may be
 * NULL) gets the rows it changed. */
int	 store_id_write(struct store *s, const char *id, const char *sql,
	     int64_t *changes, char **cause);
int	 store_messages_write(struct store *s, const char *id,
	     const struct store_message *v, size_t n, char **cause);
int	 store_messages_cut(struct store *s, const char *id, int64_t from,
	     char **cause);
int	 store_sampler_write(struct store *s, const char *id, const void *buf,
	     size_t len, char **cause);

#endif /* STORE_INTERNAL_H */
