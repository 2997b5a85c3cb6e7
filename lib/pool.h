/*
 * pool.h: a persistent pool of compute threads for the forward pass.
 *
 * The threads are created once and wait between jobs (spinning briefly,
 * then sleeping), so a decode step that runs hundreds of small parallel
 * loops creates no threads.  A job is a number of independent items;
 * pool_run() hands them out one at a time to whichever threads are
 * running, the caller's included, and returns when every item is done.
 * A worker that the kernel has not scheduled yet simply finds nothing left
 * to do: no job ever waits for a thread to wake up, so a busy machine
 * slows a step down gracefully instead of costing a time slice per job.
 * One pool serves one caller at a time; give each engine worker its own.
 */
#ifndef POOL_H
#define POOL_H

struct pool;

/* Run item `item` of a job; ith identifies the thread (0 = the caller,
 * < pool_size()), for per-thread scratch. */
typedef void pool_fn(void *arg, long item, int ith);

/* n_threads >= 1 (the caller counts as one).  Returns 0 or -errno. */
int	 pool_create(int n_threads, struct pool **out);
void	 pool_free(struct pool *p);
int	 pool_size(const struct pool *p);
/* Run items 0 .. n_items-1 of fn, in any order, on any threads. */
void	 pool_run(struct pool *p, pool_fn *fn, void *arg, long n_items);

#endif /* POOL_H */
