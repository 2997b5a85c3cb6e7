/*
 * mistrald.h: the daemon's internal header, laid out as a table of
 * contents: shared types first, then each file's functions under its name.
 *
 * Threads: the libuv loop thread owns sockets, clients, sessions and
 * turns (everything here but struct engine's insides and the persistence
 * thread's).  engine.c runs the model on its own worker thread; persist.c
 * (store.h) writes SQLite on its own.  Both talk to the loop only through
 * mutex-protected queues drained by a uv_async_t.
 */
#ifndef MISTRALD_H
#define MISTRALD_H

#include <sys/queue.h>
#include <sys/types.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "config.h"
#include "chat.h"
#include "kvcache.h"
#include "model.h"
#include "protocol.h"
#include "sampler.h"
#include "store.h"
#include "tokenizer.h"

#ifndef TAILQ_FOREACH_SAFE
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#define MISTRALD_CONFIG_FILE	"/etc/mistrald.conf"
#define MISTRALD_DEMO_MODEL	"demo-random-weights.gguf"

struct client;
struct engine;
struct session;
struct turn;

/* ---- xmalloc.c: bookkeeping allocations (abort on OOM) ---------------- */

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...)
	     __attribute__((format(printf, 2, 3)));
int	 xvasprintf(char **, const char *, va_list)
	     __attribute__((format(printf, 2, 0)));
uint64_t now_ms(void);		/* wall clock, ms since the epoch */

/* ---- log.c ----------------------------------------------------------- */

enum {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_FATAL,
};
int	 log_level_parse(const char *);
int	 log_open(int, const char *);
int	 log_fileno(void);
void	 log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 fatal(const char *, ...)
	     __attribute__((format(printf, 1, 2), noreturn));
void	 fatalx(const char *, ...)
	     __attribute__((format(printf, 1, 2), noreturn));

/* ---- config.c -------------------------------------------------------- */

struct config {
	char		*model;
	char		*socket;
	char		*state_dir;
	char		*config_file;
	uint32_t	 threads;
	int		 foreground;
	int		 log_level;
	char		*log_file;
	char		*socket_group;
	char		*admin_group;
	char		*template;
	char		*kv_type;
	uint32_t	 window;
	uint64_t	 kv_budget;		/* bytes */
	uint32_t	 chunk;
	uint64_t	 max_message;		/* bytes */
	uint32_t	 max_prompt_tokens;
	uint32_t	 max_tokens;
	uint32_t	 max_sessions_per_uid;
	uint32_t	 max_requests_per_connection;
	uint32_t	 max_requests_per_uid;
	uint32_t	 max_connections;
	uint64_t	 write_buffer;		/* bytes */
	uint32_t	 shutdown_timeout;	/* seconds */

	/* The command line, re-applied on reload. */
	int		*argv_opts;
	char		**argv_vals;
	int		 n_argv;
};

void	 config_defaults(struct config *);
void	 config_free(struct config *);
int	 config_parse_buf(struct config *, const char *, const char *, size_t,
	     char **);
int	 config_load(struct config *, int, char **, char **);
int	 config_reload(struct config *, char **);
void	 config_usage(FILE *);

/* ---- sd.c: systemd's notify and socket-activation protocols ---------- */

int	 sd_listen_fd(char **);
void	 sd_notifyf(const char *, ...) __attribute__((format(printf, 1, 2)));

/* ---- server.c: the listening socket and the connections -------------- */

TAILQ_HEAD(turn_list, turn);

struct client {
	uv_pipe_t		 pipe;		/* first: the handle's address */
	uint64_t		 id;
	uid_t			 uid;
	gid_t			 gid;
	pid_t			 pid;
	int			 closing;
	uint64_t		 closing_since;	/* uv_now() */
	int			 refused;	/* over max-connections: its
						   first request gets an error */
	int			 reading;	/* uv_read_start()ed */
	uint64_t		 last_read;	/* uv_now() of the last bytes */
	uint64_t		 since;		/* uv_now() at accept */
	uint8_t			*rbuf;		/* unread input */
	size_t			 rlen, rcap;
	size_t			 need;		/* scan again at this length */
	int			 n_requests;	/* running (turns) */
	struct turn_list	 turns;
	size_t			 queued;	/* output not yet written, with
						   its bookkeeping */
	int			 over;		/* queued over the mark */
	uint64_t		 over_since;	/* uv_now() when it went over */
	TAILQ_ENTRY(client)	 entry;
};

int	 server_check_path(const char *, char **);
int	 server_listen(uv_loop_t *, char **);
void	 server_close(void);
void	 server_close_clients(void);
int	 server_n_clients(void);
void	 server_send(struct client *, msgpack_sbuffer *);
void	 server_client_close(struct client *);
int	 server_client_is_admin(const struct client *);

/* ---- method.c: the method table, argument checks and replies --------- */

struct request {
	struct client		*c;
	uint32_t		 msgid;
	const msgpack_object	*args;
};

/* A response being built: pack the result (or use reply_error). */
struct reply {
	uint32_t		 msgid;
	msgpack_sbuffer		 sb;
	msgpack_packer		 pk;
};

void	 method_dispatch(struct client *, const struct proto_msg *);
void	 reply_begin(struct reply *, uint32_t);
void	 reply_send(struct reply *, struct client *);
void	 reply_error(struct client *, uint32_t, int, const char *, ...)
	     __attribute__((format(printf, 4, 5)));
int	 method_arg_params(const struct request *, const msgpack_object *,
	     struct sampler_params *, int32_t *, char ***, int *, int *,
	     char **);

/* method-server.c */
int	 method_hello(struct request *);
int	 method_status(struct request *);
int	 method_tokenize(struct request *);
int	 method_detokenize(struct request *);
void	 method_pack_model(msgpack_packer *);

/* method-session.c */
int	 method_session_create(struct request *);
int	 method_session_list(struct request *);
int	 method_session_get(struct request *);
int	 method_session_set(struct request *);
int	 method_session_delete(struct request *);
int	 method_session_fork(struct request *);
int	 method_session_export(struct request *);
int	 method_session_import(struct request *);
void	 method_pack_info(msgpack_packer *, struct session *, int);
void	 method_pack_params(msgpack_packer *, const struct store_params *);

/* method-turn.c */
int	 method_chat(struct request *);
int	 method_generate(struct request *);
int	 method_cancel(struct request *);
void	 method_turn_go(struct turn *);
int	 method_turn_limits(struct request *);
int64_t	 method_turn_encode(const char *, size_t, int, int32_t **);

/* ---- sched.c --------------------------------------------------------- */

struct sched_seq {
	int		 decoding;	/* one pending sampled token */
	int64_t		 pending;	/* prompt tokens not yet fed */
	int		 paused;
};
int	 sched_plan(const struct sched_seq *, int, int, unsigned *, int32_t *);

/* ---- engine.c -------------------------------------------------------- */

enum engine_job_state {
	ENGINE_JOB_NEW,
	ENGINE_JOB_PREFILL,
	ENGINE_JOB_DECODE,
	ENGINE_JOB_DONE,
};

/*
 * One turn as the worker sees it.  "loop" fields are set before
 * engine_submit() and read-only afterwards; "worker" fields belong to the
 * worker until the DONE event, "result" fields are valid after it.
 */
struct engine_job {
	/* loop */
	struct turn		*turn;
	struct kvcache		*kv;		/* worker's until DONE */
	struct sampler		*sampler;	/* worker's until DONE */
	struct sampler_params	 session_params; /* restored at the end */
	int32_t			*tokens;	/* history + new input */
	int64_t			 n_tokens;
	int64_t			 n_new_from;	/* tokens[this..] are new */
	int			 rebuild;	/* reset the cache first */
	const void		*restore;	/* snapshot to apply first */
	size_t			 restore_len;
	int32_t			 max_new;	/* 0: prefill only */
	int32_t			 stop_ids[CHAT_MAX_STOP_IDS];
	int			 n_stop_ids;
	char			**stop;		/* stop strings */
	int			 n_stop;
	int			 decode_flags;
	int			 progress;	/* send progress events */
	int64_t			 snap_since;	/* >= 0: serialise the delta */

	/* loop -> worker, any time */
	atomic_int		 cancel;
	atomic_int		 paused;

	/* worker */
	enum engine_job_state	 state;
	int64_t			 n_fed;		/* == kvcache_pos */
	int64_t			 feed_end;
	int32_t			 next;		/* sampled, not yet fed */
	struct tokenizer_decoder dec;
	char			*hold;		/* text held back */
	size_t			 n_hold, hold_cap;
	int32_t			 out_cap;
	int			 stopped_by_eos;
	double			 t_start, t_first;
	TAILQ_ENTRY(engine_job)	 entry;

	/* result */
	enum proto_finish	 finish;
	int			 error;		/* negative errno */
	int32_t			*out_ids;	/* sampled tokens */
	int32_t			 n_out;
	int64_t			 prompt_tokens;	/* fed for this request */
	double			 prefill_ms, decode_ms;
	int			 rebuilt;
	int			 restore_error;
	int64_t			 kv_pos;
	int64_t			 evicted_before, evicted_after;
	void			*snap;		/* malloc'd delta, or NULL */
	size_t			 snap_len;
	int			 snap_err;
	int			 cache_bad;	/* the model broke under a step
						   that fed it: not saved */
	void			*sampler_state;	/* malloc'd */
	size_t			 sampler_len;
};

enum engine_event_type {
	ENGINE_EV_TOKEN,	/* id (or -1: flush) and text */
	ENGINE_EV_PROGRESS,	/* done, total */
	ENGINE_EV_DONE,		/* the job is the loop's again */
};

struct engine_event {
	struct engine_job	*job;
	enum engine_event_type	 type;
	int32_t			 id;
	int64_t			 done, total;
	TAILQ_ENTRY(engine_event) entry;
	size_t			 len;
	char			 text[];
};

struct engine_stats {
	uint64_t	 steps;
	uint64_t	 jobs;
	uint64_t	 prefill_tokens, decode_tokens;
	double		 prefill_ms, decode_ms;
	int		 running;
};

typedef void engine_event_cb(void *, struct engine_event *);
int	 engine_start(uv_loop_t *, const struct model *, int, int,
	     engine_event_cb *, void *, struct engine **, char **);
void	 engine_submit(struct engine *, struct engine_job *);
void	 engine_wake(struct engine *);
void	 engine_get_stats(struct engine *, struct engine_stats *);
void	 engine_stop(struct engine *);

/* ---- session.c: the session table ------------------------------------ */

enum session_state {
	SESSION_IDLE,
	SESSION_LOADING,	/* reading its cache back */
	SESSION_BUSY,		/* a turn is running */
};

struct session_msg {
	char		*role;
	char		*text;		/* NUL-terminated, and may hold NULs
					   (a model can generate one) */
	size_t		 text_len;	/* bytes: use this, never strlen */
	int32_t		*tokens;
	int64_t		 n_tokens;
	int64_t		 pos;
	int64_t		 created;	/* ms */
};

struct session {
	char			 id[STORE_ID_SIZE];
	char			*name;		/* NULL: unnamed */
	uid_t			 owner;
	int64_t			 created, updated;	/* ms */
	struct store_params	 params;
	enum chat_template	 tmpl;
	uint32_t		 window;	/* W in use */
	uint32_t		 n_global;	/* G in use */
	int			 exact;

	/* Transcript and token history (DESIGN 1 of engine.c). */
	int			 loaded;
	struct session_msg	*msgs;
	size_t			 n_msgs, msgs_cap;
	size_t			 n_msgs_stored;	/* sent to the store */
	int32_t			*tokens;
	int64_t			 n_tokens, tokens_cap;
	int64_t			 stored_pos;	/* pos from the database */
	int64_t			 stored_messages;

	/* Cache: resident iff kv != NULL. */
	struct kvcache		*kv;
	struct sampler		*sampler;
	int64_t			 chain_pos;	/* stored snapshot chain: its
						   position once every
						   submitted save is done;
						   -1: none */
	int			 need_full;
	int64_t			 disk_bytes;
	int			 persist_pending;
	int			 persist_retrying; /* of those, failed once
						   and kept for a retry */
	char			*persist_error;	/* last failure, or NULL */

	enum session_state	 state;
	struct turn		*turn;
	uint64_t		 last_use;	/* uv_now() */
	int			 deleted;
	TAILQ_ENTRY(session)	 entry;
};
TAILQ_HEAD(session_list, session);

extern struct session_list sessions;

struct session *session_new(uid_t);
void	 session_free(struct session *);
void	 session_remove(struct session *);
struct session *session_find(const struct client *, const char *, int *);
struct session *session_find_name(uid_t, const char *);
int	 session_visible(const struct client *, const struct session *);
size_t	 session_count_uid(uid_t);
int	 session_name_valid(const char *);
void	 session_touch(struct session *);
int	 session_push_msg(struct session *, const char *, const char *,
	     size_t, const int32_t *, int64_t);
int	 session_push_tokens(struct session *, const int32_t *, int64_t);
int	 session_setup_cache_params(struct session *, char **);
int	 session_first_turn(const struct session *);
int	 session_last_closed(const struct session *);
const char *session_state_name(const struct session *);

/* ---- residency.c: loading, saving and evicting sessions -------------- */

extern struct persist	*persist;
extern struct store	*store;
extern uint64_t		 kv_resident_bytes;

int	 residency_open(uv_loop_t *, char **);
void	 residency_close(void);
enum chat_template residency_default_template(const char *);
int	 residency_load_transcript(struct session *, char **);
int	 residency_make_resident(struct session *, int *, char **);
typedef void residency_cb(struct session *, int, int, const char *, void *);
int	 residency_load_cache(struct session *, residency_cb *, void *);
int	 residency_reserve(size_t, const struct session *);
void	 residency_evict_idle(void);
void	 residency_drop(struct session *);
uint64_t residency_save_turn(struct session *, struct engine_job *,
	     char **);
void	 residency_save_meta(struct session *);
void	 residency_delete(struct session *);
int	 residency_fork(struct session *, struct session *, char **);
void	 residency_stats(struct store_stats *);
void	 residency_flush(void (*)(void *), void *);

/* ---- turn.c: a chat or generate request in flight -------------------- */

struct turn {
	struct client		*c;		/* NULL once the client left */
	uint32_t		 msgid;
	int			 stream;
	enum proto_method	 method;
	struct session		*s;		/* NULL: one-off generate */
	uid_t			 uid;
	struct engine_job	 job;
	struct sampler_params	 params;	/* merged for this request */
	int			 reseed;
	int64_t			 n_prev;	/* history length before */
	int32_t			*input;		/* new tokens */
	int64_t			 n_input;
	char			*input_text;	/* the user's text / prompt */
	const char		*in_role, *out_role;
	char			*reply;		/* streamed text so far */
	size_t			 reply_len, reply_cap;
	int			 rebuilt;
	int			 started;	/* submitted to the engine */
	size_t			 kv_charge;	/* one-off cache bytes */
	int			 import;	/* session.import prefill */
	uint64_t		 save_seq;	/* != 0: finished, its result
						   waits for this save */
	uint64_t		 done_ns;	/* uv_hrtime() at the end */
	char			*persist_error;	/* for the result */
	TAILQ_ENTRY(turn)	 centry;	/* client's list */
	TAILQ_ENTRY(turn)	 entry;		/* all turns */
};

extern struct turn_list turns;
extern struct engine	*engine;

int	 turn_uid_count(uid_t);
struct turn *turn_new(struct client *, uint32_t, enum proto_method);
void	 turn_free(struct turn *);
void	 turn_start(struct turn *);
void	 turn_fail(struct turn *, int, const char *, ...)
	     __attribute__((format(printf, 3, 4)));
void	 turn_cancel(struct turn *);
void	 turn_client_gone(struct client *);
void	 turn_pause(struct client *, int);
void	 turn_engine_cb(void *, struct engine_event *);
void	 turn_cancel_all(void);
void	 turn_stored(struct turn *, const char *);

/* ---- main.c: process-wide state -------------------------------------- */

extern struct config	 cfg;
extern struct model	*model;
extern uv_loop_t	*loop;
extern int		 shutting_down;
extern int		 model_is_demo;
extern uint64_t		 start_time_ms;
extern char		*blas_core;

const struct tokenizer *daemon_tokenizer(void);
void	 daemon_shutdown_check(void);

/* ---- watch.c: the model file changing under the daemon's feet -------- */

enum {
	WATCH_OK,
	WATCH_TRUNCATED,	/* SIGBUS in the mapping, or a smaller size */
	WATCH_MODIFIED,		/* rewritten in place */
};
void	 watch_start(uv_loop_t *, const char *);
int	 watch_state_now(void);
const char *watch_error(void);
void	 watch_stop(void);

/* ---- demo.c ---------------------------------------------------------- */

int	 demo_model_path(const char *, char **, char **);

#endif /* MISTRALD_H */
