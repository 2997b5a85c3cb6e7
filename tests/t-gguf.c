/*
 * t-gguf: the GGUF reader, writer and random-model generator.
 *
 * 1. Every reference fixture opens and shows the facts its README states
 *    (counts, shapes, types, hyperparameters, the 32000-token vocabulary).
 * 2. The writer round-trips every value type and tensor bytes, including
 *    streamed tensors, alignment and replaced keys, and fails cleanly.
 * 3. mkmodel writes what llama.cpp would: keys, vocabulary, tensor names,
 *    shapes, types (the _K_M mix), weight statistics, determinism, MoE
 *    layouts, and a copied vocabulary.
 * 4. Malformed files are refused with the right code and message: each
 *    check patches a small valid file in memory; a truncation at every
 *    byte offset and random byte mutations must never crash.
 */

#include <sys/stat.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "mkmodel.h"
#include "tap.h"

static char	t_dir[256];

/* A file name inside the test's private directory (static buffer). */
static const char *
t_path(const char *name)
{
	static char	buf[4][512];
	static int	i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/%s", t_dir, name);
	return buf[i];
}

static void *
t_read_file(const char *path, size_t *len)
{
	FILE	*fp;
	void	*buf;
	long	 n;

	if ((fp = fopen(path, "rb")) == NULL)
		return NULL;
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	if (n < 0 || (buf = malloc(n > 0 ? n : 1)) == NULL ||
	    fread(buf, 1, n, fp) != (size_t)n) {
		fclose(fp);
		return NULL;
	}
	fclose(fp);
	*len = n;
	return buf;
}

static double
t_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Bytes of a kv's value as stored (after the type). */
static uint64_t
t_value_size(const struct gguf_kv *kv)
{
	static const uint64_t sizes[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8,
	    8 };
	uint64_t	len;

	if (kv->type == GGUF_TYPE_STRING) {
		memcpy(&len, kv->data, 8);
		return 8 + len;
	}
	if (kv->type != GGUF_TYPE_ARRAY)
		return sizes[kv->type];
	if (kv->arr_type == GGUF_TYPE_STRING)
		return kv->arr_n == 0 ? 0 :
		    (uint64_t)((const char *)kv->strs[kv->arr_n - 1].ptr +
		    kv->strs[kv->arr_n - 1].len - (const char *)kv->data);
	return kv->arr_n * sizes[kv->arr_type];
}

/* Same key, type and value bytes. */
static int
t_kv_equal(const struct gguf_kv *a, const struct gguf_kv *b)
{
	return a->key.len == b->key.len &&
	    memcmp(a->key.ptr, b->key.ptr, a->key.len) == 0 &&
	    a->type == b->type &&
	    (a->type != GGUF_TYPE_ARRAY || (a->arr_type == b->arr_type &&
	    a->arr_n == b->arr_n)) &&
	    t_value_size(a) == t_value_size(b) &&
	    memcmp(a->data, b->data, t_value_size(a)) == 0;
}

static int
t_shape(const struct gguf_file *f, const char *name, enum ggml_type type,
    uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint64_t ne2)
{
	const struct gguf_tensor *t = gguf_find_tensor(f, name);

	return t != NULL && t->type == type && t->n_dims == n_dims &&
	    t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == ne2 &&
	    t->ne[3] == 1;
}

/* "blk.L.WHAT.weight" (static buffer). */
static const char *
t_blk(uint64_t l, const char *what)
{
	static char	buf[64];

	snprintf(buf, sizeof buf, "blk.%llu.%s.weight", (unsigned long long)l,
	    what);
	return buf;
}

static int
t_u32_is(const struct gguf_file *f, const char *key, uint32_t want)
{
	uint32_t	v;

	return gguf_get_u32(f, key, &v) == 0 && v == want;
}

static int
t_str_is(const struct gguf_file *f, const char *key, const char *want)
{
	struct gguf_str	s;

	return gguf_get_str(f, key, &s) == 0 && gguf_str_eq(s, want);
}

/* A file string as a C string (static buffer, cut at 255 bytes). */
static const char *
t_cstr(struct gguf_str s)
{
	static char	buf[256];

	snprintf(buf, sizeof buf, "%.*s", (int)(s.len < 255 ? s.len : 255),
	    s.ptr);
	return buf;
}

/*
 * Every tensor's bytes inside the file, offsets multiples of align, sizes
 * consistent, and each found by its name.
 */
static int
t_tensors_sane(const struct gguf_file *f, uint64_t align)
{
	const struct gguf_tensor	*t;
	const char			*base = gguf_base(f);
	uint64_t			 i, n, size = gguf_file_size(f);

	if (gguf_find_tensor(f, "no.such.tensor") != NULL)
		return 0;
	for (i = 0; i < gguf_n_tensors(f); i++) {
		t = gguf_tensor_at(f, i);
		n = t->ne[1] * t->ne[2] * t->ne[3];
		if ((const char *)t->data < base ||
		    (uint64_t)((const char *)t->data - base) + t->size > size ||
		    t->offset % align != 0 ||
		    t->size != quant_row_size(t->type, t->ne[0]) * n)
			return 0;
		if (memchr(t->name.ptr, '\0', t->name.len) == NULL &&
		    gguf_find_tensor(f, t_cstr(t->name)) != t)
			return 0;
	}
	return 1;
}

/* ---- 1. fixtures --------------------------------------------------- */

struct t_fixture {
	const char	*rel;
	uint64_t	 n_tensors;
	uint32_t	 layers;
	uint32_t	 dim;
	enum ggml_type	 embd_type;
	uint32_t	 file_type;
};

static void
t_fixture_one(const struct t_fixture *fx)
{
	struct gguf_file	*f;
	const struct gguf_kv	*kv;
	const char		*p;
	char			 path[4096], err[512];
	int			 rc;

	if ((p = tap_fixture(fx->rel)) == NULL) {
		tap_skip("fixtures absent");
		return;
	}
	snprintf(path, sizeof path, "%s", p);
	rc = gguf_open(path, 1, &f, err, sizeof err);
	tap_ok(rc == 0, "%s opens (%s)", fx->rel, rc ? err : "ok");
	if (rc != 0)
		return;
	tap_ok(gguf_version(f) == 3 && gguf_n_tensors(f) == fx->n_tensors &&
	    t_u32_is(f, "llama.block_count", fx->layers) &&
	    t_u32_is(f, "llama.embedding_length", fx->dim) &&
	    t_str_is(f, "general.architecture", "llama") &&
	    t_u32_is(f, "general.file_type", fx->file_type),
	    "%s: version 3, %llu tensors, %u layers, dim %u, file type %u",
	    fx->rel, (unsigned long long)fx->n_tensors, fx->layers, fx->dim,
	    fx->file_type);
	tap_ok(gguf_get_arr(f, "tokenizer.ggml.tokens", &kv) == 0 &&
	    kv->arr_type == GGUF_TYPE_STRING && kv->strs != NULL &&
	    gguf_str_eq(kv->strs[1], "<s>") &&
	    t_u32_is(f, "tokenizer.ggml.bos_token_id", 1),
	    "%s: vocabulary with <s> = 1", fx->rel);
	if (fx->n_tensors > 0)
		tap_ok(t_shape(f, "token_embd.weight", fx->embd_type, 2,
		    fx->dim, kv->arr_n, 1) && t_tensors_sane(f, 32),
		    "%s: token_embd is [%u, %llu], every tensor in bounds",
		    fx->rel, fx->dim, (unsigned long long)kv->arr_n);
	gguf_close(f);
}

static void
t_fixtures(void)
{
	static const struct t_fixture fx[] = {
		{ "dense/dense-f32.gguf", 21, 2, 256, GGML_TYPE_F32, 0 },
		{ "dense/dense-q8_0.gguf", 21, 2, 256, GGML_TYPE_Q8_0, 7 },
		{ "dense/dense-q4_0.gguf", 21, 2, 256, GGML_TYPE_Q4_0, 2 },
		{ "dense/dense-q4_k_m.gguf", 21, 2, 256, GGML_TYPE_Q4_K, 15 },
		{ "dense/dense-q5_k_m.gguf", 21, 2, 256, GGML_TYPE_Q5_K, 17 },
		{ "dense/dense-q6_k.gguf", 21, 2, 256, GGML_TYPE_Q6_K, 18 },
		{ "moe/moe-f32.gguf", 23, 2, 256, GGML_TYPE_F32, 0 },
		{ "moe/moe-q8_0.gguf", 23, 2, 256, GGML_TYPE_Q8_0, 7 },
		{ "moe/moe-q4_0.gguf", 23, 2, 256, GGML_TYPE_Q4_0, 2 },
		{ "moe/moe-q4_k_m.gguf", 23, 2, 256, GGML_TYPE_Q4_K, 15 },
		{ "moe/moe-q5_k_m.gguf", 23, 2, 256, GGML_TYPE_Q5_K, 17 },
		{ "moe/moe-q6_k.gguf", 23, 2, 256, GGML_TYPE_Q6_K, 18 },
		{ "f16/tiny-f16.gguf", 21, 2, 128, GGML_TYPE_F16, 1 },
		{ "f16/tiny-bf16.gguf", 21, 2, 128, GGML_TYPE_BF16, 32 },
		{ "stories260K/stories260K.gguf", 48, 5, 64, GGML_TYPE_F32, 0 },
		{ "vocab/ggml-vocab-llama-spm.gguf", 0, 32, 4096, 0, 1 },
	};
	struct gguf_file	*f;
	const struct gguf_kv	*kv, *sc;
	const char		*p;
	char			 err[512];
	uint32_t		 u;
	float			 x;
	size_t			 i;

	for (i = 0; i < sizeof fx / sizeof *fx; i++)
		t_fixture_one(&fx[i]);

	/* Details the README states. */
	if ((p = tap_fixture("moe/moe-q4_k_m.gguf")) != NULL &&
	    gguf_open(p, 1, &f, err, sizeof err) == 0) {
		tap_ok(t_u32_is(f, "llama.expert_count", 4) &&
		    t_u32_is(f, "llama.expert_used_count", 2) &&
		    t_shape(f, "blk.0.ffn_gate_exps.weight", GGML_TYPE_Q4_K, 3,
		    256, 256, 4) &&
		    t_shape(f, "blk.1.ffn_down_exps.weight", GGML_TYPE_Q6_K, 3,
		    256, 256, 4) &&
		    t_shape(f, "blk.0.ffn_down_exps.weight", GGML_TYPE_Q4_K, 3,
		    256, 256, 4) &&
		    t_shape(f, "blk.0.ffn_gate_inp.weight", GGML_TYPE_F32, 2,
		    256, 4, 1) &&
		    t_shape(f, "blk.1.attn_v.weight", GGML_TYPE_Q6_K, 2, 256,
		    128, 1) &&
		    t_shape(f, "output.weight", GGML_TYPE_Q6_K, 2, 256, 512, 1),
		    "moe-q4_k_m: 4 experts (2 used), merged expert tensors, "
		    "Q6_K where llama-quantize puts it");
		gguf_close(f);
	} else
		tap_skip("moe-q4_k_m fixture absent");

	if ((p = tap_fixture("stories260K/stories260K.gguf")) != NULL &&
	    gguf_open(p, 1, &f, err, sizeof err) == 0) {
		tap_ok(t_u32_is(f, "llama.attention.head_count", 8) &&
		    t_u32_is(f, "llama.attention.head_count_kv", 4) &&
		    t_u32_is(f, "llama.feed_forward_length", 172) &&
		    t_u32_is(f, "llama.context_length", 512) &&
		    gguf_get_f32(f, "llama.rope.freq_base", &x) == 0 &&
		    x == 10000.0f &&
		    t_shape(f, "blk.4.ffn_down.weight", GGML_TYPE_F32, 2, 172,
		    64, 1) &&
		    gguf_find_tensor(f, "blk.5.ffn_down.weight") == NULL,
		    "stories260K: 8/4 heads, ffn 172, ctx 512, 5 layers");
		gguf_close(f);
	} else
		tap_skip("stories260K fixture absent");

	if ((p = tap_fixture("vocab/ggml-vocab-llama-spm.gguf")) != NULL &&
	    gguf_open(p, 1, &f, err, sizeof err) == 0) {
		tap_ok(gguf_n_tensors(f) == 0 &&
		    gguf_get_arr(f, "tokenizer.ggml.tokens", &kv) == 0 &&
		    kv->arr_n == 32000 &&
		    gguf_str_eq(kv->strs[29871], "\xe2\x96\x81") &&
		    gguf_str_eq(kv->strs[450], "\xe2\x96\x81The") &&
		    gguf_str_eq(kv->strs[13], "<0x0A>") &&
		    gguf_get_arr(f, "tokenizer.ggml.scores", &sc) == 0 &&
		    sc->arr_n == 32000 && gguf_arr_f32(sc, 29871) == -1e9f &&
		    gguf_get_arr(f, "tokenizer.ggml.token_type", &kv) == 0 &&
		    kv->arr_n == 32000 && gguf_arr_i64(kv, 13) == 6 &&
		    gguf_arr_i64(kv, 0) == 2 &&
		    gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) == 0 &&
		    u == 2,
		    "vocab: 32000 tokens, scores and types, no tensors");
		gguf_close(f);
	} else
		tap_skip("vocab fixture absent");
}

/* ---- 2. the writer ------------------------------------------------- */

static int
t_fill_cb(void *arg, uint64_t row0, uint64_t n, void *dst)
{
	float		*out = dst;
	uint64_t	 i, j, cols = *(uint64_t *)arg;

	for (i = 0; i < n; i++)
		for (j = 0; j < cols; j++)
			out[i * cols + j] = (float)((row0 + i) * 1000 + j);
	return 0;
}

static int
t_fail_cb(void *arg, uint64_t row0, uint64_t n, void *dst)
{
	return row0 + n > 2 ? -EIO : t_fill_cb(arg, row0, n, dst);
}

static void
t_writer(void)
{
	static const char *const strs[] = { "a", "", "\xe2\x96\x81hello" };
	const float		 fa[] = { 1.5f, -2.0f, 3.25f };
	const int32_t		 ia[] = { -1, 0, 7 };
	uint64_t		 ne2[2] = { 64, 3 }, ne1[1] = { 32 };
	uint64_t		 ne_part[1] = { 16 };
	uint64_t		 ne_big[2] = { 1000, 3 }, cols = 1000, i;
	struct gguf_writer	*w;
	struct gguf_file	*f;
	const struct gguf_tensor *t;
	const struct gguf_kv	*kv;
	struct gguf_str		 s;
	char			 err[512];
	uint8_t			 q8[2 * 3 * 34], f16[32 * 2];
	float			 f32[64 * 3], x;
	int32_t			 i32;
	uint32_t		 u;
	int			 b, ok, rc;
	struct stat		 st;

	for (i = 0; i < sizeof q8; i++)
		q8[i] = (uint8_t)(i * 7 + 3);
	for (i = 0; i < sizeof f16; i++)
		f16[i] = (uint8_t)(i * 5 + 1);
	for (i = 0; i < 64 * 3; i++)
		f32[i] = (float)i * 0.5f - 3.0f;

	w = gguf_writer_create();
	tap_ok(w != NULL, "writer created");
	ok = gguf_writer_set_u32(w, "a.u32", 0xfffffff0u) == 0 &&
	    gguf_writer_set_i32(w, "a.i32", -5) == 0 &&
	    gguf_writer_set_f32(w, "a.f32", 0.125f) == 0 &&
	    gguf_writer_set_bool(w, "a.bool", 1) == 0 &&
	    gguf_writer_set_str(w, "a.str", "first") == 0 &&
	    gguf_writer_set_str(w, "a.str", "second value") == 0 &&
	    gguf_writer_set_arr_str(w, "a.astr", strs, 3) == 0 &&
	    gguf_writer_set_arr_f32(w, "a.af32", fa, 3) == 0 &&
	    gguf_writer_set_arr_i32(w, "a.ai32", ia, 3) == 0 &&
	    gguf_writer_set_arr_str(w, "a.empty", NULL, 0) == 0 &&
	    gguf_writer_set_u32(w, "general.alignment", 64) == 0;
	tap_ok(ok, "every setter accepts its value");
	tap_ok(gguf_writer_set_u32(w, "", 1) == -EINVAL &&
	    gguf_writer_set_str(w, "a.x", NULL) == -EINVAL,
	    "empty key and NULL string refused");

	ok = gguf_writer_add_tensor(w, "t.f32", GGML_TYPE_F32, 2, ne2, f32,
	    sizeof f32) == 0 &&
	    gguf_writer_add_tensor(w, "t.q8", GGML_TYPE_Q8_0, 2, ne2, q8,
	    sizeof q8) == 0 &&
	    gguf_writer_add_tensor(w, "t.f16", GGML_TYPE_F16, 1, ne1, f16,
	    sizeof f16) == 0 &&
	    gguf_writer_add_tensor_cb(w, "t.cb", GGML_TYPE_F32, 2, ne_big,
	    t_fill_cb, &cols) == 0;
	tap_ok(ok, "tensors added (copied and streamed)");
	tap_ok(gguf_writer_add_tensor(w, "t.f32", GGML_TYPE_F32, 2, ne2, f32,
	    sizeof f32) == -EEXIST &&
	    gguf_writer_add_tensor(w, "t.bad", GGML_TYPE_F32, 2, ne2, f32,
	    sizeof f32 - 4) == -EINVAL &&
	    gguf_writer_add_tensor(w, "t.bad", GGML_TYPE_Q8_0, 1, ne_part,
	    q8, 17) == -EINVAL &&
	    gguf_writer_add_tensor(w, "t.bad", GGML_TYPE_F32, 5, ne2, f32,
	    sizeof f32) == -EINVAL &&
	    gguf_writer_add_tensor(w, "t.bad", (enum ggml_type)99, 1, ne1,
	    f32, 128) == -EINVAL &&
	    gguf_writer_add_tensor(w,
	    "a.name.that.is.much.longer.than.sixty.three.bytes.long.xxxxxxxxx",
	    GGML_TYPE_F32, 1, ne1, f32, 128) == -EINVAL,
	    "duplicate, wrong size, partial block, 5 dims, unknown type, "
	    "long name refused");

	rc = gguf_writer_write(w, t_path("w.gguf"), err, sizeof err);
	tap_ok(rc == 0, "written (%s)", rc ? err : "ok");
	tap_ok(stat(t_path("w.gguf.tmp"), &st) == -1 && errno == ENOENT,
	    "no temporary file left");
	rc = gguf_writer_write(w, t_path("no/such/dir/w.gguf"), err,
	    sizeof err);
	tap_ok(rc == -ENOENT && strstr(err, "no/such/dir/w.gguf") != NULL,
	    "write into a missing directory: -ENOENT, message names it (%s)",
	    err);
	gguf_writer_free(w);

	rc = gguf_open(t_path("w.gguf"), 1, &f, err, sizeof err);
	tap_ok(rc == 0, "reads back (%s)", rc ? err : "ok");
	if (rc != 0)
		return;
	tap_ok(gguf_n_kv(f) == 10 && gguf_n_tensors(f) == 4,
	    "10 keys (one set twice), 4 tensors");
	ok = gguf_get_u32(f, "a.u32", &u) == 0 && u == 0xfffffff0u &&
	    gguf_get_i32(f, "a.i32", &i32) == 0 && i32 == -5 &&
	    gguf_get_f32(f, "a.f32", &x) == 0 && x == 0.125f &&
	    gguf_get_bool(f, "a.bool", &b) == 0 && b == 1 &&
	    t_str_is(f, "a.str", "second value") &&
	    gguf_get_arr(f, "a.astr", &kv) == 0 && kv->arr_n == 3 &&
	    gguf_str_eq(kv->strs[0], "a") && gguf_str_eq(kv->strs[1], "") &&
	    gguf_str_eq(kv->strs[2], "\xe2\x96\x81hello") &&
	    gguf_get_arr(f, "a.af32", &kv) == 0 &&
	    kv->arr_type == GGUF_TYPE_FLOAT32 && gguf_arr_f32(kv, 0) == 1.5f &&
	    gguf_arr_f32(kv, 2) == 3.25f && gguf_arr_f32(kv, 3) == 0.0f &&
	    gguf_get_arr(f, "a.ai32", &kv) == 0 &&
	    gguf_arr_i64(kv, 0) == -1 && gguf_arr_i64(kv, 2) == 7 &&
	    gguf_get_arr(f, "a.empty", &kv) == 0 && kv->arr_n == 0 &&
	    kv->arr_type == GGUF_TYPE_STRING;
	tap_ok(ok, "every value round-trips");
	ok = (t = gguf_find_tensor(f, "t.f32")) != NULL &&
	    t->size == sizeof f32 && memcmp(t->data, f32, sizeof f32) == 0 &&
	    (t = gguf_find_tensor(f, "t.q8")) != NULL &&
	    t->type == GGML_TYPE_Q8_0 && t->ne[0] == 64 && t->ne[1] == 3 &&
	    memcmp(t->data, q8, sizeof q8) == 0 &&
	    (t = gguf_find_tensor(f, "t.f16")) != NULL && t->n_dims == 1 &&
	    memcmp(t->data, f16, sizeof f16) == 0;
	tap_ok(ok, "copied tensors round-trip");
	ok = (t = gguf_find_tensor(f, "t.cb")) != NULL && t->size == 12000;
	for (i = 0; ok && i < 3000; i++) {
		memcpy(&x, (const char *)t->data + 4 * i, 4);
		ok = x == (float)(i / 1000 * 1000 + i % 1000);
	}
	tap_ok(ok, "streamed tensor round-trips");
	ok = 1;
	for (i = 0; i < gguf_n_tensors(f); i++)
		ok &= gguf_tensor_at(f, i)->offset % 64 == 0 &&
		    ((const char *)gguf_tensor_at(f, i)->data -
		    (const char *)gguf_base(f)) % 64 == 0;
	tap_ok(ok && gguf_file_size(f) % 64 == 0,
	    "general.alignment 64 honoured, data padded to the end");

	/* Typed getters: range and type checks. */
	tap_ok(gguf_get_i32(f, "a.u32", &i32) == -EINVAL &&
	    gguf_get_u32(f, "a.i32", &u) == -EINVAL &&
	    gguf_get_u32(f, "a.str", &u) == -EINVAL &&
	    gguf_get_bool(f, "a.u32", &b) == -EINVAL &&
	    gguf_get_f32(f, "a.u32", &x) == -EINVAL &&
	    gguf_get_str(f, "a.u32", &s) == -EINVAL &&
	    gguf_get_arr(f, "a.str", &kv) == -EINVAL &&
	    gguf_get_u32(f, "nope", &u) == -ENOENT &&
	    gguf_find_kv(f, "a.u3") == NULL && gguf_kv_at(f, 10) == NULL &&
	    gguf_tensor_at(f, 4) == NULL,
	    "getters refuse wrong types and out-of-range values");

	/* Copying a key of every kind with gguf_writer_set_kv(). */
	w = gguf_writer_create();
	ok = 1;
	for (i = 0; i < gguf_n_kv(f); i++)
		ok &= gguf_writer_set_kv(w, gguf_kv_at(f, i)) == 0;
	ok &= gguf_writer_write(w, t_path("w2.gguf"), err, sizeof err) == 0;
	gguf_writer_free(w);
	if (ok) {
		struct gguf_file *g;

		ok = gguf_open(t_path("w2.gguf"), 1, &g, err, sizeof err) == 0;
		for (i = 0; ok && i < gguf_n_kv(f); i++)
			ok = t_kv_equal(gguf_kv_at(f, i), gguf_kv_at(g, i));
		gguf_close(g);
	}
	tap_ok(ok, "gguf_writer_set_kv copies every kind of value");
	gguf_close(f);

	/* A failing fill callback aborts the write and leaves nothing. */
	w = gguf_writer_create();
	gguf_writer_add_tensor_cb(w, "t.cb", GGML_TYPE_F32, 2, ne_big,
	    t_fail_cb, &cols);
	rc = gguf_writer_write(w, t_path("fail.gguf"), err, sizeof err);
	tap_ok(rc == -EIO && strstr(err, "t.cb") != NULL &&
	    stat(t_path("fail.gguf"), &st) == -1 &&
	    stat(t_path("fail.gguf.tmp"), &st) == -1,
	    "failing callback: -EIO naming the tensor, no file left (%s)",
	    err);
	gguf_writer_free(w);
}

/* ---- 3. mkmodel ---------------------------------------------------- */

/* Mean and standard deviation of n floats. */
static void
t_stats(const float *v, uint64_t n, double *mean, double *sd)
{
	double		s = 0, ss = 0;
	uint64_t	i;

	for (i = 0; i < n; i++)
		s += v[i];
	*mean = s / n;
	for (i = 0; i < n; i++)
		ss += (v[i] - *mean) * (v[i] - *mean);
	*sd = sqrt(ss / n);
}

static const float *
t_f32(const struct gguf_file *f, const char *name, uint64_t *n)
{
	const struct gguf_tensor *t = gguf_find_tensor(f, name);

	if (t == NULL || t->type != GGML_TYPE_F32)
		return NULL;
	*n = t->size / 4;
	return t->data;	/* aligned to 32 in the mapping */
}

static int
t_files_equal(const char *a, const char *b)
{
	size_t	la, lb;
	void	*pa = t_read_file(a, &la), *pb = t_read_file(b, &lb);
	int	eq = pa != NULL && pb != NULL && la == lb &&
	    memcmp(pa, pb, la) == 0;

	free(pa);
	free(pb);
	return eq;
}

static void
t_mkmodel_default(void)
{
	struct mkmodel_params	 p;
	struct gguf_file	*f;
	const struct gguf_kv	*tok, *sc, *ty;
	const float		*v;
	char			 err[512];
	double			 mean, sd, small;
	uint64_t		 n, i, j;
	float			 x;
	int			 b, ok, rc;

	mkmodel_defaults(&p);
	rc = mkmodel_write(&p, t_path("m.gguf"), err, sizeof err);
	tap_ok(rc == 0, "mkmodel writes the default model (%s)",
	    rc ? err : "ok");
	if (rc != 0 || gguf_open(t_path("m.gguf"), 1, &f, err,
	    sizeof err) != 0) {
		tap_ok(0, "default model opens (%s)", err);
		return;
	}
	ok = t_str_is(f, "general.architecture", "llama") &&
	    t_str_is(f, "general.name", "mkmodel") &&
	    t_u32_is(f, "general.file_type", 0) &&
	    t_u32_is(f, "llama.context_length", 2048) &&
	    t_u32_is(f, "llama.embedding_length", 64) &&
	    t_u32_is(f, "llama.block_count", 2) &&
	    t_u32_is(f, "llama.feed_forward_length", 128) &&
	    t_u32_is(f, "llama.attention.head_count", 4) &&
	    t_u32_is(f, "llama.attention.head_count_kv", 2) &&
	    t_u32_is(f, "llama.rope.dimension_count", 16) &&
	    gguf_get_f32(f, "llama.rope.freq_base", &x) == 0 &&
	    x == 10000.0f &&
	    gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &x) ==
	    0 && x == 1e-5f &&
	    gguf_find_kv(f, "llama.expert_count") == NULL &&
	    gguf_find_kv(f, "llama.attention.sliding_window") == NULL &&
	    gguf_find_kv(f, "general.quantization_version") == NULL;
	tap_ok(ok, "default model: llama hyperparameters as llama.cpp names "
	    "them");
	ok = t_str_is(f, "tokenizer.ggml.model", "llama") &&
	    t_u32_is(f, "tokenizer.ggml.bos_token_id", 1) &&
	    t_u32_is(f, "tokenizer.ggml.eos_token_id", 2) &&
	    t_u32_is(f, "tokenizer.ggml.unknown_token_id", 0) &&
	    gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == 0 &&
	    b == 1 &&
	    gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b) == 0 &&
	    b == 0 &&
	    gguf_get_arr(f, "tokenizer.ggml.tokens", &tok) == 0 &&
	    gguf_get_arr(f, "tokenizer.ggml.scores", &sc) == 0 &&
	    gguf_get_arr(f, "tokenizer.ggml.token_type", &ty) == 0 &&
	    tok->arr_n == 512 && sc->arr_n == 512 && ty->arr_n == 512 &&
	    sc->arr_type == GGUF_TYPE_FLOAT32 &&
	    ty->arr_type == GGUF_TYPE_INT32 &&
	    gguf_str_eq(tok->strs[0], "<unk>") && gguf_arr_i64(ty, 0) == 2 &&
	    gguf_str_eq(tok->strs[1], "<s>") && gguf_arr_i64(ty, 1) == 3 &&
	    gguf_str_eq(tok->strs[2], "</s>") && gguf_arr_i64(ty, 2) == 3 &&
	    gguf_str_eq(tok->strs[3], "<0x00>") && gguf_arr_i64(ty, 3) == 6 &&
	    gguf_str_eq(tok->strs[258], "<0xFF>") &&
	    gguf_arr_i64(ty, 258) == 6;
	for (i = 259; ok && i < 512; i++)
		ok = gguf_arr_i64(ty, i) == 1 &&
		    gguf_arr_f32(sc, i) < gguf_arr_f32(sc, i - 1) + (i == 259);
	for (i = 0; ok && i < 512; i++)
		for (j = 0; ok && j < i; j++)
			ok = tok->strs[i].len != tok->strs[j].len ||
			    memcmp(tok->strs[i].ptr, tok->strs[j].ptr,
			    tok->strs[i].len) != 0;
	tap_ok(ok, "synthetic vocabulary: specials, 256 bytes, unique normal "
	    "pieces with decreasing scores");

	ok = gguf_n_tensors(f) == 21 &&
	    t_shape(f, "token_embd.weight", GGML_TYPE_F32, 2, 64, 512, 1) &&
	    t_shape(f, "output_norm.weight", GGML_TYPE_F32, 1, 64, 1, 1) &&
	    t_shape(f, "output.weight", GGML_TYPE_F32, 2, 64, 512, 1);
	for (i = 0; ok && i < 2; i++) {
		ok = t_shape(f, t_blk(i, "attn_norm"), 0, 1, 64, 1, 1) &&
		    t_shape(f, t_blk(i, "attn_q"), 0, 2, 64, 64, 1) &&
		    t_shape(f, t_blk(i, "attn_k"), 0, 2, 64, 32, 1) &&
		    t_shape(f, t_blk(i, "attn_v"), 0, 2, 64, 32, 1) &&
		    t_shape(f, t_blk(i, "attn_output"), 0, 2, 64, 64, 1) &&
		    t_shape(f, t_blk(i, "ffn_norm"), 0, 1, 64, 1, 1) &&
		    t_shape(f, t_blk(i, "ffn_gate"), 0, 2, 64, 128, 1) &&
		    t_shape(f, t_blk(i, "ffn_up"), 0, 2, 64, 128, 1) &&
		    t_shape(f, t_blk(i, "ffn_down"), 0, 2, 128, 64, 1);
	}
	tap_ok(ok && t_tensors_sane(f, 32), "21 tensors with llama.cpp's names "
	    "and shapes");

	ok = (v = t_f32(f, "token_embd.weight", &n)) != NULL;
	if (ok) {
		t_stats(v, n, &mean, &sd);
		ok = fabs(mean) < 0.02 && fabs(sd - 1.0) < 0.02;
	}
	tap_ok(ok, "token_embd ~ N(0, 1): mean %.4f sd %.4f", mean, sd);
	ok = (v = t_f32(f, "blk.1.ffn_down.weight", &n)) != NULL;
	if (ok) {
		t_stats(v, n, &mean, &sd);
		ok = fabs(mean) < 0.01 && fabs(sd * sqrt(128.0) - 1.0) < 0.03;
	}
	tap_ok(ok, "ffn_down ~ N(0, 1/128): sd %.4f", sd);
	ok = (v = t_f32(f, "blk.0.attn_norm.weight", &n)) != NULL;
	if (ok) {
		t_stats(v, n, &mean, &sd);
		ok = fabs(mean - 1.0) < 0.05 && sd > 0.06 && sd < 0.14;
	}
	tap_ok(ok, "norms ~ 1 + N(0, 0.01): mean %.4f sd %.4f", mean, sd);
	ok = (v = t_f32(f, "output.weight", &n)) != NULL;
	if (ok) {
		t_stats(v, 3 * 64, &mean, &small);
		t_stats(v + 3 * 64, n - 3 * 64, &mean, &sd);
		ok = fabs(small / sd - 0.1) < 0.03;
	}
	tap_ok(ok, "output rows of <unk> <s> </s> scaled by 0.1 (%.4f vs "
	    "%.4f)", small, sd);
	gguf_close(f);

	/* Determinism. */
	rc = mkmodel_write(&p, t_path("m2.gguf"), err, sizeof err);
	tap_ok(rc == 0 && t_files_equal(t_path("m.gguf"), t_path("m2.gguf")),
	    "same parameters give the same bytes");
	p.seed = 2;
	rc = mkmodel_write(&p, t_path("m2.gguf"), err, sizeof err);
	tap_ok(rc == 0 && !t_files_equal(t_path("m.gguf"), t_path("m2.gguf")),
	    "another seed gives other weights");
}

static void
t_mkmodel_shapes(void)
{
	struct mkmodel_params	 p;
	struct gguf_file	*f;
	char			 err[512];
	uint32_t		 u;
	int			 ok, rc;

	mkmodel_defaults(&p);
	p.n_experts = 4;
	p.n_experts_used = 2;
	p.sliding_window = 256;
	p.name = "moe-test";
	rc = mkmodel_write(&p, t_path("moe.gguf"), err, sizeof err);
	ok = rc == 0 && gguf_open(t_path("moe.gguf"), 1, &f, err,
	    sizeof err) == 0;
	tap_ok(ok, "MoE model written and read (%s)", ok ? "ok" : err);
	if (ok) {
		tap_ok(t_u32_is(f, "llama.expert_count", 4) &&
		    t_u32_is(f, "llama.expert_used_count", 2) &&
		    t_u32_is(f, "llama.attention.sliding_window", 256) &&
		    t_str_is(f, "general.name", "moe-test") &&
		    gguf_n_tensors(f) == 2 + 2 * 10 + 1 &&
		    t_shape(f, "blk.1.ffn_gate_inp.weight", GGML_TYPE_F32, 2,
		    64, 4, 1) &&
		    t_shape(f, "blk.1.ffn_gate_exps.weight", GGML_TYPE_F32, 3,
		    64, 128, 4) &&
		    t_shape(f, "blk.1.ffn_up_exps.weight", GGML_TYPE_F32, 3,
		    64, 128, 4) &&
		    t_shape(f, "blk.1.ffn_down_exps.weight", GGML_TYPE_F32, 3,
		    128, 64, 4) &&
		    gguf_find_tensor(f, "blk.0.ffn_gate.weight") == NULL,
		    "MoE: expert keys, window, merged 3-D expert tensors");
		gguf_close(f);
	}

	p.split_experts = 1;
	p.tied_output = 1;
	p.sliding_window = 0;
	rc = mkmodel_write(&p, t_path("moe.gguf"), err, sizeof err);
	ok = rc == 0 && gguf_open(t_path("moe.gguf"), 1, &f, err,
	    sizeof err) == 0;
	tap_ok(ok, "split-expert tied model written and read (%s)",
	    ok ? "ok" : err);
	if (ok) {
		tap_ok(gguf_n_tensors(f) == 1 + 2 * (7 + 12) + 1 &&
		    t_shape(f, "blk.0.ffn_gate.3.weight", GGML_TYPE_F32, 2, 64,
		    128, 1) &&
		    t_shape(f, "blk.1.ffn_down.0.weight", GGML_TYPE_F32, 2, 128,
		    64, 1) &&
		    gguf_find_tensor(f, "blk.0.ffn_gate_exps.weight") == NULL &&
		    gguf_find_tensor(f, "output.weight") == NULL &&
		    gguf_find_kv(f, "llama.attention.sliding_window") == NULL,
		    "split experts blk.N.ffn_gate.E.weight, no output.weight");
		gguf_close(f);
	}

	/* Parameters that cannot make a model. */
	mkmodel_defaults(&p);
	p.n_heads = 5;
	rc = mkmodel_write(&p, t_path("bad.gguf"), err, sizeof err);
	tap_ok(rc == -EINVAL && strncmp(err, t_path("bad.gguf"),
	    strlen(t_path("bad.gguf"))) == 0,
	    "dim 64 with 5 heads refused (%s)", err);
	mkmodel_defaults(&p);
	p.type = GGML_TYPE_Q4_K;
	rc = mkmodel_write(&p, t_path("bad.gguf"), err, sizeof err);
	tap_ok(rc == -EINVAL || rc == -ENOTSUP,
	    "q4_K with rows of 64 refused (%s)", err);
	mkmodel_defaults(&p);
	p.n_vocab = 100;
	tap_ok(mkmodel_write(&p, t_path("bad.gguf"), err, sizeof err) ==
	    -EINVAL, "vocabulary of 100 refused (%s)", err);
	mkmodel_defaults(&p);
	p.n_experts = 2;
	p.n_experts_used = 3;
	tap_ok(mkmodel_write(&p, t_path("bad.gguf"), err, sizeof err) ==
	    -EINVAL, "3 of 2 experts refused (%s)", err);
	mkmodel_defaults(&p);
	p.vocab_from = t_path("no-such.gguf");
	tap_ok(mkmodel_write(&p, t_path("bad.gguf"), err, sizeof err) ==
	    -ENOENT && access(t_path("bad.gguf"), F_OK) == -1,
	    "missing vocabulary file: -ENOENT, nothing written (%s)", err);

	/* A copied vocabulary. */
	if (tap_fixture("vocab/ggml-vocab-llama-spm.gguf") == NULL) {
		tap_skip("vocab fixture absent");
		return;
	}
	{
		struct gguf_file	*v;
		const struct gguf_kv	*kv, *kv2;
		char			 vpath[4096];
		uint64_t		 i, n = 0;

		snprintf(vpath, sizeof vpath, "%s",
		    tap_fixture("vocab/ggml-vocab-llama-spm.gguf"));
		mkmodel_defaults(&p);
		p.vocab_from = vpath;
		p.n_vocab = 0;
		rc = mkmodel_write(&p, t_path("v.gguf"), err, sizeof err);
		ok = rc == 0 && gguf_open(t_path("v.gguf"), 1, &f, err,
		    sizeof err) == 0 && gguf_open(vpath, 0, &v, err,
		    sizeof err) == 0;
		tap_ok(ok, "model with the llama-spm vocabulary (%s)",
		    ok ? "ok" : err);
		if (!ok)
			return;
		for (i = 0; ok && i < gguf_n_kv(v); i++) {
			kv = gguf_kv_at(v, i);
			if (kv->key.len < 10 ||
			    memcmp(kv->key.ptr, "tokenizer.", 10) != 0)
				continue;
			snprintf(err, sizeof err, "%.*s", (int)kv->key.len,
			    kv->key.ptr);
			kv2 = gguf_find_kv(f, err);
			ok = kv2 != NULL && t_kv_equal(kv, kv2);
			n++;
		}
		tap_ok(ok && n == 10 &&
		    t_shape(f, "token_embd.weight", GGML_TYPE_F32, 2, 64,
		    32000, 1) &&
		    t_shape(f, "output.weight", GGML_TYPE_F32, 2, 64, 32000,
		    1) && gguf_get_u32(f, "llama.vocab_size", &u) == 0 &&
		    u == 32000,
		    "all %llu tokenizer.* keys copied byte for byte; 32000 "
		    "rows", (unsigned long long)n);
		gguf_close(v);
		gguf_close(f);
	}
}

/* Quantized types: tensor types, file type, values near the F32 twin. */
static void
t_mkmodel_types(void)
{
	static const struct {
		const char	*name;
		enum ggml_type	 type;
		int		 mix;
		uint32_t	 ftype;
		double		 tol;	/* relative RMS error bound */
	} types[] = {
		{ "f16", GGML_TYPE_F16, 0, 1, 0.001 },
		{ "bf16", GGML_TYPE_BF16, 0, 32, 0.01 },
		{ "q8_0", GGML_TYPE_Q8_0, 0, 7, 0.02 },
		{ "q4_0", GGML_TYPE_Q4_0, 0, 2, 0.2 },
		{ "q4_K", GGML_TYPE_Q4_K, 0, 14, 0.2 },
		{ "q5_K", GGML_TYPE_Q5_K, 0, 16, 0.1 },
		{ "q6_K", GGML_TYPE_Q6_K, 0, 18, 0.05 },
		{ "q4_K_M", GGML_TYPE_Q4_K, 1, 15, 0.2 },
		{ "q5_K_M", GGML_TYPE_Q5_K, 1, 17, 0.1 },
	};
	struct mkmodel_params	 p;
	struct gguf_file	*ref = NULL, *f;
	const struct gguf_tensor *t, *tr;
	char			 err[512];
	float			*deq;
	const float		*want;
	double			 e2, r2, d;
	uint64_t		 i, j, k;
	int			 ok, rc;

	mkmodel_defaults(&p);
	p.dim = 256;
	p.ffn_dim = 512;
	p.n_heads = 8;
	p.n_kv_heads = 4;
	if (mkmodel_write(&p, t_path("ref.gguf"), err, sizeof err) != 0 ||
	    gguf_open(t_path("ref.gguf"), 1, &ref, err, sizeof err) != 0) {
		tap_ok(0, "F32 reference model (%s)", err);
		return;
	}
	deq = malloc(512 * sizeof *deq);
	for (i = 0; i < sizeof types / sizeof *types; i++) {
		p.type = types[i].type;
		p.q4_k_m_mix = types[i].mix;
		rc = mkmodel_write(&p, t_path("q.gguf"), err, sizeof err);
		if (rc == -ENOTSUP) {
			tap_skip(err);
			continue;
		}
		if (rc != 0 || gguf_open(t_path("q.gguf"), 1, &f, err,
		    sizeof err) != 0) {
			tap_ok(0, "%s model (%s)", types[i].name, err);
			continue;
		}
		ok = t_u32_is(f, "general.file_type", types[i].ftype) &&
		    (gguf_find_kv(f, "general.quantization_version") != NULL) ==
		    (types[i].type != GGML_TYPE_F16 &&
		    types[i].type != GGML_TYPE_BF16) &&
		    t_shape(f, "blk.0.attn_v.weight", p.type, 2, 256, 128, 1) &&
		    t_shape(f, "blk.1.attn_v.weight", types[i].mix ?
		    GGML_TYPE_Q6_K : p.type, 2, 256, 128, 1) &&
		    t_shape(f, "blk.1.ffn_down.weight", types[i].mix ?
		    GGML_TYPE_Q6_K : p.type, 2, 512, 256, 1) &&
		    t_shape(f, "blk.0.ffn_down.weight", p.type, 2, 512, 256, 1) &&
		    t_shape(f, "output.weight", types[i].mix ?
		    GGML_TYPE_Q6_K : p.type, 2, 256, 512, 1) &&
		    t_shape(f, "token_embd.weight", p.type, 2, 256, 512, 1) &&
		    t_shape(f, "blk.0.ffn_norm.weight", GGML_TYPE_F32, 1, 256, 1,
		    1) && t_tensors_sane(f, 32);
		/* Same seed, same Gaussians: each tensor's dequantized first
		 * row must be close to the F32 model's. */
		e2 = r2 = 0;
		for (j = 0; ok && j < gguf_n_tensors(f); j++) {
			t = gguf_tensor_at(f, j);
			tr = gguf_find_tensor(ref, t_cstr(t->name));
			if (tr == NULL || tr->ne[0] != t->ne[0]) {
				ok = 0;
				break;
			}
			quant_dequantize_row_ref(t->type, t->data, deq,
			    t->ne[0]);
			want = tr->data;
			for (k = 0; k < t->ne[0]; k++) {
				d = deq[k] - want[k];
				e2 += d * d;
				r2 += (double)want[k] * want[k];
			}
		}
		tap_ok(ok && sqrt(e2 / r2) < types[i].tol,
		    "%s: tensor types as llama-quantize, file type %u, values "
		    "within %.3f of F32 (%.4f)", types[i].name, types[i].ftype,
		    types[i].tol, sqrt(e2 / r2));
		gguf_close(f);
	}
	free(deq);
	gguf_close(ref);
}

/* ---- 4. malformed files -------------------------------------------- */

/* A small valid file in memory and where its fields are. */
struct t_small {
	uint8_t		*buf;
	size_t		 len;
	uint64_t	 data_end;	/* end of the last tensor's bytes */
	uint64_t	 key_off[8];	/* offset of each key's length */
	uint64_t	 val_off[8];	/* offset of each value */
	uint64_t	 tinfo_off[4];	/* offset of each tensor's name length */
};

enum {
	T_KV_AAAA, T_KV_BBBB, T_KV_STR, T_KV_ASTR, T_KV_BOOL, T_KV_AF32,
	T_KV_ALIGN, T_N_KV
};

static int
t_small_build(struct t_small *s)
{
	static const char *const strs[] = { "x", "yy", "zzz" };
	const float		 fa[] = { 1, 2, 3 };
	uint64_t		 ne_a[2] = { 32, 2 }, ne_b[2] = { 64, 2 };
	uint64_t		 ne_c[1] = { 8 }, i;
	uint8_t			 data[512];
	struct gguf_writer	*w;
	struct gguf_file	*f;
	const struct gguf_tensor *t;
	char			 err[512];
	int			 rc;

	memset(s, 0, sizeof *s);
	for (i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)i;
	for (i = 0; i < 256; i += 34)	/* Q8_0 scales: small halves */
		data[i + 1] = 0x30;
	w = gguf_writer_create();
	gguf_writer_set_u32(w, "test.key.aaaa", 7);
	gguf_writer_set_u32(w, "test.key.bbbb", 8);
	gguf_writer_set_str(w, "test.str", "hello");
	gguf_writer_set_arr_str(w, "test.astr", strs, 3);
	gguf_writer_set_bool(w, "test.bool", 1);
	gguf_writer_set_arr_f32(w, "test.af32", fa, 3);
	gguf_writer_set_u32(w, "general.alignment", 32);
	gguf_writer_add_tensor(w, "t.aaaa", GGML_TYPE_F32, 2, ne_a, data,
	    256);
	gguf_writer_add_tensor(w, "t.bbbb", GGML_TYPE_Q8_0, 2, ne_b, data,
	    136);
	gguf_writer_add_tensor(w, "t.cccc", GGML_TYPE_F32, 1, ne_c, data, 32);
	rc = gguf_writer_write(w, t_path("small.gguf"), err, sizeof err);
	gguf_writer_free(w);
	if (rc != 0 || (s->buf = t_read_file(t_path("small.gguf"),
	    &s->len)) == NULL)
		return -1;
	if (gguf_open_buffer(s->buf, s->len, "small", 1, &f, err,
	    sizeof err) != 0)
		return -1;
	for (i = 0; i < T_N_KV; i++) {
		const struct gguf_kv *kv = gguf_kv_at(f, i);

		s->key_off[i] = (const uint8_t *)kv->key.ptr - s->buf - 8;
		s->val_off[i] = (const uint8_t *)kv->data - s->buf;
	}
	for (i = 0; i < 3; i++) {
		t = gguf_tensor_at(f, i);
		s->tinfo_off[i] = (const uint8_t *)t->name.ptr - s->buf - 8;
		if ((const uint8_t *)t->data - s->buf + t->size > s->data_end)
			s->data_end = (const uint8_t *)t->data - s->buf +
			    t->size;
	}
	gguf_close(f);
	return 0;
}

static void
t_put32(uint8_t *b, uint64_t off, uint32_t v)
{
	memcpy(b + off, &v, 4);
}

static void
t_put64(uint8_t *b, uint64_t off, uint64_t v)
{
	memcpy(b + off, &v, 8);
}

/* Offsets inside tensor info i of the small file. */
static uint64_t
t_tdims(const struct t_small *s, int i)
{
	return s->tinfo_off[i] + 8 + 6;	/* names are 6 bytes */
}

static uint64_t
t_tne(const struct t_small *s, int i, int d)
{
	return t_tdims(s, i) + 4 + 8 * d;
}

static uint64_t
t_ttype(const struct t_small *s, int i, uint32_t n_dims)
{
	return t_tne(s, i, n_dims);
}

static uint64_t
t_toff(const struct t_small *s, int i, uint32_t n_dims)
{
	return t_ttype(s, i, n_dims) + 4;
}

/*
 * Open a patched copy of the small file and check the result: want is the
 * expected return code, what a substring the message must contain.
 */
static void
t_expect(const struct t_small *s, uint8_t *b, int require, int want,
    const char *what, const char *desc)
{
	struct gguf_file	*f = (struct gguf_file *)1;
	char			 err[512];
	int			 rc;

	rc = gguf_open_buffer(b, s->len, "small.gguf", require, &f, err,
	    sizeof err);
	tap_ok(rc == want && (rc == 0) == (f != NULL) &&
	    (rc == 0 || (strncmp(err, "small.gguf: ", 12) == 0 &&
	    strstr(err, what) != NULL)),
	    "%s: %d (%s)", desc, rc, rc ? err : "opened");
	gguf_close(f);
	memcpy(b, s->buf, s->len);
}

static void
t_malformed(const struct t_small *s)
{
	uint8_t			*b = malloc(s->len);
	struct gguf_file	*f;
	const struct gguf_tensor *t;
	char			 err[512];
	int			 rc;

	memcpy(b, s->buf, s->len);
	t_expect(s, b, 1, 0, "", "the unpatched file opens");

	b[0] = 'X';
	t_expect(s, b, 1, -EINVAL, "magic", "bad magic");
	t_put32(b, 4, 1);
	t_expect(s, b, 1, -ENOTSUP, "version 1", "version 1");
	t_put32(b, 4, 4);
	t_expect(s, b, 1, -ENOTSUP, "version 4", "version 4");
	t_put32(b, 4, 0x03000000);
	t_expect(s, b, 1, -ENOTSUP, "big-endian", "big-endian version");
	t_put64(b, 8, 1ULL << 60);
	t_expect(s, b, 1, -EINVAL, "tensors cannot fit", "2^60 tensors");
	t_put64(b, 16, 1ULL << 60);
	t_expect(s, b, 1, -EINVAL, "keys cannot fit", "2^60 keys");
	t_put64(b, 16, 0);
	t_expect(s, b, 1, -EINVAL, "", "0 keys: tensor table misread");

	t_put64(b, s->key_off[T_KV_AAAA], 1ULL << 63);
	t_expect(s, b, 1, -EINVAL, "past the end", "key length 2^63");
	t_put64(b, s->key_off[T_KV_AAAA], 0);
	t_expect(s, b, 1, -EINVAL, "empty key", "empty key");
	t_put64(b, s->val_off[T_KV_STR], s->len);
	t_expect(s, b, 1, -EINVAL, "test.str", "string value past the end");
	t_put64(b, s->val_off[T_KV_ASTR] + 8 + 1, UINT64_MAX);
	t_expect(s, b, 1, -EINVAL, "string 1", "array string past the end");
	t_put64(b, s->val_off[T_KV_ASTR] - 8, 1ULL << 61);
	t_expect(s, b, 1, -EINVAL, "2305843009213693952 strings",
	    "2^61 strings");
	t_put64(b, s->val_off[T_KV_AF32] - 8, 1ULL << 62);
	t_expect(s, b, 1, -EINVAL, "test.af32", "2^62 floats");
	t_put32(b, s->val_off[T_KV_AAAA] - 4, 13);
	t_expect(s, b, 1, -EINVAL, "unknown value type 13", "value type 13");
	t_put32(b, s->val_off[T_KV_AAAA] - 4, 0x80000000u);
	t_expect(s, b, 1, -EINVAL, "unknown value type", "value type 2^31");
	t_put32(b, s->val_off[T_KV_AF32] - 12, 99);
	t_expect(s, b, 1, -EINVAL, "element type 99", "array element type 99");
	t_put32(b, s->val_off[T_KV_AF32] - 12, GGUF_TYPE_ARRAY);
	t_expect(s, b, 1, -ENOTSUP, "nested", "nested array");
	b[s->val_off[T_KV_BOOL]] = 2;
	t_expect(s, b, 1, -EINVAL, "bool", "bool value 2");
	memcpy(b + s->key_off[T_KV_BBBB] + 8, "test.key.aaaa", 13);
	t_expect(s, b, 1, -EINVAL, "duplicate key", "duplicate key");

	t_put32(b, s->val_off[T_KV_ALIGN], 48);
	t_expect(s, b, 1, -EINVAL, "power of two", "alignment 48");
	t_put32(b, s->val_off[T_KV_ALIGN], 0);
	t_expect(s, b, 1, -EINVAL, "power of two", "alignment 0");
	t_put32(b, s->val_off[T_KV_ALIGN] - 4, GGUF_TYPE_INT32);
	t_expect(s, b, 1, -EINVAL, "uint32", "alignment stored as int32");
	t_put32(b, s->val_off[T_KV_ALIGN], 64);
	t_expect(s, b, 1, -EINVAL, "alignment 64",
	    "alignment 64: an offset of 416 misaligned");

	t_put32(b, t_tdims(s, 0), 0);
	t_expect(s, b, 1, -EINVAL, "0 dimensions", "0 dimensions");
	t_put32(b, t_tdims(s, 0), 5);
	t_expect(s, b, 1, -EINVAL, "5 dimensions", "5 dimensions");
	t_put64(b, t_tne(s, 0, 1), 0);
	t_expect(s, b, 1, -EINVAL, "dimension 1 is 0", "zero dimension");
	t_put64(b, t_tne(s, 0, 0), 1ULL << 63);
	t_expect(s, b, 1, -EINVAL, "dimension 0 is", "dimension 2^63");
	t_put64(b, t_tne(s, 0, 0), 1ULL << 32);
	t_put64(b, t_tne(s, 0, 1), 1ULL << 32);
	t_expect(s, b, 1, -EINVAL, "overflows", "dims product 2^64");
	t_put64(b, t_tne(s, 0, 0), 1ULL << 31);
	t_put64(b, t_tne(s, 0, 1), 1ULL << 31);
	t_expect(s, b, 1, -EINVAL, "t.aaaa", "2^62 floats past the end");
	t_put64(b, t_tne(s, 1, 0), 48);
	t_expect(s, b, 1, -EINVAL, "block size", "q8_0 row of 48");
	t_put32(b, t_ttype(s, 0, 2), 99);
	t_expect(s, b, 0, -ENOTSUP, "unknown tensor type 99",
	    "tensor type 99");
	t_put32(b, t_ttype(s, 0, 2), 4);
	t_expect(s, b, 0, -ENOTSUP, "unknown tensor type 4",
	    "tensor type 4 (removed from ggml)");

	/* A type ggml knows but quant.h does not compute with. */
	if (quant_traits(GGML_TYPE_Q4_1) != NULL &&
	    !quant_traits(GGML_TYPE_Q4_1)->supported) {
		t_put32(b, t_ttype(s, 0, 2), GGML_TYPE_Q4_1);
		t_expect(s, b, 1, -ENOTSUP, "not supported",
		    "q4_1 with require_supported");
		t_put32(b, t_ttype(s, 0, 2), GGML_TYPE_Q4_1);
		rc = gguf_open_buffer(b, s->len, "small.gguf", 0, &f, err,
		    sizeof err);
		tap_ok(rc == 0 && (t = gguf_find_tensor(f, "t.aaaa")) != NULL &&
		    t->type == GGML_TYPE_Q4_1 && t->size == 2 * 20,
		    "q4_1 accepted without require_supported, sized 40 bytes");
		gguf_close(f);
		memcpy(b, s->buf, s->len);
	} else
		tap_skip("quant.h supports q4_1: no unsupported type to try");

	t_put64(b, t_toff(s, 1, 2), 256 + 1);
	t_expect(s, b, 1, -EINVAL, "not a multiple of the alignment",
	    "misaligned data offset");
	t_put64(b, t_toff(s, 1, 2), 0);
	t_expect(s, b, 1, -EINVAL, "overlaps", "overlapping tensors");
	t_put64(b, t_toff(s, 1, 2), 224);
	t_expect(s, b, 1, -EINVAL, "overlaps", "tensors overlapping by 32");
	t_put64(b, t_toff(s, 2, 1), 4096);
	t_expect(s, b, 1, -EINVAL, "past the end", "offset past the file");
	t_put64(b, t_toff(s, 2, 1), UINT64_MAX - 31);
	t_expect(s, b, 1, -EINVAL, "past the end", "offset 2^64-32 (wraps)");
	memcpy(b + s->tinfo_off[1] + 8, "t.aaaa", 6);
	t_expect(s, b, 1, -EINVAL, "duplicate tensor name",
	    "duplicate tensor name");
	t_put64(b, s->tinfo_off[0], 0);
	t_expect(s, b, 1, -EINVAL, "tensor name", "empty tensor name");
	t_put64(b, s->tinfo_off[0], 64);
	t_expect(s, b, 1, -EINVAL, "tensor name", "64-byte tensor name");
	free(b);
}

/* Every truncation before the end of the data fails cleanly. */
static void
t_truncation(const struct t_small *s)
{
	struct gguf_file	*f;
	char			 err[512];
	uint8_t			*b;
	size_t			 len, bad = 0, first_bad = 0;
	double			 t0 = t_now();
	int			 rc;

	for (len = 0; len <= s->len; len++) {
		/* An exact-size copy, so any over-read hits ASan/valgrind. */
		b = malloc(len > 0 ? len : 1);
		memcpy(b, s->buf, len);
		err[0] = '\0';
		rc = gguf_open_buffer(len > 0 ? b : NULL, len, "cut", 1, &f,
		    err, sizeof err);
		if (len < s->data_end ? rc != -EINVAL || f != NULL ||
		    strncmp(err, "cut: ", 5) != 0 : rc != 0) {
			if (bad++ == 0)
				first_bad = len;
		}
		gguf_close(f);
		free(b);
	}
	tap_ok(bad == 0, "truncated at each of %zu offsets: -EINVAL before "
	    "byte %llu, opens after (%zu wrong, first at %zu)", s->len + 1,
	    (unsigned long long)s->data_end, bad, first_bad);
	tap_ok(t_now() - t0 < 5.0, "truncation loop took %.2f s",
	    t_now() - t0);
}

/* Random byte mutations: never a crash; what opens is consistent. */
static void
t_fuzz(const struct t_small *s)
{
	static const uint64_t	 edges[] = { 0, 1, 31, 32, 33, 255, 4096,
	    1ULL << 31, 1ULL << 32, 1ULL << 62, 1ULL << 63, UINT64_MAX };
	struct gguf_file	*f;
	char			 err[512];
	uint8_t			*b = malloc(s->len);
	uint64_t		 x = 0x2545f4914f6cdd1dULL, v;
	size_t			 iter, k, opened = 0, clean = 0, n;

	for (iter = 0; iter < 20000; iter++) {
		memcpy(b, s->buf, s->len);
		n = 1 + iter % 3;
		for (k = 0; k < n; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			if (x % 4 == 0 && s->len >= 8) {
				v = edges[(x >> 8) % (sizeof edges /
				    sizeof *edges)];
				memcpy(b + (x >> 16) % (s->len - 7), &v, 8);
			} else
				b[(x >> 16) % s->len] = (uint8_t)(x >> 40);
		}
		if (gguf_open_buffer(b, s->len, "fuzz", 1, &f, err,
		    sizeof err) == 0) {
			opened++;
			clean += t_tensors_sane(f, 1);
			gguf_close(f);
		} else
			clean += strncmp(err, "fuzz: ", 6) == 0 &&
			    strlen(err) > 6;
	}
	tap_ok(clean == iter, "20000 mutated files: %zu opened, every result "
	    "clean (%zu)", opened, clean);
	free(b);
}

static void
t_open_errors(void)
{
	struct gguf_file	*f;
	char			 err[512];
	FILE			*fp;
	int			 rc;

	rc = gguf_open(t_path("missing.gguf"), 1, &f, err, sizeof err);
	tap_ok(rc == -ENOENT && f == NULL && strstr(err, "missing.gguf"),
	    "missing file: -ENOENT (%s)", err);
	rc = gguf_open(t_dir, 1, &f, err, sizeof err);
	tap_ok(rc == -EISDIR && f == NULL, "directory refused (%s)", err);
	if ((fp = fopen(t_path("empty.gguf"), "w")) != NULL)
		fclose(fp);
	rc = gguf_open(t_path("empty.gguf"), 1, &f, err, sizeof err);
	tap_ok(rc == -EINVAL && f == NULL, "empty file refused (%s)", err);
	rc = gguf_open_buffer(NULL, 0, NULL, 1, &f, err, sizeof err);
	tap_ok(rc == -EINVAL && f == NULL, "empty buffer refused (%s)", err);
}

static void
t_cleanup(void)
{
	static const char *const names[] = { "w.gguf", "w2.gguf", "m.gguf",
	    "m2.gguf", "moe.gguf", "bad.gguf", "v.gguf", "ref.gguf", "q.gguf",
	    "small.gguf", "empty.gguf" };
	size_t	i;

	for (i = 0; i < sizeof names / sizeof *names; i++)
		unlink(t_path(names[i]));
	rmdir(t_dir);
}

int
main(void)
{
	struct t_small	s;
	const char	*tmp = getenv("TMPDIR");

	tap_timeout(120);
	snprintf(t_dir, sizeof t_dir, "%s/t-gguf.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(t_dir) == NULL)
		tap_skip_all("cannot create a temporary directory");

	t_fixtures();
	t_writer();
	t_mkmodel_default();
	t_mkmodel_shapes();
	t_mkmodel_types();
	t_open_errors();
	if (t_small_build(&s) != 0) {
		tap_ok(0, "small test file built");
	} else {
		t_malformed(&s);
		t_truncation(&s);
		t_fuzz(&s);
		free(s.buf);
	}
	t_cleanup();
	return tap_done();
}
