/*
 * persist.c: the persistence thread.  The loop thread queues jobs (save a
 * turn, load a KV chain, run a store call); one thread with its own SQLite
 * connection runs them; completions come back to the loop through a
 * uv_async_t, so the loop never waits on SQLite during a turn.
 *
 * DESIGN
 *
 * Threads and locks.  Two threads touch a struct persist: the loop thread
 * (persist_submit_*, persist_flush, persist_pending, persist_destroy and
 * persist_async_cb) and the persistence thread (persist_main).  One mutex,
 * p->lock, guards jobs, reports, stopping and every job's scheduling fields
 * (attempts, not_before, need_attempt); it is never held while SQLite runs
 * or a callback is called, and no other lock is taken under it.  The
 * persistence thread alone owns p->store, a running job's payload and the
 * checkpoint bookkeeping (wal_dirty, last_job, ckpt_*).
 *
 * Invariants:
 *
 * 1. Jobs of one session run in submission order: a job runs only when no
 *    earlier job of the same session is still queued.  A job with no
 *    session (a CALL without an id) runs only when it is first.  So a
 *    failing save holds back its session, and only its session.
 *
 * 2. A SAVE that fails transiently (persist_transient()) stays queued with a
 *    back-off (1 s doubling to 60 s) and is reported with retrying = 1; every
 *    other outcome is final: reported with retrying = 0, then freed.
 *
 * 3. uv_async_send() coalesces, so each wake-up (persist_async_cb) takes the
 *    whole report list at once.
 *
 * 4. persist_flush() marks every queued job need_attempt, which lifts its
 *    back-off, and queues a FLUSH job.  persist_pick() scans in order and
 *    returns the first job that may run, so when the scan reaches the FLUSH
 *    job every earlier job has run, or is held back behind a failed job of
 *    its session that has just been retried: the flush is then done.
 *
 * 5. persist_destroy(): stopping is set, every job becomes ready at once
 *    and gets one last attempt (a transient failure is then final), the
 *    thread exits when the queue is empty, and the remaining reports are
 *    delivered on the calling thread before the async handle is closed.
 *
 * 6. Checkpoints never delay a report.  The connection's commits do not
 *    checkpoint (store_wal_manual(), store.c DESIGN 5); persist_main runs
 *    one only after the job's report is queued and the loop woken, so the
 *    turn's result is on its way while the WAL is copied.  After a job,
 *    once the WAL has grown by PERSIST_CKPT_BYTES since the last
 *    checkpoint: a PASSIVE one if no job is ready to run, and even if one
 *    is once it has grown by PERSIST_CKPT_FORCE, so a daemon that is never
 *    idle still bounds its WAL (the waiting job, and so maybe a turn's
 *    result, then waits for that checkpoint: once per PERSIST_CKPT_FORCE
 *    bytes written).  After
 *    PERSIST_IDLE_MS with an empty queue, and when the thread exits, a
 *    TRUNCATE checkpoint copies the rest and empties the WAL file.  A
 *    failed checkpoint (a reader in the way, a full disk) leaves the
 *    frames safe in the WAL and is tried again after a back-off (1 s
 *    doubling to 60 s).
 *
 * Job life:  persist_submit_*  ->  queued  --persist_main-->  running
 *            running --ok or final error--> reported, freed
 *            running --transient (SAVE)--> queued with not_before
 */

#include <sys/queue.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "store.h"

#define PERSIST_BACKOFF_FIRST	1000	/* ms */
#define PERSIST_BACKOFF_MAX	60000
#define PERSIST_CKPT_BYTES	(4 << 20)	/* WAL growth: checkpoint
						   when no job is ready */
#define PERSIST_CKPT_FORCE	(16 << 20)	/* ... even if one is */
#define PERSIST_IDLE_MS		2000	/* quiet time before emptying
					   the WAL */

struct persist_job {
	TAILQ_ENTRY(persist_job) entry;
	enum persist_kind	 kind;
	char			 id[STORE_ID_SIZE];	/* "": no session */
	struct store_turn	*turn;			/* SAVE, owned */
	struct store_kv_info	 expect;		/* LOAD */
	int			 has_expect;
	store_kv_consumer	*consume;
	void			*consume_ctx;
	persist_call_fn		*fn;			/* CALL */
	void			*fn_arg;
	persist_done_cb		*cb;
	void			*arg;
	/* Scheduling, under p->lock: */
	int			 attempts;
	int			 need_attempt;		/* flush: no back-off */
	uint64_t		 not_before;		/* monotonic ms */
	unsigned		 backoff_ms;
};
TAILQ_HEAD(persist_jobs, persist_job);

struct persist_report {
	TAILQ_ENTRY(persist_report) entry;
	struct persist_result	 r;
	char			*cause;
	persist_done_cb		*cb;
	void			*arg;
};
TAILQ_HEAD(persist_reports, persist_report);

struct persist {
	uv_loop_t		*loop;
	uv_async_t		 async;
	struct store		*store;		/* persistence thread only */
	pthread_t		 thread;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;		/* CLOCK_MONOTONIC */
	struct persist_jobs	 jobs;		/* in submission order */
	struct persist_reports	 reports;	/* for the loop */
	int			 stopping;
	int			 destroyed;
	/* Checkpoints (DESIGN 6), persistence thread only: */
	int			 wal_dirty;	/* written since the WAL was
						   last emptied */
	uint64_t		 last_job;	/* monotonic ms, end of the last
						   job */
	uint64_t		 ckpt_not_before; /* after a failure */
	unsigned		 ckpt_backoff_ms;
};

static uint64_t
persist_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
persist_transient(int rc)
{
	return rc == -ENOSPC || rc == -EROFS || rc == -EBUSY || rc == -EIO ||
	    rc == -ENOMEM;
}

static void
persist_job_free(struct persist_job *j)
{
	store_turn_free(j->turn);
	free(j);
}

/* Deliver reports taken from the list (loop thread). */
static void
persist_deliver(struct persist_reports *list)
{
	struct persist_report *rep;

	while ((rep = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, rep, entry);
		rep->r.cause = rep->cause;
		if (rep->cb != NULL)
			rep->cb(&rep->r, rep->arg);
		free(rep->cause);
		free(rep);
	}
}

static void
persist_async_cb(uv_async_t *h)
{
	struct persist *p = h->data;
	struct persist_reports list = TAILQ_HEAD_INITIALIZER(list);

	pthread_mutex_lock(&p->lock);
	TAILQ_CONCAT(&list, &p->reports, entry);
	pthread_mutex_unlock(&p->lock);
	persist_deliver(&list);
}

/* Queue a report (lock held).  Takes cause. */
static void
persist_report_locked(struct persist *p, const struct persist_job *j,
    const struct persist_result *r, char *cause)
{
	struct persist_report *rep;

	if ((rep = calloc(1, sizeof *rep)) == NULL) {
		/* Nothing to tell the caller with; the job's own state is
		 * right either way (bookkeeping-size allocation). */
		free(cause);
		return;
	}
	rep->r = *r;
	rep->r.kind = j->kind;
	memcpy(rep->r.id, j->id, sizeof rep->r.id);
	rep->r.attempts = j->attempts;
	rep->cause = cause;
	rep->cb = j->cb;
	rep->arg = j->arg;
	TAILQ_INSERT_TAIL(&p->reports, rep, entry);
}

/*
 * The first job that may run now (invariant 1), or NULL; *wake gets the
 * earliest back-off end among the jobs passed over (0: none).
 */
static struct persist_job *
persist_pick(struct persist *p, uint64_t now, uint64_t *wake)
{
	struct persist_job *j, *e;
	int blocked;

	*wake = 0;
	TAILQ_FOREACH(j, &p->jobs, entry) {
		if (j->kind == PERSIST_FLUSH)
			return j;	/* invariant 4 */
		blocked = 0;
		for (e = TAILQ_FIRST(&p->jobs); e != j && !blocked;
		    e = TAILQ_NEXT(e, entry)) {
			if (e->kind == PERSIST_FLUSH)
				continue;
			if (*j->id == '\0' || *e->id == '\0' ||
			    strcmp(e->id, j->id) == 0)
				blocked = 1;
		}
		if (blocked)
			continue;
		if (j->not_before <= now || j->need_attempt || p->stopping)
			return j;
		if (*wake == 0 || j->not_before < *wake)
			*wake = j->not_before;
	}
	return NULL;
}

/* Run a job on the persistence thread (no lock held). */
static int
persist_run(struct persist *p, struct persist_job *j,
    struct persist_result *r, char **cause)
{
	memset(r, 0, sizeof *r);
	r->applied = -1;
	switch (j->kind) {
	case PERSIST_SAVE:
		return store_save_turn(p->store, j->turn, &r->kv, &r->kv_rc,
		    cause);
	case PERSIST_LOAD:
		return store_kv_load(p->store, j->id,
		    j->has_expect ? &j->expect : NULL, j->consume,
		    j->consume_ctx, &r->applied, cause);
	case PERSIST_CALL:
		return j->fn(p->store, j->fn_arg, cause);
	case PERSIST_FLUSH:
		break;
	}
	return 0;
}

/* Run a checkpoint (persistence thread, no lock held); on failure back
 * off (DESIGN 6). */
static void
persist_checkpoint(struct persist *p, int truncate)
{
	if (store_checkpoint(p->store, truncate, NULL) == 0) {
		if (truncate)
			p->wal_dirty = 0;
		p->ckpt_backoff_ms = 0;
		p->ckpt_not_before = 0;
		return;
	}
	p->ckpt_backoff_ms = p->ckpt_backoff_ms == 0 ? PERSIST_BACKOFF_FIRST :
	    p->ckpt_backoff_ms * 2;
	if (p->ckpt_backoff_ms > PERSIST_BACKOFF_MAX)
		p->ckpt_backoff_ms = PERSIST_BACKOFF_MAX;
	p->ckpt_not_before = persist_now_ms() + p->ckpt_backoff_ms;
}

/*
 * After a job, its report queued (lock held): a PASSIVE checkpoint if the
 * WAL has grown enough (DESIGN 6).  The lock is released around it.
 */
static void
persist_after_job(struct persist *p)
{
	int64_t pending = store_wal_pending(p->store);
	uint64_t now = persist_now_ms(), wake;

	p->last_job = now;
	if (p->stopping || pending < PERSIST_CKPT_BYTES ||
	    now < p->ckpt_not_before)
		return;
	if (pending < PERSIST_CKPT_FORCE && persist_pick(p, now, &wake) != NULL)
		return;
	pthread_mutex_unlock(&p->lock);
	persist_checkpoint(p, 0);
	pthread_mutex_lock(&p->lock);
}

/*
 * Nothing to run (lock held): once the queue has been empty for
 * PERSIST_IDLE_MS since a write, empty the WAL (DESIGN 6).  Returns 1 if
 * it ran one (the lock was released meanwhile), else 0 with *wake lowered
 * to when one will be due.
 */
static int
persist_idle(struct persist *p, uint64_t now, uint64_t *wake)
{
	uint64_t due;

	if (!p->wal_dirty || p->stopping || !TAILQ_EMPTY(&p->jobs))
		return 0;
	due = p->last_job + PERSIST_IDLE_MS;
	if (due < p->ckpt_not_before)
		due = p->ckpt_not_before;
	if (now < due) {
		if (*wake == 0 || due < *wake)
			*wake = due;
		return 0;
	}
	pthread_mutex_unlock(&p->lock);
	persist_checkpoint(p, 1);
	pthread_mutex_lock(&p->lock);
	return 1;
}

static void *
persist_main(void *arg)
{
	struct persist *p = arg;
	struct persist_job *j;
	struct persist_result r;
	struct timespec ts;
	uint64_t now, wake;
	char *cause;
	int rc;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		now = persist_now_ms();
		if ((j = persist_pick(p, now, &wake)) == NULL) {
			if (p->stopping && TAILQ_EMPTY(&p->jobs))
				break;
			if (persist_idle(p, now, &wake))
				continue;
			if (wake == 0)
				pthread_cond_wait(&p->cond, &p->lock);
			else {
				ts.tv_sec = (time_t)(wake / 1000);
				ts.tv_nsec = (long)(wake % 1000) * 1000000;
				pthread_cond_timedwait(&p->cond, &p->lock,
				    &ts);
			}
			continue;
		}
		if (j->kind == PERSIST_FLUSH) {
			TAILQ_REMOVE(&p->jobs, j, entry);
			memset(&r, 0, sizeof r);
			r.applied = -1;
			persist_report_locked(p, j, &r, NULL);
			persist_job_free(j);
			uv_async_send(&p->async);
			continue;
		}
		pthread_mutex_unlock(&p->lock);

		cause = NULL;
		rc = persist_run(p, j, &r, &cause);
		r.rc = rc;

		pthread_mutex_lock(&p->lock);
		if (j->kind != PERSIST_LOAD)
			p->wal_dirty = 1;
		j->attempts++;
		j->need_attempt = 0;
		if (rc != 0 && j->kind == PERSIST_SAVE &&
		    persist_transient(rc) && !p->stopping) {
			j->backoff_ms = j->backoff_ms == 0 ?
			    PERSIST_BACKOFF_FIRST : j->backoff_ms * 2;
			if (j->backoff_ms > PERSIST_BACKOFF_MAX)
				j->backoff_ms = PERSIST_BACKOFF_MAX;
			j->not_before = persist_now_ms() + j->backoff_ms;
			r.retrying = 1;
			persist_report_locked(p, j, &r, cause);
		} else {
			TAILQ_REMOVE(&p->jobs, j, entry);
			persist_report_locked(p, j, &r, cause);
			persist_job_free(j);
		}
		uv_async_send(&p->async);
		persist_after_job(p);
	}
	pthread_mutex_unlock(&p->lock);
	if (p->wal_dirty)
		persist_checkpoint(p, 1);
	return NULL;
}

static void
persist_close_cb(uv_handle_t *h)
{
	struct persist *p = h->data;

	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int
persist_create(struct uv_loop_s *loop, const char *dir,
    const struct store_options *opt, struct persist **out, char **cause)
{
	pthread_condattr_t ca;
	struct persist *p;
	sigset_t all, old;
	int rc;

	*out = NULL;
	if ((p = calloc(1, sizeof *p)) == NULL)
		return -ENOMEM;
	if ((rc = store_open(dir, opt, &p->store, cause)) != 0) {
		free(p);
		return rc;
	}
	store_wal_manual(p->store);	/* DESIGN 6 */
	p->loop = loop;
	TAILQ_INIT(&p->jobs);
	TAILQ_INIT(&p->reports);
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = uv_async_init(loop, &p->async, persist_async_cb)) != 0) {
		store_close(p->store);
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return rc;	/* libuv codes are negative errno values */
	}
	p->async.data = p;

	/* Signals are the loop's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&p->thread, NULL, persist_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		store_close(p->store);
		uv_close((uv_handle_t *)&p->async, persist_close_cb);
		return -rc;
	}
	*out = p;
	return 0;
}

/* Queue a job (loop thread); on -ESHUTDOWN the job is not taken. */
static int
persist_submit(struct persist *p, struct persist_job *j)
{
	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		return -ESHUTDOWN;
	}
	TAILQ_INSERT_TAIL(&p->jobs, j, entry);
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

int
persist_submit_save(struct persist *p, struct store_turn *t,
    persist_done_cb *cb, void *arg)
{
	struct persist_job *j;
	int rc;

	if (t == NULL || !store_id_valid(t->id))
		return -EINVAL;
	if ((j = calloc(1, sizeof *j)) == NULL)
		return -ENOMEM;
	j->kind = PERSIST_SAVE;
	memcpy(j->id, t->id, sizeof j->id);
	j->turn = t;
	j->cb = cb;
	j->arg = arg;
	if ((rc = persist_submit(p, j)) != 0) {
		j->turn = NULL;		/* still the caller's */
		persist_job_free(j);
	}
	return rc;
}

int
persist_submit_load(struct persist *p, const char *id,
    const struct store_kv_info *expect, store_kv_consumer *consume,
    void *ctx, persist_done_cb *cb, void *arg)
{
	struct persist_job *j;
	int rc;

	if (id == NULL || !store_id_valid(id) || consume == NULL)
		return -EINVAL;
	if ((j = calloc(1, sizeof *j)) == NULL)
		return -ENOMEM;
	j->kind = PERSIST_LOAD;
	memcpy(j->id, id, sizeof j->id);
	if (expect != NULL) {
		j->expect = *expect;
		j->has_expect = 1;
	}
	j->consume = consume;
	j->consume_ctx = ctx;
	j->cb = cb;
	j->arg = arg;
	if ((rc = persist_submit(p, j)) != 0)
		persist_job_free(j);
	return rc;
}

int
persist_submit_call(struct persist *p, const char *id, persist_call_fn *fn,
    void *fn_arg, persist_done_cb *cb, void *arg)
{
	struct persist_job *j;
	int rc;

	if (fn == NULL || (id != NULL && !store_id_valid(id)))
		return -EINVAL;
	if ((j = calloc(1, sizeof *j)) == NULL)
		return -ENOMEM;
	j->kind = PERSIST_CALL;
	if (id != NULL)
		memcpy(j->id, id, sizeof j->id);
	j->fn = fn;
	j->fn_arg = fn_arg;
	j->cb = cb;
	j->arg = arg;
	if ((rc = persist_submit(p, j)) != 0)
		persist_job_free(j);
	return rc;
}

int
persist_flush(struct persist *p, persist_done_cb *cb, void *arg)
{
	struct persist_job *j, *e;

	if ((j = calloc(1, sizeof *j)) == NULL)
		return -ENOMEM;
	j->kind = PERSIST_FLUSH;
	j->cb = cb;
	j->arg = arg;
	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		free(j);
		return -ESHUTDOWN;
	}
	TAILQ_FOREACH(e, &p->jobs, entry) {
		if (e->kind != PERSIST_FLUSH)
			e->need_attempt = 1;
	}
	TAILQ_INSERT_TAIL(&p->jobs, j, entry);
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

size_t
persist_pending(struct persist *p)
{
	struct persist_job *j;
	size_t n = 0;

	pthread_mutex_lock(&p->lock);
	TAILQ_FOREACH(j, &p->jobs, entry) {
		if (j->kind != PERSIST_FLUSH)
			n++;
	}
	pthread_mutex_unlock(&p->lock);
	return n;
}

void
persist_destroy(struct persist *p)
{
	struct persist_reports list = TAILQ_HEAD_INITIALIZER(list);

	if (p == NULL || p->destroyed)
		return;
	p->destroyed = 1;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);

	pthread_mutex_lock(&p->lock);
	TAILQ_CONCAT(&list, &p->reports, entry);
	pthread_mutex_unlock(&p->lock);
	persist_deliver(&list);

	store_close(p->store);
	p->store = NULL;
	uv_close((uv_handle_t *)&p->async, persist_close_cb);
}
