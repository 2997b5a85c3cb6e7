/*
 * fuzz-gguf.c: libFuzzer target for the GGUF reader (lib/gguf.c) and for
 * what trusts it afterwards: the tokenizer loader, the model loader and
 * one forward step over whatever model the file describes.
 *
 * Built and run by `make fuzz-smoke` (mk/fuzz.am); seeds in
 * tests/corpus/gguf/.  With MISTRAL_FUZZ_SEEDS=DIR in the environment the
 * program writes its seeds to DIR and exits instead.
 *
 * Besides the sanitizers, the target checks the reader's promises
 * (gguf.h): after a successful open every string, array and tensor lies
 * inside the buffer, every key and tensor can be found by its own name,
 * and refusing unsupported types only ever turns a success into a
 * failure.  A failed open leaves *out NULL and a one-line message.
 *
 * DESIGN
 * 1. model_load() takes a path, so a file that opens is copied into a
 *    memfd and loaded through /proc/self/fd/N: the same code path as a
 *    model on disk, with no file system traffic.
 * 2. The forward step runs two tokens on a cache of 4 slots (type chosen
 *    by the input's length, so every cache type gets its share), which is
 *    enough to reach every matrix product, the attention and the cache
 *    writes for the shapes and tensor types the file claims.
 */
#include <sys/mman.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"
#include "tokenizer.h"

#define FUZZ_GGUF_MAX_KEY	256
#define FUZZ_GGUF_MAX_ELEMS	4096	/* array elements read per key */

static int fuzz_gguf_memfd = -1;

/* Abort (a finding) unless [p, p + n) lies inside [base, base + size). */
static void
fuzz_gguf_inside(const uint8_t *base, size_t size, const void *p, uint64_t n)
{
	const uint8_t	*q = p;

	if (q < base || q > base + size || n > (uint64_t)(base + size - q)) {
		fprintf(stderr, "fuzz-gguf: %p+%llu outside the buffer\n", p,
		    (unsigned long long)n);
		abort();
	}
}

/* Copy a gguf_str into a C string, if it is short and holds no NUL. */
static int
fuzz_gguf_cstr(struct gguf_str s, char *buf, size_t cap)
{
	if (s.len >= cap || memchr(s.ptr, '\0', s.len) != NULL)
		return -1;
	memcpy(buf, s.ptr, s.len);
	buf[s.len] = '\0';
	return 0;
}

static void
fuzz_gguf_kvs(const struct gguf_file *f, const uint8_t *data, size_t size)
{
	const struct gguf_kv	*kv, *arr;
	struct gguf_str		 s;
	char			 key[FUZZ_GGUF_MAX_KEY];
	uint64_t		 i, j, u64;
	uint32_t		 u32;
	int32_t			 i32;
	float			 f32;
	volatile float		 sinkf = 0;
	volatile int64_t	 sinki = 0;
	int			 b;

	for (i = 0; i < gguf_n_kv(f); i++) {
		kv = gguf_kv_at(f, i);
		fuzz_gguf_inside(data, size, kv->key.ptr, kv->key.len);
		if (kv->type == GGUF_TYPE_ARRAY && kv->strs != NULL)
			for (j = 0; j < kv->arr_n; j++)
				fuzz_gguf_inside(data, size, kv->strs[j].ptr,
				    kv->strs[j].len);
		if (fuzz_gguf_cstr(kv->key, key, sizeof key) != 0)
			continue;
		if (gguf_find_kv(f, key) != kv)
			abort();	/* keys are unique: must find itself */
		(void)gguf_get_u32(f, key, &u32);
		(void)gguf_get_u64(f, key, &u64);
		(void)gguf_get_i32(f, key, &i32);
		(void)gguf_get_f32(f, key, &f32);
		(void)gguf_get_bool(f, key, &b);
		if (gguf_get_str(f, key, &s) == 0)
			fuzz_gguf_inside(data, size, s.ptr, s.len);
		if (gguf_get_arr(f, key, &arr) == 0) {
			for (j = 0; j < arr->arr_n && j < FUZZ_GGUF_MAX_ELEMS;
			    j++) {
				sinkf = gguf_arr_f32(arr, j);
				sinki = gguf_arr_i64(arr, j);
			}
			/* One past the end must be refused quietly. */
			sinkf = gguf_arr_f32(arr, arr->arr_n);
			sinki = gguf_arr_i64(arr, arr->arr_n);
		}
	}
	(void)sinkf;
	(void)sinki;
}

static void
fuzz_gguf_tensors(const struct gguf_file *f, const uint8_t *data, size_t size)
{
	const struct gguf_tensor	*t;
	const struct quant_traits	*tr;
	char				 name[FUZZ_GGUF_MAX_KEY];
	uint64_t			 i, rows;
	volatile uint8_t		 sink;

	for (i = 0; i < gguf_n_tensors(f); i++) {
		t = gguf_tensor_at(f, i);
		fuzz_gguf_inside(data, size, t->name.ptr, t->name.len);
		fuzz_gguf_inside(data, size, t->data, t->size);
		if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS ||
		    (tr = quant_traits(t->type)) == NULL)
			abort();
		rows = t->ne[1] * t->ne[2] * t->ne[3];
		if (t->size != t->ne[0] / tr->block_size * tr->type_size * rows)
			abort();
		if (t->size > 0) {
			sink = ((const uint8_t *)t->data)[0];
			sink = ((const uint8_t *)t->data)[t->size - 1];
		}
		(void)sink;
		if (fuzz_gguf_cstr(t->name, name, sizeof name) == 0 &&
		    gguf_find_tensor(f, name) != t)
			abort();
	}
	if (gguf_find_tensor(f, "") != NULL || gguf_find_kv(f, "") != NULL)
		abort();	/* empty names are refused at open */
}

/*
 * A tokenizer built from the metadata must encode and decode, and give
 * the same ids whatever the size of the output buffer.
 */
static void
fuzz_gguf_tokenizer(const struct gguf_file *f)
{
	static const char	 text[] = "Hello, world! <s>[INST] caf\xc3\xa9 "
				     "\xe2\x96\x81\xff\n";
	const int		 flags = TOKENIZE_ADD_BOS | TOKENIZE_SPECIAL;
	struct tokenizer	*t;
	int32_t			 ids[8], *all = NULL;
	int64_t			 n, n2, k;
	char			 err[256], *s;

	if (tokenizer_load(f, &t, err, sizeof err) != 0)
		return;
	n = tokenizer_encode(t, text, sizeof text - 1, flags, ids, 8);
	if (n < 0)
		goto out;
	if ((all = malloc((size_t)(n + 1) * sizeof *all)) == NULL)
		goto out;
	n2 = tokenizer_encode(t, text, sizeof text - 1, flags, all, n);
	if (n2 != n || memcmp(ids, all, (size_t)(n < 8 ? n : 8) *
	    sizeof *ids) != 0)
		abort();	/* the buffer size changed the result */
	for (k = 0; k < n; k++)
		if (all[k] < 0 || all[k] >= tokenizer_n_vocab(t))
			abort();
	s = tokenizer_decode(t, all, n, DECODE_SPECIAL);
	free(s);
out:
	free(all);
	tokenizer_free(t);
}

/* Load the file as a model and run one step of two tokens. */
static void
fuzz_gguf_model(const uint8_t *data, size_t size)
{
	static const enum kv_type	 types[] = {
		KV_TYPE_F16, KV_TYPE_F32, KV_TYPE_Q8_0,
	};
	struct kv_params		 kp = { 4, 1, KV_TYPE_F16 };
	const struct model_hparams	*hp;
	struct model			*m = NULL;
	struct kvcache			*kv = NULL;
	struct fwd			*fw = NULL;
	float				*logits = NULL;
	int32_t				 tokens[2];
	char				 path[64], err[512];

	if (fuzz_gguf_memfd == -1)
		return;
	if (ftruncate(fuzz_gguf_memfd, 0) != 0 ||
	    pwrite(fuzz_gguf_memfd, data, size, 0) != (ssize_t)size)
		return;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fuzz_gguf_memfd);
	if (model_load(path, &m, err, sizeof err) != 0)
		return;
	hp = model_hparams(m);
	kp.type = types[size % 3];
	if (kvcache_create(m, &kp, &kv) != 0) {
		kp.type = KV_TYPE_F16;
		if (kvcache_create(m, &kp, &kv) != 0)
			goto out;
	}
	if (fwd_create(m, 2, 1, &fw) != 0)
		goto out;
	if ((logits = malloc((size_t)hp->n_vocab * sizeof *logits)) == NULL)
		goto out;
	tokens[0] = hp->n_vocab > 1 ? 1 : 0;
	tokens[1] = (int32_t)(size % hp->n_vocab);
	if (fwd_prefill(fw, kv, tokens, 2, 0, 0, logits) < 0)
		abort();	/* valid ids on a fresh cache must run */
	if (kvcache_pos(kv) != 2)
		abort();
out:
	free(logits);
	fwd_free(fw);
	kvcache_free(kv);
	model_free(m);
}

static void
fuzz_gguf_die(const char *what)
{
	fprintf(stderr, "fuzz-gguf: %s\n", what);
	exit(1);
}

/* A vocabulary-only file with a few keys of every writable type. */
static void
fuzz_gguf_vocab_seed(const char *path)
{
	static const float	 f[3] = { 0.5f, -1.0f, 3.0f };
	static const int32_t	 i[3] = { -7, 0, 1 << 30 };
	struct gguf_writer	*w;
	const char		*tok[260];
	char			 bytes[256][8], err[512];
	float			 scores[260];
	int32_t			 types[260];
	int			 k;

	tok[0] = "<unk>";
	tok[1] = "<s>";
	tok[2] = "</s>";
	for (k = 0; k < 256; k++) {
		snprintf(bytes[k], sizeof bytes[k], "<0x%02X>", k);
		tok[3 + k] = bytes[k];
	}
	tok[259] = "\xe2\x96\x81the";
	for (k = 0; k < 260; k++) {
		scores[k] = k < 259 ? 0.0f : -1.0f;
		types[k] = k == 0 ? TOKEN_TYPE_UNKNOWN : k < 3 ?
		    TOKEN_TYPE_CONTROL : k < 259 ? TOKEN_TYPE_BYTE :
		    TOKEN_TYPE_NORMAL;
	}
	if ((w = gguf_writer_create()) == NULL ||
	    gguf_writer_set_str(w, "general.architecture", "llama") != 0 ||
	    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama") != 0 ||
	    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, 260) ||
	    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, 260) ||
	    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types,
	    260) ||
	    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1) ||
	    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2) ||
	    gguf_writer_set_i32(w, "tokenizer.ggml.unknown_token_id", 0) ||
	    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1) ||
	    gguf_writer_set_f32(w, "fuzz.f32", 1.5f) ||
	    gguf_writer_set_arr_f32(w, "fuzz.arr_f32", f, 3) ||
	    gguf_writer_set_arr_i32(w, "fuzz.arr_i32", i, 3) ||
	    gguf_writer_write(w, path, err, sizeof err) != 0)
		fuzz_gguf_die("writing the vocabulary seed");
	gguf_writer_free(w);
}

/* Copy the model at src to dst with general.alignment set to align. */
static void
fuzz_gguf_align_seed(const char *src, const char *dst, uint32_t align)
{
	struct gguf_file		*f;
	struct gguf_writer		*w;
	const struct gguf_tensor	*t;
	char				 name[128], err[512];
	uint64_t			 i;
	int				 rc = 0;

	if (gguf_open(src, 1, &f, err, sizeof err) != 0 ||
	    (w = gguf_writer_create()) == NULL)
		fuzz_gguf_die(src);
	for (i = 0; i < gguf_n_kv(f) && rc == 0; i++)
		rc = gguf_writer_set_kv(w, gguf_kv_at(f, i));
	if (rc == 0)
		rc = gguf_writer_set_u32(w, "general.alignment", align);
	for (i = 0; i < gguf_n_tensors(f) && rc == 0; i++) {
		t = gguf_tensor_at(f, i);
		snprintf(name, sizeof name, "%.*s", (int)t->name.len,
		    t->name.ptr);
		rc = gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne,
		    t->data, t->size);
	}
	if (rc != 0 || gguf_writer_write(w, dst, err, sizeof err) != 0)
		fuzz_gguf_die(dst);
	gguf_writer_free(w);
	gguf_close(f);
}

/*
 * Seeds: small models of several types and shapes (one with an explicit
 * general.alignment, for mutations to play with), and a vocabulary.
 */
static void
fuzz_gguf_write_seeds(const char *dir)
{
	struct mkmodel_params	 p;
	char			 path[1024], path2[1024], err[512];
	FILE			*f;
	static const uint8_t	 v2[4] = { 2, 0, 0, 0 };
	int			 k;

	for (k = 0; k < 5; k++) {
		mkmodel_defaults(&p);
		p.dim = 32;
		p.n_layers = 1;
		p.n_heads = 1;
		p.n_kv_heads = 1;
		p.ffn_dim = 32;
		p.n_vocab = 300;
		p.ctx_len = 64;
		p.tied_output = 1;
		p.seed = (uint64_t)k + 1;
		switch (k) {
		case 0: p.type = GGML_TYPE_Q4_0; break;
		case 1: p.type = GGML_TYPE_Q8_0; p.sliding_window = 16; break;
		case 2: p.type = GGML_TYPE_Q4_0; p.n_experts = 2;
			p.n_experts_used = 1; break;
		case 3: p.type = GGML_TYPE_F16; p.n_vocab = 259;
			p.n_heads = 2; break;
		case 4: p.type = GGML_TYPE_Q8_0; p.tied_output = 0;
			p.output_type = GGML_TYPE_Q4_0; break;
		}
		snprintf(path, sizeof path, "%s/model-%d.gguf", dir, k);
		if (mkmodel_write(&p, path, err, sizeof err) != 0)
			fuzz_gguf_die(err);
	}
	snprintf(path, sizeof path, "%s/model-0.gguf", dir);
	snprintf(path2, sizeof path2, "%s/model-align64.gguf", dir);
	fuzz_gguf_align_seed(path, path2, 64);
	snprintf(path, sizeof path, "%s/vocab-v3.gguf", dir);
	fuzz_gguf_vocab_seed(path);
	/* The same file as GGUF version 2 (the layout is identical). */
	snprintf(path, sizeof path, "%s/vocab-v2.gguf", dir);
	fuzz_gguf_vocab_seed(path);
	if ((f = fopen(path, "r+b")) == NULL || fseek(f, 4, SEEK_SET) != 0 ||
	    fwrite(v2, 4, 1, f) != 1 || fclose(f) != 0)
		fuzz_gguf_die(path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("MISTRAL_FUZZ_SEEDS");

	if (seeds != NULL && *seeds != '\0') {
		fuzz_gguf_write_seeds(seeds);
		exit(0);
	}
	fuzz_gguf_memfd = memfd_create("fuzz-gguf", MFD_CLOEXEC);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gguf_file	*f = NULL, *g = NULL;
	char			 err[512];
	int			 rc, rc_strict;

	memset(err, 'x', sizeof err);
	rc = gguf_open_buffer(data, size, "fuzz", 0, &f, err, sizeof err);
	if (rc != 0) {
		if (rc > 0 || f != NULL || memchr(err, '\0', sizeof err) == NULL ||
		    err[0] == '\0' || strchr(err, '\n') != NULL)
			abort();
	}
	rc_strict = gguf_open_buffer(data, size, NULL, 1, &g, NULL, 0);
	if (rc_strict == 0 && rc != 0)
		abort();	/* strict accepted what lax refused */
	gguf_close(g);
	if (rc != 0)
		return 0;
	if (gguf_file_size(f) != size || gguf_base(f) != (const void *)data ||
	    (gguf_version(f) != 2 && gguf_version(f) != 3))
		abort();
	fuzz_gguf_kvs(f, data, size);
	fuzz_gguf_tensors(f, data, size);
	fuzz_gguf_tokenizer(f);
	if (rc_strict == 0 && gguf_n_tensors(f) > 0)
		fuzz_gguf_model(data, size);
	gguf_close(f);
	return 0;
}
