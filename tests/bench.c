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
	int		 k_m;		/* Q4_K_M mix */
	const char	*type_name;
	double		 ref_prefill, ref_decode;	/* llama.cpp, table */
	int		 deep;		/* also depth, snapshot, restore */
};

static const struct bench_row rows[] = {
	{ "tinyllama-q8_0", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q8_0, 0, "Q8_0", 103, 17.8, 1 },
	{ "tinyllama-q4_0", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q4_0, 0, "Q4_0", 124, 27.8, 0 },
	{ "tinyllama-q4_k_m", "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 0, 0,
	    GGML_TYPE_Q4_K, 1, "Q4_K_M", 85, 15.3, 0 },
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

/* ---- bandwidth ------------------------------------------------------- */

struct bw_job {
	const float	*buf;
	size_t		 n;
	double		 sums[64];
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
	j->sums[ith] += a[0][0] + a[0][1] + a[0][2] + a[0][3];
}

/* Read bandwidth in GB/s over a buffer far larger than the caches, in
 * 2 MiB pages as the library keeps its weights (lib/model.c, DESIGN 1):
 * with 4 KiB pages the TLB misses cost 10-15%, and decode beat the
 * "ceiling".  The best of the runs, not the median: a ceiling is what the
 * machine can do, and this VM's bandwidth swings 21-33 GB/s between
 * runs. */
static double
bench_bandwidth(struct pool *p)
{
	size_t n = (size_t)1 << 28;	/* 1 GiB of floats */
	size_t len = n * sizeof(float);
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
	    MAP_ANONYMOUS, -1, 0);
	float *buf = map == MAP_FAILED ? NULL : map;
	struct bw_job j = { buf, n, { 0 } };
	double t[5], t0;
	int r;

	if (buf == NULL)
		return 0.0;
	madvise(buf, len, MADV_HUGEPAGE);
	for (size_t i = 0; i < n; i++)
		buf[i] = (float)(i & 7);
	for (r = 0; r < 5; r++) {
		t0 = now();
		pool_run(p, bw_cb, &j, (long)(n / BW_ITEM));
		t[r] = now() - t0;
	}
	munmap(buf, len);
	for (r = 1; r < 5; r++)
		if (t[r] < t[0])
			t[0] = t[r];
	return (double)n * sizeof(float) / t[0] / 1e9;
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

/* Bytes of weights one decode step reads: everything but the embedding
 * table (one row of it), experts scaled by used / total. */
static double
decode_bytes(const struct model *m)
{
	const struct gguf_file *g = model_gguf(m);
	const struct model_hparams *hp = model_hparams(m);
	uint64_t i, n = gguf_n_tensors(g);
	double b = 0.0;

	for (i = 0; i < n; i++) {
		const struct gguf_tensor *t = gguf_tensor_at(g, i);
		double s = (double)t->size;

		if (gguf_str_eq(t->name, "token_embd.weight"))
			s /= hp->n_vocab;
		else if (hp->n_experts > 0 && memmem(t->name.ptr, t->name.len,
		    "_exps", 5) != NULL)
			s = s * hp->n_experts_used / hp->n_experts;
		b += s;
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

/* Decode `steps` tokens on each of `nseq` sequences batched together;
 * returns aggregate tokens per second. */
static double
decode_rate(struct fwd *f, struct kvcache **kv, int nseq, int steps,
    uint32_t V)
{
	int32_t tok[64];
	float *lg = malloc((size_t)nseq * V * sizeof *lg);
	struct fwd_batch b = { nseq, tok, kv, NULL };
	double t0;
	int s, i;

	t0 = now();
	for (s = 0; s < steps; s++) {
		for (i = 0; i < nseq; i++)
			tok[i] = (int32_t)(3 + (s * 7 + i * 13) % 1000);
		if (fwd_run(f, &b, lg) != nseq) {
			free(lg);
			return 0.0;
		}
	}
	free(lg);
	return (double)steps * nseq / (now() - t0);
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

static void
bench_model(const struct bench_row *r, const char *dir, double bw, FILE *js,
    int first)
{
	char path[1024], err[512], snap[1100];
	struct model *m;
	struct fwd *f;
	struct kvcache *kv[8];
	struct kv_params kp = { 4096, 0, KV_TYPE_F16 };
	int32_t prompt[4096];
	double pf[5], dc[5], dp[5], agg[4], depth[3], dd[3][5], t0, ceiling;
	double wbytes;
	double t_load;
	double depth_q8 = 0.0;
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
	for (k = 0; k < 4; k++) {
		for (i = 0; i < nseq[k]; i++) {
			kvcache_reset(kv[i], 0);
			fwd_prefill(f, kv[i], prompt + i, 64, 512, 0, NULL);
		}
		agg[k] = decode_rate(f, kv, nseq[k], quick ? 16 : 48, V);
	}
	/* depth: fill the last min(d, W) positions of one cache per depth,
	 * then decode from the three in turn, reps times, and take medians
	 * (this VM's bandwidth moves between minutes, so one run per depth
	 * compared minutes, not depths; only on the rows marked deep:
	 * filling 4096 positions twice takes minutes) */
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
	for (i = 0; r->deep && i < reps; i++)
		for (k = 0; k < 3; k++)
			dd[k][i] = decode_rate(f, &kv[k], 1, quick ? 16 : 48, V);
	for (k = 0; r->deep && k < 3; k++)
		depth[k] = median(dd[k], reps);
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

	printf("%-18s %-7s %9.1f (%4.0f%%) %8.2f (%4.0f%%) %7.1f (%3.0f%%) "
	    "%8.2f %6.2fs  agg 1/2/4/8: %.1f %.1f %.1f %.1f (x%.1f)  depth "
	    "512/4k/16k: %.2f %.2f %.2f (4k, q8_0 cache: %.2f)  snap %.2fs "
	    "restore %.2fs reprefill %.1fs (%.1f%%)  rss %ld MiB\n", r->name,
	    r->type_name, P, 100 * P / r->ref_prefill, D,
	    100 * D / r->ref_decode, ceiling, 100 * D / ceiling, DP, t_load,
	    agg[0], agg[1], agg[2], agg[3], agg[3] / agg[0], depth[0],
	    depth[1], depth[2], depth_q8, t_save, t_restore, t_reprefill,
	    t_reprefill > 0 ? 100 * t_restore / t_reprefill : 0.0,
	    ru.ru_maxrss / 1024);
	fflush(stdout);
	fprintf(js, "%s    {\"model\": \"%s\", \"shape\": \"%s\", \"type\": "
	    "\"%s\", \"load_s\": %.3f, \"prefill_tok_s\": %.2f, "
	    "\"decode_tok_s\": %.3f, \"decode_after_prefill_tok_s\": %.3f, "
	    "\"llamacpp_prefill\": %.1f, \"llamacpp_decode\": %.2f, "
	    "\"decode_bytes\": %.0f, \"ceiling_tok_s\": %.2f, "
	    "\"ceiling_pct\": %.1f, \"aggregate_decode\": [%.2f, %.2f, %.2f, "
	    "%.2f], \"depth_decode\": {\"512\": %.3f, \"4096\": %.3f, "
	    "\"16384\": %.3f}, \"depth_4096_q8_0_cache\": %.3f, "
	    "\"window\": 4096, \"snapshot_s\": %.3f, "
	    "\"restore_s\": %.3f, \"reprefill_s\": %.2f, \"kv_bytes\": %zu, "
	    "\"kv_bytes_q8_0\": %zu, \"peak_rss_mib\": %ld}", first ? "" :
	    ",\n", r->name, r->shape, r->type_name, t_load, P, D, DP,
	    r->ref_prefill, r->ref_decode, wbytes, ceiling, 100 * D / ceiling,
	    agg[0], agg[1], agg[2], agg[3], depth[0], depth[1], depth[2],
	    depth_q8, t_save, t_restore, t_reprefill, kvcache_bytes(kv[0]),
	    q8_bytes, ru.ru_maxrss / 1024);
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
	struct pool *p;
	double bw;
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
	pool_create(threads, &p);
	bw = bench_bandwidth(p);
	pool_free(p);
	printf("mistrald bench: %d threads, kernels %s, read bandwidth %.1f "
	    "GB/s, load average %s\n", threads, quant_isa_name(quant_isa()),
	    bw, la0);
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
	    "%.2f, \"load_before\": \"%s\", \"rows\": [\n", threads,
	    quant_isa_name(quant_isa()), bw, la0);
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		if (!wanted(rows[i].name))
			continue;
		bench_model(&rows[i], dir, bw, js, first);
		first = 0;
	}
	loadavg(la1, sizeof la1);
	fprintf(js, "\n], \"load_after\": \"%s\"}\n", la1);
	fclose(js);
	printf("load average after: %s; JSON in %s\n", la1, jpath);
	return 0;
}
