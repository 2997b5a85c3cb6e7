/*
 * engine.c: the inference worker thread and its two queues.
 *
 * One dedicated thread (not libuv's pool, which also runs file system
 * work) owns the forward-pass scratch (struct fwd, with its compute pool
 * of THREADS threads) and runs every session's turn as a job.  Each
 * iteration of its loop is one batched step: sched_plan() picks a decode
 * token from every generating job and prefill chunks from the others, and
 * a single fwd_run() feeds all of them.  Sampling, decoding to text and
 * stop-string matching also happen here, so a reply depends only on the
 * session's tokens and sampler state, never on timing.
 *
 * THREADS AND LOCKS
 * - The loop thread builds a job, submits it (engine_submit) and from then
 *   on touches only job->cancel and job->paused (atomics) until the
 *   ENGINE_EV_DONE event for it arrives; the job's kvcache and sampler
 *   belong to the worker in between.
 * - The worker owns struct fwd, the active list and everything in a job
 *   marked "worker".  It posts events to the loop through ev_queue and
 *   wakes it with uv_async_send(); since sends coalesce, the loop drains
 *   the whole queue on each wake-up (engine_async_cb).
 * - One mutex, e->lock, guards the incoming queue, the event queue, the
 *   stop flag and the counters.  It is never held across model code or
 *   across a call back into the loop.  No other lock is taken under it.
 *
 * DESIGN
 * 1. Token history and cache: a job carries the session's whole token
 *    history (tokens[0..n_tokens)) with the new input at the end.  Token i
 *    sits at position i of the cache.  The worker feeds the tokens the
 *    cache does not hold yet, tokens[kvcache_pos .. n_tokens).
 * 2. At rest the cache holds every history token but the last (the last
 *    sampled token, or the last prompt token of a prefill-only job), so a
 *    turn always has at least one token to feed and thus fresh logits,
 *    even a "generate" with an empty prompt.
 * 3. Every token that enters the history is given to sampler_accept()
 *    exactly once: new input when the job starts, a sampled token when it
 *    is sampled.
 * 4. A job ends (job_finish) on EOS or a stop token, a stop string, its
 *    token limit, cancel, or an error.  Everything sampled so far is
 *    accepted (it is in out_ids and was streamed); text held back as a
 *    possible stop-string prefix is sent then.  On the way out the worker
 *    serialises the cache delta for persistence, between steps, so the
 *    cache is never read while it is written.
 * 5. When the model file breaks under a step (watch.c), nothing is
 *    sampled from that step, every job fails with -EIO, and the jobs that
 *    took part are marked cache_bad: their caches are not serialised,
 *    since the step may have written garbage into them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mistrald.h"

TAILQ_HEAD(engine_jobs, engine_job);
TAILQ_HEAD(engine_events, engine_event);

struct engine {
	const struct model	*model;
	const struct tokenizer	*tok;
	int32_t			 n_vocab;
	int			 budget;	/* tokens per step */
	struct fwd		*fwd;

	pthread_t		 thread;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	int			 stop;		/* lock */
	struct engine_jobs	 incoming;	/* lock */
	struct engine_events	 events;	/* lock */
	struct engine_stats	 stats;		/* lock */

	uv_async_t		 async;		/* loop */
	engine_event_cb		*cb;		/* loop */
	void			*cb_arg;

	/* worker */
	struct engine_jobs	 active;
	int			 n_active;
	unsigned		 rr;
	int32_t			*batch_tokens;	/* (budget) */
	struct kvcache		**batch_seqs;	/* (budget) */
	uint8_t			*batch_want;	/* (budget) */
	float			*logits;	/* (budget, n_vocab) */
	struct sched_seq	*plan_seqs;
	int32_t			*plan_take;
	struct engine_job	**plan_jobs;
	int			 plan_cap;
};

static double
engine_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Queue an event for the loop (worker).  Takes the lock. */
static void
engine_post(struct engine *e, struct engine_event *ev)
{
	pthread_mutex_lock(&e->lock);
	TAILQ_INSERT_TAIL(&e->events, ev, entry);
	pthread_mutex_unlock(&e->lock);
	uv_async_send(&e->async);
}

static struct engine_event *
engine_event_new(struct engine_job *job, enum engine_event_type type,
    const char *text, size_t len)
{
	struct engine_event *ev;

	ev = xmalloc(sizeof *ev + len + 1);
	memset(ev, 0, sizeof *ev);
	ev->job = job;
	ev->type = type;
	ev->id = -1;
	if (len > 0)
		memcpy(ev->text, text, len);
	ev->text[len] = '\0';
	ev->len = len;
	return ev;
}

/* Append to the job's held-back text (worker). */
static void
engine_hold_append(struct engine_job *job, const char *s, size_t len)
{
	if (job->n_hold + len + 1 > job->hold_cap) {
		job->hold_cap = (job->n_hold + len + 1) * 2;
		job->hold = xrealloc(job->hold, job->hold_cap);
	}
	memcpy(job->hold + job->n_hold, s, len);
	job->n_hold += len;
	job->hold[job->n_hold] = '\0';
}

/*
 * After new text arrived in job->hold: find a stop string, or else how
 * much of the tail could still become one.  Sets *emit to the bytes that
 * may be streamed now and returns 1 when a stop string was found (the
 * text from it on is dropped).
 */
static int
engine_stop_scan(const struct engine_job *job, size_t *emit)
{
	size_t keep = 0, best = SIZE_MAX;

	if (job->n_hold == 0) {
		*emit = 0;
		return 0;
	}
	for (int i = 0; i < job->n_stop; i++) {
		const char *s = job->stop[i];
		size_t sl = strlen(s);
		const char *hit;

		if (sl == 0)
			continue;
		hit = memmem(job->hold, job->n_hold, s, sl);
		if (hit != NULL && (size_t)(hit - job->hold) < best)
			best = (size_t)(hit - job->hold);
	}
	if (best != SIZE_MAX) {
		*emit = best;
		return 1;
	}
	/* The longest tail that is a proper prefix of some stop string. */
	for (int i = 0; i < job->n_stop; i++) {
		const char *s = job->stop[i];
		size_t sl = strlen(s), k;

		k = sl - 1 < job->n_hold ? sl - 1 : job->n_hold;
		for (; k > keep; k--) {
			if (memcmp(job->hold + job->n_hold - k, s, k) == 0) {
				keep = k;
				break;
			}
		}
	}
	*emit = job->n_hold - keep;
	return 0;
}

/* Drop the first n bytes of the held text. */
static void
engine_hold_consume(struct engine_job *job, size_t n)
{
	if (n == 0)
		return;
	memmove(job->hold, job->hold + n, job->n_hold - n);
	job->n_hold -= n;
	job->hold[job->n_hold] = '\0';
}

/*
 * End a job (worker): flush held text, serialise what persistence needs,
 * restore the session's own sampling parameters, and post DONE.  The job
 * must already be off the active list; the worker forgets it here.
 */
static void
engine_job_finish(struct engine *e, struct engine_job *job,
    enum proto_finish finish, int error)
{
	struct engine_event *ev;
	char buf[64];
	int n;

	job->finish = finish;
	job->error = error;
	if (finish != PROTO_FINISH_STOP || job->stopped_by_eos) {
		/* Not a stop string: what was held back is plain text. */
		n = tokenizer_decoder_flush(&job->dec, buf, sizeof buf);
		if (n > 0 && (size_t)n <= sizeof buf)
			engine_hold_append(job, buf, (size_t)n);
		if (job->n_hold > 0) {
			ev = engine_event_new(job, ENGINE_EV_TOKEN, job->hold,
			    job->n_hold);
			engine_post(e, ev);
			job->n_hold = 0;
		}
	}
	if (job->t_first == 0 && job->t_start != 0)
		job->t_first = engine_now_ms();
	job->prefill_ms = job->t_start != 0 ? job->t_first - job->t_start : 0;
	job->decode_ms = job->t_first != 0 ? engine_now_ms() - job->t_first : 0;

	sampler_set_params(job->sampler, &job->session_params, 0);
	job->sampler_len = sampler_save(job->sampler, NULL, 0);
	job->sampler_state = xmalloc(job->sampler_len > 0 ? job->sampler_len :
	    1);
	sampler_save(job->sampler, job->sampler_state, job->sampler_len);
	job->kv_pos = kvcache_pos(job->kv);
	job->evicted_after = kvcache_evicted(job->kv);
	if (job->cache_bad)
		job->snap_since = -1;
	if (job->snap_since >= 0) {
		/* A rebuilt cache no longer continues the stored chain. */
		if (job->rebuilt)
			job->snap_since = 0;
		job->snap_err = kvcache_save_buf(job->kv, job->snap_since,
		    &job->snap, &job->snap_len);
		if (job->snap_err != 0) {
			job->snap = NULL;
			job->snap_len = 0;
		}
	}
	ev = engine_event_new(job, ENGINE_EV_DONE, NULL, 0);
	engine_post(e, ev);
}

/*
 * Start a job (worker): apply a stored snapshot, check that the cache is
 * a prefix of the history (else rebuild it from the history), and record
 * the new input with the sampler.  Returns 0, or a negative errno code
 * for a job that cannot run.
 */
static int
engine_job_start(struct engine *e, struct engine_job *job)
{
	int64_t pos;
	int rc;

	job->t_start = engine_now_ms();
	if (watch_state_now() != WATCH_OK)
		return -EIO;
	if (job->restore != NULL) {
		rc = kvcache_restore_buf(job->kv, job->restore,
		    job->restore_len);
		if (rc != 0) {
			job->rebuilt = 1;
			job->restore_error = rc;
			kvcache_reset(job->kv, 0);
		}
	}
	if (job->rebuild && kvcache_pos(job->kv) != 0) {
		job->rebuilt = 1;
		kvcache_reset(job->kv, 0);
	}
	pos = kvcache_pos(job->kv);
	/* The cache must hold a prefix of the history and leave at least one
	 * token to feed when we are to generate. */
	if (kvcache_base(job->kv) != 0 || pos > job->n_tokens ||
	    (job->max_new > 0 && pos >= job->n_tokens)) {
		job->rebuilt = 1;
		kvcache_reset(job->kv, 0);
		pos = 0;
	}
	job->evicted_before = kvcache_evicted(job->kv);
	job->feed_end = job->max_new > 0 ? job->n_tokens : job->n_tokens - 1;
	if (job->feed_end < pos)
		job->feed_end = pos;
	job->n_fed = pos;
	job->prompt_tokens = job->feed_end - pos;
	for (int64_t i = job->n_new_from; i < job->n_tokens; i++)
		sampler_accept(job->sampler, job->tokens[i]);
	job->state = ENGINE_JOB_PREFILL;
	return 0;
}

/*
 * Handle one sampled token (worker).  Returns 1 when the job is finished
 * (with *finish set), else 0.
 */
static int
engine_job_token(struct engine *e, struct engine_job *job, int32_t id,
    enum proto_finish *finish)
{
	struct engine_event *ev;
	char buf[256], *dyn = NULL, *piece = buf;
	size_t emit;
	int n, stop = 0;

	sampler_accept(job->sampler, id);
	if (job->n_out == job->out_cap) {
		job->out_cap = job->out_cap ? job->out_cap * 2 : 64;
		job->out_ids = xreallocarray(job->out_ids, (size_t)job->out_cap,
		    sizeof *job->out_ids);
	}
	job->out_ids[job->n_out++] = id;
	job->next = id;

	for (int i = 0; i < job->n_stop_ids; i++) {
		if (id == job->stop_ids[i]) {
			job->stopped_by_eos = 1;
			*finish = PROTO_FINISH_STOP;
			ev = engine_event_new(job, ENGINE_EV_TOKEN, NULL, 0);
			ev->id = id;
			engine_post(e, ev);
			return 1;
		}
	}
	n = tokenizer_decoder_push(&job->dec, id, buf, sizeof buf);
	if (n > (int)sizeof buf) {
		dyn = xmalloc((size_t)n);
		n = tokenizer_decoder_push(&job->dec, id, dyn, (size_t)n);
		piece = dyn;
	}
	if (n > 0)
		engine_hold_append(job, piece, (size_t)n);
	free(dyn);
	stop = engine_stop_scan(job, &emit);
	ev = engine_event_new(job, ENGINE_EV_TOKEN, job->hold, emit);
	ev->id = id;
	engine_post(e, ev);
	if (stop) {
		job->n_hold = 0;
		*finish = PROTO_FINISH_STOP;
		return 1;
	}
	engine_hold_consume(job, emit);
	if (job->n_out >= job->max_new) {
		*finish = PROTO_FINISH_LENGTH;
		return 1;
	}
	return 0;
}

/* Grow the per-step planning arrays to hold n jobs (worker). */
static void
engine_plan_reserve(struct engine *e, int n)
{
	if (n <= e->plan_cap)
		return;
	e->plan_cap = n * 2;
	e->plan_seqs = xreallocarray(e->plan_seqs, (size_t)e->plan_cap,
	    sizeof *e->plan_seqs);
	e->plan_take = xreallocarray(e->plan_take, (size_t)e->plan_cap,
	    sizeof *e->plan_take);
	e->plan_jobs = xreallocarray(e->plan_jobs, (size_t)e->plan_cap,
	    sizeof *e->plan_jobs);
}

/*
 * One batched step over the active jobs (worker).  Returns 1 when it ran
 * model code, 0 when every active job is paused.
 */
static int
engine_step(struct engine *e)
{
	struct engine_job *job, *tmp;
	enum proto_finish finish;
	int n = 0, total, nt = 0, rows, row, rc;
	int64_t prefill_tok = 0, decode_tok = 0;
	double t0, dt;

	/* New jobs start (even cancelled ones, so that their input is
	 * recorded as DESIGN 3 says); cancelled jobs leave. */
	TAILQ_FOREACH_SAFE(job, &e->active, entry, tmp) {
		if (job->state == ENGINE_JOB_NEW &&
		    (rc = engine_job_start(e, job)) != 0) {
			TAILQ_REMOVE(&e->active, job, entry);
			e->n_active--;
			engine_job_finish(e, job, PROTO_FINISH_ERROR, rc);
			continue;
		}
		if (atomic_load(&job->cancel)) {
			TAILQ_REMOVE(&e->active, job, entry);
			e->n_active--;
			engine_job_finish(e, job, PROTO_FINISH_CANCELLED, 0);
			continue;
		}
		if (job->state == ENGINE_JOB_PREFILL &&
		    job->n_fed >= job->feed_end && job->max_new == 0) {
			/* Nothing (left) to feed and nothing to generate. */
			TAILQ_REMOVE(&e->active, job, entry);
			e->n_active--;
			engine_job_finish(e, job, PROTO_FINISH_STOP, 0);
		}
	}

	engine_plan_reserve(e, e->n_active);
	TAILQ_FOREACH(job, &e->active, entry) {
		e->plan_jobs[n] = job;
		e->plan_seqs[n].decoding = job->state == ENGINE_JOB_DECODE;
		e->plan_seqs[n].pending = job->feed_end - job->n_fed;
		e->plan_seqs[n].paused = atomic_load(&job->paused);
		n++;
	}
	total = sched_plan(e->plan_seqs, n, e->budget, &e->rr, e->plan_take);
	if (total == 0)
		return 0;

	/* Decode tokens first, then prefill chunks; each job's tokens are
	 * consecutive as fwd_run requires. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++) {
			job = e->plan_jobs[i];
			if (e->plan_take[i] == 0 ||
			    e->plan_seqs[i].decoding != (pass == 0))
				continue;
			if (pass == 0) {
				e->batch_tokens[nt] = job->next;
				e->batch_seqs[nt] = job->kv;
				e->batch_want[nt] = 1;
				nt++;
				decode_tok++;
				continue;
			}
			for (int32_t k = 0; k < e->plan_take[i]; k++) {
				int64_t at = job->n_fed + k;

				e->batch_tokens[nt] = job->tokens[at];
				e->batch_seqs[nt] = job->kv;
				e->batch_want[nt] = at == job->feed_end - 1 &&
				    job->max_new > 0;
				nt++;
			}
			prefill_tok += e->plan_take[i];
		}
	}

	t0 = engine_now_ms();
	rows = fwd_run(e->fwd, &(struct fwd_batch){ nt, e->batch_tokens,
	    e->batch_seqs, e->batch_want }, e->logits);
	dt = engine_now_ms() - t0;
	if (rows < 0) {
		log_warnx("engine_step: fwd_run: %s (%d tokens)",
		    strerror(-rows), nt);
		for (int i = 0; i < n; i++) {
			if (e->plan_take[i] == 0)
				continue;
			job = e->plan_jobs[i];
			TAILQ_REMOVE(&e->active, job, entry);
			e->n_active--;
			engine_job_finish(e, job, PROTO_FINISH_ERROR, rows);
		}
		return 1;
	}

	if (watch_state_now() != WATCH_OK) {
		/* The model file broke under this step (watch.c): its logits
		 * are garbage and so may be what it wrote into the caches. */
		for (int i = 0; i < n; i++) {
			if (e->plan_take[i] > 0)
				e->plan_jobs[i]->cache_bad = 1;
		}
		TAILQ_FOREACH_SAFE(job, &e->active, entry, tmp) {
			TAILQ_REMOVE(&e->active, job, entry);
			e->n_active--;
			engine_job_finish(e, job, PROTO_FINISH_ERROR, -EIO);
		}
		return 1;
	}

	pthread_mutex_lock(&e->lock);
	e->stats.steps++;
	e->stats.prefill_tokens += (uint64_t)prefill_tok;
	e->stats.decode_tokens += (uint64_t)decode_tok;
	if (nt > 0) {
		e->stats.prefill_ms += dt * (double)prefill_tok / nt;
		e->stats.decode_ms += dt * (double)decode_tok / nt;
	}
	pthread_mutex_unlock(&e->lock);

	/* Rows come back in batch order: decode jobs, then prefill jobs
	 * whose last prompt token was in this step. */
	row = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++) {
			int sample = 0;

			job = e->plan_jobs[i];
			if (e->plan_take[i] == 0 ||
			    e->plan_seqs[i].decoding != (pass == 0))
				continue;
			if (pass == 0) {
				job->n_fed++;
				sample = 1;
			} else {
				job->n_fed += e->plan_take[i];
				if (job->progress && job->n_fed < job->feed_end) {
					struct engine_event *ev;

					ev = engine_event_new(job,
					    ENGINE_EV_PROGRESS, NULL, 0);
					ev->done = job->n_fed - (job->feed_end -
					    job->prompt_tokens);
					ev->total = job->prompt_tokens;
					engine_post(e, ev);
				}
				if (job->n_fed >= job->feed_end &&
				    job->max_new > 0) {
					sample = 1;
					job->state = ENGINE_JOB_DECODE;
					job->t_first = engine_now_ms();
				}
			}
			if (!sample)
				continue;
			if (row >= rows) {
				log_warnx("engine_step: %d logit rows, more "
				    "wanted", rows);
				break;
			}
			{
				float *l = e->logits + (size_t)row * (size_t)e->n_vocab;
				int32_t id = sampler_sample(job->sampler, l);

				row++;
				if (id < 0) {
					job->state = ENGINE_JOB_DONE;
					job->error = id;
					continue;
				}
				if (engine_job_token(e, job, id, &finish)) {
					job->state = ENGINE_JOB_DONE;
					job->finish = finish;
				}
			}
		}
	}
	TAILQ_FOREACH_SAFE(job, &e->active, entry, tmp) {
		if (job->state != ENGINE_JOB_DONE)
			continue;
		TAILQ_REMOVE(&e->active, job, entry);
		e->n_active--;
		if (job->error != 0)
			engine_job_finish(e, job, PROTO_FINISH_ERROR, job->error);
		else
			engine_job_finish(e, job, job->finish, 0);
	}
	return 1;
}

static void *
engine_main(void *arg)
{
	struct engine *e = arg;
	struct engine_job *job;
	int idle = 0;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		while ((job = TAILQ_FIRST(&e->incoming)) != NULL) {
			TAILQ_REMOVE(&e->incoming, job, entry);
			TAILQ_INSERT_TAIL(&e->active, job, entry);
			e->n_active++;
		}
		e->stats.running = e->n_active;
		if (e->stop && e->n_active == 0)
			break;
		if (e->n_active == 0 || idle) {
			/* Nothing to do, or everything paused: sleep until
			 * a submit, a resume or a cancel wakes us (or poll
			 * every 50 ms for paused jobs' cancel flags). */
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			if (e->n_active == 0)
				pthread_cond_wait(&e->cond, &e->lock);
			else
				pthread_cond_timedwait(&e->cond, &e->lock, &ts);
			idle = 0;
			continue;
		}
		pthread_mutex_unlock(&e->lock);
		idle = !engine_step(e);
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static void	engine_close_cb(uv_handle_t *);

/* Drain the event queue on the loop thread. */
static void
engine_async_cb(uv_async_t *a)
{
	struct engine *e = a->data;
	struct engine_events list;
	struct engine_event *ev;

	TAILQ_INIT(&list);
	pthread_mutex_lock(&e->lock);
	TAILQ_CONCAT(&list, &e->events, entry);
	pthread_mutex_unlock(&e->lock);
	while ((ev = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, ev, entry);
		e->cb(e->cb_arg, ev);
		free(ev);
	}
}

/*
 * Create the engine: scratch for batches of budget tokens, n_threads
 * compute threads, and the worker thread.  cb runs on the loop thread for
 * every event.  Returns 0, or -1 with a message in cause.
 */
int
engine_start(uv_loop_t *loop, const struct model *m, int n_threads,
    int budget, engine_event_cb *cb, void *arg, struct engine **out,
    char **cause)
{
	struct engine *e;
	int rc;

	e = xcalloc(1, sizeof *e);
	e->model = m;
	e->tok = model_tokenizer(m);
	e->n_vocab = (int32_t)model_hparams(m)->n_vocab;
	e->budget = budget;
	e->cb = cb;
	e->cb_arg = arg;
	TAILQ_INIT(&e->incoming);
	TAILQ_INIT(&e->events);
	TAILQ_INIT(&e->active);
	if ((rc = fwd_create(m, budget, n_threads, &e->fwd)) != 0) {
		xasprintf(cause, "fwd_create: %s", strerror(-rc));
		free(e);
		return -1;
	}
	e->batch_tokens = xcalloc((size_t)budget, sizeof *e->batch_tokens);
	e->batch_seqs = xcalloc((size_t)budget, sizeof *e->batch_seqs);
	e->batch_want = xcalloc((size_t)budget, sizeof *e->batch_want);
	e->logits = calloc((size_t)budget * (size_t)e->n_vocab,
	    sizeof *e->logits);
	if (e->logits == NULL) {
		xasprintf(cause, "engine_start: no memory for logits");
		goto fail;
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	if (uv_async_init(loop, &e->async, engine_async_cb) != 0) {
		xasprintf(cause, "engine_start: uv_async_init failed");
		goto fail;
	}
	e->async.data = e;
	if ((rc = pthread_create(&e->thread, NULL, engine_main, e)) != 0) {
		xasprintf(cause, "engine_start: pthread_create: %s",
		    strerror(rc));
		uv_close((uv_handle_t *)&e->async, NULL);
		goto fail;
	}
	*out = e;
	return 0;
fail:
	fwd_free(e->fwd);
	free(e->logits);
	free(e->batch_tokens);
	free(e->batch_seqs);
	free(e->batch_want);
	free(e);
	return -1;
}

/* Hand a job to the worker (loop).  The worker owns its cache and sampler
 * until the DONE event. */
void
engine_submit(struct engine *e, struct engine_job *job)
{
	job->state = ENGINE_JOB_NEW;
	job->snap = NULL;
	tokenizer_decoder_init(&job->dec, e->tok, job->decode_flags);
	pthread_mutex_lock(&e->lock);
	TAILQ_INSERT_TAIL(&e->incoming, job, entry);
	e->stats.jobs++;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

/* Wake the worker after a cancel or a resume (loop). */
void
engine_wake(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

void
engine_get_stats(struct engine *e, struct engine_stats *st)
{
	pthread_mutex_lock(&e->lock);
	*st = e->stats;
	pthread_mutex_unlock(&e->lock);
}

/*
 * Stop the worker once its jobs are done (the caller cancels them first)
 * and free the engine, delivering the last events.  Blocks the loop
 * thread: called at shutdown only.
 */
void
engine_stop(struct engine *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&e->lock);
	e->stop = 1;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
	pthread_join(e->thread, NULL);
	engine_async_cb(&e->async);
	uv_close((uv_handle_t *)&e->async, engine_close_cb);
}

/* The async handle is closed: now the engine may go. */
static void
engine_close_cb(uv_handle_t *h)
{
	struct engine *e = h->data;

	fwd_free(e->fwd);
	free(e->logits);
	free(e->batch_tokens);
	free(e->batch_seqs);
	free(e->batch_want);
	free(e->plan_seqs);
	free(e->plan_take);
	free(e->plan_jobs);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	free(e);
}
