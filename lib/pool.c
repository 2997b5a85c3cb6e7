/*
 * pool.c: persistent compute threads for the forward pass.
 *
 * DESIGN
 *
 * 1. Threads 1..n-1 are created once.  The caller of pool_run() is thread
 *    0 and works on the job too, so a pool of one thread creates nothing.
 * 2. One 64-bit word, `state`, describes the current job:
 *
 *	bits 63..17	generation (bumped for every job)
 *	bit 16		closed: no new thread may join this job
 *	bits 15..0	active: threads working on this job
 *
 *    pool_run() stores fn/arg/items, then publishes a new generation with
 *    closed and active clear (release), and wakes sleeping workers.
 * 3. A worker that sees a new generation joins it with a compare-and-swap
 *    that increments `active` only if the generation is still the same and
 *    the job is not closed; then it takes items from `next` until none are
 *    left, and decrements `active`.  A worker that wakes too late fails the
 *    CAS and touches nothing of the (possibly finished) job.
 * 4. The caller takes items too; when none are left it sets `closed` and
 *    waits for `active` to reach zero: only threads that joined, each
 *    finishing the item it holds, can delay it.  Then every item is done,
 *    and the next job may reuse the fields.
 *
 * Lock order: only `mu` exists, and it only guards sleeping.  The job fields
 * are written by the caller of pool_run() while no thread is active.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
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

#define POOL_SPIN	20000	/* pause iterations before sleeping */
#define POOL_GEN_SHIFT	17
#define POOL_CLOSED	((uint64_t)1 << 16)
#define POOL_ACTIVE	((uint64_t)0xffff)

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
	atomic_uint_fast64_t	 state;
	atomic_long		 next;		/* next item to hand out */
	int			 stop;
	pool_fn			*fn;
	void			*arg;
	long			 n_items;
};

static void
pool_work(struct pool *p, int ith)
{
	long item;

	while ((item = atomic_fetch_add(&p->next, 1)) < p->n_items)
		p->fn(p->arg, item, ith);
}

/* Join the job of generation gen, if it is still open. */
static int
pool_join(struct pool *p, uint64_t gen)
{
	uint64_t s = atomic_load(&p->state);

	while ((s >> POOL_GEN_SHIFT) == gen && (s & POOL_CLOSED) == 0)
		if (atomic_compare_exchange_weak(&p->state, &s, s + 1))
			return 1;
	return 0;
}

static void *
pool_worker_main(void *arg)
{
	struct pool_worker *w = arg;
	struct pool *p = w->pool;
	uint64_t seen = 0, gen;
	int i;

	for (;;) {
		for (i = 0; i < POOL_SPIN; i++) {
			gen = atomic_load(&p->state) >> POOL_GEN_SHIFT;
			if (gen != seen)
				break;
			pool_relax();
		}
		if (i == POOL_SPIN) {
			pthread_mutex_lock(&p->mu);
			while ((gen = atomic_load(&p->state) >>
			    POOL_GEN_SHIFT) == seen && !p->stop)
				pthread_cond_wait(&p->wake, &p->mu);
			pthread_mutex_unlock(&p->mu);
		}
		seen = gen;
		if (p->stop)
			break;
		if (pool_join(p, gen)) {
			pool_work(p, w->ith);
			atomic_fetch_sub(&p->state, 1);
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
	atomic_init(&p->state, 0);
	atomic_init(&p->next, 0);
	if (n_threads > 1 &&
	    (p->workers = calloc(n_threads - 1, sizeof *p->workers)) == NULL) {
		pool_free(p);
		return -ENOMEM;
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
	atomic_fetch_add(&p->state, (uint64_t)1 << POOL_GEN_SHIFT);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (i = 1; i < p->n; i++)
		pthread_join(p->workers[i - 1].thread, NULL);
	pthread_cond_destroy(&p->wake);
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
pool_run(struct pool *p, pool_fn *fn, void *arg, long n_items)
{
	uint64_t gen;
	long i;

	if (n_items <= 0)
		return;
	if (p->n == 1 || n_items == 1) {
		for (i = 0; i < n_items; i++)
			fn(arg, i, 0);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	p->n_items = n_items;
	atomic_store(&p->next, 0);
	gen = (atomic_load(&p->state) >> POOL_GEN_SHIFT) + 1;
	atomic_store(&p->state, gen << POOL_GEN_SHIFT);
	pthread_mutex_lock(&p->mu);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);

	pool_work(p, 0);

	/* Wait for the threads that joined to finish the item each holds;
	 * yield rather than spin if one of them has been preempted. */
	atomic_fetch_or(&p->state, POOL_CLOSED);
	for (i = 0; (atomic_load(&p->state) & POOL_ACTIVE) != 0; i++) {
		if (i < POOL_SPIN)
			pool_relax();
		else
			sched_yield();
	}
}
