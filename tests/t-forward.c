/*
 * t-forward: the forward pass against independent references.
 *
 * Every fixture model (../shared/fixtures: llama.cpp's logits for dense,
 * MoE, F16, BF16 and every quantized type, and llama2.c's greedy ids for
 * the trained stories260K) is run through the cached, batched forward pass
 * and compared with the tolerances the fixtures' README recommends, on
 * every kernel path this CPU has.  Then batching: several sequences in one
 * batch, cut in different ways, give the logits each gives alone.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "tap.h"

static int32_t *
read_ids(const char *path, int64_t *n)
{
	FILE *fp = fopen(path, "r");
	int32_t *ids = malloc(4096 * sizeof *ids);
	long v;

	*n = 0;
	if (fp == NULL || ids == NULL)
		return NULL;
	while (*n < 4096 && fscanf(fp, "%ld", &v) == 1)
		ids[(*n)++] = (int32_t)v;
	fclose(fp);
	return ids;
}

static float *
read_floats(const char *path, size_t *n)
{
	FILE *fp = fopen(path, "rb");
	float *p = NULL;
	long len;

	*n = 0;
	if (fp == NULL)
		return NULL;
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	if (len > 0 && (p = malloc((size_t)len)) != NULL &&
	    fread(p, 1, (size_t)len, fp) == (size_t)len)
		*n = (size_t)len / sizeof(float);
	fclose(fp);
	return p;
}

enum tol_kind { TOL_EXACT, TOL_BF16, TOL_QUANT };

static int
cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

static int64_t
argmax(const float *r, int64_t n, float *margin)
{
	int64_t i, b = 0, s = -1;

	for (i = 1; i < n; i++)
		if (r[i] > r[b])
			b = i;
	for (i = 0; i < n; i++)
		if (i != b && (s < 0 || r[i] > r[s]))
			s = i;
	if (margin)
		*margin = r[b] - r[s];
	return b;
}

/*
 * Compare logits with the README's criteria; returns 1 when they pass and
 * describes the differences in a diagnostic.
 */
static int
check_logits(const char *what, const float *got, const float *ref,
    int64_t rows, int64_t V, enum tol_kind kind)
{
	double sum = 0.0, maxabs = 0.0;
	float *rowmax = calloc((size_t)rows, sizeof *rowmax), med;
	int64_t r, i, top_bad = 0, top_checked = 0;
	int ok;

	for (r = 0; r < rows; r++) {
		const float *g = got + r * V, *e = ref + r * V;
		float margin;
		int64_t ge = argmax(e, V, &margin), gg = argmax(g, V, NULL);

		for (i = 0; i < V; i++) {
			double d = fabs((double)g[i] - e[i]);

			sum += d;
			if (d > maxabs)
				maxabs = d;
			if (d > rowmax[r])
				rowmax[r] = (float)d;
		}
		if (kind != TOL_QUANT || margin > 1.0f) {
			top_checked++;
			top_bad += ge != gg;
		}
	}
	qsort(rowmax, (size_t)rows, sizeof *rowmax, cmp_float);
	med = rowmax[rows / 2];
	sum /= (double)(rows * V);
	switch (kind) {
	case TOL_EXACT:
		ok = maxabs <= 1e-3 && top_bad == 0;
		break;
	case TOL_BF16:
		ok = maxabs <= 0.3 && sum <= 0.05 && top_bad == 0;
		break;
	default:
		ok = sum <= 0.25 && med <= 1.0 && top_bad == 0;
		break;
	}
	tap_ok(ok, "%s: max abs %.3g, mean abs %.3g, median row max %.3g, "
	    "top-1 mismatches %lld of %lld", what, maxabs, sum, (double)med,
	    (long long)top_bad, (long long)top_checked);
	free(rowmax);
	return ok;
}

/* Run ids through a fresh f32 cache in chunks of `chunk`, all logits. */
static float *
run_logits(struct model *m, const int32_t *ids, int64_t n, int chunk,
    enum kv_type kt)
{
	uint32_t V = model_hparams(m)->n_vocab;
	struct kv_params kp = { 0, 0, kt };
	struct kvcache *kv = NULL;
	struct fwd *f = NULL;
	float *lg = malloc((size_t)n * V * sizeof *lg);

	if (lg == NULL || kvcache_create(m, &kp, &kv) != 0 ||
	    fwd_create(m, chunk, 2, &f) != 0 ||
	    fwd_prefill(f, kv, ids, n, chunk, 1, lg) != 0) {
		free(lg);
		lg = NULL;
	}
	fwd_free(f);
	kvcache_free(kv);
	return lg;
}

static const struct {
	const char	*gguf;
	const char	*logits;
	enum tol_kind	 kind;
} fixtures[] = {
	{ "dense/dense-f32.gguf", "dense/dense-f32.logits.bin", TOL_EXACT },
	{ "moe/moe-f32.gguf", "moe/moe-f32.logits.bin", TOL_EXACT },
	{ "f16/tiny-f16.gguf", "f16/tiny-f16.logits.bin", TOL_EXACT },
	{ "f16/tiny-bf16.gguf", "f16/tiny-bf16.logits.bin", TOL_BF16 },
	{ "dense/dense-q8_0.gguf", "dense/dense-q8_0.logits.bin", TOL_QUANT },
	{ "dense/dense-q4_0.gguf", "dense/dense-q4_0.logits.bin", TOL_QUANT },
	{ "dense/dense-q4_k_m.gguf", "dense/dense-q4_k_m.logits.bin",
	    TOL_QUANT },
	{ "dense/dense-q5_k_m.gguf", "dense/dense-q5_k_m.logits.bin",
	    TOL_QUANT },
	{ "dense/dense-q6_k.gguf", "dense/dense-q6_k.logits.bin", TOL_QUANT },
	{ "moe/moe-q8_0.gguf", "moe/moe-q8_0.logits.bin", TOL_QUANT },
	{ "moe/moe-q4_0.gguf", "moe/moe-q4_0.logits.bin", TOL_QUANT },
	{ "moe/moe-q4_k_m.gguf", "moe/moe-q4_k_m.logits.bin", TOL_QUANT },
	{ "moe/moe-q5_k_m.gguf", "moe/moe-q5_k_m.logits.bin", TOL_QUANT },
	{ "moe/moe-q6_k.gguf", "moe/moe-q6_k.logits.bin", TOL_QUANT },
};

/* how: "" for the default weight memory, ", mapped" with MISTRAL_REPACK=0
 * (weights read in place from the file, Q8_0/Q4_0 through the per-row
 * tiles rather than the packed ones) */
static void
test_fixture_logits(enum quant_isa isa, const char *how)
{
	const char *p;
	int32_t *seq;
	int64_t n;
	size_t i, nref;
	char name[256];

	if ((p = tap_fixture("seq64.txt")) == NULL) {
		tap_skip("fixture logits: ../shared/fixtures is absent");
		return;
	}
	seq = read_ids(p, &n);
	tap_ok(seq != NULL && n == 64, "seq64.txt holds 64 ids");
	for (i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
		struct model *m;
		char err[512];
		float *ref, *got;
		uint32_t V;

		snprintf(name, sizeof name, "%s [%s%s]", fixtures[i].gguf,
		    quant_isa_name(isa), how);
		if ((p = tap_fixture(fixtures[i].gguf)) == NULL ||
		    model_load(p, &m, err, sizeof err) != 0) {
			tap_ok(0, "%s loads (%s)", name, p ? err : "absent");
			continue;
		}
		V = model_hparams(m)->n_vocab;
		ref = read_floats(tap_fixture(fixtures[i].logits), &nref);
		/* chunks of 16 as the fixtures were made, and of 64 */
		got = run_logits(m, seq, n, i % 2 ? 64 : 16, KV_TYPE_F32);
		if (ref == NULL || nref != (size_t)n * V || got == NULL)
			tap_ok(0, "%s: logits computed and reference read",
			    name);
		else
			check_logits(name, got, ref, n, V, fixtures[i].kind);
		free(ref);
		free(got);
		model_free(m);
	}
	free(seq);
}

/* What model_summary() says of the weights of a Q4_0 file, with
 * MISTRAL_REPACK as it is set now (repack is its value, for the name). */
static void
test_summary_memory(const char *repack, const char *want)
{
	const char *p = tap_fixture("dense/dense-q4_0.gguf");
	struct model *m;
	char err[512], buf[2048];

	if (p == NULL) {
		tap_skip("summary: ../shared/fixtures is absent");
		return;
	}
	if (model_load(p, &m, err, sizeof err) != 0) {
		tap_ok(0, "dense-q4_0 loads: %s", err);
		return;
	}
	model_summary(m, 0, 0, 0, buf, sizeof buf);
	tap_ok(strstr(buf, want) != NULL, "MISTRAL_REPACK=%s: the summary "
	    "says the weights are %s", repack ? repack : "(unset)", want);
	model_free(m);
}

/*
 * A copy that would not fit in the available memory is not made: the
 * model stays mapped (anonymous memory cannot be paged back to the file,
 * so a model that only fits as page cache must not be copied) and says
 * so, and computes what it computes mapped.
 */
static void
test_no_room(const char *dir)
{
	const char *p = tap_fixture("dense/dense-q4_0.gguf");
	char path[600], err[512], buf[2048];
	struct model *m, *mm;
	int32_t seq[16];
	float *a, *b;
	FILE *fp;
	int i;

	if (p == NULL) {
		tap_skip("no room for a copy: ../shared/fixtures is absent");
		return;
	}
	snprintf(path, sizeof path, "%s/meminfo", dir);
	if ((fp = fopen(path, "w")) == NULL) {
		tap_ok(0, "fake meminfo written");
		return;
	}
	fputs("MemTotal:        1000 kB\nMemFree:          100 kB\n"
	    "MemAvailable:     100 kB\n", fp);
	fclose(fp);
	setenv("MISTRAL_TEST_MEMINFO", path, 1);
	i = model_load(p, &m, err, sizeof err);
	unsetenv("MISTRAL_TEST_MEMINFO");
	if (i != 0) {
		tap_ok(0, "dense-q4_0 loads with 100 kB available: %s", err);
		return;
	}
	model_summary(m, 0, 0, 0, buf, sizeof buf);
	tap_ok(model_weights_mapped(m) && strstr(buf, "mapped from the file: "
	    "too little memory for a copy") != NULL, "100 kB available: the "
	    "weights stay mapped and the summary says why");
	setenv("MISTRAL_REPACK", "0", 1);
	i = model_load(p, &mm, err, sizeof err);
	unsetenv("MISTRAL_REPACK");
	for (int j = 0; j < 16; j++)
		seq[j] = 1 + (j * 37) % 200;
	a = i == 0 ? run_logits(m, seq, 16, 16, KV_TYPE_F32) : NULL;
	b = i == 0 ? run_logits(mm, seq, 16, 16, KV_TYPE_F32) : NULL;
	tap_ok(a != NULL && b != NULL && memcmp(a, b, (size_t)16 *
	    model_hparams(m)->n_vocab * sizeof *a) == 0, "and gives the bits "
	    "of the same file read with MISTRAL_REPACK=0");
	free(a);
	free(b);
	model_free(mm);
	model_free(m);
}

/* Greedy generation from a prompt, one token at a time after prefill. */
static int
greedy(struct model *m, const int32_t *prompt, int64_t np, int64_t ngen,
    enum kv_type kt, int32_t *out)
{
	uint32_t V = model_hparams(m)->n_vocab;
	struct kv_params kp = { 0, 0, kt };
	struct kvcache *kv;
	struct fwd *f;
	struct fwd_batch b;
	float *lg = malloc(V * sizeof *lg);
	int64_t i;
	int32_t id;
	int rc = -1;

	if (kvcache_create(m, &kp, &kv) != 0)
		return -1;
	if (fwd_create(m, 64, 2, &f) != 0 || lg == NULL)
		goto out;
	if (fwd_prefill(f, kv, prompt, np, 64, 0, lg) != 0)
		goto out;
	b.n = 1;
	b.seqs = &kv;
	b.want = NULL;
	b.tokens = &id;
	for (i = 0; i < ngen; i++) {
		id = (int32_t)argmax(lg, V, NULL);
		out[i] = id;
		if (fwd_run(f, &b, lg) != 1)
			goto out;
	}
	rc = 0;
out:
	free(lg);
	fwd_free(f);
	kvcache_free(kv);
	return rc;
}

static void
test_greedy(const char *gguf, const char *ids, int64_t ngen)
{
	const char *p;
	struct model *m;
	int32_t *want, got[512], bos = 1;
	int64_t n, i;
	char err[512];
	int ok;

	if ((p = tap_fixture(ids)) == NULL) {
		tap_skip("greedy ids: ../shared/fixtures is absent");
		return;
	}
	want = read_ids(p, &n);
	if ((p = tap_fixture(gguf)) == NULL ||
	    model_load(p, &m, err, sizeof err) != 0) {
		tap_ok(0, "%s loads", gguf);
		free(want);
		return;
	}
	ok = n == ngen && greedy(m, &bos, 1, ngen, KV_TYPE_F32, got) == 0;
	for (i = 0; ok && i < n; i++)
		if (got[i] != want[i]) {
			tap_diag("first difference at step %lld: %d, expected "
			    "%d", (long long)i, got[i], want[i]);
			ok = 0;
		}
	tap_ok(ok, "%s: %lld greedy ids from BOS equal the reference", gguf,
	    (long long)ngen);
	free(want);
	model_free(m);
}

static void
test_stories_logits(void)
{
	const char *p;
	struct model *m;
	int32_t *seq;
	int64_t n;
	size_t nref;
	float *ref, *got;
	char err[512];

	if ((p = tap_fixture("stories260K/stories260K.seq257.txt")) == NULL) {
		tap_skip("stories260K: ../shared/fixtures is absent");
		return;
	}
	seq = read_ids(p, &n);
	if (model_load(tap_fixture("stories260K/stories260K.gguf"), &m, err,
	    sizeof err) != 0) {
		tap_ok(0, "stories260K loads: %s", err);
		free(seq);
		return;
	}
	ref = read_floats(tap_fixture("stories260K/stories260K.logits.bin"),
	    &nref);
	got = run_logits(m, seq, n, 100, KV_TYPE_F32);
	if (ref && got && nref == (size_t)n * model_hparams(m)->n_vocab)
		check_logits("stories260K, 257 positions", got, ref, n,
		    model_hparams(m)->n_vocab, TOL_EXACT);
	else
		tap_ok(0, "stories260K logits computed");
	free(ref);
	free(got);
	free(seq);
	model_free(m);
}

/*
 * Three sequences batched together in one fwd_run per step (prompts of
 * different lengths, then decode steps in a varying order) give the
 * logits each gives alone.
 */
#define NSTEP 8

static int32_t
batch_tok(const int32_t toks[3][48], const int *lens, int s, int step)
{
	return toks[s][(lens[s] + step) % 48];
}

static void
test_batching(const char *path, const char *what)
{
	struct model *m;
	struct kvcache *kv[3], *solo, *bseq[128];
	struct kv_params kp = { 0, 0, KV_TYPE_F32 };
	struct fwd *f;
	struct fwd_batch b;
	char err[512];
	uint32_t V;
	int32_t toks[3][48], btok[128], solo_toks[64];
	float *lg, *alone;
	double maxd = 0.0;
	int s, i, n, step, rows, k, last_row[3];
	int lens[3] = { 23, 5, 40 };
	int64_t before;

	if (model_load(path, &m, err, sizeof err) != 0) {
		tap_ok(0, "%s loads: %s", what, err);
		return;
	}
	V = model_hparams(m)->n_vocab;
	for (s = 0; s < 3; s++) {
		for (i = 0; i < 48; i++)
			toks[s][i] = (int32_t)(3 + (s * 97 + i * 31) % (V - 3));
		kvcache_create(m, &kp, &kv[s]);
	}
	fwd_create(m, 64, 2, &f);
	lg = malloc((size_t)3 * V * sizeof *lg);
	alone = malloc((size_t)64 * V * sizeof *alone);

	n = 0;
	for (s = 0; s < 3; s++)
		for (i = 0; i < lens[s]; i++) {
			btok[n] = toks[s][i];
			bseq[n++] = kv[s];
		}
	b.n = n;
	b.tokens = btok;
	b.seqs = bseq;
	b.want = NULL;
	rows = fwd_run(f, &b, lg);
	tap_ok(rows == 3, "%s: one batch of three prompts gives one row each",
	    what);
	for (step = 0; step < NSTEP; step++) {
		for (i = 0; i < 3; i++) {
			s = (i + step) % 3;
			bseq[i] = kv[s];
			btok[i] = batch_tok(toks, lens, s, step);
			last_row[s] = i;
		}
		b.n = 3;
		if (fwd_run(f, &b, lg) != 3)
			tap_ok(0, "%s: decode step %d", what, step);
	}
	for (s = 0; s < 3; s++) {
		k = 0;
		for (i = 0; i < lens[s]; i++)
			solo_toks[k++] = toks[s][i];
		for (step = 0; step < NSTEP; step++)
			solo_toks[k++] = batch_tok(toks, lens, s, step);
		kvcache_create(m, &kp, &solo);
		fwd_prefill(f, solo, solo_toks, k, 7, 1, alone);
		for (i = 0; i < (int)V; i++) {
			double d = fabs(alone[(size_t)(k - 1) * V + i] -
			    lg[(size_t)last_row[s] * V + i]);

			if (d > maxd)
				maxd = d;
		}
		tap_ok(kvcache_pos(solo) == kvcache_pos(kv[s]),
		    "%s: sequence %d at the same position alone and batched",
		    what, s);
		kvcache_free(solo);
	}
	tap_ok(maxd < 1e-3, "%s: batched logits equal each sequence alone "
	    "(max diff %.3g)", what, maxd);

	/* refused batches leave every cache as it was */
	before = kvcache_pos(kv[0]);
	btok[0] = btok[1] = btok[2] = 5;
	bseq[0] = kv[0];
	bseq[1] = kv[1];
	bseq[2] = kv[0];
	b.n = 3;
	tap_ok(fwd_run(f, &b, lg) == -EINVAL && kvcache_pos(kv[0]) == before &&
	    kvcache_pos(kv[1]) == before - lens[0] + lens[1],
	    "%s: a sequence in two runs of one batch is refused, caches "
	    "untouched", what);
	btok[0] = 5;
	btok[1] = (int32_t)V;
	bseq[1] = kv[0];
	b.n = 2;
	tap_ok(fwd_run(f, &b, lg) == -EINVAL && kvcache_pos(kv[0]) == before,
	    "%s: a token id out of range is refused, cache untouched", what);
	for (s = 0; s < 3; s++)
		kvcache_free(kv[s]);
	fwd_free(f);
	free(lg);
	free(alone);
	model_free(m);
}

static void
test_load_errors(const char *dir)
{
	struct model *m;
	char err[512], path[512];
	int rc;

	rc = model_load("/nonexistent/model.gguf", &m, err, sizeof err);
	tap_ok(rc < 0 && m == NULL && strstr(err, "/nonexistent/model.gguf"),
	    "a missing file is refused with its path: %s", err);
	if (tap_fixture("vocab/ggml-vocab-llama-spm.gguf") != NULL) {
		rc = model_load(tap_fixture("vocab/ggml-vocab-llama-spm.gguf"),
		    &m, err, sizeof err);
		tap_ok(rc < 0 && m == NULL && *err != '\0',
		    "a vocabulary-only file is refused as a model: %s", err);
	}
	snprintf(path, sizeof path, "%s/notgguf", dir);
	FILE *fp = fopen(path, "w");
	fputs("this is not a model file at all", fp);
	fclose(fp);
	rc = model_load(path, &m, err, sizeof err);
	tap_ok(rc < 0 && m == NULL, "a text file is refused: %s", err);
}

int
main(void)
{
	static const enum quant_isa isas[] = { QUANT_ISA_SCALAR,
	    QUANT_ISA_AVX2, QUANT_ISA_AVX512 };
	char dir[] = "/tmp/t-forward.XXXXXX", path[600], err[512];
	struct mkmodel_params mp;
	size_t i;

	tap_timeout(900);
	if (mkdtemp(dir) == NULL)
		tap_skip_all("mkdtemp failed");
	quant_init();
	for (i = 0; i < sizeof isas / sizeof isas[0]; i++) {
		if (quant_set_isa(isas[i]) != isas[i]) {
			tap_skip(isas[i] == QUANT_ISA_AVX512 ? "no AVX-512 on "
			    "this CPU (t-forward-avx512emu runs it emulated)" :
			    "this CPU lacks a kernel path");
			continue;
		}
		test_fixture_logits(isas[i], "");
	}
	quant_set_isa(QUANT_ISA_AVX512);
	setenv("MISTRAL_REPACK", "0", 1);
	test_fixture_logits(quant_isa(), ", mapped");
	test_summary_memory("0", "mapped from the file");
	unsetenv("MISTRAL_REPACK");
	test_summary_memory(NULL, "copied to memory, 8-row packed");
	test_no_room(dir);
	test_stories_logits();
	test_greedy("stories260K/stories260K.gguf",
	    "stories260K/stories260K.greedy256.txt", 256);
	test_greedy("dense/dense-f32.gguf", "dense/dense-f32.greedy64.txt", 64);
	test_greedy("moe/moe-f32.gguf", "moe/moe-f32.greedy64.txt", 64);

	mkmodel_defaults(&mp);
	snprintf(path, sizeof path, "%s/dense.gguf", dir);
	tap_ok(mkmodel_write(&mp, path, err, sizeof err) == 0,
	    "random dense model written");
	test_batching(path, "random dense");
	mp.n_experts = 4;
	mp.n_experts_used = 2;
	mp.type = GGML_TYPE_Q8_0;
	mp.dim = 64;
	snprintf(path, sizeof path, "%s/moe.gguf", dir);
	tap_ok(mkmodel_write(&mp, path, err, sizeof err) == 0,
	    "random MoE Q8_0 model written: %s", err);
	test_batching(path, "random MoE q8_0");
	test_load_errors(dir);

	snprintf(path, sizeof path, "rm -rf '%s'", dir);
	if (system(path) != 0)
		tap_diag("could not remove %s", dir);
	return tap_done();
}
