/*
 * t-sampler.c: the sampler chooses what its parameters say, reproducibly.
 *
 * Greedy is the argmax; a seed fixes the sequence; the draw follows the
 * softmax (checked with a chi-square bound); top-k, top-p and min-p keep
 * exactly the tokens they should; the repetition penalty moves the argmax;
 * a saved state continues identically after loading and a damaged one is
 * refused without touching the sampler.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "tap.h"

/* The test's own generator for logits, independent of the sampler's. */
static uint64_t test_state = 0x243f6a8885a308d3ULL;

static double
test_uniform(void)
{
	test_state ^= test_state << 13;
	test_state ^= test_state >> 7;
	test_state ^= test_state << 17;
	return (double)(test_state >> 11) * 0x1.0p-53;
}

static void
test_logits(float *l, int n, float scale)
{
	int i;

	for (i = 0; i < n; i++)	/* roughly normal, sum of uniforms */
		l[i] = scale * (float)(test_uniform() + test_uniform() +
		    test_uniform() - 1.5) * 2.0f;
}

static int
test_argmax(const float *l, int n)
{
	int i, b = 0;

	for (i = 1; i < n; i++)
		if (l[i] > l[b])
			b = i;
	return b;
}

static struct sampler_params
test_plain(float temperature, uint64_t seed)
{
	struct sampler_params p;

	sampler_params_default(&p);
	p.temperature = temperature;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.repeat_penalty = 1.0f;
	p.repeat_last_n = 0;
	p.seed = seed;
	return p;
}

static void
test_greedy(void)
{
	struct sampler_params p = test_plain(0.0f, 1);
	struct sampler *s;
	float l[1000], c[1000];
	int i, ok = 1;

	s = sampler_create(&p, 1000);
	for (i = 0; i < 50; i++) {
		test_logits(l, 1000, 3.0f);
		memcpy(c, l, sizeof l);
		if (sampler_sample(s, c) != test_argmax(l, 1000))
			ok = 0;
	}
	tap_ok(ok, "greedy returns the argmax (50 rows of 1000)");

	for (i = 0; i < 1000; i++)
		l[i] = -1.0f;
	l[700] = 5.0f;
	l[300] = 5.0f;
	l[900] = 5.0f;
	tap_ok(sampler_sample(s, l) == 300,
	    "greedy breaks ties to the lowest id");

	/* Greedy ignores the penalty: same argmax with a huge one. */
	p.repeat_penalty = 100.0f;
	p.repeat_last_n = 8;
	sampler_set_params(s, &p, 1);
	sampler_accept(s, 300);
	for (i = 0; i < 1000; i++)
		l[i] = -1.0f;
	l[300] = 5.0f;
	l[301] = 4.0f;
	tap_ok(sampler_sample(s, l) == 300,
	    "temperature 0 is the plain argmax, without the penalty");

	for (i = 0; i < 1000; i++)
		l[i] = -INFINITY;
	tap_ok(sampler_sample(s, l) == -EDOM, "all -inf logits: -EDOM");
	for (i = 0; i < 1000; i++)
		l[i] = 0.0f;
	l[17] = NAN;
	tap_ok(sampler_sample(s, l) == -EDOM, "a NaN logit: -EDOM");
	tap_ok(sampler_sample(s, NULL) == -EINVAL, "NULL logits: -EINVAL");
	sampler_free(s);
	tap_ok(sampler_create(&p, 0) == NULL, "n_vocab 0 is refused");
}

/* n draws with default parameters on fresh random rows, accepting each. */
static void
test_run(struct sampler *s, int32_t *out, int n, uint64_t logit_seed)
{
	float l[512];
	int i;

	test_state = logit_seed;
	for (i = 0; i < n; i++) {
		test_logits(l, 512, 2.0f);
		out[i] = sampler_sample(s, l);
		sampler_accept(s, out[i]);
	}
}

static void
test_seeds(void)
{
	struct sampler_params p;
	struct sampler *a, *b, *c;
	int32_t sa[1000], sb[1000], sc[1000];
	int i, same_ab = 1, diff_ac = 0, valid = 1;

	sampler_params_default(&p);
	p.seed = 42;
	a = sampler_create(&p, 512);
	b = sampler_create(&p, 512);
	p.seed = 43;
	c = sampler_create(&p, 512);
	test_run(a, sa, 1000, 7);
	test_run(b, sb, 1000, 7);
	test_run(c, sc, 1000, 7);
	for (i = 0; i < 1000; i++) {
		if (sa[i] != sb[i])
			same_ab = 0;
		if (sa[i] != sc[i])
			diff_ac++;
		if (sa[i] < 0 || sa[i] >= 512)
			valid = 0;
	}
	tap_ok(valid, "1000 draws with default parameters are valid ids");
	tap_ok(same_ab, "the same seed gives the same 1000 draws");
	tap_ok(diff_ac > 100, "a different seed gives a different sequence "
	    "(%d of 1000 differ)", diff_ac);

	sampler_reset(a);
	test_run(a, sb, 1000, 7);
	tap_ok(memcmp(sa, sb, sizeof sa) == 0,
	    "sampler_reset() starts the same sequence again");
	sampler_free(a);
	sampler_free(b);
	sampler_free(c);
}

static void
test_top_k_one(void)
{
	struct sampler_params p = test_plain(1.0f, 5);
	struct sampler *s;
	float l[4096], c[4096];
	int i, ok = 1;

	p.top_k = 1;
	s = sampler_create(&p, 4096);
	for (i = 0; i < 100; i++) {
		test_logits(l, 4096, 1.0f);
		memcpy(c, l, sizeof l);
		if (sampler_sample(s, c) != test_argmax(l, 4096))
			ok = 0;
	}
	tap_ok(ok, "top-k 1 at temperature 1 equals greedy (100 rows)");
	sampler_free(s);
}

/*
 * Chi-square of n draws over k categories against expected probabilities.
 * The sampler's seed is fixed, so the statistic is too; the bound (about
 * the 0.999 quantile) is what a correct sampler satisfies comfortably and a
 * wrong temperature, a wrong normalisation or an off-by-one in the draw
 * does not.
 */
static double
test_chi2(struct sampler *s, const float *logits, int v, const double *pr,
    int n, int *outside, int *unseen)
{
	int count[512] = { 0 };
	float l[512];
	double chi = 0.0, e;
	int i, id;

	*outside = 0;
	*unseen = 0;
	for (i = 0; i < n; i++) {
		memcpy(l, logits, (size_t)v * sizeof *l);
		id = sampler_sample(s, l);
		if (id < 0 || id >= v || pr[id] == 0.0)
			(*outside)++;
		else
			count[id]++;
	}
	for (i = 0; i < v; i++) {
		if (pr[i] == 0.0)
			continue;
		if (count[i] == 0)
			(*unseen)++;
		e = pr[i] * n;
		chi += (count[i] - e) * (count[i] - e) / e;
	}
	return chi;
}

static void
test_softmax(const float *l, int v, float t, int top_k, double *pr)
{
	double z = 0.0;
	float m = l[test_argmax(l, v)];
	int i, j, rank;

	for (i = 0; i < v; i++) {
		rank = 0;
		for (j = 0; j < v; j++)
			if (l[j] > l[i] || (l[j] == l[i] && j < i))
				rank++;
		pr[i] = (top_k > 0 && rank >= top_k) ? 0.0 :
		    exp(((double)l[i] - m) / t);
		z += pr[i];
	}
	for (i = 0; i < v; i++)
		pr[i] /= z;
}

static void
test_distribution(void)
{
	const float l[6] = { 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 2.0f };
	struct sampler_params p = test_plain(1.0f, 12345);
	struct sampler *s;
	double pr[6], chi;
	int outside, unseen;

	s = sampler_create(&p, 6);
	test_softmax(l, 6, 1.0f, 0, pr);
	chi = test_chi2(s, l, 6, pr, 20000, &outside, &unseen);
	tap_ok(outside == 0 && chi < 20.5, "temperature 1, no filters: "
	    "20000 draws follow softmax (chi2 %.2f, 5 dof, bound 20.5)", chi);

	p.temperature = 2.0f;
	p.top_k = 3;
	sampler_set_params(s, &p, 1);
	test_softmax(l, 6, 2.0f, 3, pr);
	chi = test_chi2(s, l, 6, pr, 20000, &outside, &unseen);
	tap_ok(outside == 0 && chi < 13.8, "temperature 2, top-k 3: 20000 "
	    "draws follow softmax(l/2) over the top 3 (chi2 %.2f, 2 dof, "
	    "bound 13.8)", chi);

	p.temperature = 0.5f;
	p.top_k = 0;
	sampler_set_params(s, &p, 1);
	test_softmax(l, 6, 0.5f, 0, pr);
	chi = test_chi2(s, l, 6, pr, 20000, &outside, &unseen);
	tap_ok(outside == 0 && chi < 20.5, "temperature 0.5: 20000 draws "
	    "follow softmax(2l) (chi2 %.2f)", chi);
	sampler_free(s);
}

static int
test_cmp_prob(const void *a, const void *b)
{
	const double *x = a, *y = b;

	return (x[0] < y[0]) - (x[0] > y[0]);
}

/*
 * Top-p (and min-p) over 400 fairly flat tokens, far more than the sampler
 * sorts directly, so the weighted quickselect does the work: the draws must
 * fall exactly on the set computed here by a full sort (every member seen,
 * nothing else) and follow the softmax renormalised over it.
 */
static void
test_nucleus_distribution(float top_p, float min_p)
{
	struct sampler_params p = test_plain(1.0f, 2024);
	struct sampler *s;
	double pr[400], ord[400][2], z = 0.0, cum = 0.0, chi, bound;
	float l[400];
	int i, m, outside, unseen;

	test_state = 77;
	test_logits(l, 400, 0.6f);
	test_softmax(l, 400, 1.0f, 0, pr);
	for (i = 0; i < 400; i++) {
		ord[i][0] = pr[i];
		ord[i][1] = i;
	}
	qsort(ord, 400, sizeof ord[0], test_cmp_prob);
	for (m = 0; m < 400; m++) {
		cum += ord[m][0];
		if (ord[m][0] < min_p * ord[0][0])
			break;
		if (cum >= top_p) {
			m++;
			break;
		}
	}
	for (i = 0; i < 400; i++)
		pr[(int)ord[i][1]] = i < m ? ord[i][0] : 0.0;
	for (i = 0; i < 400; i++)
		z += pr[i];
	for (i = 0; i < 400; i++)
		pr[i] /= z;
	p.top_p = top_p;
	p.min_p = min_p;
	s = sampler_create(&p, 400);
	chi = test_chi2(s, l, 400, pr, 40000, &outside, &unseen);
	bound = (m - 1) + 5.0 * sqrt(2.0 * (m - 1));
	tap_ok(outside == 0 && unseen == 0 && chi < bound, "top-p %.2f, "
	    "min-p %.2f over 400 tokens: draws cover exactly the %d kept and "
	    "follow their renormalised softmax (chi2 %.1f, bound %.1f)", top_p,
	    min_p, m, chi, bound);
	if (outside != 0 || unseen != 0)
		tap_diag("%d draws outside the set, %d members never drawn",
		    outside, unseen);
	sampler_free(s);
}

/* Draw n times from l; returns a bit set of the ids seen (v <= 32). */
static uint32_t
test_seen(struct sampler *s, const float *logits, int v, int n)
{
	uint32_t seen = 0;
	float l[32];
	int i, id;

	for (i = 0; i < n; i++) {
		memcpy(l, logits, (size_t)v * sizeof *l);
		id = sampler_sample(s, l);
		if (id >= 0 && id < v)
			seen |= 1u << id;
		else
			seen |= 1u << 31;
	}
	return seen;
}

static int
test_cmp_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x < y) - (x > y);
}

static void
test_filters(void)
{
	/* probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1 */
	float l[4] = { logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f) };
	struct sampler_params p = test_plain(1.0f, 99);
	struct sampler *s;
	float *big, *row, *sorted, thr;
	double z, cum, m;
	int i, j, ok, n_nucleus;

	s = sampler_create(&p, 4);
	p.top_p = 0.75f;
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 3000) == 0x3,
	    "top-p 0.75 keeps exactly {0.5, 0.3}");
	p.top_p = 0.9f;
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 3000) == 0x7,
	    "top-p 0.9 keeps exactly {0.5, 0.3, 0.15}");
	p.top_p = 0.0f;
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 500) == 0x1, "top-p 0 keeps only the best");

	p.top_p = 1.0f;
	p.min_p = 0.35f;	/* threshold 0.175 */
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 3000) == 0x3,
	    "min-p 0.35 keeps exactly the tokens >= 0.175");
	p.min_p = 0.2f;		/* threshold 0.1 */
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 3000) == 0x7,
	    "min-p 0.2 keeps exactly the tokens >= 0.1");
	p.min_p = 0.2f;
	p.top_p = 0.75f;
	sampler_set_params(s, &p, 1);
	tap_ok(test_seen(s, l, 4, 3000) == 0x3,
	    "top-p and min-p together keep the smaller set");
	sampler_free(s);

	/*
	 * A 32000-token row with top-k off: the sampler finds the nucleus by
	 * sorting a growing prefix.  Every draw must fall inside the nucleus
	 * computed here by a full sort.
	 */
	big = malloc(32000 * sizeof *big);
	row = malloc(32000 * sizeof *row);
	sorted = malloc(32000 * sizeof *sorted);
	test_state = 3;
	test_logits(big, 32000, 2.5f);
	m = big[test_argmax(big, 32000)];
	z = 0.0;
	for (i = 0; i < 32000; i++) {
		sorted[i] = (float)exp(big[i] - m);
		z += sorted[i];
	}
	qsort(sorted, 32000, sizeof *sorted, test_cmp_desc);
	cum = 0.0;
	for (n_nucleus = 0; n_nucleus < 32000; n_nucleus++) {
		cum += sorted[n_nucleus];
		if (cum >= 0.6 * z)
			break;
	}
	thr = sorted[n_nucleus];	/* the smallest kept probability */
	p = test_plain(1.0f, 4);
	p.top_p = 0.6f;
	s = sampler_create(&p, 32000);
	ok = 1;
	for (j = 0; j < 300; j++) {
		memcpy(row, big, 32000 * sizeof *row);
		i = sampler_sample(s, row);
		if (i < 0 || (float)exp(big[i] - m) < thr * 0.9999f)
			ok = 0;
	}
	tap_ok(ok, "top-p 0.6 over 32000 tokens draws only from the nucleus "
	    "(%d tokens)", n_nucleus + 1);
	sampler_free(s);
	free(big);
	free(row);
	free(sorted);
}

static void
test_penalty(void)
{
	struct sampler_params p = test_plain(1.0f, 1);
	struct sampler *s;
	float l[8];
	int i;

	p.top_k = 1;		/* a deterministic view of the argmax */
	p.repeat_penalty = 1.1f;
	p.repeat_last_n = 3;
	s = sampler_create(&p, 8);

#define TEST_ROW(a, b) do {						\
	for (i = 0; i < 8; i++)						\
		l[i] = -5.0f;						\
	l[0] = (a);							\
	l[1] = (b);							\
} while (0)

	TEST_ROW(2.0f, 1.9f);
	tap_ok(sampler_sample(s, l) == 0, "without history the argmax wins");
	sampler_accept(s, 0);
	TEST_ROW(2.0f, 1.9f);
	tap_ok(sampler_sample(s, l) == 1,
	    "a positive logit is divided by the penalty (2.0/1.1 < 1.9)");
	TEST_ROW(-1.0f, -1.05f);
	tap_ok(sampler_sample(s, l) == 1,
	    "a negative logit is multiplied by it (-1.1 < -1.05)");

	sampler_accept(s, 0);
	sampler_accept(s, 0);
	TEST_ROW(2.0f, 1.8f);
	tap_ok(sampler_sample(s, l) == 0,
	    "an id repeated in the window is penalised once");

	sampler_accept(s, 5);
	sampler_accept(s, 6);
	sampler_accept(s, 7);
	TEST_ROW(2.0f, 1.9f);
	tap_ok(sampler_sample(s, l) == 0,
	    "an id that left the window (last 3) is not penalised");

	sampler_accept(s, 0);
	p.repeat_last_n = 0;
	sampler_set_params(s, &p, 0);
	TEST_ROW(2.0f, 1.9f);
	tap_ok(sampler_sample(s, l) == 0, "repeat_last_n 0 turns it off");
	p.repeat_last_n = 64;
	sampler_set_params(s, &p, 0);
	TEST_ROW(2.0f, 1.9f);
	tap_ok(sampler_sample(s, l) == 0,
	    "shrinking the window dropped its ids for good");
#undef TEST_ROW
	sampler_free(s);
}

static void
test_save_load(void)
{
	struct sampler_params p, q;
	struct sampler *a, *b;
	unsigned char buf[4096], bad[4096];
	int32_t ra[300], rb[300];
	size_t need, len, i;
	int ok, rejected;

	sampler_params_default(&p);
	p.seed = 777;
	a = sampler_create(&p, 512);
	test_run(a, ra, 150, 11);
	len = sampler_save(a, NULL, 0);
	tap_ok(len > 0 && len < sizeof buf, "sampler_save() sizes the state "
	    "(%zu bytes)", len);
	memset(buf, 0xAA, sizeof buf);
	need = sampler_save(a, buf, len - 1);
	tap_ok(need == len && buf[0] == 0xAA,
	    "a too small buffer gets the size and is not written");
	tap_ok(sampler_save(a, buf, sizeof buf) == len, "saved");

	q = p;
	q.seed = 1;
	q.temperature = 0.3f;
	q.repeat_last_n = 5;
	b = sampler_create(&q, 512);
	tap_ok(sampler_load(b, buf, len) == 0, "loaded into another sampler");
	tap_ok(sampler_params(b)->seed == 777 &&
	    sampler_params(b)->temperature == p.temperature &&
	    sampler_params(b)->repeat_last_n == p.repeat_last_n,
	    "the parameters came with the state");
	test_run(a, ra, 150, 12);
	test_run(b, rb, 150, 12);
	tap_ok(memcmp(ra, rb, 150 * sizeof *ra) == 0,
	    "save then load mid-stream continues identically (150 draws)");

	/* Damage: every truncation and every single-byte change. */
	sampler_save(a, buf, sizeof buf);
	rejected = 0;
	for (i = 0; i < len; i++)
		if (sampler_load(b, buf, i) == -EINVAL)
			rejected++;
	tap_ok(rejected == (int)len, "every truncation is refused (%d of %zu)",
	    rejected, len);
	rejected = 0;
	for (i = 0; i < len; i++) {
		memcpy(bad, buf, len);
		bad[i] ^= 0x5a;
		if (sampler_load(b, bad, len) == -EINVAL)
			rejected++;
	}
	tap_ok(rejected == (int)len,
	    "every changed byte is refused (%d of %zu)", rejected, len);
	memcpy(bad, buf, len);
	bad[len] = 0;
	tap_ok(sampler_load(b, bad, len + 1) == -EINVAL,
	    "trailing bytes are refused");
	test_state = 99;
	for (i = 0; i < sizeof bad; i++)
		bad[i] = (unsigned char)(test_uniform() * 256);
	tap_ok(sampler_load(b, bad, len) == -EINVAL, "garbage is refused");
	memcpy(bad, "MSMP", 4);
	tap_ok(sampler_load(b, bad, len) == -EINVAL,
	    "garbage with the right magic is refused");
	sampler_free(b);
	b = sampler_create(&p, 513);
	tap_ok(sampler_load(b, buf, len) == -EINVAL,
	    "a state for another vocabulary size is refused");
	sampler_free(b);

	/* A refused load leaves the sampler as it was. */
	b = sampler_create(&p, 512);
	tap_ok(sampler_load(b, buf, len) == 0, "reloaded");
	memcpy(bad, buf, len);
	bad[len - 1] ^= 1;
	ok = sampler_load(b, bad, len) == -EINVAL;
	test_run(a, ra, 100, 13);
	test_run(b, rb, 100, 13);
	tap_ok(ok && memcmp(ra, rb, 100 * sizeof *ra) == 0,
	    "a refused load changes nothing");
	sampler_free(a);
	sampler_free(b);
}

static void
test_params(void)
{
	struct sampler_params p;
	struct sampler *s;

	sampler_params_default(&p);
	tap_ok(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f &&
	    p.min_p == 0.05f && p.repeat_penalty == 1.1f &&
	    p.repeat_last_n == 64 && p.seed == 0, "documented defaults");
	s = sampler_create(NULL, 10);
	tap_ok(s != NULL && sampler_params(s)->top_k == 40,
	    "NULL parameters mean the defaults");
	p.temperature = NAN;
	p.repeat_penalty = 0.0f;
	p.top_p = NAN;
	p.repeat_last_n = -3;
	sampler_set_params(s, &p, 0);
	tap_ok(sampler_params(s)->temperature == 0.0f &&
	    sampler_params(s)->repeat_penalty == 1.0f &&
	    sampler_params(s)->top_p == 1.0f &&
	    sampler_params(s)->repeat_last_n == 0,
	    "out-of-range parameters are sanitised");
	sampler_free(s);
	sampler_free(NULL);
}

int
main(void)
{
	tap_timeout(60);
	test_params();
	test_greedy();
	test_seeds();
	test_top_k_one();
	test_distribution();
	test_nucleus_distribution(0.8f, 0.0f);
	test_nucleus_distribution(0.95f, 0.1f);
	test_filters();
	test_penalty();
	test_save_load();
	return tap_done();
}
