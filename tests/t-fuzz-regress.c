/*
 * t-fuzz-regress.c: regression tests for what the fuzz targets
 * (tests/fuzz/) found, one function per finding, each named after it and
 * saying what a user would have seen.  Most findings only show as a
 * sanitizer report, so these tests matter most in the --enable-asan build;
 * each also checks a behaviour that an ordinary build can see.
 *
 * 1. test_gguf_alignment: GGUF files may set general.alignment to any
 *    power of two.  With 1, tensor data lands at odd addresses, and the
 *    kernels read quantized blocks (struct block_q8_0, block_q4_0) and F32
 *    and F16 elements through misaligned pointers: undefined behaviour
 *    (UBSan: "member access within misaligned address ... block_q8_0";
 *    "load of misaligned address ... const float").  A model file must be
 *    either refused with a clear error or computed exactly as the same
 *    model laid out with the default alignment.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "tap.h"

static char regress_dir[256];

static void
regress_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", regress_dir, name);
}

/*
 * Copy the GGUF at src to dst with general.alignment set to align and a
 * string key of pad bytes (which moves the data section).  Returns 0 or
 * a negative errno code.
 */
static int
regress_realign(const char *src, const char *dst, uint32_t align, int pad)
{
	char				 padding[8] = "xxxxxxx";
	struct gguf_file		*f;
	struct gguf_writer		*w;
	const struct gguf_tensor	*t;
	char				 name[128], err[512];
	uint64_t			 i;
	int				 rc;

	if ((rc = gguf_open(src, 1, &f, err, sizeof err)) != 0) {
		tap_diag("%s", err);
		return rc;
	}
	if ((w = gguf_writer_create()) == NULL) {
		gguf_close(f);
		return -ENOMEM;
	}
	for (i = 0; i < gguf_n_kv(f) && rc == 0; i++)
		rc = gguf_writer_set_kv(w, gguf_kv_at(f, i));
	if (rc == 0)
		rc = gguf_writer_set_u32(w, "general.alignment", align);
	padding[pad & 7] = '\0';
	if (rc == 0)
		rc = gguf_writer_set_str(w, "regress.padding", padding);
	for (i = 0; i < gguf_n_tensors(f) && rc == 0; i++) {
		t = gguf_tensor_at(f, i);
		snprintf(name, sizeof name, "%.*s", (int)t->name.len,
		    t->name.ptr);
		rc = gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne,
		    t->data, t->size);
	}
	if (rc == 0 && (rc = gguf_writer_write(w, dst, err, sizeof err)) != 0)
		tap_diag("%s", err);
	gguf_writer_free(w);
	gguf_close(f);
	return rc;
}

/*
 * Write dst, a copy of src with general.alignment 1 whose tensor data
 * starts at an odd file offset (or that the reader refuses).  Returns 0
 * or a negative errno code.
 */
static int
regress_odd_copy(const char *src, const char *dst)
{
	struct gguf_file	*f;
	const uint8_t		*data;
	char			 err[512];
	int			 pad, rc, odd;

	for (pad = 0; pad < 4; pad++) {
		if ((rc = regress_realign(src, dst, 1, pad)) != 0)
			return rc;
		if (gguf_open(dst, 0, &f, err, sizeof err) != 0)
			return 0;	/* refused: model_load() must say why */
		data = gguf_tensor_at(f, 0)->data;
		odd = (data - (const uint8_t *)gguf_base(f)) % 2 == 1;
		gguf_close(f);
		if (odd)
			return 0;
	}
	return -EINVAL;
}

/* Logits of the last of n tokens, or NULL (with a diagnostic). */
static float *
regress_logits(struct model *m, const int32_t *tok, int64_t n)
{
	struct kv_params	 kp = { 0, 0, KV_TYPE_F32 };
	struct kvcache		*kv = NULL;
	struct fwd		*fw = NULL;
	float			*lg;
	int			 rc;

	if ((lg = malloc(model_hparams(m)->n_vocab * sizeof *lg)) == NULL)
		return NULL;
	if ((rc = kvcache_create(m, &kp, &kv)) != 0 ||
	    (rc = fwd_create(m, 4, 1, &fw)) != 0 ||
	    (rc = fwd_prefill(fw, kv, tok, n, 0, 0, lg)) < 0) {
		tap_diag("forward: %s", strerror(-rc));
		free(lg);
		lg = NULL;
	}
	fwd_free(fw);
	kvcache_free(kv);
	return lg;
}

static void
test_gguf_alignment(void)
{
	static const struct {
		enum ggml_type	 type;
		const char	*name;
	} types[] = {
		{ GGML_TYPE_Q8_0, "q8_0" },
		{ GGML_TYPE_Q4_0, "q4_0" },
		{ GGML_TYPE_F32, "f32" },
		{ GGML_TYPE_F16, "f16" },
	};
	static const enum quant_isa isas[] = { QUANT_ISA_SCALAR, QUANT_ISA_AVX2 };
	const int32_t		 tok[5] = { 1, 270, 3, 299, 42 };
	struct mkmodel_params	 p;
	struct model		*ref, *odd;
	char			 src[512], dst[512], err[512];
	float			*a, *b, diff;
	size_t			 t, k, i;
	uint32_t		 n;
	int			 rc;

	for (t = 0; t < sizeof types / sizeof types[0]; t++) {
		mkmodel_defaults(&p);
		p.dim = 64;
		p.n_layers = 1;
		p.n_vocab = 300;
		p.type = types[t].type;
		regress_path(src, sizeof src, "aligned.gguf");
		regress_path(dst, sizeof dst, "align1.gguf");
		if ((rc = mkmodel_write(&p, src, err, sizeof err)) != 0 ||
		    (rc = regress_odd_copy(src, dst)) != 0 ||
		    (rc = model_load(src, &ref, err, sizeof err)) != 0) {
			tap_ok(0, "%s: making the test models: %s", types[t].name,
			    strerror(-rc));
			continue;
		}
		rc = model_load(dst, &odd, err, sizeof err);
		if (rc != 0) {
			tap_ok(rc == -EINVAL && strstr(err, "align") != NULL,
			    "%s, general.alignment 1: refused with a clear "
			    "error (%s)", types[t].name, err);
			model_free(ref);
			continue;
		}
		for (k = 0; k < sizeof isas / sizeof isas[0]; k++) {
			enum quant_isa isa = quant_set_isa(isas[k]);

			a = regress_logits(ref, tok, 5);
			b = regress_logits(odd, tok, 5);
			diff = a == NULL || b == NULL ? INFINITY : 0;
			n = model_hparams(ref)->n_vocab;
			for (i = 0; a != NULL && b != NULL && i < n; i++)
				diff = fmaxf(diff, fabsf(a[i] - b[i]));
			tap_ok(diff == 0, "%s, general.alignment 1, %s kernels: "
			    "the same logits as the aligned file (max diff %g)",
			    types[t].name, quant_isa_name(isa), diff);
			free(a);
			free(b);
		}
		quant_set_isa(QUANT_ISA_AVX512);
		model_free(odd);
		model_free(ref);
	}
	unlink(src);
	unlink(dst);
}

int
main(void)
{
	const char *tmp = getenv("TMPDIR");

	tap_timeout(120);
	snprintf(regress_dir, sizeof regress_dir, "%s/t-fuzz-regress.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(regress_dir) == NULL)
		tap_skip_all("mkdtemp failed");
	test_gguf_alignment();
	rmdir(regress_dir);
	return tap_done();
}
