/*
 * store.h: the daemon's persistent state, one SQLite database per state
 * directory (STATE_DIR/mistrald.db), and the persistence thread that writes
 * it off the loop thread.
 *
 * What is stored: sessions (metadata and parameters), their transcripts
 * (messages with token ids; a message's text is bytes with an explicit
 * length, NULs included), sampler state (sampler_save() bytes) and the
 * rolling KV cache as a chain of snapshots: one full stream from
 * kvcache_save(kv, base, ...) followed by incremental ones
 * (kvcache_save(kv, since, ...)), each split into checksummed chunks.
 * Restoring applies the chain in order with kvcache_restore().
 *
 * Threads: a struct store is one SQLite connection and must be used by one
 * thread at a time.  The loop thread may keep its own (for listing and
 * reads, which never wait in WAL mode); writes that may meet a long
 * snapshot transaction belong on the persistence thread (persist_*), which
 * opens its own connection.
 *
 * Errors: every function returns 0 or a negative errno code, and where a
 * cause pointer is given, on failure *cause is set to a malloc'd sentence
 * naming the failing SQLite call and SQLite's message (free() it; it may be
 * left NULL if even that allocation failed).  The codes callers act on:
 *
 *	-ENOENT		no such session (or no KV snapshot stored)
 *	-EEXIST		the owner already has a session with that name
 *	-EINVAL		bad argument (malformed id, empty role, ...)
 *	-ENOMEM		out of memory
 *	-ENOSPC		disk full (SQLITE_FULL, EFBIG, EDQUOT): the
 *			transaction was rolled back, nothing stored was
 *			damaged; retry later
 *	-EROFS		state directory or database not writable
 *			(SQLITE_READONLY*, SQLITE_CANTOPEN, SQLITE_PERM)
 *	-EBUSY		another connection held the write lock past the
 *			busy timeout
 *	-EIO		any other SQLite or I/O failure (SQLITE_CORRUPT...)
 *	-ENOTSUP	the database was written by a newer mistrald (schema
 *			version too high), or is not a mistrald database
 *	-ERANGE		store_kv_put(): an incremental snapshot that does not
 *			continue the stored chain (send a full one)
 *
 * and, from store_kv_load() only, the "snapshot unusable, rebuild the cache
 * by re-prefilling the transcript" family (store_kv_rebuildable() is true):
 *
 *	-EBADMSG	a chunk's checksum or length is wrong, a chunk is
 *			missing, or the stream's length does not match its
 *			header
 *	-ESTALE		the snapshot was made by another model (fingerprint) or
 *			with another cache layout, element type, W or G
 *	-EPROTO		an unknown snapshot format version
 *	(and whatever the consumer returns, e.g. kvcache_restore()'s
 *	-EINVAL/-ESTALE/-ERANGE/-EIO)
 *
 * Timestamps are milliseconds since the Unix epoch; 0 passed in means "now".
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"
#include "sampler.h"

struct store;
struct persist;
struct uv_loop_s;

/* ---- identifiers and records ---------------------------------------- */

#define STORE_ID_LEN	32		/* 128 random bits as lowercase hex */
#define STORE_ID_SIZE	(STORE_ID_LEN + 1)
#define STORE_DB_NAME	"mistrald.db"
#define STORE_ANY_OWNER	(-1)		/* owner filter: every uid */

/* Per-session parameters, stored as explicit key=value text (never a raw
 * struct).  Unknown keys in the database are ignored, so adding a field
 * needs no schema change; a missing key takes the default. */
struct store_params {
	struct sampler_params	 sampling;
	int32_t			 max_tokens;	/* per turn, 0: unlimited */
	char			*system_prompt;	/* malloc'd, NULL: none */
	char			*template;	/* malloc'd, NULL: model's */
	uint32_t		 window;	/* W asked for, 0: default */
	uint32_t		 n_global;	/* G, 0: none */
	enum kv_type		 kv_type;
};

struct store_session {
	char			 id[STORE_ID_SIZE];
	char			*name;		/* malloc'd, NULL: unnamed */
	int64_t			 owner;		/* uid */
	int64_t			 created;	/* ms */
	int64_t			 updated;	/* ms */
	struct store_params	 params;
	uint64_t		 fingerprint;	/* model it ran on, or 0 */
	int64_t			 base;		/* first position */
	int64_t			 pos;		/* next position (tokens) */
	/* Filled by get/list, ignored by create/update: */
	int64_t			 n_messages;
	int64_t			 kv_pos;	/* snapshot position, -1 */
	int64_t			 kv_bytes;	/* bytes of the stored chain */
	int64_t			 kv_time;	/* last snapshot commit, 0 */
	int			 damaged;	/* params row did not parse: the
						   defaults were used */
};

struct store_message {
	int64_t			 seq;		/* 0, 1, ... in the session */
	char			*role;		/* "system", "user",
						   "assistant", "raw", ...:
						   non-empty */
	char			*text;		/* may be "" (never NULL);
						   NUL-terminated, and may
						   hold NULs before text_len */
	size_t			 text_len;	/* bytes of text; writing, 0
						   means strlen(text) */
	int32_t			*tokens;	/* n_tokens ids, may be NULL */
	size_t			 n_tokens;
	int64_t			 pos;		/* position of tokens[0], -1 */
	int64_t			 created;	/* ms */
};

/* Description of one KV stream (as written by kvcache_save()).  The store
 * does not parse kvcache streams: the caller describes them, and on load
 * states what it expects.  Layout is (n_layers, n_kv_heads, head_dim). */
struct store_kv_info {
	uint64_t		 fingerprint;	/* model_fingerprint() */
	uint32_t		 n_layers;
	uint32_t		 n_kv_heads;
	uint32_t		 head_dim;
	enum kv_type		 type;
	uint32_t		 window;	/* W */
	uint32_t		 n_global;	/* G */
	uint32_t		 format;	/* KVCACHE_VERSION written */
	int64_t			 base;		/* kvcache_base() */
	int64_t			 since;		/* start; <= base: full */
	int64_t			 pos;		/* kvcache_pos() it reflects */
	int64_t			 bytes;		/* load: the stream's length;
						   ignored by put */
};

/* The stored chain of one session. */
struct store_kv_state {
	int			 links;		/* 0: no snapshot */
	int64_t			 pos;		/* position of the last link */
	int64_t			 base_bytes;	/* the full stream */
	int64_t			 delta_bytes;	/* sum of the deltas' */
	int64_t			 time;		/* last commit, ms */
	int			 want_full;	/* compaction due: send a full
						   snapshot next time */
};

/* Producer of a stream: call write (possibly many times) with the bytes,
 * e.g. return kvcache_save(kv, since, write, wctx).  Return 0 or a
 * negative code, which aborts the snapshot. */
typedef int store_kv_producer(void *ctx, kvcache_write_fn *write, void *wctx);
/* Consumer of one link of the chain: read its bytes with read, e.g.
 * return kvcache_restore(kv, read, rctx).  Must read exactly the link's
 * bytes (info->... describes it).  read returns 0, or a negative code
 * (-EBADMSG on a bad chunk, -EIO past the end). */
typedef int store_kv_consumer(void *ctx, const struct store_kv_info *info,
	    kvcache_read_fn *read, void *rctx);

struct store_options {
	size_t			 chunk_bytes;	/* KV chunk size; 0: 16 MiB */
	int			 busy_timeout_ms; /* 0: 10000 */
	int			 max_links;	/* chain length that asks for
						   compaction; 0: 32 */
};

struct store_stats {
	int64_t			 sessions;
	int64_t			 messages;
	int64_t			 kv_links;
	int64_t			 kv_bytes;	/* stored stream bytes */
	int64_t			 file_bytes;	/* database + WAL on disk */
	int64_t			 last_snapshot;	/* ms, 0: never */
};

/* ---- store.c -------------------------------------------------------- */

/*
 * Open (creating if needed) DIR/mistrald.db: WAL, foreign keys on,
 * secure_delete off, synchronous FULL, the busy timeout; an older schema is
 * migrated forward in place; a newer one is refused with -ENOTSUP.  The
 * directory must exist.  opt may be NULL.  On failure *out is NULL.
 */
int	 store_open(const char *dir, const struct store_options *opt,
	     struct store **out, char **cause);
void	 store_close(struct store *s);		/* accepts NULL */
int	 store_schema_version(struct store *s);	/* PRAGMA user_version */
#define STORE_SCHEMA_VERSION	1		/* what this build writes */

/* A fresh random id from getrandom(2).  Returns 0 or -errno. */
int	 store_new_id(char id[STORE_ID_SIZE]);
int	 store_id_valid(const char *id);	/* 1 if 32 lowercase hex */

/* True for the errors after which the KV cache should be rebuilt from the
 * transcript (a damaged, foreign or unreadable snapshot). */
int	 store_kv_rebuildable(int rc);

void	 store_params_default(struct store_params *p);
int	 store_params_copy(struct store_params *dst,
	     const struct store_params *src);	/* 0 or -ENOMEM */
void	 store_params_clear(struct store_params *p);	/* frees strings */
void	 store_session_clear(struct store_session *ss);	/* frees members */
void	 store_session_list_free(struct store_session *v, size_t n);
void	 store_message_clear(struct store_message *m);
void	 store_messages_free(struct store_message *v, size_t n);

/*
 * WAL checkpoints (store.c DESIGN 5).  By default SQLite checkpoints
 * inside the COMMIT that takes the WAL past 1000 pages, and that commit's
 * caller waits for it.  After store_wal_manual(s), s's commits never
 * checkpoint; its owner calls store_checkpoint() when nothing waits, and
 * store_wal_pending() says about how many bytes s's commits added to the
 * WAL since the last complete checkpoint.  store_checkpoint(): PASSIVE
 * (truncate 0: copy what no reader still needs, waiting for nobody) or
 * TRUNCATE (wait up to 200 ms for readers, copy everything, empty the WAL
 * file).  Returns 0 or a negative code (-EBUSY: readers or another
 * checkpointer were in the way; what could be copied was).
 */
void	 store_wal_manual(struct store *s);
int64_t	 store_wal_pending(const struct store *s);
int	 store_checkpoint(struct store *s, int truncate, char **cause);

int	 store_stats(struct store *s, struct store_stats *out, char **cause);
/* PRAGMA integrity_check, plus (deep != 0) every chunk's checksum.
 * Returns 0 when all is well, -EIO with the findings in *cause. */
int	 store_integrity_check(struct store *s, int deep, char **cause);

/* ---- store-session.c ------------------------------------------------ */

/*
 * Insert a session row (ss->id must be set, e.g. from store_new_id();
 * created/updated 0 mean now).  -EEXIST if the owner already has ss->name
 * (or the id exists).
 */
int	 store_session_create(struct store *s, const struct store_session *ss,
	     char **cause);
/* Rewrite name, params, fingerprint, base, pos, updated of an existing
 * row (-ENOENT if none, -EEXIST on a name clash). */
int	 store_session_update(struct store *s, const struct store_session *ss,
	     char **cause);
/* Insert or update (the persistence thread's form). */
int	 store_session_put(struct store *s, const struct store_session *ss,
	     char **cause);
/* Delete a session with its messages, sampler and snapshots. */
int	 store_session_delete(struct store *s, const char *id, char **cause);
/* Fill *out (clear it with store_session_clear()).  -ENOENT if absent. */
int	 store_session_get(struct store *s, const char *id,
	     struct store_session *out, char **cause);
/* By id, or else by name among the owner's sessions. */
int	 store_session_lookup(struct store *s, int64_t owner,
	     const char *id_or_name, struct store_session *out, char **cause);
/* Metadata only (no transcript, no KV), ordered by creation time; owner
 * STORE_ANY_OWNER lists everyone's.  *v is malloc'd (may be NULL if *n is
 * 0); free with store_session_list_free(). */
int	 store_session_list(struct store *s, int64_t owner,
	     struct store_session **v, size_t *n, char **cause);
/*
 * Copy session src into a new session new_id (owner, name may differ; name
 * NULL: unnamed): metadata, messages, sampler and KV chain, all inside SQL
 * in one transaction.  Snapshot chunks are shared, not copied, so a fork
 * costs a few rows whatever the cache size; the two sessions are
 * independent from then on.
 */
int	 store_session_fork(struct store *s, const char *src,
	     const char *new_id, int64_t owner, const char *name,
	     char **cause);

/* Append (or replace, same seq) messages in one transaction. */
int	 store_messages_put(struct store *s, const char *id,
	     const struct store_message *v, size_t n, char **cause);
int	 store_message_append(struct store *s, const char *id,
	     const struct store_message *m, char **cause);
/* Delete the messages with seq >= from_seq (an abandoned turn). */
int	 store_messages_truncate(struct store *s, const char *id,
	     int64_t from_seq, char **cause);
/* Messages with seq >= from_seq in order; free with
 * store_messages_free().  A row whose token blob is malformed comes back
 * with no tokens and pos -1. */
int	 store_messages_get(struct store *s, const char *id, int64_t from_seq,
	     struct store_message **v, size_t *n, char **cause);

int	 store_sampler_put(struct store *s, const char *id, const void *buf,
	     size_t len, char **cause);
/* *buf malloc'd; -ENOENT if none stored. */
int	 store_sampler_get(struct store *s, const char *id, void **buf,
	     size_t *len, char **cause);

/* ---- store-kv.c ----------------------------------------------------- */

/* CRC32C (Castagnoli) of buf, continuing crc (0 to start): the chunk
 * checksum.  crc32c("123456789") = 0xe3069283. */
uint32_t store_crc32c(uint32_t crc, const void *buf, size_t len);

/*
 * Store a KV stream for session id, described by info, in one transaction
 * (a crash leaves the previous chain).  info->since <= info->base: a full
 * snapshot, replacing the whole chain.  Otherwise an incremental one, which
 * must continue the stored chain (same fingerprint, layout, type, W, G,
 * base, and since == the chain's position) or -ERANGE is returned and
 * nothing changes.  *state (may be NULL) receives the chain after the
 * commit, including want_full when the deltas outgrow the base or the
 * chain is long.
 */
int	 store_kv_put(struct store *s, const char *id,
	     const struct store_kv_info *info, store_kv_producer *produce,
	     void *ctx, struct store_kv_state *state, char **cause);
int	 store_kv_put_buf(struct store *s, const char *id,
	     const struct store_kv_info *info, const void *buf, size_t len,
	     struct store_kv_state *state, char **cause);
/*
 * Read the chain back: for each link in order, check it against expect
 * (fingerprint, layout, type, W, G: -ESTALE; format: -EPROTO; expect may be
 * NULL to skip) and call consume with a read function that verifies every
 * chunk's checksum and length before handing out its bytes.  *applied (may
 * be NULL) receives the position reached by the last link consumed without
 * error (-1 if none), so a caller may keep a good prefix.  -ENOENT when
 * no snapshot is stored.
 */
int	 store_kv_load(struct store *s, const char *id,
	     const struct store_kv_info *expect, store_kv_consumer *consume,
	     void *ctx, int64_t *applied, char **cause);
int	 store_kv_state(struct store *s, const char *id,
	     struct store_kv_state *out, char **cause);
int	 store_kv_delete(struct store *s, const char *id, char **cause);

/*
 * Everything one turn changes, committed in one transaction by
 * store_save_turn(): the session row (upserted), messages (after deleting
 * seq >= truncate_from if that is >= 0), sampler bytes and a KV stream.
 * Owned by whoever holds it; store_turn_free() frees every member.
 */
struct store_turn {
	char			 id[STORE_ID_SIZE];
	struct store_session	*session;	/* NULL: row unchanged */
	int64_t			 truncate_from;	/* -1: none */
	struct store_message	*messages;	/* n_messages, may be NULL */
	size_t			 n_messages;
	void			*sampler;	/* NULL: unchanged */
	size_t			 sampler_len;
	int			 has_kv;
	struct store_kv_info	 kv_info;
	void			*kv_buf;	/* the stream, or NULL and: */
	size_t			 kv_len;
	store_kv_producer	*kv_produce;	/* run at commit time */
	void			*kv_ctx;
};

struct store_turn *store_turn_new(const char *id);	/* NULL: ENOMEM */
void	 store_turn_free(struct store_turn *t);	/* accepts NULL */
/*
 * Commit a turn.  If its KV stream does not continue the stored chain
 * (-ERANGE), everything else is still committed, *kv_rc is set to -ERANGE
 * and 0 is returned; ask for a full snapshot next time.  Any other failure
 * rolls the whole turn back.  state/kv_rc may be NULL.
 */
int	 store_save_turn(struct store *s, const struct store_turn *t,
	     struct store_kv_state *state, int *kv_rc, char **cause);

/* ---- persist.c ------------------------------------------------------ */

/*
 * The persistence thread: a job queue served by one thread with its own
 * connection.  Completion callbacks run on the loop thread (through a
 * uv_async_t), never on the persistence thread, so the loop never touches
 * SQLite during a turn.  Jobs of one session run in submission order;
 * a job that fails with a transient error (-ENOSPC, -EROFS, -EBUSY, -EIO,
 * -ENOMEM) is reported (retrying set) and retried later with back-off
 * (1 s doubling to 60 s), holding back that session's later jobs; other
 * errors, and any failure of a LOAD or CALL, are final.
 */
enum persist_kind {
	PERSIST_SAVE = 1,
	PERSIST_LOAD = 2,
	PERSIST_CALL = 3,
	PERSIST_FLUSH = 4,
};

struct persist_result {
	enum persist_kind	 kind;
	char			 id[STORE_ID_SIZE]; /* session, or "" */
	int			 rc;		/* 0 or negative errno */
	const char		*cause;		/* NULL on success; valid
						   during the callback */
	int			 retrying;	/* failed; kept and retried */
	int			 kv_rc;		/* SAVE: -ERANGE if the delta
						   was not stored */
	struct store_kv_state	 kv;		/* SAVE: chain after commit */
	int64_t			 applied;	/* LOAD: position reached, -1 */
	int			 attempts;
};

/* Runs on the loop thread.  Called once per attempt that fails
 * transiently (retrying = 1) and once at the end (retrying = 0). */
typedef void persist_done_cb(const struct persist_result *r, void *arg);
/* A function run on the persistence thread's connection. */
typedef int persist_call_fn(struct store *s, void *arg, char **cause);

/*
 * Start the thread: opens DIR's database on its own connection (the open
 * error comes back here), and registers a uv_async_t on loop.  Call from
 * the loop thread.
 */
int	 persist_create(struct uv_loop_s *loop, const char *dir,
	     const struct store_options *opt, struct persist **out,
	     char **cause);
/*
 * Queue a turn (taken: freed by persist after the final callback, and its
 * kv_produce may run on the persistence thread until then).  cb may be
 * NULL.  Returns 0, or -ESHUTDOWN after persist_destroy() began (the turn
 * is then still the caller's).
 */
int	 persist_submit_save(struct persist *p, struct store_turn *t,
	     persist_done_cb *cb, void *arg);
/* Read session id's chain into consume (run on the persistence thread;
 * the caller must not touch what consume writes to until cb). */
int	 persist_submit_load(struct persist *p, const char *id,
	     const struct store_kv_info *expect, store_kv_consumer *consume,
	     void *ctx, persist_done_cb *cb, void *arg);
/* Run fn(store, fn_arg, cause) on the persistence thread (session
 * create, delete, fork...: anything that writes, off the loop).  id names
 * the session it concerns, for ordering: it runs after that session's
 * earlier jobs; NULL: after every earlier job.  Not retried. */
int	 persist_submit_call(struct persist *p, const char *id,
	     persist_call_fn *fn, void *fn_arg, persist_done_cb *cb,
	     void *arg);
/* cb (kind PERSIST_FLUSH) runs once every job submitted before this call
 * has finished, or failed once more (retrying ones are retried at once,
 * not after their back-off), or is held back behind such a failure. */
int	 persist_flush(struct persist *p, persist_done_cb *cb, void *arg);
/* Jobs queued or waiting for a retry. */
size_t	 persist_pending(struct persist *p);
/*
 * Stop: run every pending job one last time (no back-off), deliver all
 * callbacks (final ones: retrying = 0) synchronously on the calling (loop)
 * thread, join the thread, close the connection and the uv_async_t.  The
 * memory is released from the handle's close callback, so the loop must
 * run once more.  Accepts NULL.
 */
void	 persist_destroy(struct persist *p);

#endif /* STORE_H */
