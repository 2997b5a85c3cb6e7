/*
 * turn.c: a chat or generate request in flight (loop thread).
 *
 * A turn is built by method-turn.c (the new input rendered to tokens),
 * waits if its session's cache must first be read back (residency.c),
 * then becomes an engine job.  The engine's events come back here: each
 * token is streamed to the client as a "token" notification, and at the
 * end the turn's messages join the session's transcript, the session is
 * handed to the persistence thread, and once that transaction has
 * committed the client gets the turn-map.
 *
 * DESIGN
 * 1. The session is SESSION_BUSY (or LOADING) from turn_new's caller
 *    until turn_reply; no other turn may start on it, and its cache and
 *    sampler belong to the engine while the job runs (until turn_done).
 * 2. A turn outlives its client: when the client goes (turn_client_gone)
 *    the turn forgets it, is cancelled, and still completes, so the
 *    session stays consistent (everything sampled is kept: engine.c
 *    DESIGN 4).
 * 3. Input is accepted once the job started: a cancelled or failed turn
 *    still adds its input and whatever was generated to the transcript,
 *    exactly the tokens the history (and cache) hold.  Only a turn that
 *    never reached the engine leaves no trace.
 * 4. The result of a turn is durable: a session's turn is answered only
 *    after the transaction holding it has committed, so a client told
 *    "done" finds the turn after any crash.  Between the two the turn
 *    waits (save_seq != 0: finished, nothing left for the engine) and
 *    its session stays BUSY, so the session is IDLE exactly when the
 *    result goes out: a client may send its next turn on receiving it,
 *    and nobody else's turn slips in between.  The wait ends at the
 *    save's first attempt (residency_saved_cb -> turn_stored): committed,
 *    or failed with persist_error set, whether the failure is final or
 *    the save is kept for a retry (a full disk must not hold the answer
 *    for minutes); a turn whose save is queued behind one being retried
 *    is answered at once (residency.c DESIGN 5).  A client that leaves
 *    during the wait just gets nothing; shutdown waits for these turns
 *    like running ones (daemon_shutdown_check), and each ends at its
 *    first attempt, which the persistence thread makes before
 *    persist_destroy.  One-off generates, sessions without persistence
 *    and sessions deleted while the turn ran are answered at once.
 *
 *    engine DONE -> turn_done --save queued--> waiting --turn_stored--+
 *                       |                                             |
 *                       +--nothing to wait for--> turn_reply <--------+
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

struct turn_list turns = TAILQ_HEAD_INITIALIZER(turns);

int
turn_uid_count(uid_t uid)
{
	struct turn *t;
	int n = 0;

	TAILQ_FOREACH(t, &turns, entry) {
		if (t->uid == uid)
			n++;
	}
	return n;
}

struct turn *
turn_new(struct client *c, uint32_t msgid, enum proto_method method)
{
	struct turn *t;

	t = xcalloc(1, sizeof *t);
	t->c = c;
	t->uid = c->uid;
	t->msgid = msgid;
	t->method = method;
	t->stream = 1;
	t->job.snap_since = -1;
	t->job.turn = t;
	TAILQ_INSERT_TAIL(&c->turns, t, centry);
	c->n_requests++;
	TAILQ_INSERT_TAIL(&turns, t, entry);
	return t;
}

/* Unlink and free a turn and whatever its job still holds. */
void
turn_free(struct turn *t)
{
	struct engine_job *job = &t->job;

	if (t->c != NULL) {
		TAILQ_REMOVE(&t->c->turns, t, centry);
		t->c->n_requests--;
	}
	TAILQ_REMOVE(&turns, t, entry);
	if (t->s == NULL && job->kv != NULL) {
		kvcache_free(job->kv);
		kv_resident_bytes -= t->kv_charge;
		sampler_free(job->sampler);
	}
	for (int i = 0; i < job->n_stop; i++)
		free(job->stop[i]);
	free(job->stop);
	free(job->tokens);
	free(job->out_ids);
	free(job->hold);
	free(job->snap);
	free(job->sampler_state);
	free(t->input);
	free(t->input_text);
	free(t->reply);
	free(t->persist_error);
	free(t);
	daemon_shutdown_check();
}

/* Answer a turn that never reached the engine with an error, and free it.
 * The session (if any) goes back to idle. */
void
turn_fail(struct turn *t, int code, const char *fmt, ...)
{
	struct session *s = t->s;
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	xvasprintf(&msg, fmt, ap);
	va_end(ap);
	if (t->c != NULL)
		reply_error(t->c, t->msgid, code, "%s", msg);
	free(msg);
	if (s != NULL) {
		s->state = SESSION_IDLE;
		s->turn = NULL;
	}
	turn_free(t);
	if (s != NULL && s->deleted)
		session_remove(s);
}

/*
 * Submit a prepared turn to the engine: the session's history plus the
 * new input, its cache and sampler.  The session must be resident.
 */
void
turn_start(struct turn *t)
{
	struct engine_job *job = &t->job;
	struct session *s = t->s;
	const int32_t *hist = s != NULL ? s->tokens : NULL;
	int64_t n_hist = s != NULL ? s->n_tokens : 0;

	if (atomic_load(&job->cancel)) {
		turn_fail(t, PROTO_E_CANCELLED, "cancelled before it started");
		return;
	}
	job->tokens = malloc(((size_t)(n_hist + t->n_input) + 1) *
	    sizeof *job->tokens);
	if (job->tokens == NULL) {
		turn_fail(t, PROTO_E_NO_MEMORY, "no memory for the prompt");
		return;
	}
	if (n_hist > 0)
		memcpy(job->tokens, hist, (size_t)n_hist * sizeof *hist);
	if (t->n_input > 0)
		memcpy(job->tokens + n_hist, t->input,
		    (size_t)t->n_input * sizeof *t->input);
	job->n_tokens = n_hist + t->n_input;
	job->n_new_from = n_hist;
	t->n_prev = n_hist;
	if (s != NULL) {
		job->kv = s->kv;
		job->sampler = s->sampler;
		job->session_params = s->params.sampling;
		job->snap_since = s->need_full || s->chain_pos < 0 ? 0 :
		    s->chain_pos;
		if (t->rebuilt)
			job->snap_since = 0;
		sampler_set_params(s->sampler, &t->params, t->reseed);
	}
	job->progress = (t->import ? n_hist : t->n_input) >=
	    2 * (int64_t)cfg.chunk;
	t->started = 1;
	engine_submit(engine, job);
}

/* Cancel a turn (the cancel method, a client gone, shutdown).  A turn
 * waiting for its save has nothing left to stop. */
void
turn_cancel(struct turn *t)
{
	if (t->save_seq != 0)
		return;
	atomic_store(&t->job.cancel, 1);
	if (t->started)
		engine_wake(engine);
}

void
turn_cancel_all(void)
{
	struct turn *t;

	TAILQ_FOREACH(t, &turns, entry)
		turn_cancel(t);
}

/* The client is going away: its turns forget it and stop. */
void
turn_client_gone(struct client *c)
{
	struct turn *t;

	while ((t = TAILQ_FIRST(&c->turns)) != NULL) {
		TAILQ_REMOVE(&c->turns, t, centry);
		c->n_requests--;
		t->c = NULL;
		turn_cancel(t);
	}
}

/* Pause or resume streaming to a client that does not read. */
void
turn_pause(struct client *c, int on)
{
	struct turn *t;

	TAILQ_FOREACH(t, &c->turns, centry)
		atomic_store(&t->job.paused, on);
	if (!on)
		engine_wake(engine);
}

static void
turn_reply_append(struct turn *t, const char *s, size_t len)
{
	if (t->reply_len + len + 1 > t->reply_cap) {
		t->reply_cap = (t->reply_len + len + 1) * 2;
		t->reply = xrealloc(t->reply, t->reply_cap);
	}
	memcpy(t->reply + t->reply_len, s, len);
	t->reply_len += len;
	t->reply[t->reply_len] = '\0';
}

/*
 * Answer a finished turn and free it: its session becomes idle (DESIGN
 * 1, 4).  Sends nothing if the client left.
 */
static void
turn_reply(struct turn *t)
{
	struct engine_job *job = &t->job;
	struct session *s = t->s;
	struct reply r;
	int64_t evicted;
	int exact = 1, n;

	if (s != NULL) {
		if (job->state != ENGINE_JOB_NEW)
			exact = s->exact;
		s->state = SESSION_IDLE;
		s->turn = NULL;
	}
	if (t->save_seq != 0)
		log_debug("session %s: turn answered %.1f ms after it ended "
		    "(%s)", s->id, (double)(uv_hrtime() - t->done_ns) / 1e6,
		    t->persist_error != NULL ? t->persist_error : "stored");
	if (t->c == NULL)
		goto out;
	if (job->finish == PROTO_FINISH_ERROR && job->n_out == 0) {
		if (watch_error() != NULL)
			reply_error(t->c, t->msgid, PROTO_E_UNAVAILABLE, "%s",
			    watch_error());
		else
			reply_error(t->c, t->msgid, PROTO_E_INTERNAL,
			    "the model failed: %s", strerror(-job->error));
		goto out;
	}
	if (t->import) {
		reply_begin(&r, t->msgid);
		method_pack_info(&r.pk, s, 0);
		reply_send(&r, t->c);
		goto out;
	}
	evicted = job->evicted_after - job->evicted_before;
	reply_begin(&r, t->msgid);
	n = 6 + (job->finish == PROTO_FINISH_ERROR) +
	    (t->persist_error != NULL);
	msgpack_pack_map(&r.pk, (size_t)n);
	proto_pack_kv_str(&r.pk, "finish", proto_finish_name(job->finish));
	proto_pack_cstr(&r.pk, "text");
	proto_pack_str(&r.pk, t->reply != NULL ? t->reply : "", t->reply_len);
	proto_pack_cstr(&r.pk, "usage");
	msgpack_pack_map(&r.pk, 4);
	proto_pack_kv_int(&r.pk, "prompt_tokens", job->prompt_tokens);
	proto_pack_kv_int(&r.pk, "completion_tokens", job->n_out);
	proto_pack_kv_double(&r.pk, "prefill_ms", job->prefill_ms);
	proto_pack_kv_double(&r.pk, "decode_ms", job->decode_ms);
	proto_pack_kv_int(&r.pk, "evicted", evicted > 0 ? evicted : 0);
	proto_pack_kv_str(&r.pk, "mode", exact ? "exact" : "evicting");
	proto_pack_kv_bool(&r.pk, "rebuilt", job->rebuilt || t->rebuilt);
	if (job->finish == PROTO_FINISH_ERROR) {
		proto_pack_cstr(&r.pk, "error");
		if (watch_error() != NULL)
			proto_pack_error_map(&r.pk, PROTO_E_UNAVAILABLE,
			    watch_error());
		else
			proto_pack_error_map(&r.pk, PROTO_E_INTERNAL,
			    strerror(-job->error));
	}
	if (t->persist_error != NULL)
		proto_pack_kv_str(&r.pk, "persist_error", t->persist_error);
	reply_send(&r, t->c);
out:
	turn_free(t);
	if (s != NULL && s->deleted)
		session_remove(s);
	residency_evict_idle();
}

/*
 * The first attempt at t's save is over (residency_saved_cb): answer.
 * error is NULL when the turn is stored, else why not (copied).  t may
 * not be used afterwards, nor its session, which may be gone.
 */
void
turn_stored(struct turn *t, const char *error)
{
	if (t->save_seq == 0)
		return;
	if (error != NULL) {
		free(t->persist_error);
		t->persist_error = xstrdup(error);
	}
	turn_reply(t);
}

/*
 * The job is back: record the turn in the session, hand it to the
 * persistence thread, and answer, now or once it is stored (DESIGN 4).
 */
static void
turn_done(struct turn *t)
{
	struct engine_job *job = &t->job;
	struct session *s = t->s;

	/* A job still NEW was refused by the engine before it fed anything
	 * (the model file is damaged): like a turn that never started, it
	 * leaves no trace (DESIGN 3). */
	if (s != NULL && job->state != ENGINE_JOB_NEW) {
		if (t->n_input > 0 || t->method == PROTO_M_CHAT) {
			if (session_push_msg(s, t->in_role, t->input_text != NULL ?
			    t->input_text : "", t->input_text != NULL ?
			    strlen(t->input_text) : 0, t->input,
			    t->n_input) != 0)
				goto nomem;
		}
		if (!t->import && (job->n_out > 0 ||
		    t->method == PROTO_M_CHAT)) {
			if (session_push_msg(s, t->out_role, t->reply != NULL ?
			    t->reply : "", t->reply_len, job->out_ids,
			    job->n_out) != 0)
				goto nomem;
		}
		s->updated = (int64_t)now_ms();
		session_touch(s);
		if (job->rebuilt && job->restore_error != 0)
			log_info("session %s: stored cache unusable (%s); "
			    "rebuilt from the transcript", s->id,
			    strerror(-job->restore_error));
		t->done_ns = uv_hrtime();
		t->save_seq = residency_save_turn(s, job, &t->persist_error);
		if (job->cache_bad) {
			/* Its stored snapshot and transcript stay good; the
			 * cache in memory may not be (engine.c DESIGN 5). */
			residency_drop(s);
		}
		if (t->save_seq != 0)
			return;		/* turn_stored answers */
	}
	turn_reply(t);
	return;
nomem:
	log_warnx("turn_done: session %s: no memory for the transcript; "
	    "the cache will be rebuilt", s->id);
	s->state = SESSION_IDLE;
	s->turn = NULL;
	s->need_full = 1;
	s->chain_pos = -1;
	if (s->kv != NULL)
		kvcache_reset(s->kv, 0);
	if (t->c != NULL)
		reply_error(t->c, t->msgid, PROTO_E_NO_MEMORY,
		    "no memory to record the turn");
	turn_free(t);
	if (s->deleted)
		session_remove(s);
	residency_evict_idle();
}

/* Engine events, on the loop thread (engine_async_cb). */
void
turn_engine_cb(void *arg, struct engine_event *ev)
{
	struct turn *t = ev->job->turn;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	switch (ev->type) {
	case ENGINE_EV_TOKEN:
		if (ev->len > 0)
			turn_reply_append(t, ev->text, ev->len);
		if (t->c == NULL || !t->stream || t->import)
			return;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		proto_pack_token(&pk, t->msgid, ev->text, ev->len, &ev->id,
		    ev->id >= 0 ? 1 : 0);
		server_send(t->c, &sb);
		return;
	case ENGINE_EV_PROGRESS:
		if (t->c == NULL)
			return;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		proto_pack_progress(&pk, t->msgid, (uint64_t)ev->done,
		    (uint64_t)ev->total);
		server_send(t->c, &sb);
		return;
	case ENGINE_EV_DONE:
		turn_done(t);
		return;
	}
}
