/*
 * sched.c: what goes into each batched step (continuous batching policy).
 *
 * The engine worker calls sched_plan() before every forward pass with the
 * sequences it holds, in arrival order, and a token budget; the plan says
 * how many tokens each sequence feeds in this step.  The function is pure
 * (no locks, no model), so the policy can be read and tested on its own.
 *
 * DESIGN
 * 1. Decode first: every sequence that is generating feeds its one pending
 *    token, so a long pasted prompt never freezes the other chats.
 * 2. Prefill is never starved either: while any sequence has prompt tokens
 *    waiting, a quarter of the budget (at least one token) is kept for
 *    prefill.  When there are more generating sequences than the rest of
 *    the budget, they take turns: the starting point rotates (*rr).
 * 3. Prefill goes oldest first, each taking as much of what is left as it
 *    needs, so the first prompt in finishes first (lowest mean time to
 *    first token) and every prompt is eventually at the head of the queue.
 * 4. A paused sequence (its client is not reading) takes nothing.
 */
#include <stdint.h>

#include "mistrald.h"

/*
 * Plan one step over n sequences: take[i] receives the tokens sequence i
 * feeds (0 when it sits this step out).  Returns the total, <= budget.
 */
int
sched_plan(const struct sched_seq *seqs, int n, int budget, unsigned *rr,
    int32_t *take)
{
	int n_dec = 0, n_pre = 0, reserve = 0, dec_slots, left, used = 0;
	int64_t pending_total = 0;
	unsigned start;

	for (int i = 0; i < n; i++) {
		take[i] = 0;
		if (seqs[i].paused)
			continue;
		if (seqs[i].decoding)
			n_dec++;
		else if (seqs[i].pending > 0) {
			n_pre++;
			pending_total += seqs[i].pending;
		}
	}
	if (budget < 1 || (n_dec == 0 && n_pre == 0))
		return 0;

	if (n_pre > 0) {
		reserve = budget / 4 > 0 ? budget / 4 : 1;
		if (reserve > pending_total)
			reserve = (int)pending_total;
		/* With a budget of one token, alternate between the two. */
		if (reserve >= budget && n_dec > 0)
			reserve = (*rr & 1) ? budget : 0;
	}
	dec_slots = budget - reserve;
	if (dec_slots > n_dec)
		dec_slots = n_dec;

	/* Decode: dec_slots sequences, starting at the rotating point. */
	if (dec_slots > 0) {
		int seen = 0, taken = 0;

		start = n_dec > 0 ? *rr % (unsigned)n_dec : 0;
		for (int i = 0; i < n && taken < dec_slots; i++) {
			if (seqs[i].paused || !seqs[i].decoding)
				continue;
			if ((unsigned)seen++ < start)
				continue;
			take[i] = 1;
			taken++;
		}
		for (int i = 0; i < n && taken < dec_slots; i++) {
			if (seqs[i].paused || !seqs[i].decoding || take[i])
				continue;
			take[i] = 1;
			taken++;
		}
		used = taken;
	}
	if (n_dec > dec_slots)
		*rr += (unsigned)dec_slots;
	else
		(*rr)++;

	/* Prefill: oldest first with whatever budget is left. */
	left = budget - used;
	for (int i = 0; i < n && left > 0; i++) {
		int64_t want;

		if (seqs[i].paused || seqs[i].decoding || seqs[i].pending <= 0)
			continue;
		want = seqs[i].pending < left ? seqs[i].pending : left;
		take[i] = (int32_t)want;
		left -= (int)want;
		used += (int)want;
	}
	return used;
}
