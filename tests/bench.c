/*
 * bench: `make bench`, the speed figures of the library.
 *
 * Generates random-weight models of real shapes with lib/mkmodel (random
 * weights run at the same speed as trained ones), then measures, side by
 * side in one run: the machine's read bandwidth (the decode ceiling),
 * the time model_load() takes, prefill of a 512-token prompt, decode of
 * 128 tokens from an empty cache, decode of 128 tokens right after that
 * 512-token prefill, aggregate decode of 1, 2, 4 and 8 sequences batched
 * into one forward pass per step, decode at depth 512, 4096 and 16384
 * with W = 4096, snapshot and restore of a full window against
 * re-prefilling it, and peak RSS.  Medians over repeated runs; the load
 * average is printed before and after.
 *
 * Beside the bandwidth ceiling (what one sequence's decode can reach), it
 * measures the compute ceilings of the work that memory does not bound:
 * the matrix products of 8 batched sequences, and attention over a full
 * window.  Each is timed on every thread at once with its data in the
 * caches, so it is an upper bound on the same work streaming from memory;
 * the row's "ceilings" line turns them into the most that 8 sequences and
 * that depth 16384 could reach on this machine with these kernels, and
 * the depth bound once more at the machine's 8-lane fused multiply-add
 * peak (the width of the attention kernels), which they cannot pass.
 *
 * The main decode figure, the one compared with llama.cpp and with the
 * bandwidth ceiling, starts from an empty cache as llama-bench's tg128
 * does; the one after the prefill (positions 512 to 639) also pays for
 * attention over the prompt, so it is reported apart, never compared.
 * The load time is that of the first model_load() of the file in this
 * process: the file is usually in the page cache from an earlier run, so
 * it is the library's own start-up work rather than the disk's.
 *
 * Environment: BENCH_DIR (where models are kept between runs, default
 * /var/tmp/mistrald-bench), BENCH_MODELS (comma list of row names, default
 * all), BENCH_THREADS (default: all CPUs), BENCH_JSON (output file,
 * default bench.json), BENCH_QUICK=1 (fewer repetitions), BENCH_PREPARE=1
 * (only write the models that are missing, measure nothing: the files
 * llama.cpp is then run on for the side-by-side figures).
 */
#include <errno.h>
#include <immintrin.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"
#include "pool.h"
#include "quant.h"

struct bench_row {
	const char	*name;
	const char	*shape;
	uint32_t	 dim, layers, heads, kv_heads, ffn, experts, used;
	enum ggml_type	 type;
	int		 k_m;		/* the _K_M mix */
	const char	*type_name;
	double		 ref_prefill, ref_decode;	/* llama.cpp, table;
							   0: not in it */
	int		 deep;		/* also depth, snapshot, restore */
};

static const struct bench_row rows[] = {
	{ "tinyllama-q8_0", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q8_0, 0, "Q8_0", 103, 17.8, 1 },
	{ "tinyllama-q4_0", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q4_0, 0, "Q4_0", 124, 27.8, 0 },
	{ "tinyllama-q4_k_m", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q4_K, 1, "Q4_K_M", 85, 15.3, 0 },
	{ "tinyllama-q5_k_m", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q5_K, 1, "Q5_K_M", 0, 0, 0 },
	{ "tinyllama-q6_k", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q6_K, 0, "Q6_K", 0, 0, 0 },
	{ "mixtral4-q4_0", "Mixtral, 4 layers", 4096, 4, 32, 8, 14336, 8, 2,
	    GGML_TYPE_Q4_0, 0, "Q4_0", 35, 11.3, 0 },
	{ "mistral7b-q4_0", "Mistral 7B", 4096, 32, 32, 8, 14336, 0, 0,
	    GGML_TYPE_Q4_0, 0, "Q4_0", 18.2, 4.66, 0 },
	{ "mistral7b-q4_k_m", "Mistral 7B", 4096, 32, 32, 8, 14336, 0, 0,
	    GGML_TYPE_Q4_K, 1, "Q4_K_M", 15.8, 2.86, 0 },
};

static int quick;
static int threads;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void
loadavg(char *buf, size_t cap)
{
	FILE *fp = fopen("/proc/loadavg", "r");

	if (fp == NULL || fgets(buf, (int)cap, fp) == NULL)
		snprintf(buf, cap, "unknown");
	if (fp)
		fclose(fp);
	buf[strcspn(buf, "\n")] = '\0';
}

/* ---- ceilings: what the machine can do ------------------------------ */

static struct pool *cpool;	/* the ceilings' own threads */
static double *sink;		/* per thread: results nothing reads */

/* Best of 5 timings of a job of `items` items, after one to warm the
 * caches and pages; returns seconds.  The best, not the median: a ceiling
 * is what the machine can do, and this VM's speed drifts between runs. */
static double
ceil_time(pool_fn *fn, void *arg, long items)
{
	double best = 0.0, t0, t;
	int r;

	pool_run(cpool, fn, arg, items);
	for (r = 0; r < 5; r++) {
		t0 = now();
		pool_run(cpool, fn, arg, items);
		t = now() - t0;
		if (r == 0 || t < best)
			best = t;
	}
	return best;
}

/* ---- bandwidth ------------------------------------------------------- */

struct bw_job {
	const float	*buf;
};

typedef float bench_v4 __attribute__((vector_size(16)));

#define BW_ITEM (1L << 20)	/* floats per item */

/* Sum a slice with eight independent vector accumulators, so the loop
 * is bound by memory, not by add latency. */
static void
bw_cb(void *arg, long item, int ith)
{
	struct bw_job *j = arg;
	bench_v4 a[8] = { { 0 } };
	const bench_v4 *v = (const bench_v4 *)(j->buf + item * BW_ITEM);
	long i;
	int k;

	for (i = 0; i < BW_ITEM / 4; i += 8)
		for (k = 0; k < 8; k++)
			a[k] += v[i + k];
	for (k = 1; k < 8; k++)
		a[0] += a[k];
	sink[ith] += a[0][0] + a[0][1] + a[0][2] + a[0][3];
}

/* Read bandwidth in GB/s over a buffer far larger than the caches, in
 * 2 MiB pages as the library keeps its weights (lib/model.c, DESIGN 1):
 * with 4 KiB pages the TLB misses cost 10-15%, and decode beat the
 * "ceiling".  This VM's bandwidth swings 21-33 GB/s between runs. */
static double
bench_bandwidth(void)
{
	size_t n = (size_t)1 << 28;	/* 1 GiB of floats */
	size_t len = n * sizeof(float);
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
	    MAP_ANONYMOUS, -1, 0);
	float *buf = map == MAP_FAILED ? NULL : map;
	struct bw_job j = { buf };
	double t;

	if (buf == NULL)
		return 0.0;
	madvise(buf, len, MADV_HUGEPAGE);
	for (size_t i = 0; i < n; i++)
		buf[i] = (float)(i & 7);
	t = ceil_time(bw_cb, &j, (long)(n / BW_ITEM));
	munmap(buf, len);
	return (double)n * sizeof(float) / t / 1e9;
}

/* ---- compute ceilings ------------------------------------------------ */

#define CEIL_ITEMS	4	/* items per thread in each timed job */

#define FMA_ITERS	(1L << 21)

/* 12 independent chains of 8-lane fused multiply-adds: 2 per cycle on a
 * core with two FMA pipes, the most any float kernel can do. */
__attribute__((target("avx2,fma"))) static float
fma_loop(long n)
{
	__m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f), a[12];
	float o[8];
	int k;

	for (k = 0; k < 12; k++)
		a[k] = _mm256_set1_ps((float)k);
	for (long i = 0; i < n; i++) {
		_Pragma("GCC unroll 12")
		for (k = 0; k < 12; k++)
			a[k] = _mm256_fmadd_ps(a[k], m, c);
	}
	for (k = 1; k < 12; k++)
		a[0] = _mm256_add_ps(a[0], a[k]);
	_mm256_storeu_ps(o, a[0]);
	return o[0] + o[7];
}

static void
fma_cb(void *arg, long item, int ith)
{
	(void)arg;
	(void)item;
	sink[ith] += fma_loop(FMA_ITERS);
}

/* Multiply-adds per second of 8-lane FMA on every thread (0 without FMA). */
static double
bench_fma_peak(void)
{
	long items = (long)pool_size(cpool) * CEIL_ITEMS;

	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
		return 0.0;
	return (double)items * FMA_ITERS * 12 * 8 / ceil_time(fma_cb, NULL,
	    items);
}

/* Packed products of 8 inputs over a matrix that stays in L2 (64 rows of
 * 2048), as a step of 8 batched sequences runs them. */
#define MM_ROWS		64
#define MM_COLS		2048
#define MM_INPUTS	8
#define MM_REPS		64

struct mm_job {
	enum ggml_type	 t;
	const void	*p;
	struct quant_act a;
	float		*y;	/* per thread: MM_ROWS * MM_INPUTS */
};

static void
mm_cb(void *arg, long item, int ith)
{
	struct mm_job *j = arg;
	float *y = j->y + (size_t)ith * MM_ROWS * MM_INPUTS;

	(void)item;
	for (int r = 0; r < MM_REPS; r++)
		quant_matmul_packed(j->t, j->p, MM_ROWS, MM_COLS, &j->a, y,
		    MM_ROWS, 0, MM_ROWS);
}

/* Each new epoch measures every ceiling afresh, keeping the best: this
 * VM's speed drifts between minutes, and a ceiling measured in a slow
 * one fell below what the row then measured. */
static int ceil_epoch = 1;

/* Multiply-adds per second of type t's batched products on every
 * thread (the best of this run's epochs), or 0 where t has no packed
 * int8 kernel. */
static double
bench_mm_rate(enum ggml_type t)
{
	static double rate[GGML_TYPE_COUNT];
	static int epoch[GGML_TYPE_COUNT];
	size_t rs = quant_row_size(t, MM_COLS);
	long items = (long)pool_size(cpool) * CEIL_ITEMS;
	struct mm_job j = { t, NULL, { 0 }, NULL };
	float *x = NULL;
	char *w = NULL, *pk = NULL;
	void *act = NULL;
	int fmt;

	if ((unsigned)t >= GGML_TYPE_COUNT)
		return 0.0;
	if (epoch[t] == ceil_epoch)
		return rate[t];
	epoch[t] = ceil_epoch;
	if (!quant_packable(t, MM_COLS) || rs == 0 || (fmt = quant_act_fmt(t,
	    MM_COLS)) == QUANT_ACT_NONE)
		return 0.0;
	x = malloc(sizeof *x * MM_COLS * MM_INPUTS);
	w = malloc(rs * MM_ROWS);
	pk = malloc(quant_pack_size(t, MM_ROWS, MM_COLS));
	act = malloc(quant_act_bytes(fmt, MM_COLS, MM_INPUTS));
	j.y = malloc(sizeof *j.y * MM_ROWS * MM_INPUTS * pool_size(cpool));
	if (x != NULL && w != NULL && pk != NULL && act != NULL &&
	    j.y != NULL) {
		unsigned seed = 7;

		for (int i = 0; i < MM_COLS * MM_INPUTS; i++) {
			seed = seed * 1664525u + 1013904223u;
			x[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
		}
		for (int r = 0; r < MM_ROWS; r++)
			quant_quantize_row(t, x + (r % MM_INPUTS) * MM_COLS,
			    w + r * rs, MM_COLS);
		quant_pack(t, w, MM_ROWS, MM_COLS, pk);
		quant_act_bind(&j.a, act, fmt, MM_COLS, MM_INPUTS);
		quant_act_fill(&j.a, x, 0, MM_INPUTS);
		j.p = pk;
		rate[t] = fmax(rate[t], (double)items * MM_REPS * MM_ROWS *
		    MM_COLS * MM_INPUTS / ceil_time(mm_cb, &j, items));
	}
	free(x);
	free(w);
	free(pk);
	free(act);
	free(j.y);
	return rate[t];
}

/* Scores, softmax and weighted sum of values for the query heads that
 * share one kv head, over f16 keys and values that stay in L2 (256 KiB of
 * them), as a decode step runs them (forward.c's fwd_att_block()). */
#define ATT_BYTES	(256 * 1024)
#define ATT_REPS	16

struct att_job {
	int		 hd, rep, nk;
	float		*q, *s, *o;	/* per thread */
	uint16_t	*kv;		/* per thread: keys, then values */
};

static void
att_cb(void *arg, long item, int ith)
{
	struct att_job *j = arg;
	size_t hq = (size_t)j->rep * j->hd;
	const float *q = j->q + (size_t)ith * hq;
	float *s = j->s + (size_t)ith * j->rep * j->nk;
	float *o = j->o + (size_t)ith * hq;
	const uint16_t *k = j->kv + (size_t)ith * 2 * j->nk * j->hd;
	const uint16_t *v = k + (size_t)j->nk * j->hd;
	size_t st = (size_t)j->hd * sizeof *k;

	(void)item;
	for (int r = 0; r < ATT_REPS; r++) {
		vec_att_scores(q, j->rep, k, st, QUANT_KV_F16, j->nk, j->hd, s,
		    j->nk);
		for (int g = 0; g < j->rep; g++)
			vec_softmax(s + (size_t)g * j->nk, j->nk, 0.125f);
		memset(o, 0, hq * sizeof *o);
		vec_att_pv(s, j->rep, j->nk, v, st, QUANT_KV_F16, j->nk, j->hd,
		    o);
	}
}

/* Multiply-adds per second (scores and values both counted) of attention
 * for hd-dimensional heads in groups of rep, on every thread. */
static double
bench_att_rate(int hd, int rep)
{
	int nt = pool_size(cpool);
	long items = (long)nt * CEIL_ITEMS;
	struct att_job j = { hd, rep, ATT_BYTES / (4 * hd), NULL, NULL, NULL,
	    NULL };
	size_t hq = (size_t)rep * hd, nkv = (size_t)nt * 2 * j.nk * hd;
	double rate = 0.0;

	j.q = malloc(sizeof *j.q * hq * nt);
	j.o = malloc(sizeof *j.o * hq * nt);
	j.s = malloc(sizeof *j.s * rep * j.nk * nt);
	j.kv = malloc(sizeof *j.kv * nkv);
	if (j.q != NULL && j.o != NULL && j.s != NULL && j.kv != NULL) {
		for (size_t i = 0; i < hq * nt; i++)
			j.q[i] = (float)(i % 17) * 0.01f - 0.08f;
		for (size_t i = 0; i < nkv; i++)	/* halves in [0.125, 1) */
			j.kv[i] = (uint16_t)(0x3000 + (i * 7919) % 0x0c00);
		rate = (double)items * ATT_REPS * 2 * hq * j.nk /
		    ceil_time(att_cb, &j, items);
	}
	free(j.q);
	free(j.o);
	free(j.s);
	free(j.kv);
	return rate;
}

/* The share of tensor t one sequence's decode step uses: one row of the
 * embedding table, used / total of an expert matrix, all of the rest. */
static double
step_share(const struct model_hparams *hp, const struct gguf_tensor *t)
{
	if (gguf_str_eq(t->name, "token_embd.weight"))
		return 1.0 / hp->n_vocab;
	if (hp->n_experts > 0 && memmem(t->name.ptr, t->name.len, "_exps",
	    5) != NULL)
		return (double)hp->n_experts_used / hp->n_experts;
	return 1.0;
}

/* The most tokens per second 8 batched sequences could decode if the
 * step were nothing but its matrix products at their in-cache speed
 * (the embedding is a row lookup, not a product).  A matrix of a type
 * without packed kernels (a MoE router in F32) is left out: leaving work
 * out keeps it an upper bound. */
static double
batch_ceiling(const struct model *m)
{
	const struct gguf_file *g = model_gguf(m);
	const struct model_hparams *hp = model_hparams(m);
	uint64_t i, n = gguf_n_tensors(g);
	double t = 0.0;

	for (i = 0; i < n; i++) {
		const struct gguf_tensor *tn = gguf_tensor_at(g, i);
		double rate;

		if (tn->n_dims < 2 || gguf_str_eq(tn->name,
		    "token_embd.weight"))
			continue;
		if ((rate = bench_mm_rate(tn->type)) > 0.0)
			t += (double)tn->ne[0] * tn->ne[1] * tn->ne[2] *
			    step_share(hp, tn) / rate;
	}
	return t > 0.0 ? 1.0 / t : 0.0;
}

/* ---- per model ------------------------------------------------------- */

static int
ensure_model(const struct bench_row *r, const char *dir, char *path,
    size_t cap)
{
	struct mkmodel_params p;
	struct stat st;
	char err[512];
	double t0;

	snprintf(path, cap, "%s/%s.gguf", dir, r->name);
	if (stat(path, &st) == 0)
		return 0;
	mkmodel_defaults(&p);
	p.dim = r->dim;
	p.n_layers = r->layers;
	p.n_heads = r->heads;
	p.n_kv_heads = r->kv_heads;
	p.ffn_dim = r->ffn;
	p.n_experts = r->experts;
	p.n_experts_used = r->used;
	p.n_vocab = 32000;
	p.ctx_len = 32768;
	p.type = r->type;
	p.q4_k_m_mix = r->k_m;
	/* as llama-quantize writes them: a Q4_0 file keeps output.weight in
	 * Q6_K (its 8-expert files also put attn_k/attn_v in Q8_0, which
	 * mkmodel does not: 2% of a Mixtral layer's bytes) */
	if (r->type == GGML_TYPE_Q4_0)
		p.output_type = GGML_TYPE_Q6_K;
	p.name = r->name;
	fprintf(stderr, "bench: writing %s (random weights)...\n", path);
	t0 = now();
	if (mkmodel_write(&p, path, err, sizeof err) != 0) {
		fprintf(stderr, "bench: %s\n", err);
		return -1;
	}
	fprintf(stderr, "bench: wrote %s in %.0f s\n", path, now() - t0);
	return 0;
}

/* Bytes of weights one decode step reads (step_share() of each). */
static double
decode_bytes(const struct model *m)
{
	const struct gguf_file *g = model_gguf(m);
	uint64_t i, n = gguf_n_tensors(g);
	double b = 0.0;

	for (i = 0; i < n; i++) {
		const struct gguf_tensor *t = gguf_tensor_at(g, i);

		b += (double)t->size * step_share(model_hparams(m), t);
	}
	return b;
}

static void
tokens(int32_t *t, int n, uint32_t V, unsigned seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		t[i] = (int32_t)(3 + (seed >> 8) % (V - 3));
	}
	t[0] = 1;
}

/*
 * Decode n configurations in turn, one step of each before the next step
 * of any: configuration k runs nseq[k] (at most 64) sequences on the
 * caches kv[k][0 .. nseq[k] - 1].  This VM's speed drifts by 10-30%
 * between minutes, so configurations measured one after the other
 * compared minutes; stepped in turn, the drift falls on all of them
 * alike.  rate[k] gets k's aggregate tokens per second over `steps`
 * steps.
 */
static void
decode_in_turn(struct fwd *f, struct kvcache **kv[], const int *nseq, int n,
    int steps, uint32_t V, double *rate)
{
	int32_t tok[64];
	double t[8] = { 0 }, t0;
	int s, k, i, most = 1, ok;
	float *lg;

	for (k = 0; k < n; k++)
		most = nseq[k] > most ? nseq[k] : most;
	lg = malloc((size_t)most * V * sizeof *lg);
	ok = lg != NULL && n <= 8 && most <= 64;

	for (s = 0; ok && s < steps; s++)
		for (k = 0; ok && k < n; k++) {
			struct fwd_batch b = { nseq[k], tok, kv[k], NULL };

			for (i = 0; i < nseq[k]; i++)
				tok[i] = (int32_t)(3 + (s * 7 + i * 13) % 1000);
			t0 = now();
			ok = fwd_run(f, &b, lg) == nseq[k];
			t[k] += now() - t0;
		}
	for (k = 0; k < n; k++)
		rate[k] = ok ? (double)steps * nseq[k] / t[k] : 0.0;
	free(lg);
}

/* Decode `steps` tokens on each of `nseq` sequences batched together;
 * returns aggregate tokens per second. */
static double
decode_rate(struct fwd *f, struct kvcache **kv, int nseq, int steps,
    uint32_t V)
{
	double r;

	decode_in_turn(f, &kv, &nseq, 1, steps, V, &r);
	return r;
}

struct snap_file {
	int	fd;
};

static int
snap_write(void *ctx, const void *buf, size_t len)
{
	struct snap_file *s = ctx;
	const char *p = buf;
	ssize_t w;

	while (len > 0) {
		if ((w = write(s->fd, p, len)) < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int
snap_read(void *ctx, void *buf, size_t len)
{
	struct snap_file *s = ctx;
	char *p = buf;
	ssize_t r;

	while (len > 0) {
		if ((r = read(s->fd, p, len)) <= 0)
			return -EIO;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* v as a percentage of the table's figure ref; NAN (printed "nan") for a
 * row the table does not have. */
static double
bench_pct(double v, double ref)
{
	return ref > 0.0 ? 100 * v / ref : NAN;
}

/* The table's figure as a JSON number, or null. */
static const char *
bench_ref(double ref, char *buf, size_t cap)
{
	if (ref <= 0.0)
		return "null";
	snprintf(buf, cap, "%.2f", ref);
	return buf;
}

static void
bench_model(const struct bench_row *r, const char *dir, double bw,
    double fma, FILE *js, int first)
{
	char path[1024], err[512], snap[1100], refp[32], refd[32];
	struct model *m;
	struct fwd *f;
	struct kvcache *kv[8];
	struct kv_params kp = { 4096, 0, KV_TYPE_F16 };
	int32_t prompt[4096];
	double pf[5], dc[5], dp[5], agg[4], depth[3], dd[3][5], t0, ceiling;
	double wbytes;
	double t_load;
	double depth_q8 = 0.0, att_early = 0.0;
	size_t q8_bytes = 0;
	double t_save = 0, t_restore = 0, t_reprefill = 0;
	int reps = quick ? 1 : 3, i, k, nseq[4] = { 1, 2, 4, 8 };
	int depths[3] = { 512, 4096, 16384 };
	uint32_t V;
	struct rusage ru;

	if (ensure_model(r, dir, path, sizeof path) != 0)
		return;
	t0 = now();
	if (model_load(path, &m, err, sizeof err) != 0) {
		fprintf(stderr, "bench: %s\n", err);
		return;
	}
	t_load = now() - t0;
	V = model_hparams(m)->n_vocab;
	wbytes = decode_bytes(m);
	ceiling = bw * 1e9 / wbytes;
	fwd_create(m, 512, threads, &f);
	for (i = 0; i < 8; i++)
		kvcache_create(m, &kp, &kv[i]);
	tokens(prompt, 4096, V, 1);

	/* warm the mapping: the prefill touches the layers, the decode steps
	 * the output matrix too */
	kvcache_reset(kv[0], 0);
	fwd_prefill(f, kv[0], prompt, 8, 512, 0, NULL);
	decode_rate(f, kv, 1, 2, V);
	for (k = 0; k < reps; k++) {
		kvcache_reset(kv[0], 0);
		dc[k] = decode_rate(f, kv, 1, quick ? 32 : 128, V);
		kvcache_reset(kv[0], 0);
		t0 = now();
		fwd_prefill(f, kv[0], prompt, 512, 512, 0, NULL);
		pf[k] = 512 / (now() - t0);
		dp[k] = decode_rate(f, kv, 1, quick ? 32 : 128, V);
	}
	/* 1, 2, 4 and 8 sequences on the same caches, stepped in turn,
	 * reps times, medians */
	for (i = 0; i < 8; i++) {
		kvcache_reset(kv[i], 0);
		fwd_prefill(f, kv[i], prompt + i, 64, 512, 0, NULL);
	}
	{
		struct kvcache **ka[4] = { kv, kv, kv, kv };
		double ar[4][5], rt[4];

		for (i = 0; i < reps; i++) {
			decode_in_turn(f, ka, nseq, 4, quick ? 16 : 32, V, rt);
			for (k = 0; k < 4; k++)
				ar[k][i] = rt[k];
		}
		for (k = 0; k < 4; k++)
			agg[k] = median(ar[k], reps);
	}
	/* the products' rates in the minute of these figures (measured again
	 * at the end; the ceiling takes the best) */
	ceil_epoch++;
	batch_ceiling(m);
	/* depth: fill the last min(d, W) positions of one cache per depth,
	 * then decode the three a step at a time in turn (decode_in_turn()),
	 * reps times, and take medians (this VM's bandwidth moves between
	 * minutes, so one run per depth compared minutes, not depths; only on
	 * the rows marked deep: filling 4096 positions twice takes minutes) */
	for (k = 0; k < 3; k++) {
		depth[k] = 0.0;
		if (!r->deep)
			continue;
		int fill = depths[k] < 4096 ? depths[k] : 4096;

		kvcache_reset(kv[k], depths[k] - fill);
		t0 = now();
		fwd_prefill(f, kv[k], prompt, fill, 512, 0, NULL);
		if (fill == 4096)
			t_reprefill = now() - t0;
	}
	for (i = 0; r->deep && i < reps; i++) {
		struct kvcache **ka[3] = { &kv[0], &kv[1], &kv[2] };
		int one[3] = { 1, 1, 1 };
		double rt[3];

		decode_in_turn(f, ka, one, 3, quick ? 16 : 48, V, rt);
		for (k = 0; k < 3; k++)
			dd[k][i] = rt[k];
	}
	for (k = 0; r->deep && k < 3; k++)
		depth[k] = median(dd[k], reps);
	if (r->deep)
		att_early = bench_att_rate((int)model_hparams(m)->head_dim,
		    (int)(model_hparams(m)->n_heads /
		    model_hparams(m)->n_kv_heads));
	/* the same full window in a q8_0 cache: its decode speed (its
	 * accuracy is measured by tests/t-swa) */
	if (r->deep) {
		struct kv_params kq = { 4096, 0, KV_TYPE_Q8_0 };
		struct kvcache *kv8;

		if (kvcache_create(m, &kq, &kv8) == 0) {
			fwd_prefill(f, kv8, prompt, 4096, 512, 0, NULL);
			depth_q8 = decode_rate(f, &kv8, 1, quick ? 16 : 48, V);
			q8_bytes = kvcache_bytes(kv8);
			kvcache_free(kv8);
		}
	}
	/* snapshot a full window to a file (fsync), restore it */
	snprintf(snap, sizeof snap, "%s/%s.kv", dir, r->name);
	if (r->deep) {
		struct snap_file sf;

		sf.fd = open(snap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		t0 = now();
		kvcache_save(kv[2], 0, snap_write, &sf);
		fsync(sf.fd);
		t_save = now() - t0;
		close(sf.fd);
		sf.fd = open(snap, O_RDONLY);
		t0 = now();
		kvcache_restore(kv[3], snap_read, &sf);
		t_restore = now() - t0;
		close(sf.fd);
		unlink(snap);
	}
	getrusage(RUSAGE_SELF, &ru);

	double P = median(pf, reps), D = median(dc, reps);
	double DP = median(dp, reps);

	/* compute ceilings: 8 sequences if the step were only its products
	 * at their in-cache speed; depth 16384 if decode at depth 512 only
	 * added the attention over the window's other 3584 keys, at its
	 * in-cache speed, or at the FMA peak with the keys and values read
	 * at the bandwidth ceiling at the same time; each rate the best of
	 * one measured next to the figures it bounds and one measured here */
	const struct model_hparams *hp = model_hparams(m);
	double c8, att = 0.0, cd = 0.0, cdf = 0.0;
	double extra = 2.0 * hp->n_layers * hp->n_heads * hp->head_dim *
	    (4096 - 512);
	double extra_bytes = 2.0 * hp->n_layers * hp->n_kv_heads *
	    hp->head_dim * 2 * (4096 - 512);

	ceil_epoch++;
	c8 = batch_ceiling(m);
	fma = fmax(fma, bench_fma_peak());
	if (r->deep && depth[0] > 0.0) {
		att = fmax(att_early, bench_att_rate((int)hp->head_dim,
		    (int)(hp->n_heads / hp->n_kv_heads)));
		if (att > 0.0)
			cd = 1.0 / (1.0 + depth[0] * extra / att);
		if (fma > 0.0 && bw > 0.0)
			cdf = 1.0 / (1.0 + depth[0] * fmax(extra / fma,
			    extra_bytes / (bw * 1e9)));
	}

	printf("%-18s %-7s %9.1f (%4.0f%%) %8.2f (%4.0f%%) %7.1f (%3.0f%%) "
	    "%8.2f %6.2fs  agg 1/2/4/8: %.1f %.1f %.1f %.1f (x%.1f)  depth "
	    "512/4k/16k: %.2f %.2f %.2f (4k, q8_0 cache: %.2f)  snap %.2fs "
	    "restore %.2fs reprefill %.1fs (%.1f%%)  rss %ld MiB\n", r->name,
	    r->type_name, P, bench_pct(P, r->ref_prefill), D,
	    bench_pct(D, r->ref_decode), ceiling, 100 * D / ceiling, DP, t_load,
	    agg[0], agg[1], agg[2], agg[3], agg[3] / agg[0], depth[0],
	    depth[1], depth[2], depth_q8, t_save, t_restore, t_reprefill,
	    t_reprefill > 0 ? 100 * t_restore / t_reprefill : 0.0,
	    ru.ru_maxrss / 1024);
	printf("%-18s ceilings: 8 sequences at most %.1f tok/s (x%.2f of "
	    "one; measured x%.2f)", r->name, c8, agg[0] > 0 ? c8 / agg[0] :
	    0.0, agg[0] > 0 ? agg[3] / agg[0] : 0.0);
	if (r->deep)
		printf("; attention %.1f GMAC/s in cache: depth 16384 at most "
		    "%.2f of depth 512 (%.2f at the FMA peak and the "
		    "bandwidth; measured %.2f)",
		    att / 1e9, cd, cdf, depth[0] > 0 ? depth[2] / depth[0] :
		    0.0);
	printf("\n");
	fflush(stdout);
	fprintf(js, "%s    {\"model\": \"%s\", \"shape\": \"%s\", \"type\": "
	    "\"%s\", \"load_s\": %.3f, \"prefill_tok_s\": %.2f, "
	    "\"decode_tok_s\": %.3f, \"decode_after_prefill_tok_s\": %.3f, "
	    "\"llamacpp_prefill\": %s, \"llamacpp_decode\": %s, "
	    "\"decode_bytes\": %.0f, \"ceiling_tok_s\": %.2f, "
	    "\"ceiling_pct\": %.1f, \"aggregate_decode\": [%.2f, %.2f, %.2f, "
	    "%.2f], \"depth_decode\": {\"512\": %.3f, \"4096\": %.3f, "
	    "\"16384\": %.3f}, \"depth_4096_q8_0_cache\": %.3f, "
	    "\"window\": 4096, \"snapshot_s\": %.3f, "
	    "\"restore_s\": %.3f, \"reprefill_s\": %.2f, \"kv_bytes\": %zu, "
	    "\"kv_bytes_q8_0\": %zu, \"peak_rss_mib\": %ld, "
	    "\"ceiling_8seq_tok_s\": %.2f, \"attention_gmac_s\": %.2f, "
	    "\"ceiling_depth_ratio\": %.3f, \"ceiling_depth_ratio_fma\": "
	    "%.3f}", first ? "" :
	    ",\n", r->name, r->shape, r->type_name, t_load, P, D, DP,
	    bench_ref(r->ref_prefill, refp, sizeof refp),
	    bench_ref(r->ref_decode, refd, sizeof refd), wbytes, ceiling,
	    100 * D / ceiling, agg[0], agg[1], agg[2], agg[3], depth[0],
	    depth[1], depth[2], depth_q8, t_save, t_restore, t_reprefill,
	    kvcache_bytes(kv[0]), q8_bytes, ru.ru_maxrss / 1024, c8, att / 1e9,
	    cd, cdf);
	for (i = 0; i < 8; i++)
		kvcache_free(kv[i]);
	fwd_free(f);
	model_free(m);
}

static int
wanted(const char *name)
{
	const char *list = getenv("BENCH_MODELS"), *p;
	size_t n = strlen(name);

	if (list == NULL || *list == '\0')
		return 1;
	for (p = list; (p = strstr(p, name)) != NULL; p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

int
main(void)
{
	const char *dir = getenv("BENCH_DIR"), *jpath = getenv("BENCH_JSON");
	char la0[128], la1[128];
	double bw, fma;
	FILE *js;
	size_t i;
	int first = 1;
	long nproc = sysconf(_SC_NPROCESSORS_ONLN);

	setvbuf(stdout, NULL, _IOLBF, 0);
	quick = getenv("BENCH_QUICK") != NULL;
	threads = getenv("BENCH_THREADS") ? atoi(getenv("BENCH_THREADS")) :
	    (int)(nproc > 0 ? nproc : 1);
	if (dir == NULL)
		dir = "/var/tmp/mistrald-bench";
	if (jpath == NULL)
		jpath = "bench.json";
	mkdir(dir, 0755);
	if (getenv("BENCH_PREPARE") != NULL) {
		char path[1024];

		for (i = 0; i < sizeof rows / sizeof rows[0]; i++)
			if (wanted(rows[i].name) && ensure_model(&rows[i], dir,
			    path, sizeof path) != 0)
				return 1;
		return 0;
	}
	quant_init();
	loadavg(la0, sizeof la0);
	if (pool_create(threads, &cpool) != 0 || (sink = calloc((size_t)
	    pool_size(cpool), sizeof *sink)) == NULL) {
		fprintf(stderr, "bench: no threads\n");
		return 1;
	}
	bw = bench_bandwidth();
	fma = bench_fma_peak();
	printf("mistrald bench: %d threads, kernels %s, read bandwidth %.1f "
	    "GB/s, FMA peak %.1f GMAC/s, load average %s\n", threads,
	    quant_isa_name(quant_isa()), bw, fma / 1e9, la0);
	printf("tok/s; (%%): of the llama.cpp reference, or of the ceiling; "
	    "decode from an empty cache as llama-bench tg128, \"after pp\" "
	    "right after the 512-token prefill\n");
	printf("%-18s %-7s %17s %16s %14s %8s %7s\n", "model", "type",
	    "prefill (ref)", "decode (ref)", "ceiling (%)", "after pp",
	    "load");
	if ((js = fopen(jpath, "w")) == NULL) {
		perror(jpath);
		return 1;
	}
	fprintf(js, "{\"threads\": %d, \"isa\": \"%s\", \"bandwidth_gb_s\": "
	    "%.2f, \"fma_peak_gmac_s\": %.2f, \"load_before\": \"%s\", "
	    "\"rows\": [\n", threads, quant_isa_name(quant_isa()), bw,
	    fma / 1e9, la0);
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		if (!wanted(rows[i].name))
			continue;
		bench_model(&rows[i], dir, bw, fma, js, first);
		first = 0;
	}
	loadavg(la1, sizeof la1);
	fprintf(js, "\n], \"load_after\": \"%s\"}\n", la1);
	fclose(js);
	pool_free(cpool);
	free(sink);
	printf("load average after: %s; JSON in %s\n", la1, jpath);
	return 0;
}
