/*
 * residency.c: sessions between memory and the database (loop thread).
 *
 * At start every stored session is listed at once (metadata only).  A
 * session's transcript is read on first use (a small read on the loop's
 * own connection, which never waits in WAL mode), its KV cache and sampler
 * only when a turn needs them: the cache chain is read back on the
 * persistence thread into a freshly created cache, and a snapshot that is
 * unusable (other model, bad checksum, truncated) leaves the cache at the
 * last good link or empty, so the turn re-prefills the rest from the
 * transcript and says "rebuilt".
 *
 * At the end of every turn the session row, the turn's messages, the
 * sampler state and the cache delta that the engine serialised are handed
 * to the persistence thread as one store_turn (one transaction).  The loop
 * never blocks on it: the outcome comes back through residency_saved_cb,
 * which is also when the turn's result is sent (turn.c DESIGN 4).
 *
 * DESIGN
 * 1. chain_pos is the position of the stored snapshot chain once every
 *    save already submitted has committed; the next delta starts there.
 *    It is -1 when no usable chain is known (none yet, a save failed for
 *    good, a delta did not join, a load failed).  need_full asks for a
 *    full snapshot next time, which replaces the chain: whenever chain_pos
 *    is -1, and when the store asks for compaction.
 * 2. n_msgs_stored counts the messages submitted; after a final failure
 *    it goes back to the first message of the failed save, whose next
 *    save rewrites from there (truncate_from).
 * 3. Memory budget: the sum of resident caches (kv_resident_bytes) stays
 *    under kv-budget.  To make room, the least recently used idle session
 *    whose cache is fully stored (chain_pos known, no save pending or
 *    failing) loses its cache (residency_drop); it
 *    comes back on its next use.  When nothing can be dropped the request
 *    gets NO_MEMORY.
 * 4. Callbacks from the persistence thread name sessions by id, never by
 *    pointer, since a session may be deleted while its save is queued.
 *    A turn waiting for its save is found through its session (s->turn)
 *    and the save's number (save_seq, from residency_seq, increasing),
 *    never through the callback's context: a turn and its connection
 *    may be gone by the time the save is reported.
 * 5. A turn's result waits for the first attempt of its save, never for
 *    a retry.  So residency_saved_cb answers the waiting turn of the
 *    session when its own save is reported (committed: no
 *    persist_error; failed, final or kept for a retry: the cause), and
 *    also when an earlier save of the session first fails and is kept
 *    for a retry, since the persistence thread holds every later job of
 *    the session behind it (persist.c invariant 1).  For the same reason
 *    residency_save_turn does not wait when a save of the session is
 *    already being retried (persist_retrying).  A fork is queued without
 *    a session (it writes two), so it waits for every earlier job and
 *    every later job waits for it: while a fork is queued
 *    (residency_barriers) and any save is being retried
 *    (residency_retrying), a new save may be held for as long as the
 *    retries last, so it does not wait either, and while a fork is
 *    queued a save's first failure answers every turn waiting on a later
 *    save.  This errs towards answering early, with a persist_error that
 *    says the turn is not stored yet.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mistrald.h"

struct persist		*persist;
struct store		*store;
uint64_t		 kv_resident_bytes;

static uint64_t		 residency_seq;		/* the last save's number */
static int		 residency_retrying;	/* saves kept for a retry */
static int		 residency_barriers;	/* forks queued (DESIGN 5) */

struct residency_save_ctx {
	char		 id[STORE_ID_SIZE];
	int64_t		 first_seq;
	uint64_t	 seq;		/* DESIGN 4 */
	int		 retrying;	/* counted in residency_retrying */
};

struct residency_load_ctx {
	char		 id[STORE_ID_SIZE];
	struct kvcache	*kv;
	residency_cb	*cb;
	void		*arg;
};

static struct session *
residency_find_id(const char *id)
{
	struct session *s;

	TAILQ_FOREACH(s, &sessions, entry) {
		if (strcmp(s->id, id) == 0)
			return s;
	}
	return NULL;
}

static void
residency_kv_info(const struct session *s, struct store_kv_info *ki)
{
	const struct model_hparams *hp = model_hparams(model);

	memset(ki, 0, sizeof *ki);
	ki->fingerprint = model_fingerprint(model);
	ki->n_layers = hp->n_layers;
	ki->n_kv_heads = hp->n_kv_heads;
	ki->head_dim = hp->head_dim;
	ki->type = s->params.kv_type;
	ki->window = s->window;
	ki->n_global = s->n_global;
	ki->format = KVCACHE_VERSION;
	ki->base = 0;
}

/* The model's own chat template, read once by residency_open while the
 * file is known whole: the GGUF metadata stays in the file mapping, which
 * may change on disk later (watch.c). */
static enum chat_template residency_model_template;

/* The chat template a session uses: its own, else the configured or the
 * model's. */
static enum chat_template
residency_template(const char *name)
{
	enum chat_template t;

	if (name != NULL && chat_template_parse(name, &t) == 0)
		return t;
	if (cfg.template != NULL && strcmp(cfg.template, "auto") != 0 &&
	    chat_template_parse(cfg.template, &t) == 0)
		return t;
	return residency_model_template;
}

/*
 * Open the state directory's database on the loop's connection, start the
 * persistence thread, and list the stored sessions.
 */
int
residency_open(uv_loop_t *l, char **cause)
{
	struct store_session *v = NULL;
	struct session *s;
	struct gguf_str js = { NULL, 0 };
	size_t n = 0;
	char *why = NULL;
	int rc;

	gguf_get_str(model_gguf(model), "tokenizer.chat_template", &js);
	residency_model_template = chat_template_detect(js.ptr, js.len,
	    daemon_tokenizer());
	if (mkdir(cfg.state_dir, 0700) != 0 && errno != EEXIST) {
		xasprintf(cause, "mkdir %s: %s", cfg.state_dir, strerror(errno));
		return -1;
	}
	if ((rc = store_open(cfg.state_dir, NULL, &store, &why)) != 0) {
		xasprintf(cause, "%s", why != NULL ? why : strerror(-rc));
		free(why);
		return -1;
	}
	if ((rc = persist_create(l, cfg.state_dir, NULL, &persist, &why)) != 0) {
		xasprintf(cause, "%s", why != NULL ? why : strerror(-rc));
		free(why);
		return -1;
	}
	if ((rc = store_session_list(store, STORE_ANY_OWNER, &v, &n,
	    &why)) != 0) {
		xasprintf(cause, "%s", why != NULL ? why : strerror(-rc));
		free(why);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		s = session_new((uid_t)v[i].owner);
		memcpy(s->id, v[i].id, sizeof s->id);
		s->name = v[i].name != NULL ? xstrdup(v[i].name) : NULL;
		s->created = v[i].created;
		s->updated = v[i].updated;
		store_params_clear(&s->params);
		if (store_params_copy(&s->params, &v[i].params) != 0)
			fatalx("residency_open: out of memory");
		s->tmpl = residency_template(s->params.template);
		s->loaded = 0;
		s->stored_pos = v[i].pos;
		s->stored_messages = v[i].n_messages;
		s->chain_pos = v[i].kv_pos;
		s->disk_bytes = v[i].kv_bytes;
		s->n_tokens = 0;
		if (v[i].damaged)
			log_warnx("session %s: stored parameters unreadable; "
			    "using the defaults", s->id);
		if (v[i].fingerprint != 0 &&
		    v[i].fingerprint != model_fingerprint(model))
			log_info("session %s was made with another model; its "
			    "cache will be rebuilt on first use", s->id);
	}
	log_info("%zu sessions stored in %s/%s", n, cfg.state_dir,
	    STORE_DB_NAME);
	store_session_list_free(v, n);
	return 0;
}

/* The template of a new session (name NULL: the configured default). */
enum chat_template
residency_default_template(const char *name)
{
	return residency_template(name);
}

/* At shutdown, after the last flush: stop the thread, close the store. */
void
residency_close(void)
{
	persist_destroy(persist);
	persist = NULL;
	store_close(store);
	store = NULL;
}

/*
 * Read a stored session's transcript and rebuild its token history from
 * the messages' ids.  Returns 0, or -1 with cause.
 */
int
residency_load_transcript(struct session *s, char **cause)
{
	struct store_message *v = NULL;
	size_t n = 0;
	char *why = NULL;
	int rc, missing = 0;

	if (s->loaded)
		return 0;
	if ((rc = store_messages_get(store, s->id, 0, &v, &n, &why)) != 0) {
		xasprintf(cause, "reading the transcript: %s", why != NULL ?
		    why : strerror(-rc));
		free(why);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i].tokens == NULL && v[i].text_len != 0)
			missing = 1;
		if (session_push_msg(s, v[i].role, v[i].text,
		    v[i].text_len, v[i].tokens,
		    (int64_t)v[i].n_tokens) != 0) {
			store_messages_free(v, n);
			xasprintf(cause, "no memory for the transcript");
			return -1;
		}
	}
	store_messages_free(v, n);
	s->loaded = 1;
	s->n_msgs_stored = s->n_msgs;
	if (missing || s->n_tokens != s->stored_pos) {
		log_warnx("session %s: stored token history incomplete (%lld "
		    "of %lld tokens); its cache will be rebuilt", s->id,
		    (long long)s->n_tokens, (long long)s->stored_pos);
		s->need_full = 1;
		s->chain_pos = -1;
	}
	return 0;
}

/* Drop a session's cache and sampler (it must be idle). */
void
residency_drop(struct session *s)
{
	if (s->kv != NULL) {
		kv_resident_bytes -= kvcache_bytes(s->kv);
		kvcache_free(s->kv);
		s->kv = NULL;
	}
	sampler_free(s->sampler);
	s->sampler = NULL;
}

/*
 * Make room for bytes more of cache, dropping least recently used idle
 * sessions other than except.  Returns 0, or -1 when it cannot fit.
 */
int
residency_reserve(size_t bytes, const struct session *except)
{
	struct session *s, *lru;

	while (kv_resident_bytes + bytes > cfg.kv_budget) {
		lru = NULL;
		TAILQ_FOREACH(s, &sessions, entry) {
			if (s == except || s->kv == NULL ||
			    s->state != SESSION_IDLE || s->persist_pending > 0 ||
			    s->persist_error != NULL || s->chain_pos < 0)
				continue;
			if (lru == NULL || s->last_use < lru->last_use)
				lru = s;
		}
		if (lru == NULL)
			return -1;
		log_debug("session %s: dropping its cache from memory (budget)",
		    lru->id);
		residency_drop(lru);
	}
	return 0;
}

/* After a turn: get back under the budget if it was lowered. */
void
residency_evict_idle(void)
{
	if (kv_resident_bytes > cfg.kv_budget)
		residency_reserve(0, NULL);
}

/*
 * Give s a cache and a sampler.  *need_load is set when a stored chain
 * must be read back (residency_load_cache) before the cache is usable.
 * Returns 0, or -1 with cause (NO_MEMORY territory).
 */
int
residency_make_resident(struct session *s, int *need_load, char **cause)
{
	struct kv_params kp;
	void *buf = NULL;
	size_t bytes, len = 0;
	char *why = NULL;
	int rc;

	*need_load = 0;
	if (s->kv != NULL)
		return 0;
	if (session_setup_cache_params(s, cause) != 0)
		return -1;
	memset(&kp, 0, sizeof kp);
	kp.window = s->window;
	kp.n_global = s->n_global;
	kp.type = s->params.kv_type;
	bytes = kvcache_size_for(model, &kp);
	if (bytes > cfg.kv_budget) {
		xasprintf(cause, "a cache of %zu MiB exceeds kv-budget (%llu "
		    "MiB)", bytes >> 20,
		    (unsigned long long)(cfg.kv_budget >> 20));
		return -1;
	}
	if (residency_reserve(bytes, s) != 0) {
		xasprintf(cause, "the KV memory budget is full (kv-budget, "
		    "%llu MiB in use by busy or unsaved sessions); try again "
		    "shortly", (unsigned long long)(kv_resident_bytes >> 20));
		return -1;
	}
	if ((rc = kvcache_create(model, &kp, &s->kv)) != 0) {
		xasprintf(cause, "cannot allocate the cache: %s", strerror(-rc));
		s->kv = NULL;
		return -1;
	}
	kv_resident_bytes += kvcache_bytes(s->kv);
	s->sampler = sampler_create(&s->params.sampling,
	    (int32_t)model_hparams(model)->n_vocab);
	if (s->sampler == NULL) {
		residency_drop(s);
		xasprintf(cause, "cannot allocate the sampler");
		return -1;
	}
	if (s->n_tokens > 0 && store != NULL &&
	    store_sampler_get(store, s->id, &buf, &len, &why) == 0) {
		if (sampler_load(s->sampler, buf, len) != 0)
			log_warnx("session %s: stored sampler state unusable; "
			    "starting a fresh one", s->id);
		free(buf);
	}
	free(why);
	sampler_set_params(s->sampler, &s->params.sampling, 0);
	*need_load = s->chain_pos >= 0 && s->n_tokens > 0;
	return 0;
}

static int
residency_consume(void *ctx, const struct store_kv_info *info,
    kvcache_read_fn *read, void *rctx)
{
	struct residency_load_ctx *lc = ctx;

	return kvcache_restore(lc->kv, read, rctx);
}

static void
residency_loaded_cb(const struct persist_result *r, void *arg)
{
	struct residency_load_ctx *lc = arg;
	struct session *s = residency_find_id(lc->id);
	int rebuilt = 0;

	if (r->retrying)
		return;
	if (s == NULL) {
		free(lc);
		return;
	}
	if (r->rc != 0) {
		rebuilt = s->n_tokens > 0;
		s->need_full = 1;
		s->chain_pos = -1;
		if (r->rc != -ENOENT)
			log_info("session %s: stored cache unusable (%s); "
			    "rebuilding from position %lld", s->id,
			    r->cause != NULL ? r->cause : strerror(-r->rc),
			    (long long)kvcache_pos(s->kv));
	}
	lc->cb(s, r->rc, rebuilt, r->cause, lc->arg);
	free(lc);
}

/*
 * Read s's stored cache chain back (s must be resident, with an empty
 * cache, and LOADING).  cb(s, rc, rebuilt, cause, arg) runs on the loop
 * thread when done; on any failure the cache holds the longest good
 * prefix of the chain and rebuilt is set.  Returns 0 or a negative errno
 * (cb is then not called).
 */
int
residency_load_cache(struct session *s, residency_cb *cb, void *arg)
{
	struct residency_load_ctx *lc;
	struct store_kv_info expect;
	int rc;

	lc = xcalloc(1, sizeof *lc);
	memcpy(lc->id, s->id, sizeof lc->id);
	lc->kv = s->kv;
	lc->cb = cb;
	lc->arg = arg;
	residency_kv_info(s, &expect);
	rc = persist_submit_load(persist, s->id, &expect, residency_consume, lc,
	    residency_loaded_cb, lc);
	if (rc != 0)
		free(lc);
	return rc;
}

/*
 * Answer the turns a save report lets go (DESIGN 5): the session's
 * waiting turn if the report is about its own save, or about an earlier
 * save that first failed and is kept (first_failure); on such a failure
 * while a fork is queued, every turn waiting on a later save.
 */
static void
residency_release(const char *id, uint64_t seq, int final, int first_failure,
    const char *cause)
{
	struct session *s = residency_find_id(id);
	struct turn *t, *tmp;
	char *why = NULL;

	if (s != NULL && (t = s->turn) != NULL && t->save_seq != 0 &&
	    seq <= t->save_seq) {
		if (t->save_seq == seq && final) {
			if (cause != NULL)
				xasprintf(&why, "not stored: %s", cause);
			turn_stored(t, why);
		} else if (t->save_seq == seq && first_failure) {
			xasprintf(&why, "not stored yet: %s; the save is kept "
			    "and retried", cause);
			turn_stored(t, why);
		} else if (first_failure) {
			xasprintf(&why, "not stored yet: queued behind an "
			    "earlier save of this session that failed (%s) "
			    "and is being retried", cause);
			turn_stored(t, why);
		}
		free(why);
		why = NULL;
	}
	if (!first_failure || residency_barriers == 0)
		return;
	TAILQ_FOREACH_SAFE(t, &turns, entry, tmp) {
		if (t->save_seq <= seq)
			continue;
		if (why == NULL)
			xasprintf(&why, "not stored yet: queued behind a save "
			    "that failed (%s) and is being retried", cause);
		turn_stored(t, why);
	}
	free(why);
}

static void
residency_saved_cb(const struct persist_result *r, void *arg)
{
	struct residency_save_ctx *sc = arg;
	struct session *s = residency_find_id(sc->id);
	char *cause = NULL, id[STORE_ID_SIZE];
	uint64_t seq = sc->seq;
	int64_t first_seq = sc->first_seq;
	int first_failure = 0;

	if (r->retrying && !sc->retrying) {
		sc->retrying = 1;
		first_failure = 1;
		residency_retrying++;
		if (s != NULL)
			s->persist_retrying++;
	} else if (!r->retrying && sc->retrying) {
		residency_retrying--;
		if (s != NULL)
			s->persist_retrying--;
	}
	if (r->rc != 0)
		xasprintf(&cause, "%s", r->cause != NULL ? r->cause :
		    strerror(-r->rc));
	memcpy(id, sc->id, sizeof id);
	if (!r->retrying)
		free(sc);
	if (s == NULL)
		goto release;
	if (r->rc != 0) {
		free(s->persist_error);
		s->persist_error = xstrdup(cause);
		log_warnx("session %s: saving failed%s: %s", s->id,
		    r->retrying ? " (will retry)" : "", cause);
	}
	if (r->retrying)
		goto release;
	s->persist_pending--;
	if (r->rc == 0) {
		if (s->persist_error != NULL)
			log_info("session %s: saved after %d attempts", s->id,
			    r->attempts);
		free(s->persist_error);
		s->persist_error = NULL;
		if (r->kv_rc == -ERANGE) {
			s->need_full = 1;
			s->chain_pos = -1;
		}
		if (r->kv.want_full)
			s->need_full = 1;
		if (r->kv.links > 0)
			s->disk_bytes = r->kv.base_bytes + r->kv.delta_bytes;
	} else {
		s->need_full = 1;
		s->chain_pos = -1;
		if (first_seq >= 0 && (size_t)first_seq < s->n_msgs_stored)
			s->n_msgs_stored = (size_t)first_seq;
	}
release:
	residency_release(id, seq, !r->retrying, first_failure, cause);
	free(cause);
	daemon_shutdown_check();
}

/* Fill a store_session row from s. */
static void
residency_row(const struct session *s, struct store_session *row)
{
	memset(row, 0, sizeof *row);
	memcpy(row->id, s->id, sizeof row->id);
	row->name = s->name != NULL ? xstrdup(s->name) : NULL;
	row->owner = s->owner;
	row->created = s->created;
	row->updated = s->updated;
	if (store_params_copy(&row->params, &s->params) != 0)
		fatalx("residency_row: out of memory");
	row->fingerprint = model_fingerprint(model);
	row->base = 0;
	row->pos = s->n_tokens;
	row->kv_pos = -1;
}

/* Queue st (taken).  Returns the save's number (DESIGN 4), or 0 when it
 * could not be queued. */
static uint64_t
residency_submit(struct session *s, struct store_turn *st, int64_t first_seq)
{
	struct residency_save_ctx *sc;
	int rc;

	sc = xcalloc(1, sizeof *sc);
	memcpy(sc->id, s->id, sizeof sc->id);
	sc->first_seq = first_seq;
	sc->seq = ++residency_seq;
	if ((rc = persist_submit_save(persist, st, residency_saved_cb, sc)) !=
	    0) {
		log_warnx("session %s: cannot queue its save: %s", s->id,
		    strerror(-rc));
		store_turn_free(st);
		free(sc);
		s->need_full = 1;
		return 0;
	}
	s->persist_pending++;
	return sc->seq;
}

/* Build the turn's messages from n_msgs_stored on. */
static void
residency_messages(struct session *s, struct store_turn *st)
{
	size_t from = s->n_msgs_stored, n = s->n_msgs - from;

	st->truncate_from = (int64_t)from;
	if (n == 0)
		return;
	st->messages = xcalloc(n, sizeof *st->messages);
	st->n_messages = n;
	for (size_t i = 0; i < n; i++) {
		const struct session_msg *m = &s->msgs[from + i];
		struct store_message *sm = &st->messages[i];

		sm->seq = (int64_t)(from + i);
		sm->role = xstrdup(m->role);
		sm->text = xmalloc(m->text_len + 1);
		memcpy(sm->text, m->text, m->text_len + 1);
		sm->text_len = m->text_len;
		if (m->n_tokens > 0) {
			sm->tokens = xreallocarray(NULL, (size_t)m->n_tokens,
			    sizeof *sm->tokens);
			memcpy(sm->tokens, m->tokens, (size_t)m->n_tokens *
			    sizeof *sm->tokens);
		}
		sm->n_tokens = (size_t)m->n_tokens;
		sm->pos = m->pos;
		sm->created = m->created;
	}
	s->n_msgs_stored = s->n_msgs;
}

/*
 * Hand a finished turn to the persistence thread: row, the messages not
 * yet stored, sampler state and the cache delta the engine serialised
 * (taken from the job).  Returns the number of the save its result must
 * wait for (DESIGN 5), or 0 when it must not wait: *error (malloc'd) then
 * says why the turn is not stored, or is NULL when the session is not
 * stored at all (deleted, or no persistence).
 */
uint64_t
residency_save_turn(struct session *s, struct engine_job *job, char **error)
{
	struct store_turn *st;
	int64_t first_seq = (int64_t)s->n_msgs_stored;
	uint64_t seq;

	*error = NULL;
	if (s->deleted || persist == NULL)
		return 0;
	if ((st = store_turn_new(s->id)) == NULL)
		fatalx("residency_save_turn: out of memory");
	st->session = xcalloc(1, sizeof *st->session);
	residency_row(s, st->session);
	residency_messages(s, st);
	st->sampler = job->sampler_state;
	st->sampler_len = job->sampler_len;
	job->sampler_state = NULL;
	if (job->snap != NULL) {
		st->has_kv = 1;
		residency_kv_info(s, &st->kv_info);
		st->kv_info.since = job->snap_since;
		st->kv_info.pos = job->kv_pos;
		st->kv_buf = job->snap;
		st->kv_len = job->snap_len;
		job->snap = NULL;
		s->chain_pos = job->kv_pos;
		s->need_full = 0;
	} else if (job->snap_since >= 0) {
		log_warnx("session %s: cannot serialise the cache: %s", s->id,
		    strerror(-job->snap_err));
		s->need_full = 1;
	}
	if ((seq = residency_submit(s, st, first_seq)) == 0) {
		xasprintf(error, "not stored: the save could not be queued");
		return 0;
	}
	if (s->persist_retrying > 0) {
		xasprintf(error, "not stored yet: queued behind an earlier save "
		    "of this session that failed (%s) and is being retried",
		    s->persist_error != NULL ? s->persist_error : "see the log");
		return 0;
	}
	if (residency_barriers > 0 && residency_retrying > 0) {
		xasprintf(error, "not stored yet: queued behind a save that "
		    "failed and is being retried");
		return 0;
	}
	return seq;
}

/* Store s's row (after create, set, rename) and any unsaved messages. */
void
residency_save_meta(struct session *s)
{
	struct store_turn *st;
	int64_t first_seq = (int64_t)s->n_msgs_stored;

	if (persist == NULL)
		return;
	if ((st = store_turn_new(s->id)) == NULL)
		fatalx("residency_save_meta: out of memory");
	st->session = xcalloc(1, sizeof *st->session);
	residency_row(s, st->session);
	if (s->loaded)
		residency_messages(s, st);
	else
		st->truncate_from = -1;
	residency_submit(s, st, first_seq);
}

static int
residency_delete_fn(struct store *st, void *arg, char **cause)
{
	int rc = store_session_delete(st, arg, cause);

	return rc == -ENOENT ? 0 : rc;
}

static void
residency_call_done_cb(const struct persist_result *r, void *arg)
{
	if (r->retrying)
		return;
	if (r->rc != 0)
		log_warnx("%s: %s", (const char *)arg, r->cause != NULL ?
		    r->cause : strerror(-r->rc));
	free(arg);
	daemon_shutdown_check();
}

/* Delete s's stored rows (queued after its pending saves). */
void
residency_delete(struct session *s)
{
	char *id = xstrdup(s->id);

	if (persist == NULL || persist_submit_call(persist, s->id,
	    residency_delete_fn, id, residency_call_done_cb, id) != 0) {
		log_warnx("session %s: cannot queue its deletion", s->id);
		free(id);
	}
}

/* A fork is over: it no longer holds back every later job (DESIGN 5). */
static void
residency_fork_done_cb(const struct persist_result *r, void *arg)
{
	if (r->retrying)
		return;
	residency_barriers--;
	if (r->rc != 0)
		log_warnx("forking a session: %s", r->cause != NULL ?
		    r->cause : strerror(-r->rc));
	daemon_shutdown_check();
}

struct residency_fork_args {
	char		 src[STORE_ID_SIZE];
	char		 dst[STORE_ID_SIZE];
	int64_t		 owner;
	char		*name;
};

static int
residency_fork_fn(struct store *st, void *arg, char **cause)
{
	struct residency_fork_args *fa = arg;
	int rc;

	rc = store_session_fork(st, fa->src, fa->dst, fa->owner, fa->name,
	    cause);
	free(fa->name);
	free(fa);
	return rc;
}

/*
 * Make dst (new, empty) a copy of src: parameters, transcript, history,
 * and, when src is resident, its cache and sampler; the stored rows are
 * copied by the store (chunks shared).  src must be idle and loaded.
 * Returns 0, or -1 with cause.
 */
int
residency_fork(struct session *src, struct session *dst, char **cause)
{
	struct residency_fork_args *fa;
	struct kv_params kp;
	void *buf;
	size_t len;
	int rc;

	store_params_clear(&dst->params);
	if (store_params_copy(&dst->params, &src->params) != 0) {
		xasprintf(cause, "out of memory");
		return -1;
	}
	dst->tmpl = src->tmpl;
	dst->window = src->window;
	dst->n_global = src->n_global;
	dst->exact = src->exact;
	for (size_t i = 0; i < src->n_msgs; i++) {
		const struct session_msg *m = &src->msgs[i];

		if (session_push_msg(dst, m->role, m->text, m->text_len,
		    m->tokens, m->n_tokens) != 0) {
			xasprintf(cause, "no memory for the transcript");
			return -1;
		}
		dst->msgs[i].created = m->created;
	}
	if (src->kv != NULL) {
		memset(&kp, 0, sizeof kp);
		kp.window = src->window;
		kp.n_global = src->n_global;
		kp.type = src->params.kv_type;
		if (residency_reserve(kvcache_bytes(src->kv), src) == 0 &&
		    kvcache_create(model, &kp, &dst->kv) == 0) {
			if ((rc = kvcache_copy(dst->kv, src->kv)) != 0) {
				kvcache_free(dst->kv);
				dst->kv = NULL;
			} else
				kv_resident_bytes += kvcache_bytes(dst->kv);
		} else
			dst->kv = NULL;
		if (dst->kv != NULL) {
			dst->sampler = sampler_create(&src->params.sampling,
			    (int32_t)model_hparams(model)->n_vocab);
			len = sampler_save(src->sampler, NULL, 0);
			buf = xmalloc(len);
			sampler_save(src->sampler, buf, len);
			if (dst->sampler == NULL ||
			    sampler_load(dst->sampler, buf, len) != 0)
				residency_drop(dst);
			free(buf);
		}
	}
	dst->chain_pos = src->chain_pos;
	dst->need_full = src->need_full;
	dst->disk_bytes = src->disk_bytes;
	dst->n_msgs_stored = src->n_msgs_stored;
	dst->stored_pos = src->stored_pos;
	if (dst->kv == NULL && (src->chain_pos < 0 || src->need_full)) {
		/* Nothing stored to load back: rebuild on first use. */
		dst->chain_pos = -1;
		dst->need_full = 1;
	}
	fa = xcalloc(1, sizeof *fa);
	memcpy(fa->src, src->id, sizeof fa->src);
	memcpy(fa->dst, dst->id, sizeof fa->dst);
	fa->owner = dst->owner;
	fa->name = dst->name != NULL ? xstrdup(dst->name) : NULL;
	if (persist_submit_call(persist, NULL, residency_fork_fn, fa,
	    residency_fork_done_cb, NULL) != 0) {
		free(fa->name);
		free(fa);
		dst->need_full = 1;
	} else
		residency_barriers++;
	/* Messages the source had not stored yet go with dst's own save. */
	residency_save_meta(dst);
	return 0;
}

void
residency_stats(struct store_stats *st)
{
	char *why = NULL;

	memset(st, 0, sizeof *st);
	if (store != NULL && store_stats(store, st, &why) != 0) {
		log_warnx("residency_stats: %s", why != NULL ? why : "failed");
		free(why);
	}
}

struct residency_flush_ctx {
	void	(*fn)(void *);
	void	*arg;
};

static void
residency_flush_cb(const struct persist_result *r, void *arg)
{
	struct residency_flush_ctx *fc = arg;

	fc->fn(fc->arg);
	free(fc);
}

/* Call fn(arg) once everything queued so far was tried. */
void
residency_flush(void (*fn)(void *), void *arg)
{
	struct residency_flush_ctx *fc;

	fc = xcalloc(1, sizeof *fc);
	fc->fn = fn;
	fc->arg = arg;
	if (persist == NULL || persist_flush(persist, residency_flush_cb,
	    fc) != 0) {
		free(fc);
		fn(arg);
	}
}
