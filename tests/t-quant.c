/*
 * t-quant.c: element types, block layouts, half-precision conversions,
 * quantizers, and every SIMD path against the scalar references.
 *
 * The layouts are checked two independent ways: blocks built by hand from
 * the layout description must dequantize to values computed here by hand,
 * and (when the shared fixtures are present) the tensors llama-quantize
 * wrote must dequantize to within their format's error of the same
 * model's F32 tensors.  Every instruction set the CPU has is then held to
 * the scalar reference: dequantization bit for bit, dots and matrix
 * products within float rounding.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant-internal.h"
#include "quant.h"
#include "tap.h"

static const enum ggml_type supported[] = {
	GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
	GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define NSUPPORTED (sizeof supported / sizeof supported[0])

/* ---- helpers ------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static float
rng_uniform(void)			/* (0, 1) */
{
	return ((float)(rng_next() >> 40) + 0.5f) / (float)(1 << 24);
}

static float
rng_gauss(void)
{
	return sqrtf(-2 * logf(rng_uniform())) *
	    cosf(6.2831853f * rng_uniform());
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL) {
		printf("Bail out! out of memory\n");
		exit(1);
	}
	return p;
}

static int
same_bits(float a, float b)
{
	return memcmp(&a, &b, sizeof a) == 0;
}

static float
bits_to_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

/*
 * A row of n elements of type t made of random bytes, with every half
 * field replaced by a random finite scale (some of them subnormal), so
 * every bit pattern of the quants and packed scales gets exercised.
 */
static void *
random_row(enum ggml_type t, int64_t n)
{
	size_t size = quant_row_size(t, n);
	uint8_t *p = xmalloc(size);
	size_t bs = quant_traits(t)->type_size;
	size_t off[2] = { SIZE_MAX, SIZE_MAX };

	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)rng_next();
	switch (t) {
	case GGML_TYPE_F32:
		for (int64_t i = 0; i < n; i++)
			((float *)p)[i] = rng_gauss();
		return p;
	case GGML_TYPE_F16:
		for (int64_t i = 0; i < n; i++)
			((uint16_t *)p)[i] = quant_f32_to_f16(rng_gauss());
		return p;
	case GGML_TYPE_BF16:
		for (int64_t i = 0; i < n; i++)
			((uint16_t *)p)[i] = quant_f32_to_bf16(rng_gauss());
		return p;
	case GGML_TYPE_Q8_0:
		off[0] = offsetof(struct block_q8_0, d);
		break;
	case GGML_TYPE_Q4_0:
		off[0] = offsetof(struct block_q4_0, d);
		break;
	case GGML_TYPE_Q4_K:
		off[0] = offsetof(struct block_q4_K, d);
		off[1] = offsetof(struct block_q4_K, dmin);
		break;
	case GGML_TYPE_Q5_K:
		off[0] = offsetof(struct block_q5_K, d);
		off[1] = offsetof(struct block_q5_K, dmin);
		break;
	case GGML_TYPE_Q6_K:
		off[0] = offsetof(struct block_q6_K, d);
		break;
	default:
		break;
	}
	for (size_t b = 0; b < size / bs; b++) {
		for (int f = 0; f < 2; f++) {
			uint16_t h;

			if (off[f] == SIZE_MAX)
				continue;
			if (rng_next() % 16 == 0)
				h = (uint16_t)(rng_next() % 1024);	/* subnormal */
			else
				h = quant_f32_to_f16((rng_uniform() - 0.3f) *
				    0.05f);
			memcpy(p + b * bs + off[f], &h, sizeof h);
		}
	}
	return p;
}

static float *
random_floats(int64_t n)
{
	float *x = xmalloc((size_t)n * sizeof *x);

	for (int64_t i = 0; i < n; i++)
		x[i] = rng_gauss();
	return x;
}

/* sum |w_i x_i| with the reference dequantization: the scale of the
 * rounding error a float dot can make. */
static double
abs_dot(enum ggml_type t, const void *row, const float *x, int64_t n)
{
	float *w = xmalloc((size_t)n * sizeof *w);
	double s = 0;

	quant_dequantize_row_ref(t, row, w, n);
	for (int64_t i = 0; i < n; i++)
		s += fabs((double)w[i] * x[i]);
	free(w);
	return s;
}

/* ---- traits -------------------------------------------------------- */

static void
test_traits(void)
{
	static const struct {
		uint32_t type;
		const char *name;
		uint32_t bs, ts;
		int supported;
	} want[] = {
		{ 0, "f32", 1, 4, 1 }, { 1, "f16", 1, 2, 1 },
		{ 2, "q4_0", 32, 18, 1 }, { 3, "q4_1", 32, 20, 0 },
		{ 6, "q5_0", 32, 22, 0 }, { 7, "q5_1", 32, 24, 0 },
		{ 8, "q8_0", 32, 34, 1 }, { 9, "q8_1", 32, 36, 0 },
		{ 10, "q2_K", 256, 84, 0 }, { 11, "q3_K", 256, 110, 0 },
		{ 12, "q4_K", 256, 144, 1 }, { 13, "q5_K", 256, 176, 1 },
		{ 14, "q6_K", 256, 210, 1 }, { 15, "q8_K", 256, 292, 0 },
		{ 16, "iq2_xxs", 256, 66, 0 }, { 20, "iq4_nl", 32, 18, 0 },
		{ 23, "iq4_xs", 256, 136, 0 }, { 28, "f64", 1, 8, 0 },
		{ 30, "bf16", 1, 2, 1 }, { 35, "tq2_0", 256, 66, 0 },
	};
	int ok = 1;

	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct quant_traits *tr = quant_traits(want[i].type);

		if (tr == NULL || strcmp(tr->name, want[i].name) != 0 ||
		    tr->block_size != want[i].bs || tr->type_size != want[i].ts ||
		    tr->supported != want[i].supported) {
			tap_diag("type %u: wrong traits", want[i].type);
			ok = 0;
		}
	}
	tap_ok(ok, "traits of known types match ggml's");
	tap_ok(quant_traits(4) == NULL && quant_traits(5) == NULL &&
	    quant_traits(31) == NULL && quant_traits(GGML_TYPE_COUNT) == NULL &&
	    quant_traits(UINT32_MAX) == NULL, "removed and unknown types have no traits");
	tap_ok(quant_row_size(GGML_TYPE_Q4_K, 4096) == 16 * 144 &&
	    quant_row_size(GGML_TYPE_Q8_0, 64) == 68 &&
	    quant_row_size(GGML_TYPE_F16, 3) == 6, "row sizes");
	tap_ok(quant_row_size(GGML_TYPE_Q4_K, 100) == 0 &&
	    quant_row_size(GGML_TYPE_Q8_0, -32) == 0 &&
	    quant_row_size(4, 32) == 0 &&
	    quant_row_size(GGML_TYPE_F32, INT64_MAX) == 0,
	    "row size 0 for partial blocks, unknown types, overflow");
}

/* ---- half precision ------------------------------------------------ */

static void
test_f16(void)
{
	static const struct {
		float f;
		uint16_t h;
	} exact[] = {
		{ 0.0f, 0x0000 }, { -0.0f, 0x8000 }, { 1.0f, 0x3c00 },
		{ -2.0f, 0xc000 }, { 65504.0f, 0x7bff }, { 0.5f, 0x3800 },
		{ 6.103515625e-05f, 0x0400 },		/* 2^-14, smallest normal */
		{ 5.9604644775390625e-08f, 0x0001 },	/* 2^-24, smallest subnormal */
		{ 6.097555160522461e-05f, 0x03ff },	/* largest subnormal */
		{ INFINITY, 0x7c00 }, { -INFINITY, 0xfc00 },
	};
	static const struct {
		float f;
		uint16_t h;
	} rounded[] = {
		{ 1.00048828125f, 0x3c00 },	/* 1 + 2^-11: tie, to even */
		{ 1.00146484375f, 0x3c02 },	/* 1 + 3 2^-11: tie, to even */
		{ 1.0005f, 0x3c01 },
		{ 65519.0f, 0x7bff }, { 65520.0f, 0x7c00 }, { 1e6f, 0x7c00 },
		{ -1e6f, 0xfc00 },
		{ 2.98023223876953125e-08f, 0x0000 },	/* 2^-25: tie, to 0 */
		{ 4.470348358154297e-08f, 0x0001 },	/* 3 2^-26 */
		{ 8.940696716308594e-08f, 0x0002 },	/* 3 2^-25: tie, to 2 */
		{ 1e-10f, 0x0000 }, { -1e-10f, 0x8000 },
	};
	int ok = 1, nan_ok = 1;
	uint16_t h;

	for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
		if (quant_f32_to_f16(exact[i].f) != exact[i].h ||
		    !same_bits(quant_f16_to_f32(exact[i].h), exact[i].f)) {
			tap_diag("f16 %g <-> %#x", exact[i].f, exact[i].h);
			ok = 0;
		}
	}
	tap_ok(ok, "f16 exact values both ways");
	ok = 1;
	for (size_t i = 0; i < sizeof rounded / sizeof rounded[0]; i++) {
		h = quant_f32_to_f16(rounded[i].f);
		if (h != rounded[i].h) {
			tap_diag("f16 of %.10g: %#x, want %#x", rounded[i].f, h,
			    rounded[i].h);
			ok = 0;
		}
	}
	tap_ok(ok, "f32 -> f16 rounds to nearest even, overflows to inf");
	h = quant_f32_to_f16(NAN);
	tap_ok((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0 &&
	    isnan(quant_f16_to_f32(0x7e00)) && isnan(quant_f16_to_f32(0xfc01)),
	    "f16 NaN both ways");

	ok = 1;
	for (uint32_t i = 0; i < 65536; i++) {
		float f = quant_f16_to_f32((uint16_t)i);
		uint16_t back = quant_f32_to_f16(f);

		if ((i & 0x7c00) == 0x7c00 && (i & 0x3ff) != 0) {
			/* NaN: stays NaN, payload kept, made quiet */
			if (!isnan(f) || back != (i | 0x200))
				nan_ok = 0;
			continue;
		}
		if (back != i)
			ok = 0;
		/* compare with the definition: (-1)^s 2^(e-15) (1 + m/1024) */
		if ((i & 0x7c00) != 0x7c00) {
			int e = (i >> 10) & 31, m = i & 0x3ff;
			double v = e == 0 ? ldexp(m, -24) :
			    ldexp(1024 + m, e - 25);

			if (i & 0x8000)
				v = -v;
			if ((double)f != v)
				ok = 0;
		}
	}
	tap_ok(ok, "all 65536 f16 values: exact value, round trip");
	tap_ok(nan_ok, "f16 NaNs stay NaN with their payload");
}

static void
test_bf16(void)
{
	int ok = 1;

	tap_ok(quant_f32_to_bf16(1.0f) == 0x3f80 &&
	    quant_f32_to_bf16(-2.0f) == 0xc000 &&
	    quant_f32_to_bf16(INFINITY) == 0x7f80 &&
	    same_bits(quant_bf16_to_f32(0x3f80), 1.0f) &&
	    same_bits(quant_bf16_to_f32(0x0001), bits_to_f32(0x00010000)),
	    "bf16 exact values");
	tap_ok(quant_f32_to_bf16(bits_to_f32(0x3f808000)) == 0x3f80 &&
	    quant_f32_to_bf16(bits_to_f32(0x3f818000)) == 0x3f82 &&
	    quant_f32_to_bf16(bits_to_f32(0x3f808001)) == 0x3f81 &&
	    quant_f32_to_bf16(bits_to_f32(0x7f7fffff)) == 0x7f80 &&
	    quant_f32_to_bf16(bits_to_f32(0x00008000)) == 0x0000,
	    "f32 -> bf16 rounds to nearest even");
	tap_ok((quant_f32_to_bf16(NAN) & 0x7fc0) == 0x7fc0 &&
	    (quant_f32_to_bf16(bits_to_f32(0x7f800001)) & 0x7fff) > 0x7f80,
	    "bf16 NaN stays NaN (even with only low payload bits)");
	for (uint32_t i = 0; i < 65536; i++) {
		float f = quant_bf16_to_f32((uint16_t)i);

		if (isnan(f))
			continue;
		if (quant_f32_to_bf16(f) != i)
			ok = 0;
	}
	tap_ok(ok, "all bf16 values round trip");
}

/* ---- hand-made blocks ---------------------------------------------- */

static int
check_values(const char *what, enum ggml_type t, const void *blk,
    const float *want, int n)
{
	float got[QK_K];
	int ok = 1;

	for (int isa = QUANT_ISA_SCALAR; isa <= QUANT_ISA_AVX512; isa++) {
		if ((int)quant_set_isa(isa) != isa)
			continue;
		quant_dequantize_row(t, blk, got, n);
		for (int i = 0; i < n; i++) {
			if (!same_bits(got[i], want[i])) {
				tap_diag("%s (%s) element %d: %g, want %g", what,
				    quant_isa_name(isa), i, got[i], want[i]);
				ok = 0;
				break;
			}
		}
	}
	quant_dequantize_row_ref(t, blk, got, n);
	for (int i = 0; i < n; i++)
		if (!same_bits(got[i], want[i]))
			ok = 0;
	tap_ok(ok, "%s: hand-made block dequantizes to hand-computed values",
	    what);
	return ok;
}

/* The 6-bit scales and mins used for the Q4_K and Q5_K blocks, and their
 * packing worked out by hand:
 *	sc = 1 2 3 4 33 40 50 63    m = 0 1 2 3 17 20 31 63
 *	bytes 0-3:  sc[i] | (sc[i+4] >> 4) << 6  = 81 82 c3 c4
 *	bytes 4-7:  m[i] | (m[i+4] >> 4) << 6    = 40 41 42 c3
 *	bytes 8-11: (sc[i+4] & 15) | (m[i+4] & 15) << 4 = 11 48 f2 ff */
static const uint8_t k_scales[12] = {
	0x81, 0x82, 0xc3, 0xc4, 0x40, 0x41, 0x42, 0xc3, 0x11, 0x48, 0xf2, 0xff,
};
static const int k_sc[8] = { 1, 2, 3, 4, 33, 40, 50, 63 };
static const int k_m[8] = { 0, 1, 2, 3, 17, 20, 31, 63 };

static void
test_known_blocks(void)
{
	float want[QK_K];

	{
		struct block_q8_0 b;

		b.d = 0x3800;			/* 0.5 */
		for (int j = 0; j < 32; j++) {
			b.qs[j] = (int8_t)(j * 8 - 128);
			want[j] = 0.5f * (float)(j * 8 - 128);
		}
		check_values("q8_0", GGML_TYPE_Q8_0, &b, want, 32);
	}
	{
		struct block_q4_0 b;

		b.d = 0x4000;			/* 2.0 */
		for (int j = 0; j < 16; j++) {
			b.qs[j] = (uint8_t)(j | (15 - j) << 4);
			want[j] = 2.0f * (float)(j - 8);	/* low nibble */
			want[j + 16] = 2.0f * (float)(7 - j);	/* high */
		}
		check_values("q4_0", GGML_TYPE_Q4_0, &b, want, 32);
	}
	{
		struct block_q4_K b;

		b.d = 0x3c00;			/* 1.0 */
		b.dmin = 0x3800;		/* 0.5 */
		memcpy(b.scales, k_scales, 12);
		for (int j = 0; j < 128; j++)
			b.qs[j] = (uint8_t)(j * 37 + 11);
		for (int e = 0; e < 256; e++) {
			int chunk = e / 64, l = e % 32, high = e % 64 >= 32;
			int byte = b.qs[32 * chunk + l];
			int q = high ? byte >> 4 : byte & 15;

			want[e] = (float)(k_sc[e / 32] * q) - 0.5f * k_m[e / 32];
		}
		check_values("q4_K", GGML_TYPE_Q4_K, &b, want, 256);
	}
	{
		struct block_q5_K b;

		b.d = 0x3400;			/* 0.25 */
		b.dmin = 0x3c00;		/* 1.0 */
		memcpy(b.scales, k_scales, 12);
		for (int j = 0; j < 128; j++)
			b.qs[j] = (uint8_t)(j * 53 + 7);
		for (int j = 0; j < 32; j++)
			b.qh[j] = (uint8_t)(j * 29 + 101);
		for (int e = 0; e < 256; e++) {
			int chunk = e / 64, l = e % 32, high = e % 64 >= 32;
			int byte = b.qs[32 * chunk + l];
			int q = high ? byte >> 4 : byte & 15;
			int bit = (b.qh[l] >> (2 * chunk + high)) & 1;

			want[e] = 0.25f * (float)(k_sc[e / 32] * (q + 16 * bit)) -
			    (float)k_m[e / 32];
		}
		check_values("q5_K", GGML_TYPE_Q5_K, &b, want, 256);
	}
	{
		struct block_q6_K b;

		b.d = 0x3400;			/* 0.25 */
		for (int j = 0; j < 16; j++)
			b.scales[j] = (int8_t)(j % 2 ? -3 * j - 1 : 5 * j + 2);
		b.scales[15] = -128;
		for (int j = 0; j < 128; j++)
			b.ql[j] = (uint8_t)(j * 71 + 3);
		for (int j = 0; j < 64; j++)
			b.qh[j] = (uint8_t)(j * 43 + 17);
		for (int e = 0; e < 256; e++) {
			int half = e / 128, r = e % 128, g = r / 32, l = r % 32;
			int byte = b.ql[64 * half + l + (g & 1 ? 32 : 0)];
			int lo4 = g < 2 ? byte & 15 : byte >> 4;
			int hi2 = (b.qh[32 * half + l] >> (2 * g)) & 3;

			/* in float, so a zero takes the scale's sign */
			want[e] = 0.25f * (float)b.scales[8 * half + r / 16] *
			    (float)((lo4 | hi2 << 4) - 32);
		}
		check_values("q6_K", GGML_TYPE_Q6_K, &b, want, 256);
	}
	{
		uint16_t h[4] = { 0x3c00, 0xc500, 0x0001, 0x7bff };
		uint16_t bf[4] = { 0x3f80, 0xc0a0, 0x0080, 0x7f7f };
		float wh[4] = { 1.0f, -5.0f, 5.9604644775390625e-08f, 65504.0f };
		float wb[4] = { 1.0f, -5.0f, bits_to_f32(0x00800000),
		    bits_to_f32(0x7f7f0000) };

		check_values("f16", GGML_TYPE_F16, h, wh, 4);
		check_values("bf16", GGML_TYPE_BF16, bf, wb, 4);
	}
}

/* ---- quantizers ---------------------------------------------------- */

static void
test_quantize(void)
{
	/* relative RMS error bounds on Gaussian data, 1.5-2x measured */
	static const struct {
		enum ggml_type t;
		double bound;
	} bounds[] = {
		{ GGML_TYPE_F32, 0 }, { GGML_TYPE_F16, 6e-4 },
		{ GGML_TYPE_BF16, 4e-3 }, { GGML_TYPE_Q8_0, 0.012 },
		{ GGML_TYPE_Q4_0, 0.16 }, { GGML_TYPE_Q4_K, 0.14 },
		{ GGML_TYPE_Q5_K, 0.07 }, { GGML_TYPE_Q6_K, 0.035 },
	};
	const int64_t n = 8192;
	float *x = random_floats(n), *y = xmalloc(n * sizeof *y);
	void *q = xmalloc(quant_row_size(GGML_TYPE_F32, n));

	/* a few outliers and a constant block, as real weights have */
	x[5] = 9.0f;
	x[700] = -7.5f;
	for (int i = 256; i < 512; i++)
		x[i] = 0.25f;
	for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
		enum ggml_type t = bounds[i].t;
		double se = 0, sx = 0;
		int rc = quant_quantize_row(t, x, q, n);

		quant_dequantize_row_ref(t, q, y, n);
		for (int64_t j = 0; j < n; j++) {
			se += (double)(y[j] - x[j]) * (y[j] - x[j]);
			sx += (double)x[j] * x[j];
		}
		tap_ok(rc == 0 && sqrt(se / sx) <= bounds[i].bound,
		    "%s: quantize -> dequantize relative RMS error %.4g <= %g",
		    quant_traits(t)->name, sqrt(se / sx), bounds[i].bound);
	}
	tap_ok(quant_quantize_row(GGML_TYPE_Q4_1, x, q, 32) == -EINVAL &&
	    quant_quantize_row(GGML_TYPE_Q4_K, x, q, 100) == -EINVAL &&
	    quant_quantize_row(99, x, q, 32) == -EINVAL,
	    "quantize refuses unsupported types and partial blocks");

	/* zeros stay zeros */
	{
		int ok = 1;

		memset(x, 0, 256 * sizeof *x);
		for (size_t i = 0; i < NSUPPORTED; i++) {
			quant_quantize_row(supported[i], x, q, 256);
			quant_dequantize_row_ref(supported[i], q, y, 256);
			for (int j = 0; j < 256; j++)
				if (y[j] != 0)
					ok = 0;
		}
		tap_ok(ok, "a zero row quantizes to zeros in every type");
	}
	/* Q8_0 and Q4_0 of a known block */
	{
		struct block_q8_0 b8;
		struct block_q4_0 b4;
		float v[32];

		for (int j = 0; j < 32; j++)
			v[j] = (float)(j - 16) / 16.0f * 1.27f;	/* max |v| 1.27 */
		quant_quantize_row(GGML_TYPE_Q8_0, v, &b8, 32);
		tap_ok(b8.d == quant_f32_to_f16(0.01f) && b8.qs[0] == -127 &&
		    b8.qs[16] == 0 && b8.qs[20] == 32,
		    "q8_0 of a known block: d = max/127, rounded quants");
		for (int j = 0; j < 32; j++)
			v[j] = (float)(j - 16) * 0.5f;		/* max |v| at -8 */
		quant_quantize_row(GGML_TYPE_Q4_0, v, &b4, 32);
		tap_ok(b4.d == 0x3c00 && (b4.qs[0] & 15) == 0 &&
		    (b4.qs[0] >> 4) == 8 && (b4.qs[15] >> 4) == 15,
		    "q4_0 of a known block: d = max/-8, element of max is -8");
	}
	free(x);
	free(y);
	free(q);
}

/* ---- every path against the reference ------------------------------ */

static void
test_kernels(enum quant_isa isa)
{
	static const int64_t lens1[] = { 1, 7, 33, 100, 1001, 4099 };
	static const int64_t lens32[] = { 32, 96, 256, 4160 };
	static const int64_t lensK[] = { 256, 768, 4096 };
	const char *in = quant_isa_name(isa);
	int deq_ok = 1, dot_ok = 1;
	double worst = 0;

	for (size_t i = 0; i < NSUPPORTED; i++) {
		enum ggml_type t = supported[i];
		uint32_t bs = quant_traits(t)->block_size;
		const int64_t *lens = bs == 1 ? lens1 : bs == QK_K ? lensK : lens32;
		int nl = bs == 1 ? 6 : bs == QK_K ? 3 : 4;

		for (int l = 0; l < nl; l++) {
			int64_t n = lens[l];
			void *row = random_row(t, n);
			float *x = random_floats(n);
			float *a = xmalloc(n * sizeof *a), *b = xmalloc(n * sizeof *b);
			double tol, err;

			quant_dequantize_row_ref(t, row, a, n);
			quant_dequantize_row(t, row, b, n);
			if (memcmp(a, b, n * sizeof *a) != 0) {
				tap_diag("%s %s n=%lld: dequantize differs",
				    in, quant_traits(t)->name, (long long)n);
				deq_ok = 0;
			}
			tol = 4e-6 * abs_dot(t, row, x, n) + 1e-30;
			err = fabs((double)quant_dot(t, row, x, n) -
			    quant_dot_ref(t, row, x, n));
			if (err > tol) {
				tap_diag("%s %s n=%lld: dot off by %g (tol %g)",
				    in, quant_traits(t)->name, (long long)n,
				    err, tol);
				dot_ok = 0;
			}
			if (err / tol > worst)
				worst = err / tol;
			free(row);
			free(x);
			free(a);
			free(b);
		}
	}
	tap_ok(deq_ok, "%s: dequantize bit-identical to the reference, all types",
	    in);
	tap_ok(dot_ok, "%s: dot within float rounding of the reference, all "
	    "types (worst %.2f of tolerance)", in, worst);

	/* F16 over every half value, NaNs included: F16C agrees with quant.c */
	{
		uint16_t *h = xmalloc(65536 * sizeof *h);
		float *a = xmalloc(65536 * sizeof *a), *b = xmalloc(65536 * sizeof *b);

		for (uint32_t j = 0; j < 65536; j++)
			h[j] = (uint16_t)j;
		quant_dequantize_row_ref(GGML_TYPE_F16, h, a, 65536);
		quant_dequantize_row(GGML_TYPE_F16, h, b, 65536);
		tap_ok(memcmp(a, b, 65536 * sizeof *a) == 0,
		    "%s: f16 rows of all 65536 values convert exactly", in);
		quant_dequantize_row_ref(GGML_TYPE_BF16, h, a, 65536);
		quant_dequantize_row(GGML_TYPE_BF16, h, b, 65536);
		tap_ok(memcmp(a, b, 65536 * sizeof *a) == 0,
		    "%s: bf16 rows of all 65536 values convert exactly", in);
		free(h);
		free(a);
		free(b);
	}

	/* float vector helpers over awkward lengths */
	{
		static const int64_t vl[] = { 1, 7, 15, 16, 33, 100, 1000 };
		int ok_dot = 1, ok_axpy = 1, ok_scale = 1;

		for (size_t j = 0; j < sizeof vl / sizeof vl[0]; j++) {
			int64_t n = vl[j];
			float *a = random_floats(n), *b = random_floats(n);
			float *c = xmalloc(n * sizeof *c);
			double ref = 0, mag = 0;

			for (int64_t k = 0; k < n; k++) {
				ref += (double)a[k] * b[k];
				mag += fabs((double)a[k] * b[k]);
			}
			if (fabs(vec_dot_f32(a, b, n) - ref) > 4e-6 * mag)
				ok_dot = 0;
			memcpy(c, a, n * sizeof *c);
			vec_axpy_f32(c, 0.75f, b, n);
			for (int64_t k = 0; k < n; k++)
				if (fabsf(c[k] - (a[k] + 0.75f * b[k])) >
				    1e-6f * (fabsf(a[k]) + fabsf(b[k])))
					ok_axpy = 0;
			memcpy(c, a, n * sizeof *c);
			vec_scale_f32(c, -1.5f, n);
			for (int64_t k = 0; k < n; k++)
				if (c[k] != a[k] * -1.5f)
					ok_scale = 0;
			free(a);
			free(b);
			free(c);
		}
		tap_ok(ok_dot && ok_axpy && ok_scale,
		    "%s: vec_dot_f32, vec_axpy_f32, vec_scale_f32", in);
	}
}

/*
 * The attention kernels (quant-internal.h, DESIGN 7): against plain loops,
 * and bit-identical however the heads and keys are grouped into calls
 * (11 heads take groups of 8, 2 and 1) and whether a row is stored f16,
 * q8_0 or f32 with the same values.  Head sizes 64 (SIMD) and 20
 * (fallback).
 */
static void
test_attention(enum quant_isa isa)
{
	static const int hds[] = { 64, 20 };
	const char *in = quant_isa_name(isa);
	int ok_ref = 1, ok_split = 1, ok_f16 = 1, ok_exp = 1, ok_silu = 1;
	enum { NQ = 11, NK = 37 };

	for (int h = 0; h < 2; h++) {
		int hd = hds[h];
		float *q = random_floats(NQ * hd), *k = random_floats(NK * hd);
		float *v = random_floats(NK * hd);
		uint16_t *k16 = xmalloc(NK * hd * sizeof *k16);
		uint16_t *v16 = xmalloc(NK * hd * sizeof *v16);
		float s[NQ * NK], s1[NQ * NK], o[NQ * 64], o1[NQ * 64];
		float o2[NQ * 64];

		/* values exactly representable in f16 */
		for (int i = 0; i < NK * hd; i++) {
			k16[i] = quant_f32_to_f16(k[i]);
			k[i] = quant_f16_to_f32(k16[i]);
			v16[i] = quant_f32_to_f16(v[i]);
			v[i] = quant_f16_to_f32(v16[i]);
		}
		vec_att_scores(q, NQ, k, hd * sizeof(float), 0, NK, hd, s, NK);
		for (int i = 0; i < NQ; i++)
			for (int j = 0; j < NK; j++) {
				double ref = 0;

				for (int d = 0; d < hd; d++)
					ref += (double)q[i * hd + d] * k[j * hd + d];
				if (fabs(s[i * NK + j] - ref) > 1e-4 * (1 + fabs(ref)))
					ok_ref = 0;
			}
		/* one head at a time, keys in two calls, f16 rows */
		for (int i = 0; i < NQ; i++) {
			vec_att_scores(q + i * hd, 1, k16, hd * 2, 1, 20, hd,
			    s1 + i * NK, NK);
			vec_att_scores(q + i * hd, 1, k + 20 * hd, hd *
			    sizeof(float), 0, NK - 20, hd, s1 + i * NK + 20, NK);
		}
		if (memcmp(s, s1, sizeof s) != 0)
			ok_split = 0;
		memset(o, 0, sizeof o);
		vec_att_pv(s, NQ, NK, v, hd * sizeof(float), 0, NK, hd, o);
		for (int i = 0; i < NQ; i++)
			for (int d = 0; d < hd; d++) {
				double ref = 0;

				for (int j = 0; j < NK; j++)
					ref += (double)s[i * NK + j] * v[j * hd + d];
				if (fabs(o[i * hd + d] - ref) > 1e-4 * (1 + fabs(ref)))
					ok_ref = 0;
			}
		memset(o1, 0, sizeof o1);
		memset(o2, 0, sizeof o2);
		for (int i = 0; i < NQ; i++) {
			vec_att_pv(s + i * NK, 1, NK, v16, hd * 2, 1, 9, hd,
			    o1 + i * hd);
			vec_att_pv(s + i * NK + 9, 1, NK, v + 9 * hd, hd *
			    sizeof(float), 0, NK - 9, hd, o1 + i * hd);
		}
		vec_att_pv(s, NQ, NK, v16, hd * 2, 1, NK, hd, o2);
		if (memcmp(o, o1, NQ * hd * sizeof *o) != 0)
			ok_split = 0;
		if (memcmp(o, o2, NQ * hd * sizeof *o) != 0)
			ok_f16 = 0;
		if (hd % 32 == 0) {
			/* q8_0 rows against their dequantized values */
			size_t rb = quant_row_size(GGML_TYPE_Q8_0, hd);
			uint8_t *k8 = xmalloc(NK * rb), *v8 = xmalloc(NK * rb);
			float *kd = xmalloc(NK * hd * sizeof *kd);
			float *vd = xmalloc(NK * hd * sizeof *vd);

			for (int j = 0; j < NK; j++) {
				quant_quantize_row(GGML_TYPE_Q8_0, k + j * hd,
				    k8 + j * rb, hd);
				quant_quantize_row(GGML_TYPE_Q8_0, v + j * hd,
				    v8 + j * rb, hd);
				quant_dequantize_row_ref(GGML_TYPE_Q8_0, k8 + j * rb,
				    kd + j * hd, hd);
				quant_dequantize_row_ref(GGML_TYPE_Q8_0, v8 + j * rb,
				    vd + j * hd, hd);
			}
			vec_att_scores(q, NQ, kd, hd * sizeof(float),
			    QUANT_KV_F32, NK, hd, s, NK);
			vec_att_scores(q, NQ, k8, rb, QUANT_KV_Q8_0, NK, hd, s1,
			    NK);
			if (memcmp(s, s1, sizeof s) != 0)
				ok_f16 = 0;
			memset(o1, 0, sizeof o1);
			memset(o2, 0, sizeof o2);
			vec_att_pv(s, NQ, NK, vd, hd * sizeof(float),
			    QUANT_KV_F32, NK, hd, o1);
			vec_att_pv(s, NQ, NK, v8, rb, QUANT_KV_Q8_0, NK, hd, o2);
			if (memcmp(o1, o2, NQ * hd * sizeof *o1) != 0)
				ok_f16 = 0;
			free(k8);
			free(v8);
			free(kd);
			free(vd);
		}
		free(q);
		free(k);
		free(v);
		free(k16);
		free(v16);
	}
	{
		float e[29], e2[29];
		double ref[29], dsum = 0, mx = -1e30;

		for (int i = 0; i < 29; i++)
			e[i] = e2[i] = 3.0f - 1.3f * (float)i;
		e[28] = e2[28] = -400.0f;	/* exp underflows to 0 */
		for (int i = 0; i < 29; i++)
			mx = fmax(mx, 0.5 * e[i]);
		for (int i = 0; i < 29; i++)
			dsum += ref[i] = exp(0.5 * e[i] - mx);
		vec_softmax(e, 29, 0.5f);
		vec_softmax(e2, 29, 0.5f);
		for (int i = 0; i < 29; i++)
			if (fabs(e[i] - ref[i] / dsum) > 1e-6 * ref[i] / dsum +
			    1e-38 || e[i] != e2[i])
				ok_exp = 0;
	}
	{
		/* SwiGLU: near the exact value over the whole range (large
		 * negative g gives 0, not an overflow), and an element's
		 * result does not depend on where a call starts */
		float g[37], g2[37], g0[37], u[37];

		for (int i = 0; i < 37; i++) {
			g0[i] = -90.0f + 5.1f * (float)i;
			u[i] = 0.5f + 0.03f * (float)i;
		}
		g0[0] = -1e30f;
		memcpy(g, g0, sizeof g);
		memcpy(g2, g0, sizeof g2);
		vec_swiglu(g, u, 37);
		vec_swiglu(g2, u, 5);
		vec_swiglu(g2 + 5, u + 5, 11);
		vec_swiglu(g2 + 16, u + 16, 21);
		for (int i = 0; i < 37; i++) {
			double x = g0[i], want = x / (1.0 + exp(-x)) * u[i];

			if (!(fabs(g[i] - want) <= 1e-6 * fabs(want) + 1e-30) ||
			    g[i] != g2[i])
				ok_silu = 0;
		}
	}
	tap_ok(ok_silu, "%s: SwiGLU within 1e-6 of exact, 0 for large negative "
	    "inputs, the same bits however a row is split", in);
	tap_ok(ok_ref, "%s: attention scores and weighted sums match plain "
	    "loops", in);
	tap_ok(ok_split, "%s: attention results bit-identical however heads "
	    "and keys are split into calls", in);
	tap_ok(ok_f16, "%s: f16 and q8_0 rows read in place give the bits of "
	    "the same values in f32", in);
	tap_ok(ok_exp, "%s: softmax within 1e-6 of exact, 0 below the float "
	    "range", in);
}

/*
 * Batch invariance (quant-internal.h, DESIGN 6): with int8 activations an
 * output must be bit-identical whatever else is in the product: alone
 * (n = 1, one row), in every tile shape the kernels take, in products of
 * 1..19 inputs split over rows at odd places, with the inputs quantized
 * by quant_act_fill() or inside quant_matmul().  A batched-decode or
 * prefill kernel that sums in another order fails this.
 */
static void
test_mmq_invariance(enum quant_isa isa)
{
	static const enum ggml_type qt[] = {
		GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
		GGML_TYPE_Q6_K,
	};
	const char *in = quant_isa_name(isa);
	const struct quant_kernels *k = quant_kernels();
	const int64_t rows = 11, cols = 768, nx = 19;
	int ok_shape = 1, ok_mm = 1;

	quant_set_act_q8(1);
	for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++) {
		enum ggml_type t = qt[i];
		size_t rs = quant_row_size(t, cols);
		int fmt = quant_act_fmt(t, cols);
		uint8_t *w = xmalloc(rs * rows);
		float *x = random_floats(nx * cols);
		float *y1 = xmalloc(nx * rows * sizeof *y1);
		float *y = xmalloc(nx * rows * sizeof *y);
		void *abuf = xmalloc(quant_act_bytes(fmt, cols, nx));
		struct quant_act a;
		struct quant_q8x qx[4];

		for (int64_t r = 0; r < rows; r++) {
			void *row = random_row(t, cols);

			memcpy(w + r * rs, row, rs);
			free(row);
		}
		quant_act_bind(&a, abuf, fmt, cols, nx);
		quant_act_fill(&a, x, 0, nx);
		for (int64_t c = 0; c < nx; c++) {
			qx[0] = (struct quant_q8x){ a.q + c * cols, a.d + c *
			    (a.fmt == QUANT_ACT_Q8_K ? cols / 256 : cols / 32),
			    a.s + c * (cols / 32), NULL };
			for (int64_t r = 0; r < rows; r++)
				k->mmq[t](w + r * rs, rs, 1, qx, 1,
				    y1 + c * rows + r, rows, cols, 1);
		}
		/* every shape the table takes, at every row offset, with
		 * and without the prefetch of a streaming tile */
		for (int nc = 1; nc <= k->mmq_tile_cols; nc++) {
			int maxr = nc == 1 ? k->mmq_rows : k->mmq_tile_rows;

			for (int nr = 1; nr <= maxr; nr++) {
				for (int64_t c0 = 0; c0 + nc <= 6; c0++) {
					for (int c = 0; c < nc; c++)
						qx[c] = (struct quant_q8x){
						    a.q + (c0 + c) * cols,
						    a.d + (c0 + c) * (a.fmt ==
						    QUANT_ACT_Q8_K ? cols / 256 :
						    cols / 32), a.s + (c0 + c) *
						    (cols / 32), NULL };
					for (int64_t r0 = 0; r0 + nr <= rows;
					    r0 += 3) {
						float out[16];

						k->mmq[t](w + r0 * rs, rs, nr,
						    qx, nc, out, nr, cols,
						    (int)((r0 + c0) & 1));
						for (int c = 0; c < nc; c++)
							for (int r = 0; r < nr;
							    r++)
								if (out[c * nr +
								    r] != y1[(c0 +
								    c) * rows +
								    r0 + r])
									ok_shape = 0;
					}
				}
			}
		}
		/* products of every size, split over rows, both entries */
		for (int64_t n = 1; n <= nx; n++) {
			for (int split = 0; split < 2; split++) {
				int64_t cut = split ? 5 : rows;
				struct quant_act an;

				memset(y, 0, nx * rows * sizeof *y);
				if (split) {
					quant_matmul(t, w, rows, cols, x, n, y,
					    rows, 0, cut, NULL);
					quant_matmul(t, w, rows, cols, x, n, y,
					    rows, cut, rows, NULL);
				} else {
					/* the first n inputs of a */
					an = a;
					an.n = n;
					quant_matmul_act(t, w, rows, cols, &an,
					    y, rows, 0, rows);
				}
				if (memcmp(y, y1, n * rows * sizeof *y) != 0)
					ok_mm = 0;
			}
		}
		free(w);
		free(x);
		free(y1);
		free(y);
		free(abuf);
	}
	quant_set_act_q8(0);
	tap_ok(ok_shape, "%s: int8 tiles of every shape give the bits of "
	    "one row times one input", in);
	tap_ok(ok_mm, "%s: products of 1-19 inputs, split or not, give every "
	    "output bit-identical to the same output alone", in);
}

/*
 * Where byte j of row r's block sits in its packed group's block
 * (quant-internal.h, DESIGNS 8 and 9), written out here from the layout's
 * description.  A quant array at base holds byte p at base + 32 (p / 4) +
 * 4 r + p % 4.
 */
static size_t
packed_at(enum ggml_type t, int r, size_t j)
{
#define PIECE(base, p) ((base) + 32 * ((p) / 4) + 4 * (size_t)r + (p) % 4)
	switch (t) {
	case GGML_TYPE_Q8_0:
	case GGML_TYPE_Q4_0:
		return j < 2 ? 2 * (size_t)r + j : PIECE(16, j - 2);
	case GGML_TYPE_Q4_K:	/* d, dmin, scales[12], qs[128] */
		if (j < 4)
			return 16 * (j / 2) + 2 * (size_t)r + j % 2;
		if (j < 16)
			return 32 + 8 * (j - 4) + (size_t)r;
		return PIECE(128, j - 16);
	case GGML_TYPE_Q5_K:	/* d, dmin, scales[12], qh[32], qs[128] */
		if (j < 4)
			return 16 * (j / 2) + 2 * (size_t)r + j % 2;
		if (j < 16)
			return 32 + 8 * (j - 4) + (size_t)r;
		if (j < 48)
			return PIECE(128, j - 16);
		return PIECE(128 + 256, j - 48);
	default:		/* Q6_K: ql[128], qh[64], scales[16], d */
		if (j < 128)
			return PIECE(176, j);
		if (j < 192)
			return PIECE(176 + 1024, j - 128);
		if (j < 208)
			return 48 + 8 * (j - 192) + (size_t)r;
		return 2 * (size_t)r + j - 208;
	}
#undef PIECE
}

/* Quant e of a Q4_K block (0..15) or of a Q5_K block (0..31: qh's bit
 * e / 32 of byte e % 32 on top), and its sub-block's 6-bit scale and min
 * (s, the block's scales). */
static int
packed_q4k_quant(const uint8_t *qs, int e)
{
	int v = qs[32 * (e / 64) + e % 32];

	return e % 64 < 32 ? v & 0xf : v >> 4;
}

static int
packed_q5k_quant(const struct block_q5_K *b, int e)
{
	return packed_q4k_quant(b->qs, e) | (b->qh[e % 32] >> (e / 32) & 1) <<
	    4;
}

static void
packed_q4k_scale(const uint8_t *s, int j, int *sc, int *m)
{
	*sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
	*m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
}

/* Quant e of a Q6_K block less 32. */
static int
packed_q6k_quant(const struct block_q6_K *b, int e)
{
	int h = e / 128, qq = e % 128 / 32, l = e % 32;
	int lo = b->ql[64 * h + 32 * (qq % 2) + l] >> (4 * (qq / 2)) & 0xf;

	return (lo | (b->qh[32 * h + l] >> (2 * qq) & 3) << 4) - 32;
}

/*
 * The definition of a packed output (quant-internal.h, DESIGNS 8, 9) from
 * the unpacked row ob and input c of a: per block, exact integer sums,
 * then fmaf in block order.  *mag receives the sum of the magnitudes of
 * the scaled terms, the scale of the rounding the unpacked product may
 * differ by.
 */
static float
packed_def(enum ggml_type t, const uint8_t *ob, const struct quant_act *a,
    int64_t c, double *mag)
{
	int64_t cols = a->cols, bsz = quant_traits(t)->block_size;
	size_t bs = quant_traits(t)->type_size;
	float acc = 0.0f;

	*mag = 0;
	for (int64_t b = 0; b < cols / bsz; b++, ob += bs) {
		const int8_t *xq = a->q + c * cols + bsz * b;
		float dx = a->d[c * (cols / bsz) + b];
		int32_t isum = 0, msum = 0;
		uint16_t d;

		if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0) {
			memcpy(&d, ob, 2);
			for (int e = 0; e < 32; e++)
				isum += (t == GGML_TYPE_Q4_0 ? (e < 16 ?
				    (ob[2 + e] & 0xf) : (ob[2 + e - 16] >> 4)) -
				    8 : (int8_t)ob[2 + e]) * xq[e];
		} else if (t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K) {
			const struct block_q4_K *k = (const void *)ob;
			const struct block_q5_K *k5 = (const void *)ob;
			uint16_t dmin;

			for (int j = 0; j < 8; j++) {
				int32_t sum = 0;
				int sc, m;

				for (int e = 32 * j; e < 32 * j + 32; e++)
					sum += (t == GGML_TYPE_Q5_K ?
					    packed_q5k_quant(k5, e) :
					    packed_q4k_quant(k->qs, e)) * xq[e];
				packed_q4k_scale(k->scales, j, &sc, &m);
				isum += sc * sum;
				msum += m * a->s[c * (cols / 32) + 8 * b + j];
			}
			memcpy(&d, &k->d, 2);
			memcpy(&dmin, &k->dmin, 2);
			acc = fmaf(-(float)msum, quant_f16_to_f32(dmin) * dx,
			    acc);
			*mag += fabs((double)msum * quant_f16_to_f32(dmin) * dx);
		} else {
			const struct block_q6_K *k = (const void *)ob;

			for (int j = 0; j < 16; j++) {
				int32_t sum = 0;

				for (int e = 16 * j; e < 16 * j + 16; e++)
					sum += packed_q6k_quant(k, e) * xq[e];
				isum += k->scales[j] * sum;
			}
			memcpy(&d, &k->d, 2);
		}
		acc = fmaf((float)isum, quant_f16_to_f32(d) * dx, acc);
		*mag += fabs((double)isum * quant_f16_to_f32(d) * dx);
	}
	return acc;
}

/*
 * Packed Q8_0, Q4_0, Q4_K, Q5_K and Q6_K (quant.h, quant-internal.h DESIGNS 8
 * and 9): the layout as documented, and every output of
 * quant_matmul_packed() bit-identical to its definition computed here
 * from the unpacked row, for products of 1-19 inputs, whole or cut at a
 * multiple of 8 rows, with a partial last group, and within float
 * rounding of quant_matmul_act() on the unpacked matrix.  The same bits
 * on every instruction set follow, since the definition does not depend
 * on it.  Rows 17 and 18 and inputs 0 and 1 take the extreme quants (the
 * int16 sums of the kernels at their largest).
 */
static void
test_packed(enum quant_isa isa)
{
	static const enum ggml_type qt[] = {
		GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
		GGML_TYPE_Q6_K,
	};
	const char *in = quant_isa_name(isa);
	const int64_t rows = 19, cols = 768, nx = 19;
	int ok_layout = 1, ok_def = 1, ok_refuse = 1, ok_close = 1, ok_u = 1;

	quant_set_act_q8(1);
	for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++) {
		enum ggml_type t = qt[i];
		int fmt = quant_act_fmt(t, cols);
		size_t rs = quant_row_size(t, cols);
		size_t bs = quant_traits(t)->type_size;
		int64_t nb = cols / quant_traits(t)->block_size;
		size_t psize = quant_pack_size(t, rows, cols);
		size_t gbs = quant_pack_size(t, 8, cols) / nb;
		uint8_t *w = xmalloc(rs * rows), *p = xmalloc(psize);
		float *x = random_floats(nx * cols);
		float *want = xmalloc(nx * rows * sizeof *want);
		double *mag = xmalloc(nx * rows * sizeof *mag);
		float *y = xmalloc(nx * rows * sizeof *y);
		float *yu = xmalloc(nx * rows * sizeof *yu);
		void *abuf = xmalloc(quant_act_bytes(fmt, cols, nx));
		struct quant_act a;

		for (int64_t r = 0; r < rows; r++) {
			void *row = random_row(t, cols);

			if (r >= 17) {
				/* Q6_K: all quants -32 (scales -128), or 31
				 * (127); the others all 31 (Q5_K), 15 or -1 */
				memset(row, t == GGML_TYPE_Q6_K && r == 17 ?
				    0x00 : 0xff, rs);
				for (int64_t b = 0; b < nb; b++) {
					uint8_t *blk = (uint8_t *)row + b * bs;
					uint16_t h = quant_f32_to_f16(0.01f);

					if (t == GGML_TYPE_Q6_K) {
						memset(blk + 192, r == 17 ?
						    0x80 : 0x7f, 16);
						memcpy(blk + 208, &h, 2);
					} else {
						memcpy(blk, &h, 2);
						if (t == GGML_TYPE_Q4_K ||
						    t == GGML_TYPE_Q5_K)
							memcpy(blk + 2, &h, 2);
					}
				}
			}
			memcpy(w + r * rs, row, rs);
			free(row);
		}
		/* input 0: x = 1, quantized to -127; input 1: mostly 127 */
		for (int64_t e = 0; e < cols; e++) {
			x[e] = 1.0f;
			x[cols + e] = e % 256 == 0 ? -1.001f : 1.0f;
		}
		if (psize != (size_t)3 * gbs * nb || gbs != (t ==
		    GGML_TYPE_Q6_K ? 8 * 214 : 8 * bs))
			ok_layout = 0;
		memset(p, 0xa5, psize);
		quant_pack(t, w, rows, cols, p);
		/* block b of row r: rows 19-23 all zeros */
		for (int64_t r = 0; r < 24; r++)
			for (int64_t b = 0; b < nb; b++) {
				const uint8_t *pb = p + (r / 8) * nb * gbs +
				    b * gbs, *ob = w + r * rs + b * bs;
				int32_t bias = 0, got;

				for (size_t j = 0; j < bs; j++)
					if (pb[packed_at(t, r % 8, j)] !=
					    (r < rows ? ob[j] : 0))
						ok_layout = 0;
				if (t != GGML_TYPE_Q6_K)
					continue;
				for (int e = 0; r < rows && e < 256; e++)
					bias += 128 * ((const struct block_q6_K *)
					    (const void *)ob)->scales[e / 16] *
					    packed_q6k_quant((const void *)ob, e);
				memcpy(&got, pb + 16 + 4 * (r % 8), 4);
				if (got != bias)
					ok_layout = 0;
			}
		quant_act_bind(&a, abuf, fmt, cols, nx);
		quant_act_fill(&a, x, 0, nx);
		/* Q8_K inputs carry q + 128 for Q6_K's kernel, sliced with
		 * them; Q8_0 inputs none */
		if (fmt == QUANT_ACT_Q8_K) {
			struct quant_act sl = quant_act_slice(&a, 5, 3);

			for (int64_t e = 0; e < nx * cols; e++)
				if (a.u[e] != (uint8_t)(a.q[e] + 128))
					ok_u = 0;
			if (sl.u != a.u + 5 * cols || sl.q != a.q + 5 * cols)
				ok_u = 0;
		} else if (a.u != NULL)
			ok_u = 0;
		for (int64_t c = 0; c < nx; c++)
			for (int64_t r = 0; r < rows; r++)
				want[c * rows + r] = packed_def(t, w + r * rs, &a,
				    c, &mag[c * rows + r]);
		quant_matmul_act(t, w, rows, cols, &a, yu, rows, 0, rows);
		for (int64_t n = 1; n <= nx; n++)
			for (int split = 0; split < 2; split++) {
				struct quant_act an = a;

				an.n = n;
				memset(y, 0, nx * rows * sizeof *y);
				if (split) {
					quant_matmul_packed(t, p, rows, cols,
					    &an, y, rows, 0, 8);
					quant_matmul_packed(t, p, rows, cols,
					    &an, y, rows, 8, rows);
				} else
					quant_matmul_packed(t, p, rows, cols,
					    &an, y, rows, 0, rows);
				for (int64_t c = 0; c < n; c++)
					for (int64_t r = 0; r < rows; r++)
						if (!same_bits(y[c * rows + r],
						    want[c * rows + r]))
							ok_def = 0;
			}
		for (int64_t j = 0; j < nx * rows; j++)
			if (fabs((double)y[j] - yu[j]) > 1e-5 * mag[j] + 1e-30) {
				tap_diag("%s %s: output %lld packed %g unpacked "
				    "%g", in, quant_traits(t)->name,
				    (long long)j, y[j], yu[j]);
				ok_close = 0;
			}
		/* a cut inside a group, or activations of the other
		 * format, are refused: nothing written */
		memset(y, 0, nx * rows * sizeof *y);
		quant_matmul_packed(t, p, rows, cols, &a, y, rows, 4, rows);
		a.fmt = fmt == QUANT_ACT_Q8_K ? QUANT_ACT_Q8_0 : QUANT_ACT_Q8_K;
		quant_matmul_packed(t, p, rows, cols, &a, y, rows, 0, rows);
		for (int64_t j = 0; j < nx * rows; j++)
			if (y[j] != 0.0f)
				ok_refuse = 0;
		free(w);
		free(p);
		free(x);
		free(want);
		free(mag);
		free(y);
		free(yu);
		free(abuf);
	}
	quant_set_act_q8(0);
	tap_ok(quant_packable(GGML_TYPE_Q8_0, 64) &&
	    quant_packable(GGML_TYPE_Q4_0, 32) &&
	    quant_packable(GGML_TYPE_Q4_K, 256) &&
	    quant_packable(GGML_TYPE_Q5_K, 256) &&
	    quant_packable(GGML_TYPE_Q6_K, 512) &&
	    !quant_packable(GGML_TYPE_Q8_1, 256) &&
	    !quant_packable(GGML_TYPE_Q4_K, 384) &&
	    !quant_packable(GGML_TYPE_Q5_K, 128) &&
	    !quant_packable(GGML_TYPE_Q8_0, 48) &&
	    quant_pack_size(GGML_TYPE_F16, 8, 64) == 0, "%s: Q8_0, Q4_0, "
	    "Q4_K, Q5_K and Q6_K are packable, other types and partial blocks "
	    "are not", in);
	tap_ok(ok_layout, "%s: packed groups hold 8 rows' scales, then their "
	    "quants interleaved 4 bytes at a time (Q6_K: and each row's "
	    "bias); padding rows are zeros", in);
	tap_ok(ok_def, "%s: packed products of 1-19 inputs, whole or cut at "
	    "8 rows, give every output's definition bit for bit", in);
	tap_ok(ok_close, "%s: packed products agree with the unpacked ones "
	    "within float rounding", in);
	tap_ok(ok_u, "%s: K-quant int8 inputs carry their bytes plus 128, "
	    "sliced with them; Q8_0 inputs do not", in);
	tap_ok(ok_refuse, "%s: a packed product cut inside a group of 8 rows, "
	    "or with the wrong activations, is refused", in);
}

/*
 * Int8 activations: each path's quantizer bit-identical to the scalar one,
 * each path's mmq kernel against quant_dotq_ref (the same
 * integer sums, so only the float combination may differ), the reference
 * against the float dot within the bound the rounding of x allows
 * (|x - d q| <= d / 2 per element), and quant_matmul's decode with the
 * switch on.
 */
static void
test_dotq(enum quant_isa isa)
{
	static const enum ggml_type qt[] = {
		GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
		GGML_TYPE_Q6_K,
	};
	static const int64_t lens[] = { 256, 768, 4096 };
	static const int64_t ns[] = { 1, 3, 16, 40 };
	const char *in = quant_isa_name(isa);
	const struct quant_kernels *k = quant_kernels();
	int ok_simd = 1, ok_bound = 1, ok_mm = 1, ok_quant = 1;

	for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++) {
		enum ggml_type t = qt[i];

		for (int l = 0; l < 3; l++) {
			int64_t n = lens[l];
			void *row = random_row(t, n);
			float *x = random_floats(n), *w = xmalloc(n * sizeof *w);
			int8_t *q = xmalloc(n);
			float *d = xmalloc(n / 32 * sizeof *d);
			int32_t *sm = xmalloc(n / 32 * sizeof *sm);
			struct quant_q8x qx = { q, d, sm, NULL };
			int8_t *q2 = xmalloc(n);
			float *d2 = xmalloc(n / 32 * sizeof *d2), got;
			int32_t *sm2 = xmalloc(n / 32 * sizeof *sm2);
			double mag = 0, bound = 0, ref;
			int bs = quant_q8x_is_k(t) ? 256 : 32;

			x[3] = 0;		/* a zero and a block of zeros */
			if (n >= 2 * bs)
				memset(x + bs, 0, bs * sizeof *x);
			if (n >= 4 * bs) {	/* +-M tie: the first one wins */
				x[2 * bs + 5] = -9.5f;
				x[2 * bs + 9] = 9.5f;
				x[3 * bs + 1] = 4.25f;
				x[3 * bs + 7] = -4.25f;
			}
			quant_q8x_quantize(x, n, bs == 256, q, d, sm);
			k->q8x_quantize(x, n, bs == 256, q2, d2, sm2);
			if (memcmp(q, q2, n) != 0 || memcmp(d, d2, n / bs *
			    sizeof *d) != 0 || memcmp(sm, sm2, n / 32 *
			    sizeof *sm) != 0) {
				tap_diag("%s %s n=%lld: quantizer differs from "
				    "the scalar one", in, quant_traits(t)->name,
				    (long long)n);
				ok_quant = 0;
			}
			quant_dequantize_row_ref(t, row, w, n);
			/* |x - d q| <= d / 2, plus the f16 rounding of d
			 * (2^-11 relative, times |q| <= 127) for Q8_0 */
			for (int64_t j = 0; j < n; j++) {
				mag += fabs((double)w[j] * d[j / bs] * q[j]);
				bound += fabs((double)w[j] * d[j / bs]) * 0.57;
			}
			ref = quant_dotq_ref(t, row, &qx, n);
			k->mmq[t](row, 0, 1, &qx, 1, &got, 1, n, 1);
			if (fabs(got - ref) > 4e-6 * mag + 1e-30) {
				tap_diag("%s %s n=%lld: mmq %g, reference %g", in,
				    quant_traits(t)->name, (long long)n, got, ref);
				ok_simd = 0;
			}
			if (fabs(ref - quant_dot_ref(t, row, x, n)) > bound *
			    1.0001 + 1e-5 * mag) {
				tap_diag("%s n=%lld: int8 reference off by %g, "
				    "bound %g", quant_traits(t)->name,
				    (long long)n, ref - quant_dot_ref(t, row, x, n),
				    bound);
				ok_bound = 0;
			}
			free(row);
			free(x);
			free(w);
			free(q);
			free(d);
			free(sm);
			free(q2);
			free(d2);
			free(sm2);
		}
	}
	tap_ok(ok_quant, "%s: int8 activation quantizer bit-identical to the "
	    "scalar one (ties of +-max included)", in);
	if (isa == QUANT_ISA_SCALAR) {
		/* the two activation formats on known values (llama.cpp's
		 * quantize_row_q8_0 and quantize_row_q8_K) */
		float xv[256] = { 0 }, d[8];
		int8_t q[256];
		int32_t sm[8];

		xv[0] = -1.27f;
		xv[1] = 0.5f;
		xv[40] = 2.0f;
		xv[41] = -0.3f;
		quant_q8x_quantize(xv, 64, 0, q, d, sm);
		tap_ok(d[0] == quant_f16_to_f32(quant_f32_to_f16(0.01f)) &&
		    q[0] == -127 && q[1] == 50 && sm[0] == -77 &&
		    d[1] == quant_f16_to_f32(quant_f32_to_f16(2.0f / 127)) &&
		    q[40] == 127 && q[41] == -19 && sm[1] == 108,
		    "int8 activations, Q8_0 format: f16 scale max/127 per 32");
		quant_q8x_quantize(xv, 256, 1, q, d, sm);
		tap_ok(d[0] == 2.0f / -127 && q[40] == -127 && q[0] == 81 &&
		    q[1] == -32 && q[41] == 19 && sm[0] == 49 && sm[1] == -108,
		    "int8 activations, Q8_K format: scale max/-127 per 256");
	}
	tap_ok(ok_simd, "%s: int8-activation tiles match their reference", in);
	tap_ok(ok_bound, "%s: int8-activation reference within the rounding "
	    "bound of the float dot", in);

	quant_set_act_q8(1);
	for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++) {
		enum ggml_type t = qt[i];
		const int64_t rows = 19, cols = 512;
		size_t rs = quant_row_size(t, cols);
		uint8_t *wm = xmalloc(rs * rows);
		float *x = random_floats(40 * cols);
		float *y = xmalloc(40 * rows * sizeof *y);

		for (int64_t r = 0; r < rows; r++) {
			void *row = random_row(t, cols);

			memcpy(wm + r * rs, row, rs);
			free(row);
		}
		for (size_t ni = 0; ni < 4; ni++) {
			int64_t n = ns[ni];

			for (int part = 0; part < 3; part++) {
				int64_t r0 = part * 7;
				int64_t r1 = part == 2 ? rows : r0 + 7;
				size_t need = quant_matmul_scratch(t, cols, r1 - r0);
				void *scratch = part == 1 ? xmalloc(need) : NULL;

				quant_matmul(t, wm, rows, cols, x, n, y, rows, r0,
				    r1, scratch);
				free(scratch);
			}
			for (int64_t u = 0; u < n; u++) {
				int8_t q[512];
				float d[16];
				int32_t sm[16];
				struct quant_q8x qx = { q, d, sm, NULL };

				quant_q8x_quantize(x + u * cols, cols,
				    quant_q8x_is_k(t), q, d, sm);
				for (int64_t r = 0; r < rows; r++) {
					double ref = quant_dotq_ref(t, wm + r * rs,
					    &qx, cols);

					if (fabs(y[u * rows + r] - ref) >
					    1e-5 * fabs(ref) + 1e-4)
						ok_mm = 0;
				}
			}
		}
		free(wm);
		free(x);
		free(y);
	}
	quant_set_act_q8(0);
	tap_ok(ok_mm, "%s: products with int8 activations (n = 1, 3, 16, 40)",
	    in);
}

/*
 * quant_matmul against a naive loop over quant_dot_ref, for several batch
 * sizes (each regime: decode, batched decode, BLAS), over row ranges
 * including odd splits, with and without caller scratch.  Entries outside
 * the range must not be touched.
 */
static void
test_matmul(enum quant_isa isa)
{
	static const int64_t ns[] = { 1, 2, 3, 7, 16, 33, 64, 100 };
	const int64_t rows = 37, ldy = 41;
	const char *in = quant_isa_name(isa);

	for (size_t i = 0; i < NSUPPORTED; i++) {
		enum ggml_type t = supported[i];
		uint32_t bs = quant_traits(t)->block_size;
		/* 291: not a multiple of any vector width, to reach the tails */
		int64_t cols = bs == QK_K ? 512 : bs == 32 ? 288 : 291;
		size_t rs = quant_row_size(t, cols);
		uint8_t *w = xmalloc(rs * rows);
		float *x = random_floats(100 * cols);
		float *want = xmalloc(100 * rows * sizeof *want);
		double *mag = xmalloc(100 * rows * sizeof *mag);
		float *y = xmalloc(100 * ldy * sizeof *y);
		int ok = 1, untouched = 1;
		double worst = 0;

		for (int64_t r = 0; r < rows; r++) {
			void *row = random_row(t, cols);

			memcpy(w + r * rs, row, rs);
			free(row);
		}
		for (int64_t s = 0; s < 100; s++) {
			for (int64_t r = 0; r < rows; r++) {
				want[s * rows + r] = quant_dot_ref(t, w + r * rs,
				    x + s * cols, cols);
				mag[s * rows + r] = abs_dot(t, w + r * rs,
				    x + s * cols, cols);
			}
		}
		for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
			static const int64_t splits[][4] = {
				{ 0, 37, -1, 0 }, { 0, 1, 1, 37 },
				{ 0, 13, 13, 26 }, { 26, 37, 5, 6 },
				{ 0, 18, 18, 37 },
			};
			int64_t n = ns[ni];

			for (size_t sp = 0; sp < 5; sp++) {
				size_t need;
				void *scratch = NULL;

				for (int64_t k = 0; k < n * ldy; k++)
					y[k] = -12345.0f;
				for (int part = 0; part < 2; part++) {
					int64_t r0 = splits[sp][2 * part];
					int64_t r1 = splits[sp][2 * part + 1];

					if (r0 < 0)
						continue;
					/* alternate caller scratch, exactly
					 * sized, and none */
					need = quant_matmul_scratch(t, cols, r1 - r0);
					scratch = (sp + part) % 2 && need ?
					    xmalloc(need) : NULL;
					quant_matmul(t, w, rows, cols, x, n, y, ldy,
					    r0, r1, scratch);
					free(scratch);
				}
				for (int64_t s = 0; s < n; s++) {
					for (int64_t r = 0; r < ldy; r++) {
						int in_range = 0;
						float got = y[s * ldy + r];
						double err, tol;

						for (int part = 0; part < 2; part++)
							if (splits[sp][2 * part] >= 0 &&
							    r >= splits[sp][2 * part] &&
							    r < splits[sp][2 * part + 1])
								in_range = 1;
						if (!in_range) {
							if (got != -12345.0f)
								untouched = 0;
							continue;
						}
						err = fabs((double)got -
						    want[s * rows + r]);
						tol = 4e-6 * mag[s * rows + r] + 1e-30;
						if (err > tol) {
							if (ok)
								tap_diag("%s %s n=%lld "
								    "t=%lld r=%lld: %g vs %g",
								    in, quant_traits(t)->name,
								    (long long)n, (long long)s,
								    (long long)r, got,
								    want[s * rows + r]);
							ok = 0;
						}
						if (err / tol > worst)
							worst = err / tol;
					}
				}
			}
		}
		tap_ok(ok && untouched, "%s: %s matmul, n in {1..100}, split row "
		    "ranges (worst %.2f of tolerance)", in, quant_traits(t)->name,
		    worst);
		free(w);
		free(x);
		free(want);
		free(mag);
		free(y);
	}
}

/*
 * Two threads splitting the rows of BLAS-sized and batched-decode
 * products, as the compute pool does: results equal the one-thread ones
 * exactly (each row's arithmetic does not depend on the split).
 */
struct conc_job {
	enum ggml_type	 t;
	const void	*w;
	const float	*x;
	float		*y;
	int64_t		 rows, cols, n, r0, r1;
};

static void *
conc_run_cb(void *arg)
{
	struct conc_job *j = arg;
	void *scratch = xmalloc(quant_matmul_scratch(j->t, j->cols,
	    j->r1 - j->r0));

	for (int rep = 0; rep < 4; rep++)
		quant_matmul(j->t, j->w, j->rows, j->cols, j->x, j->n, j->y,
		    j->rows, j->r0, j->r1, scratch);
	free(scratch);
	return NULL;
}

static void
test_concurrent(void)
{
	const int64_t rows = 96, cols = 1024;
	int ok = 1;

	for (int k = 0; k < 2; k++) {
		enum ggml_type t = k ? GGML_TYPE_Q4_K : GGML_TYPE_Q8_0;
		size_t rs = quant_row_size(t, cols);
		uint8_t *w = xmalloc(rs * rows);
		float *x = random_floats(80 * cols);
		float *y1 = xmalloc(80 * rows * sizeof *y1);
		float *y2 = xmalloc(80 * rows * sizeof *y2);

		for (int64_t r = 0; r < rows; r++) {
			void *row = random_row(t, cols);

			memcpy(w + r * rs, row, rs);
			free(row);
		}
		for (int64_t n = 8; n <= 80; n += 72) {
			struct conc_job a = { t, w, x, y2, rows, cols, n, 0, 40 };
			struct conc_job b = { t, w, x, y2, rows, cols, n, 40, rows };
			pthread_t tid;

			/* with scratch, so the tiles match the threads' */
			conc_run_cb(&(struct conc_job){ t, w, x, y1, rows, cols, n,
			    0, 40 });
			conc_run_cb(&(struct conc_job){ t, w, x, y1, rows, cols, n,
			    40, rows });
			if (pthread_create(&tid, NULL, conc_run_cb, &b) != 0) {
				ok = 0;
				break;
			}
			conc_run_cb(&a);
			pthread_join(tid, NULL);
			if (memcmp(y1, y2, n * rows * sizeof *y1) != 0)
				ok = 0;
		}
		free(w);
		free(x);
		free(y1);
		free(y2);
	}
	tap_ok(ok, "two threads splitting rows (BLAS and batched paths) get "
	    "the one-thread results");
}

/* Long rows without scratch: the buffers come from malloc(), not the
 * stack; every regime, int8 activations included. */
static void
test_matmul_long(void)
{
	const enum ggml_type t = GGML_TYPE_Q4_K;
	const int64_t rows = 5, cols = 16384;
	size_t rs = quant_row_size(t, cols);
	uint8_t *w = xmalloc(rs * rows);
	float *x = random_floats(20 * cols), *y = xmalloc(20 * rows * sizeof *y);
	int ok = 1;

	for (int64_t r = 0; r < rows; r++) {
		void *row = random_row(t, cols);

		memcpy(w + r * rs, row, rs);
		free(row);
	}
	for (int pass = 0; pass < 4; pass++) {
		int64_t n = pass == 0 || pass == 3 ? 1 : pass == 1 ? 3 : 20;

		quant_set_act_q8(pass == 3);
		quant_matmul(t, w, rows, cols, x, n, y, rows, 0, rows, NULL);
		for (int64_t s = 0; s < n; s++) {
			for (int64_t r = 0; r < rows; r++) {
				double ref = quant_dot_ref(t, w + r * rs,
				    x + s * cols, cols);
				double tol = (pass == 3 ? 1e-2 : 4e-6) *
				    abs_dot(t, w + r * rs, x + s * cols, cols);

				if (fabs(y[s * rows + r] - ref) > tol)
					ok = 0;
			}
		}
	}
	quant_set_act_q8(0);
	tap_ok(ok, "long rows without scratch (malloc'ed buffers), all regimes");
	free(w);
	free(x);
	free(y);
}

/* ---- fixtures: llama-quantize's blocks ----------------------------- */

static void
test_fixture_pair(const char *qname, const char *fname, double bound)
{
	char path_q[4096], err[512];
	const char *p;
	struct gguf_file *fq = NULL, *ff = NULL;
	int n_checked = 0, ok = 1;
	double worst = 0;

	if ((p = tap_fixture(qname)) == NULL) {
		tap_skip("fixtures absent");
		return;
	}
	snprintf(path_q, sizeof path_q, "%s", p);
	if ((p = tap_fixture(fname)) == NULL) {
		tap_skip("fixtures absent");
		return;
	}
	if (gguf_open(path_q, 1, &fq, err, sizeof err) != 0 ||
	    gguf_open(p, 1, &ff, err, sizeof err) != 0) {
		tap_ok(0, "%s: open: %s", qname, err);
		gguf_close(fq);
		return;
	}
	for (uint64_t i = 0; i < gguf_n_tensors(fq); i++) {
		const struct gguf_tensor *tq = gguf_tensor_at(fq, i), *tf;
		int64_t cols = (int64_t)tq->ne[0], nrows, n;
		double se = 0, sx = 0;
		float *a, *b;
		char name[256];

		if (tq->type == GGML_TYPE_F32)
			continue;
		snprintf(name, sizeof name, "%.*s", (int)tq->name.len,
		    tq->name.ptr);
		tf = gguf_find_tensor(ff, name);
		if (tf == NULL || tf->type != GGML_TYPE_F32 ||
		    memcmp(tf->ne, tq->ne, sizeof tq->ne) != 0) {
			tap_diag("%s: %s has no F32 twin", qname, name);
			ok = 0;
			continue;
		}
		nrows = (int64_t)(tq->ne[1] * tq->ne[2] * tq->ne[3]);
		n = cols * nrows;
		a = xmalloc(n * sizeof *a);
		b = xmalloc(n * sizeof *b);
		for (int64_t r = 0; r < nrows; r++)
			quant_dequantize_row(tq->type, (const char *)tq->data +
			    r * quant_row_size(tq->type, cols), a + r * cols, cols);
		memcpy(b, tf->data, n * sizeof *b);
		for (int64_t k = 0; k < n; k++) {
			se += (double)(a[k] - b[k]) * (a[k] - b[k]);
			sx += (double)b[k] * b[k];
		}
		if (!(sqrt(se / sx) <= bound)) {
			tap_diag("%s: %s (%s) relative RMS error %g", qname, name,
			    quant_traits(tq->type)->name, sqrt(se / sx));
			ok = 0;
		}
		if (sqrt(se / sx) > worst)
			worst = sqrt(se / sx);
		n_checked++;
		free(a);
		free(b);
	}
	tap_ok(ok && n_checked > 0, "%s: %d quantized tensors within %g of "
	    "the F32 model (worst %.4f)", qname, n_checked, bound, worst);
	gguf_close(fq);
	gguf_close(ff);
}

int
main(void)
{
	tap_timeout(300);
	/* before anything initializes the kernels: the override is honoured */
	setenv("MISTRAL_ISA", "scalar", 1);
	quant_init();
	tap_ok(quant_isa() == QUANT_ISA_SCALAR, "MISTRAL_ISA=scalar is honoured");
	tap_diag("best instruction set here: %s",
	    quant_isa_name(quant_set_isa(QUANT_ISA_AVX512)));

	if (getenv("MISTRAL_ACT_Q8") == NULL)
		tap_ok(quant_act_q8() && quant_act_fmt(GGML_TYPE_Q4_0, 64) ==
		    QUANT_ACT_Q8_0 && quant_act_fmt(GGML_TYPE_Q6_K, 256) ==
		    QUANT_ACT_Q8_K && quant_act_fmt(GGML_TYPE_F16, 256) ==
		    QUANT_ACT_NONE, "int8 activations are the default for "
		    "Q8_0, Q4_0 and K-quants, not for F16");
	/* the float regimes are tested with int8 activations off; the int8
	 * tests turn them on */
	quant_set_act_q8(0);
	test_traits();
	test_f16();
	test_bf16();
	test_known_blocks();
	test_quantize();
	for (int isa = QUANT_ISA_SCALAR; isa <= QUANT_ISA_AVX512; isa++) {
		if ((int)quant_set_isa(isa) != isa) {
			tap_skip(isa == QUANT_ISA_AVX2 ? "no AVX2 on this CPU" :
			    "no AVX-512 on this CPU (t-quant-avx512emu runs "
			    "it emulated)");
			continue;
		}
		test_kernels(isa);
		test_dotq(isa);
		test_mmq_invariance(isa);
		test_packed(isa);
		test_attention(isa);
		test_matmul(isa);
	}
	quant_set_isa(QUANT_ISA_AVX512);
	test_concurrent();
	test_matmul_long();
	/* Q4_K_M and Q5_K_M files also hold Q6_K tensors: both checked */
	for (int moe = 0; moe < 2; moe++) {
		static const struct {
			const char *name;
			double bound;
		} files[] = {
			{ "q8_0", 0.01 }, { "q4_0", 0.15 }, { "q4_k_m", 0.12 },
			{ "q5_k_m", 0.06 }, { "q6_k", 0.03 },
		};
		const char *dir = moe ? "moe/moe" : "dense/dense";
		char qname[64], fname[64];

		snprintf(fname, sizeof fname, "%s-f32.gguf", dir);
		for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
			snprintf(qname, sizeof qname, "%s-%s.gguf", dir,
			    files[i].name);
			test_fixture_pair(qname, fname, files[i].bound);
		}
	}
	return tap_done();
}
