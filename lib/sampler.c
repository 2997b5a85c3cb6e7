/*
 * sampler.c: choosing the next token from a row of logits.
 *
 * A sampler is per-sequence state: the parameters, a 256-bit RNG and the
 * window of recently accepted tokens for the repetition penalty.  It owns
 * all the scratch it needs (allocated once in sampler_create), so choosing
 * a token never allocates.
 *
 * DESIGN
 *
 * 1. temperature <= 0 is greedy: the plain argmax of the logits, ties going
 *    to the lowest id.  No other parameter applies and the RNG is not used,
 *    so greedy output depends on the logits alone.
 *
 * 2. Otherwise the steps are, in this order (each one optional):
 *      a. repetition penalty: every distinct id in the window (the last
 *         repeat_last_n accepted tokens) has its logit divided by the
 *         penalty when positive and multiplied by it otherwise, once
 *         however often the id occurs (llama.cpp's rule);
 *      b. top-k: keep the k largest logits;
 *      c. temperature and softmax: p_i = exp((l_i - l_max) / T), summed
 *         to Z (the division is done on differences, never on the logits,
 *         so a large logit cannot overflow to infinity);
 *      d. top-p: keep the smallest prefix of the candidates, in descending
 *         order of probability, whose probability sums to >= top_p;
 *      e. min-p: keep the tokens whose probability is >= min_p times the
 *         largest one;
 *      f. draw from what is left, renormalised.
 *    Logits of -inf are never candidates.  Ties are broken everywhere by
 *    the total order "larger value first, then lower id", so the outcome
 *    never depends on the order in which a selection algorithm met them.
 *
 * 3. Top-p and min-p are both evaluated on the probabilities after step c,
 *    so each keeps a prefix of the same descending order and the result is
 *    the shorter prefix.  The code therefore applies min-p first (one
 *    linear pass, no sorting) and then top-p on the survivors, still
 *    measuring cumulative probability against Z; that gives exactly the
 *    set the order above defines, and top-p only looks at what min-p left.
 *
 * 4. No O(V log V) sort per token: top-k is a heap selection straight from
 *    the logits (O(V log k), no copy of the row); top-p without top-k is a
 *    quickselect weighted by probability that moves the nucleus to the
 *    front in expected O(V), sorting only the last few candidates; min-p
 *    is one linear pass.
 *
 * 5. The draw: u = (x >> 11) * 2^-53, x the next output of xoshiro256**,
 *    scaled by the kept mass; the first candidate in the current order
 *    (descending after top-k, by id when nothing reordered them, the
 *    quickselect's order after top-p: always the same for the same input)
 *    whose running sum exceeds u wins.  The RNG state is seeded from the
 *    64-bit seed by four successive splitmix64 outputs, as the xoshiro
 *    authors recommend.
 *
 * 6. The penalty window holds exactly the last min(accepted, repeat_last_n)
 *    ids, at most SAMPLER_MAX_LAST_N.  Lowering repeat_last_n drops the
 *    oldest; raising it does not bring back ids already dropped.  So the
 *    window, the parameters and the RNG are the whole state, and
 *    sampler_save() captures it exactly.
 *
 * 7. A penalty never turns a finite logit into an infinite one (it is
 *    clamped to +-FLT_MAX), so a row with a finite logit always leaves at
 *    least one candidate; -inf logits stay -inf.
 *
 * Parameters are sanitised when set (NaN temperature means greedy, a
 * non-positive penalty means off, ...); sampler_params() returns the values
 * in effect.
 *
 * Serialised form (version 1), all integers little-endian, floats as the
 * bits of IEEE-754 binary32:
 *
 *	offset	size	field
 *	0	4	magic "MSMP"
 *	4	4	u32 version (1)
 *	8	4	u32 n_vocab (must equal the loading sampler's)
 *	12	4	f32 temperature
 *	16	4	i32 top_k
 *	20	4	f32 top_p
 *	24	4	f32 min_p
 *	28	4	f32 repeat_penalty
 *	32	4	i32 repeat_last_n
 *	36	8	u64 seed
 *	44	32	u64 RNG state s[0..3]
 *	76	4	u32 n, the number of ids in the window
 *	80	4n	u32 ids, oldest first
 *	80+4n	4	u32 FNV-1a hash of all the bytes before it
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

#define SAMPLER_MAX_LAST_N	8192	/* longest penalty window */
#define SAMPLER_SMALL		32	/* top-p sorts up to this many */
#define SAMPLER_MAX_ROUNDS	64	/* top-p partitions before sorting */
#define SAMPLER_VERSION		1
#define SAMPLER_HEADER_SIZE	80	/* bytes before the window ids */

struct sampler_cand {
	float		 v;	/* logit, then unnormalised probability */
	int32_t		 id;
};

struct sampler {
	struct sampler_params p;
	int32_t		 n_vocab;
	uint64_t	 rng[4];	/* xoshiro256** state */
	int32_t		*window;	/* (SAMPLER_MAX_LAST_N) ring */
	int32_t		 win_start;	/* index of the oldest id */
	int32_t		 win_n;		/* ids held */
	struct sampler_cand *cand;	/* (n_vocab) scratch */
	uint8_t		*seen;		/* (n_vocab / 8 + 1) bits, all clear
					   between calls */
};

static uint64_t
sampler_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t
sampler_splitmix64(uint64_t *x)
{
	uint64_t z;

	z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void
sampler_seed(struct sampler *s, uint64_t seed)
{
	uint64_t x = seed;
	int i;

	for (i = 0; i < 4; i++)
		s->rng[i] = sampler_splitmix64(&x);
}

static uint64_t
sampler_next(struct sampler *s)
{
	uint64_t *r = s->rng;
	uint64_t out, t;

	out = sampler_rotl(r[1] * 5, 7) * 9;
	t = r[1] << 17;
	r[2] ^= r[0];
	r[3] ^= r[1];
	r[1] ^= r[2];
	r[0] ^= r[3];
	r[2] ^= t;
	r[3] = sampler_rotl(r[3], 45);
	return out;
}

/* A uniform double in [0, 1) with 53 random bits. */
static double
sampler_uniform(struct sampler *s)
{
	return (double)(sampler_next(s) >> 11) * 0x1.0p-53;
}

/* Bring parameters into their documented ranges; see the banner. */
static void
sampler_sanitise(struct sampler_params *p)
{
	if (isnan(p->temperature))
		p->temperature = 0.0f;
	if (p->top_k < 0)
		p->top_k = 0;
	if (isnan(p->top_p) || p->top_p > 1.0f)
		p->top_p = 1.0f;
	if (p->top_p < 0.0f)
		p->top_p = 0.0f;
	if (isnan(p->min_p) || p->min_p < 0.0f)
		p->min_p = 0.0f;
	if (p->min_p > 1.0f)
		p->min_p = 1.0f;
	if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
		p->repeat_penalty = 1.0f;
	if (p->repeat_last_n < 0)
		p->repeat_last_n = 0;
	if (p->repeat_last_n > SAMPLER_MAX_LAST_N)
		p->repeat_last_n = SAMPLER_MAX_LAST_N;
}

void
sampler_params_default(struct sampler_params *p)
{
	p->temperature = 0.8f;
	p->top_k = 40;
	p->top_p = 0.95f;
	p->min_p = 0.05f;
	p->repeat_penalty = 1.1f;
	p->repeat_last_n = 64;
	p->seed = 0;
}

/* Drop the oldest ids until the window fits repeat_last_n. */
static void
sampler_trim_window(struct sampler *s)
{
	int32_t excess = s->win_n - s->p.repeat_last_n;

	if (excess > 0) {
		s->win_start = (s->win_start + excess) % SAMPLER_MAX_LAST_N;
		s->win_n -= excess;
	}
}

/* p NULL means the defaults.  Returns NULL if n_vocab is not positive. */
struct sampler *
sampler_create(const struct sampler_params *p, int32_t n_vocab)
{
	struct sampler *s;

	if (n_vocab <= 0)
		return NULL;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return NULL;
	s->n_vocab = n_vocab;
	s->window = calloc(SAMPLER_MAX_LAST_N, sizeof *s->window);
	s->cand = calloc((size_t)n_vocab, sizeof *s->cand);
	s->seen = calloc((size_t)n_vocab / 8 + 1, 1);
	if (s->window == NULL || s->cand == NULL || s->seen == NULL)
		goto fail;
	if (p != NULL)
		s->p = *p;
	else
		sampler_params_default(&s->p);
	sampler_sanitise(&s->p);
	sampler_seed(s, s->p.seed);
	return s;

fail:
	sampler_free(s);
	return NULL;
}

void
sampler_free(struct sampler *s)
{
	if (s == NULL)
		return;
	free(s->window);
	free(s->cand);
	free(s->seen);
	free(s);
}

void
sampler_set_params(struct sampler *s, const struct sampler_params *p,
    int reseed)
{
	if (s == NULL || p == NULL)
		return;
	s->p = *p;
	sampler_sanitise(&s->p);
	sampler_trim_window(s);
	if (reseed)
		sampler_seed(s, s->p.seed);
}

const struct sampler_params *
sampler_params(const struct sampler *s)
{
	return &s->p;
}

/* Ids outside the vocabulary are ignored (they cannot be penalised). */
void
sampler_accept(struct sampler *s, int32_t id)
{
	if (id < 0 || id >= s->n_vocab || s->p.repeat_last_n == 0)
		return;
	s->window[(s->win_start + s->win_n) % SAMPLER_MAX_LAST_N] = id;
	if (s->win_n < s->p.repeat_last_n)
		s->win_n++;
	else
		s->win_start = (s->win_start + 1) % SAMPLER_MAX_LAST_N;
}

void
sampler_reset(struct sampler *s)
{
	s->win_start = 0;
	s->win_n = 0;
	sampler_seed(s, s->p.seed);
}

/* Step a: penalise each distinct id of the window once. */
static void
sampler_penalise(struct sampler *s, float *logits)
{
	float pen = s->p.repeat_penalty, x, y;
	int32_t i, id;

	for (i = 0; i < s->win_n; i++) {
		id = s->window[(s->win_start + i) % SAMPLER_MAX_LAST_N];
		if (s->seen[id >> 3] & (1u << (id & 7)))
			continue;
		s->seen[id >> 3] |= (uint8_t)(1u << (id & 7));
		x = logits[id];
		y = x > 0.0f ? x / pen : x * pen;
		if (isinf(y) && !isinf(x))	/* see DESIGN 7 */
			y = y > 0.0f ? FLT_MAX : -FLT_MAX;
		logits[id] = y;
	}
	for (i = 0; i < s->win_n; i++) {
		id = s->window[(s->win_start + i) % SAMPLER_MAX_LAST_N];
		s->seen[id >> 3] = 0;
	}
}

/* The total order used for every selection: larger value, then lower id. */
static int
sampler_better(const struct sampler_cand *a, const struct sampler_cand *b)
{
	return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static void
sampler_swap(struct sampler_cand *a, struct sampler_cand *b)
{
	struct sampler_cand t = *a;

	*a = *b;
	*b = t;
}

/* Heap with the worst candidate at the root. */
static void
sampler_sift_down(struct sampler_cand *h, size_t n, size_t i)
{
	size_t l, r, w;

	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		w = i;
		if (l < n && sampler_better(&h[w], &h[l]))
			w = l;
		if (r < n && sampler_better(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		sampler_swap(&h[i], &h[w]);
		i = w;
	}
}

static void
sampler_heapify(struct sampler_cand *h, size_t k)
{
	size_t i;

	for (i = k / 2; i-- > 0;)
		sampler_sift_down(h, k, i);
}

/* Sort a heap of k candidates into descending order. */
static void
sampler_heap_sort(struct sampler_cand *h, size_t k)
{
	size_t i;

	for (i = k; i-- > 1;) {
		sampler_swap(&h[0], &h[i]);
		sampler_sift_down(h, i, 0);
	}
}

/*
 * Permute c[0..n) so that c[0..k) holds its k best candidates in
 * descending order (k <= n).  O(n log k).
 */
static void
sampler_select(struct sampler_cand *c, size_t n, size_t k)
{
	size_t i;

	sampler_heapify(c, k);
	for (i = k; i < n; i++) {
		if (sampler_better(&c[i], &c[0])) {
			sampler_swap(&c[i], &c[0]);
			sampler_sift_down(c, k, 0);
		}
	}
	sampler_heap_sort(c, k);
}

/* Move the median of c[a], c[b], c[z] (in the total order) to c[z]. */
static void
sampler_median3(struct sampler_cand *c, size_t a, size_t b, size_t z)
{
	size_t m;

	if (sampler_better(&c[a], &c[b]))
		m = sampler_better(&c[b], &c[z]) ? b :
		    sampler_better(&c[a], &c[z]) ? z : a;
	else
		m = sampler_better(&c[a], &c[z]) ? a :
		    sampler_better(&c[b], &c[z]) ? z : b;
	sampler_swap(&c[m], &c[z]);
}

/*
 * Step d on n >= 1 candidates holding unnormalised probabilities whose sum
 * before min-p was z_all (see DESIGN 3).  Returns m, the kept set being
 * c[0..m).  Sorted input is scanned.  Otherwise (DESIGN 4) a quickselect
 * weighted by probability moves the nucleus to the front: partition around
 * a median-of-three pivot, keep the better side whole if it does not reach
 * the target or else narrow to it, until SAMPLER_SMALL candidates remain,
 * which are sorted and scanned.  Expected O(n); after too many rounds (a
 * pathological input) the remainder is heap-sorted, so O(n log n) at worst.
 */
static size_t
sampler_top_p(struct sampler_cand *c, size_t n, int sorted, double z_all,
    float top_p)
{
	double target = (double)top_p * z_all, acc, sum;
	struct sampler_cand piv;
	size_t lo, hi, i, j, rounds;

	if (!(target > 0.0)) {
		if (!sorted)
			sampler_select(c, n, 1);
		return 1;
	}
	acc = 0.0;
	for (i = 0; i < n; i++)
		acc += c[i].v;
	if (acc < target)
		return n;	/* the survivors never reach top_p */

	/* c[0..lo) is kept, with mass acc; the boundary is in [lo, hi). */
	lo = 0;
	hi = n;
	acc = 0.0;
	for (rounds = 0; !sorted && hi - lo > SAMPLER_SMALL &&
	    rounds < SAMPLER_MAX_ROUNDS; rounds++) {
		sampler_median3(c, lo, lo + (hi - lo) / 2, hi - 1);
		piv = c[hi - 1];
		sum = 0.0;
		for (i = j = lo; j < hi - 1; j++) {
			if (sampler_better(&c[j], &piv)) {
				sum += c[j].v;
				sampler_swap(&c[i++], &c[j]);
			}
		}
		sampler_swap(&c[i], &c[hi - 1]);
		if (acc + sum >= target) {
			hi = i;		/* never empty: acc < target */
		} else {
			acc += sum + c[i].v;
			lo = i + 1;
			if (acc >= target)
				return lo;
		}
	}
	if (!sorted)
		sampler_select(c + lo, hi - lo, hi - lo);
	for (i = lo; i < hi; i++) {
		acc += c[i].v;
		if (acc >= target)
			return i + 1;
	}
	return hi;	/* rounding: keep everything left */
}

int32_t
sampler_sample(struct sampler *s, float *logits)
{
	struct sampler_cand *c;
	double z, u, cum;
	float x, d, vmax, inv_t, thr;
	int32_t i, k, best;
	size_t n, keep;
	int sorted, bad;

	if (s == NULL || logits == NULL)
		return -EINVAL;
	/* NaN and +inf fail x <= FLT_MAX; -inf is allowed (a masked id). */
	best = -1;
	bad = 0;
	vmax = -INFINITY;
	for (i = 0; i < s->n_vocab; i++) {
		x = logits[i];
		bad |= !(x <= FLT_MAX);
		if (x > vmax) {
			vmax = x;
			best = i;
		}
	}
	if (bad || best < 0)
		return -EDOM;
	if (!(s->p.temperature > 0.0f))
		return best;

	/* Step a keeps finite logits finite, so c[] is never empty. */
	if (s->p.repeat_penalty != 1.0f && s->win_n > 0)
		sampler_penalise(s, logits);

	/* Step b, straight from the logits; or every finite logit. */
	c = s->cand;
	k = s->p.top_k;
	if (k > 0 && k < s->n_vocab) {
		for (i = 0; i < k; i++) {
			c[i].v = logits[i];
			c[i].id = i;
		}
		sampler_heapify(c, (size_t)k);
		for (; i < s->n_vocab; i++) {
			if (logits[i] > c[0].v) {	/* ties: lower id */
				c[0].v = logits[i];
				c[0].id = i;
				sampler_sift_down(c, (size_t)k, 0);
			}
		}
		sampler_heap_sort(c, (size_t)k);
		n = (size_t)k;
		while (c[n - 1].v == -INFINITY)
			n--;
		sorted = 1;
	} else {
		n = 0;
		for (i = 0; i < s->n_vocab; i++) {
			if (logits[i] == -INFINITY)
				continue;
			c[n].v = logits[i];
			c[n].id = i;
			n++;
		}
		sorted = 0;
	}
	vmax = -INFINITY;
	for (keep = 0; keep < n; keep++)
		if (c[keep].v > vmax)
			vmax = c[keep].v;

	/*
	 * Step c.  The maximum becomes exactly 1.  An extreme temperature
	 * can turn d * inv_t into 0 * inf or inf * 0: the maximum is then
	 * still 1, and a NaN (an infinitely unlikely token) becomes 0.
	 */
	inv_t = 1.0f / s->p.temperature;
	z = 0.0;
	for (keep = 0; keep < n; keep++) {
		d = c[keep].v - vmax;
		if (d == 0.0f) {
			c[keep].v = 1.0f;
		} else {
			d *= inv_t;
			c[keep].v = isnan(d) ? 0.0f : expf(d);
		}
		z += c[keep].v;
	}

	/* Step e before d: see DESIGN 3.  Stable, so sorted stays sorted. */
	if (s->p.min_p > 0.0f) {
		thr = s->p.min_p;
		keep = 0;
		for (i = 0; (size_t)i < n; i++)
			if (c[i].v >= thr)
				c[keep++] = c[i];
		n = keep;
	}
	if (s->p.top_p < 1.0f)
		n = sampler_top_p(c, n, sorted, z, s->p.top_p);

	/* Step f. */
	z = 0.0;
	for (keep = 0; keep < n; keep++)
		z += c[keep].v;
	u = sampler_uniform(s) * z;
	cum = 0.0;
	for (keep = 0; keep + 1 < n; keep++) {
		cum += c[keep].v;
		if (u < cum)
			break;
	}
	return c[keep].id;
}

static void
sampler_put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void
sampler_put64(unsigned char *p, uint64_t v)
{
	sampler_put32(p, (uint32_t)v);
	sampler_put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t
sampler_get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
sampler_get64(const unsigned char *p)
{
	return (uint64_t)sampler_get32(p) |
	    (uint64_t)sampler_get32(p + 4) << 32;
}

static uint32_t
sampler_f2u(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

static float
sampler_u2f(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

static uint32_t
sampler_fnv1a(const unsigned char *p, size_t n)
{
	uint32_t h = 2166136261u;

	while (n-- > 0) {
		h ^= *p++;
		h *= 16777619u;
	}
	return h;
}

size_t
sampler_save(const struct sampler *s, void *buf, size_t cap)
{
	size_t need = SAMPLER_HEADER_SIZE + 4 * (size_t)s->win_n + 4;
	unsigned char *p = buf;
	int32_t i, id;

	if (buf == NULL || cap < need)
		return need;
	memcpy(p, "MSMP", 4);
	sampler_put32(p + 4, SAMPLER_VERSION);
	sampler_put32(p + 8, (uint32_t)s->n_vocab);
	sampler_put32(p + 12, sampler_f2u(s->p.temperature));
	sampler_put32(p + 16, (uint32_t)s->p.top_k);
	sampler_put32(p + 20, sampler_f2u(s->p.top_p));
	sampler_put32(p + 24, sampler_f2u(s->p.min_p));
	sampler_put32(p + 28, sampler_f2u(s->p.repeat_penalty));
	sampler_put32(p + 32, (uint32_t)s->p.repeat_last_n);
	sampler_put64(p + 36, s->p.seed);
	for (i = 0; i < 4; i++)
		sampler_put64(p + 44 + 8 * i, s->rng[i]);
	sampler_put32(p + 76, (uint32_t)s->win_n);
	for (i = 0; i < s->win_n; i++) {
		id = s->window[(s->win_start + i) % SAMPLER_MAX_LAST_N];
		sampler_put32(p + SAMPLER_HEADER_SIZE + 4 * (size_t)i,
		    (uint32_t)id);
	}
	sampler_put32(p + need - 4, sampler_fnv1a(p, need - 4));
	return need;
}

/*
 * Everything is checked before anything is changed: on -EINVAL the sampler
 * is exactly as it was.
 */
int
sampler_load(struct sampler *s, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	struct sampler_params np, chk;
	uint64_t rng[4];
	uint32_t n, id;
	size_t need;
	int i;

	if (s == NULL || buf == NULL || len < SAMPLER_HEADER_SIZE + 4)
		return -EINVAL;
	if (memcmp(p, "MSMP", 4) != 0 ||
	    sampler_get32(p + 4) != SAMPLER_VERSION ||
	    sampler_get32(p + 8) != (uint32_t)s->n_vocab)
		return -EINVAL;
	n = sampler_get32(p + 76);
	if (n > SAMPLER_MAX_LAST_N)
		return -EINVAL;
	need = SAMPLER_HEADER_SIZE + 4 * (size_t)n + 4;
	if (len != need || sampler_get32(p + need - 4) != sampler_fnv1a(p,
	    need - 4))
		return -EINVAL;

	np.temperature = sampler_u2f(sampler_get32(p + 12));
	np.top_k = (int32_t)sampler_get32(p + 16);
	np.top_p = sampler_u2f(sampler_get32(p + 20));
	np.min_p = sampler_u2f(sampler_get32(p + 24));
	np.repeat_penalty = sampler_u2f(sampler_get32(p + 28));
	np.repeat_last_n = (int32_t)sampler_get32(p + 32);
	np.seed = sampler_get64(p + 36);
	/* A saver only ever writes sanitised values. */
	chk = np;
	sampler_sanitise(&chk);
	if (sampler_f2u(chk.temperature) != sampler_f2u(np.temperature) ||
	    chk.top_k != np.top_k ||
	    sampler_f2u(chk.top_p) != sampler_f2u(np.top_p) ||
	    sampler_f2u(chk.min_p) != sampler_f2u(np.min_p) ||
	    sampler_f2u(chk.repeat_penalty) != sampler_f2u(np.repeat_penalty) ||
	    chk.repeat_last_n != np.repeat_last_n)
		return -EINVAL;
	if (n > (uint32_t)np.repeat_last_n)
		return -EINVAL;
	for (i = 0; i < 4; i++)
		rng[i] = sampler_get64(p + 44 + 8 * i);
	if ((rng[0] | rng[1] | rng[2] | rng[3]) == 0)
		return -EINVAL;	/* xoshiro's one forbidden state */
	for (i = 0; (uint32_t)i < n; i++) {
		id = sampler_get32(p + SAMPLER_HEADER_SIZE + 4 * (size_t)i);
		if (id >= (uint32_t)s->n_vocab)
			return -EINVAL;
	}

	s->p = np;
	memcpy(s->rng, rng, sizeof rng);
	s->win_start = 0;
	s->win_n = (int32_t)n;
	for (i = 0; (uint32_t)i < n; i++)
		s->window[i] = (int32_t)sampler_get32(p + SAMPLER_HEADER_SIZE +
		    4 * (size_t)i);
	return 0;
}
