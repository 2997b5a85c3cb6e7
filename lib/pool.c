/*
 * pool.c: persistent compute threads for the forward pass.
 *
 * DESIGN
 *
 * 1. Threads 1..n-1 are created once.  The caller of pool_run() is thread
 *    0, so a pool of one thread creates nothing and runs inline.
 * 2. A job is published by storing fn/arg and then bumping `gen` with
 *    release order; a worker that sees a new generation (acquire) reads
 *    fn/arg.  Workers spin briefly on `gen` (a decode step runs hundreds
 *    of short jobs back to back) and then sleep on `wake`.
 * 3. `pending` counts workers still running the current job; the last one
 *    to finish signals `done` if the caller went to sleep.  The caller does
 *    not return before pending reaches zero, so fn/arg stay valid for the
 *    whole job.
 *
 * Lock order: only `mu` exists.  Thread ownership: the struct is written by
 * the caller of pool_run() only while no job runs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define pool_relax() _mm_pause()
#else
#define pool_relax() do { } while (0)
#endif

#include "pool.h"

#define POOL_SPIN 20000		/* pause iterations before sleeping */

struct pool_worker {
	struct pool	*pool;
	int		 ith;
	pthread_t	 thread;
};

struct pool {
	int			 n;
	struct pool_worker	*workers;	/* n - 1 */
	pthread_mutex_t		 mu;
	pthread_cond_t		 wake;
	pthread_cond_t		 done;
	atomic_uint_fast64_t	 gen;
	atomic_int		 pending;
	atomic_int		 caller_sleeping;
	int			 stop;
	pool_fn			*fn;
	void			*arg;
};

static void *
pool_worker_main(void *p)
{
	struct pool_worker *w = p;
	struct pool *pool = w->pool;
	uint64_t seen = 0, g;
	int i;

	for (;;) {
		for (i = 0; i < POOL_SPIN; i++) {
			g = atomic_load_explicit(&pool->gen,
			    memory_order_acquire);
			if (g != seen)
				break;
			pool_relax();
		}
		if (i == POOL_SPIN) {
			pthread_mutex_lock(&pool->mu);
			while ((g = atomic_load_explicit(&pool->gen,
			    memory_order_acquire)) == seen && !pool->stop)
				pthread_cond_wait(&pool->wake, &pool->mu);
			pthread_mutex_unlock(&pool->mu);
		}
		seen = g;
		if (pool->stop)
			break;
		pool->fn(pool->arg, w->ith, pool->n);
		if (atomic_fetch_sub(&pool->pending, 1) == 1 &&
		    atomic_load(&pool->caller_sleeping)) {
			pthread_mutex_lock(&pool->mu);
			pthread_cond_signal(&pool->done);
			pthread_mutex_unlock(&pool->mu);
		}
	}
	return NULL;
}

int
pool_create(int n_threads, struct pool **out)
{
	struct pool *p;
	int i, rc;

	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return -EINVAL;
	if ((p = calloc(1, sizeof *p)) == NULL)
		return -ENOMEM;
	p->n = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	atomic_init(&p->gen, 0);
	atomic_init(&p->pending, 0);
	atomic_init(&p->caller_sleeping, 0);
	if (n_threads > 1) {
		p->workers = calloc(n_threads - 1, sizeof *p->workers);
		if (p->workers == NULL) {
			pool_free(p);
			return -ENOMEM;
		}
	}
	for (i = 1; i < n_threads; i++) {
		struct pool_worker *w = &p->workers[i - 1];

		w->pool = p;
		w->ith = i;
		if ((rc = pthread_create(&w->thread, NULL, pool_worker_main,
		    w)) != 0) {
			p->n = i;	/* only join what started */
			pool_free(p);
			return -rc;
		}
	}
	*out = p;
	return 0;
}

void
pool_free(struct pool *p)
{
	int i;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (i = 1; i < p->n; i++)
		pthread_join(p->workers[i - 1].thread, NULL);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->mu);
	free(p->workers);
	free(p);
}

int
pool_size(const struct pool *p)
{
	return p->n;
}

void
pool_run(struct pool *p, pool_fn *fn, void *arg)
{
	int i;

	if (p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
	pthread_mutex_lock(&p->mu);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);

	fn(arg, 0, p->n);

	for (i = 0; i < POOL_SPIN; i++) {
		if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
			return;
		pool_relax();
	}
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->caller_sleeping, 1);
	while (atomic_load(&p->pending) != 0)
		pthread_cond_wait(&p->done, &p->mu);
	atomic_store(&p->caller_sleeping, 0);
	pthread_mutex_unlock(&p->mu);
}
