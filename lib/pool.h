/*
 * pool.h: a persistent pool of compute threads for the forward pass.
 *
 * The threads are created once and wait between jobs (spinning briefly,
 * then sleeping), so a decode step that runs hundreds of small parallel
 * loops creates no threads.  pool_run() runs fn on every thread, the
 * caller's included as thread 0, and returns when all have finished.
 * One pool serves one caller at a time; give each engine worker its own.
 */
#ifndef POOL_H
#define POOL_H

struct pool;

typedef void pool_fn(void *arg, int ith, int nth);

/* n_threads >= 1 (the caller counts as one).  Returns 0 or -errno. */
int	 pool_create(int n_threads, struct pool **out);
void	 pool_free(struct pool *p);
int	 pool_size(const struct pool *p);
void	 pool_run(struct pool *p, pool_fn *fn, void *arg);

/* Split [0, n) evenly: the range thread ith of nth should take. */
static inline void
pool_split(long n, int ith, int nth, long *lo, long *hi)
{
	long per = (n + nth - 1) / nth;

	*lo = per * ith;
	if (*lo > n)
		*lo = n;
	*hi = *lo + per;
	if (*hi > n)
		*hi = n;
}

#endif /* POOL_H */
