/*
 * quant.c: tensor element types, the scalar reference kernels, the
 * quantizers, and the choice of SIMD kernels at start-up.
 *
 * The scalar routines here are the definitions every fast path is tested
 * against (tests/t-quant.c): dequantization must match them bit for bit,
 * dot products within float rounding.  They are also the kernels of the
 * "scalar" instruction set, used on CPUs without AVX2 and when
 * MISTRAL_ISA=scalar.  Products with quantized weights quantize their
 * input to int8, as llama.cpp does (quant-internal.h); MISTRAL_ACT_Q8=0
 * keeps float inputs instead: slower, slightly more exact, and no longer
 * batch-invariant.
 *
 * DESIGN
 *
 * 1. Type traits cover every ggml type number below GGML_TYPE_COUNT that
 *    ggml has defined, supported or not, so the GGUF reader can size any
 *    tensor and name the type it refuses.
 * 2. quant_init() runs once (pthread_once): it asks the CPU what it has,
 *    fills one kernel table per usable instruction set and publishes the
 *    best one, or the one MISTRAL_ISA asks for if the CPU has it.  The
 *    tables are never written after that; quant_set_isa() only swaps the
 *    published pointer (for tests, between calls).
 * 3. The reference dot products accumulate in double, so they are the
 *    most accurate of the paths and the tolerance in the tests measures
 *    only the fast paths' float rounding.
 * 4. The quantizers pick each block's scale from its extremes and round
 *    to nearest (no importance-weighted search): enough for tests, demo
 *    models and benchmarks, not a replacement for llama-quantize.
 * 5. The int8-activation references (quant_dotq_ref()) define those dots
 *    as exact integer sums per block or sub-block, each scaled once; the
 *    SIMD versions may only round the scaled sums differently.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cpuid.h>

#include "quant-internal.h"

/* ---- type traits --------------------------------------------------- */

static const struct quant_traits quant_traits_table[GGML_TYPE_COUNT] = {
	[GGML_TYPE_F32] = { "f32", 1, 4, 1 },
	[GGML_TYPE_F16] = { "f16", 1, 2, 1 },
	[GGML_TYPE_Q4_0] = { "q4_0", QK4_0, sizeof(struct block_q4_0), 1 },
	[GGML_TYPE_Q4_1] = { "q4_1", 32, 20, 0 },
	[GGML_TYPE_Q5_0] = { "q5_0", 32, 22, 0 },
	[GGML_TYPE_Q5_1] = { "q5_1", 32, 24, 0 },
	[GGML_TYPE_Q8_0] = { "q8_0", QK8_0, sizeof(struct block_q8_0), 1 },
	[GGML_TYPE_Q8_1] = { "q8_1", 32, 36, 0 },
	[GGML_TYPE_Q2_K] = { "q2_K", 256, 84, 0 },
	[GGML_TYPE_Q3_K] = { "q3_K", 256, 110, 0 },
	[GGML_TYPE_Q4_K] = { "q4_K", QK_K, sizeof(struct block_q4_K), 1 },
	[GGML_TYPE_Q5_K] = { "q5_K", QK_K, sizeof(struct block_q5_K), 1 },
	[GGML_TYPE_Q6_K] = { "q6_K", QK_K, sizeof(struct block_q6_K), 1 },
	[GGML_TYPE_Q8_K] = { "q8_K", 256, 292, 0 },
	[16] = { "iq2_xxs", 256, 66, 0 },
	[17] = { "iq2_xs", 256, 74, 0 },
	[18] = { "iq3_xxs", 256, 98, 0 },
	[19] = { "iq1_s", 256, 50, 0 },
	[20] = { "iq4_nl", 32, 18, 0 },
	[21] = { "iq3_s", 256, 110, 0 },
	[22] = { "iq2_s", 256, 82, 0 },
	[23] = { "iq4_xs", 256, 136, 0 },
	[24] = { "i8", 1, 1, 0 },
	[25] = { "i16", 1, 2, 0 },
	[26] = { "i32", 1, 4, 0 },
	[27] = { "i64", 1, 8, 0 },
	[28] = { "f64", 1, 8, 0 },
	[29] = { "iq1_m", 256, 56, 0 },
	[GGML_TYPE_BF16] = { "bf16", 1, 2, 1 },
	/* 31-33 and 36-38, runtime repackings of Q4_0 and IQ4_NL, were
	 * dropped from ggml; files holding them are refused as unknown */
	[34] = { "tq1_0", 256, 54, 0 },
	[35] = { "tq2_0", 256, 66, 0 },
	[39] = { "mxfp4", 32, 17, 0 },
};

const struct quant_traits *
quant_traits(uint32_t type)
{
	if (type >= GGML_TYPE_COUNT || quant_traits_table[type].name == NULL)
		return NULL;
	return &quant_traits_table[type];
}

/* Returns 0 for an unknown type, a negative n, a partial block, or a size
 * that does not fit in size_t. */
size_t
quant_row_size(enum ggml_type t, int64_t n)
{
	const struct quant_traits *tr = quant_traits(t);
	uint64_t nb;

	if (tr == NULL || n < 0 || n % tr->block_size != 0)
		return 0;
	nb = (uint64_t)n / tr->block_size;
	if (nb > SIZE_MAX / tr->type_size)
		return 0;
	return (size_t)(nb * tr->type_size);
}

/* A supported type and a whole number of its blocks. */
static int
quant_check(enum ggml_type t, int64_t n)
{
	const struct quant_traits *tr = quant_traits(t);

	return tr != NULL && tr->supported && n >= 0 &&
	    n % tr->block_size == 0;
}

/* ---- half precision ------------------------------------------------ */

static inline uint32_t
quant_f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

static inline float
quant_bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

/* Exact.  A NaN keeps its payload and comes back quiet, as F16C does. */
float
quant_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;

	if (exp == 0x1f)
		return quant_bits_f32(sign | 0x7f800000 | (mant << 13) |
		    (mant != 0 ? 0x400000 : 0));
	if (exp == 0) {
		if (mant == 0)
			return quant_bits_f32(sign);
		/* subnormal: mant * 2^-24, normalized */
		exp = 127 - 15 + 1;
		while ((mant & 0x400) == 0) {
			mant <<= 1;
			exp--;
		}
		mant &= 0x3ff;
		return quant_bits_f32(sign | (exp << 23) | (mant << 13));
	}
	return quant_bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

/* Round to nearest, ties to even; overflow gives infinity, NaN stays NaN
 * (quiet, with the top of its payload). */
uint16_t
quant_f32_to_f16(float f)
{
	uint32_t x = quant_f32_bits(f);
	uint16_t sign = (x >> 16) & 0x8000;
	uint32_t e, m, r, rem, half, shift;

	x &= 0x7fffffff;
	if (x >= 0x7f800000)
		return sign | (x > 0x7f800000 ?
		    0x7e00 | ((x >> 13) & 0x3ff) : 0x7c00);
	if (x >= 0x477ff000)		/* 65520 and up round to infinity */
		return sign | 0x7c00;
	if (x >= 0x38800000) {		/* normal half: drop 13 bits */
		x += 0xfff + ((x >> 13) & 1);
		return sign | (uint16_t)((x >> 13) - ((127 - 15) << 10));
	}
	e = x >> 23;
	if (e < 102)			/* below half the smallest subnormal */
		return sign;
	/* subnormal half: the value in units of 2^-24, rounded */
	m = (x & 0x7fffff) | 0x800000;
	shift = 126 - e;
	r = m >> shift;
	rem = m & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rem > half || (rem == half && (r & 1)))
		r++;
	return sign | (uint16_t)r;
}

float
quant_bf16_to_f32(uint16_t h)
{
	return quant_bits_f32((uint32_t)h << 16);
}

uint16_t
quant_f32_to_bf16(float f)
{
	uint32_t x = quant_f32_bits(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);
	x += 0x7fff + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

/* ---- scalar dequantization ----------------------------------------- */

static void
quant_dequant_f32_ref(const void *src, float *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof *dst);
}

static void
quant_dequant_f16_ref(const void *src, float *dst, int64_t n)
{
	const uint16_t *s = src;

	for (int64_t i = 0; i < n; i++)
		dst[i] = quant_f16_to_f32(s[i]);
}

static void
quant_dequant_bf16_ref(const void *src, float *dst, int64_t n)
{
	const uint16_t *s = src;

	for (int64_t i = 0; i < n; i++)
		dst[i] = quant_bf16_to_f32(s[i]);
}

static void
quant_dequant_q8_0_ref(const void *src, float *dst, int64_t n)
{
	const struct block_q8_0 *b = src;

	for (int64_t i = 0; i < n / QK8_0; i++, b++, dst += QK8_0) {
		float d = quant_f16_to_f32(b->d);

		for (int j = 0; j < QK8_0; j++)
			dst[j] = d * (float)b->qs[j];
	}
}

static void
quant_dequant_q4_0_ref(const void *src, float *dst, int64_t n)
{
	const struct block_q4_0 *b = src;

	for (int64_t i = 0; i < n / QK4_0; i++, b++, dst += QK4_0) {
		float d = quant_f16_to_f32(b->d);

		for (int j = 0; j < QK4_0 / 2; j++) {
			dst[j] = d * (float)((b->qs[j] & 0xf) - 8);
			dst[j + QK4_0 / 2] = d * (float)((b->qs[j] >> 4) - 8);
		}
	}
}

static void
quant_dequant_q4_K_ref(const void *src, float *dst, int64_t n)
{
	const struct block_q4_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		float d = quant_f16_to_f32(b->d);
		float dmin = quant_f16_to_f32(b->dmin);
		const uint8_t *q = b->qs;

		for (int c = 0; c < 4; c++, q += 32) {
			uint8_t sc, m;
			float d1, m1, d2, m2;

			quant_scale_min_k4(2 * c, b->scales, &sc, &m);
			d1 = d * sc;
			m1 = dmin * m;
			quant_scale_min_k4(2 * c + 1, b->scales, &sc, &m);
			d2 = d * sc;
			m2 = dmin * m;
			for (int l = 0; l < 32; l++)
				*dst++ = d1 * (float)(q[l] & 0xf) - m1;
			for (int l = 0; l < 32; l++)
				*dst++ = d2 * (float)(q[l] >> 4) - m2;
		}
	}
}

static void
quant_dequant_q5_K_ref(const void *src, float *dst, int64_t n)
{
	const struct block_q5_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		float d = quant_f16_to_f32(b->d);
		float dmin = quant_f16_to_f32(b->dmin);
		const uint8_t *q = b->qs;

		for (int c = 0; c < 4; c++, q += 32) {
			uint8_t sc, m, lo = 1 << (2 * c), hi = 2 << (2 * c);
			float d1, m1, d2, m2;

			quant_scale_min_k4(2 * c, b->scales, &sc, &m);
			d1 = d * sc;
			m1 = dmin * m;
			quant_scale_min_k4(2 * c + 1, b->scales, &sc, &m);
			d2 = d * sc;
			m2 = dmin * m;
			for (int l = 0; l < 32; l++)
				*dst++ = d1 * (float)((q[l] & 0xf) +
				    (b->qh[l] & lo ? 16 : 0)) - m1;
			for (int l = 0; l < 32; l++)
				*dst++ = d2 * (float)((q[l] >> 4) +
				    (b->qh[l] & hi ? 16 : 0)) - m2;
		}
	}
}

static void
quant_dequant_q6_K_ref(const void *src, float *dst, int64_t n)
{
	const struct block_q6_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		float d = quant_f16_to_f32(b->d);

		for (int h = 0; h < 2; h++, dst += 128) {
			const uint8_t *ql = b->ql + 64 * h;
			const uint8_t *qh = b->qh + 32 * h;
			const int8_t *sc = b->scales + 8 * h;

			for (int l = 0; l < 32; l++) {
				int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
				int q2 = ((ql[l + 32] & 0xf) |
				    (((qh[l] >> 2) & 3) << 4)) - 32;
				int q3 = ((ql[l] >> 4) |
				    (((qh[l] >> 4) & 3) << 4)) - 32;
				int q4 = ((ql[l + 32] >> 4) |
				    (((qh[l] >> 6) & 3) << 4)) - 32;
				int s = l / 16;

				dst[l] = d * (float)sc[s] * (float)q1;
				dst[l + 32] = d * (float)sc[s + 2] * (float)q2;
				dst[l + 64] = d * (float)sc[s + 4] * (float)q3;
				dst[l + 96] = d * (float)sc[s + 6] * (float)q4;
			}
		}
	}
}

static void (*const quant_dequant_ref_table[GGML_TYPE_COUNT])(const void *,
    float *, int64_t) = {
	[GGML_TYPE_F32] = quant_dequant_f32_ref,
	[GGML_TYPE_F16] = quant_dequant_f16_ref,
	[GGML_TYPE_BF16] = quant_dequant_bf16_ref,
	[GGML_TYPE_Q8_0] = quant_dequant_q8_0_ref,
	[GGML_TYPE_Q4_0] = quant_dequant_q4_0_ref,
	[GGML_TYPE_Q4_K] = quant_dequant_q4_K_ref,
	[GGML_TYPE_Q5_K] = quant_dequant_q5_K_ref,
	[GGML_TYPE_Q6_K] = quant_dequant_q6_K_ref,
};

/* ---- scalar dot products ------------------------------------------- */

static float
quant_dot_f32_ref(const void *row, const float *x, int64_t n)
{
	const float *w = row;
	double sum = 0;

	for (int64_t i = 0; i < n; i++)
		sum += (double)w[i] * x[i];
	return (float)sum;
}

/*
 * Dequantize QK_K elements at a time into a buffer and accumulate in
 * double.  Every supported block size divides QK_K, so a row is a whole
 * number of chunks plus one shorter, still whole-block, tail.
 */
static float
quant_dot_chunked_ref(enum ggml_type t, const void *row, const float *x,
    int64_t n)
{
	const struct quant_traits *tr = quant_traits(t);
	const char *p = row;
	float buf[QK_K];
	double sum = 0;

	for (int64_t i = 0; i < n; i += QK_K) {
		int64_t len = n - i < QK_K ? n - i : QK_K;

		quant_dequant_ref_table[t](p, buf, len);
		for (int64_t j = 0; j < len; j++)
			sum += (double)buf[j] * x[i + j];
		p += (size_t)(len / tr->block_size) * tr->type_size;
	}
	return (float)sum;
}

#define QUANT_DOT_REF(name, type)					\
static float								\
quant_dot_##name##_ref(const void *row, const float *x, int64_t n)	\
{									\
	return quant_dot_chunked_ref(type, row, x, n);			\
}
QUANT_DOT_REF(f16, GGML_TYPE_F16)
QUANT_DOT_REF(bf16, GGML_TYPE_BF16)
QUANT_DOT_REF(q8_0, GGML_TYPE_Q8_0)
QUANT_DOT_REF(q4_0, GGML_TYPE_Q4_0)
QUANT_DOT_REF(q4_K, GGML_TYPE_Q4_K)
QUANT_DOT_REF(q5_K, GGML_TYPE_Q5_K)
QUANT_DOT_REF(q6_K, GGML_TYPE_Q6_K)
#undef QUANT_DOT_REF

static float (*const quant_dot_ref_table[GGML_TYPE_COUNT])(const void *,
    const float *, int64_t) = {
	[GGML_TYPE_F32] = quant_dot_f32_ref,
	[GGML_TYPE_F16] = quant_dot_f16_ref,
	[GGML_TYPE_BF16] = quant_dot_bf16_ref,
	[GGML_TYPE_Q8_0] = quant_dot_q8_0_ref,
	[GGML_TYPE_Q4_0] = quant_dot_q4_0_ref,
	[GGML_TYPE_Q4_K] = quant_dot_q4_K_ref,
	[GGML_TYPE_Q5_K] = quant_dot_q5_K_ref,
	[GGML_TYPE_Q6_K] = quant_dot_q6_K_ref,
};

/* An unsupported type or a partial block gives NaNs, never a crash. */
void
quant_dequantize_row_ref(enum ggml_type t, const void *src, float *dst,
    int64_t n)
{
	if (!quant_check(t, n)) {
		for (int64_t i = 0; i < n; i++)
			dst[i] = NAN;
		return;
	}
	quant_dequant_ref_table[t](src, dst, n);
}

float
quant_dot_ref(enum ggml_type t, const void *row, const float *x, int64_t n)
{
	if (!quant_check(t, n))
		return NAN;
	return quant_dot_ref_table[t](row, x, n);
}

/* ---- int8 activations (quant-internal.h) --------------------------- */

void
quant_q8x_quantize(const float *x, int64_t n, int kfmt, int8_t *q, float *d,
    int32_t *s)
{
	int bs = kfmt ? QK_K : QK8_0;

	for (int64_t b = 0; b < n / bs; b++, x += bs, q += bs) {
		float amax = 0, max = 0, id;

		for (int j = 0; j < bs; j++) {
			if (fabsf(x[j]) > amax) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		}
		if (kfmt) {
			id = amax > 0 ? -127 / max : 0;
			d[b] = amax > 0 ? 1 / id : 0;
		} else {
			id = amax > 0 ? 127 / amax : 0;
			d[b] = quant_f16_to_f32(quant_f32_to_f16(amax / 127));
		}
		for (int j = 0; j < bs; j++)
			q[j] = (int8_t)lrintf(fminf(fmaxf(x[j] * id, -127), 127));
		for (int j = 0; j < bs; j += 32) {
			int32_t sum = 0;

			for (int l = 0; l < 32; l++)
				sum += q[j + l];
			*s++ = sum;
		}
	}
}

/* sum(a[i] b[i]) over n int8 pairs: exact. */
static int32_t
quant_isum(const int8_t *a, const int8_t *b, int n)
{
	int32_t sum = 0;

	for (int i = 0; i < n; i++)
		sum += (int32_t)a[i] * b[i];
	return sum;
}

/*
 * The definitions (quant-internal.h): every integer sum is exact and each
 * is scaled once; only the sum of the scaled terms rounds, here in double.
 */
static float
quant_dotq_q8_0_ref(const void *row, const struct quant_q8x *x, int64_t n)
{
	const struct block_q8_0 *b = row;
	double sum = 0;

	for (int64_t i = 0; i < n / QK8_0; i++, b++)
		sum += (double)(quant_f16_to_f32(b->d) * x->d[i]) *
		    quant_isum(b->qs, x->q + QK8_0 * i, QK8_0);
	return (float)sum;
}

static float
quant_dotq_q4_0_ref(const void *row, const struct quant_q8x *x, int64_t n)
{
	const struct block_q4_0 *b = row;
	double sum = 0;

	for (int64_t i = 0; i < n / QK4_0; i++, b++) {
		const int8_t *qx = x->q + QK4_0 * i;
		int32_t isum = 0;

		for (int j = 0; j < QK4_0 / 2; j++)
			isum += (b->qs[j] & 0xf) * qx[j] +
			    (b->qs[j] >> 4) * qx[j + QK4_0 / 2];
		sum += (double)(quant_f16_to_f32(b->d) * x->d[i]) *
		    (isum - 8 * x->s[i]);
	}
	return (float)sum;
}

/* Q4_K and Q5_K: dequantize the quants (not the values) to bytes first. */
static float
quant_dotq_k45_ref(const void *row, const struct quant_q8x *x, int64_t n,
    int five)
{
	const uint8_t *p = row;
	size_t bsize = five ? sizeof(struct block_q5_K) :
	    sizeof(struct block_q4_K);
	double sum = 0;

	for (int64_t i = 0; i < n / QK_K; i++, p += bsize) {
		const struct block_q4_K *b4 = (const void *)p;
		const struct block_q5_K *b5 = (const void *)p;
		const uint8_t *scales = five ? b5->scales : b4->scales;
		const uint8_t *qs = five ? b5->qs : b4->qs;
		float d = quant_f16_to_f32(b4->d), dmin = quant_f16_to_f32(b4->dmin);
		int8_t q[QK_K];

		for (int c = 0; c < 4; c++) {
			for (int l = 0; l < 32; l++) {
				int lo = qs[32 * c + l] & 0xf;
				int hi = qs[32 * c + l] >> 4;

				if (five) {
					lo += (b5->qh[l] >> (2 * c) & 1) << 4;
					hi += (b5->qh[l] >> (2 * c + 1) & 1) << 4;
				}
				q[64 * c + l] = (int8_t)lo;
				q[64 * c + 32 + l] = (int8_t)hi;
			}
		}
		for (int j = 0; j < 8; j++) {
			int64_t xb = i * 8 + j;
			uint8_t sc, m;

			quant_scale_min_k4(j, scales, &sc, &m);
			sum += (double)(d * sc * x->d[i]) *
			    quant_isum(q + 32 * j, x->q + 32 * xb, 32);
			sum -= (double)(dmin * m * x->d[i]) * x->s[xb];
		}
	}
	return (float)sum;
}

static float
quant_dotq_q4_K_ref(const void *row, const struct quant_q8x *x, int64_t n)
{
	return quant_dotq_k45_ref(row, x, n, 0);
}

static float
quant_dotq_q5_K_ref(const void *row, const struct quant_q8x *x, int64_t n)
{
	return quant_dotq_k45_ref(row, x, n, 1);
}

/* A Q6_K block's quants less 32, in element order. */
static void
quant_q6_K_quants(const struct block_q6_K *b, int8_t *q)
{
	for (int h = 0; h < 2; h++) {
		const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
		int8_t *o = q + 128 * h;

		for (int l = 0; l < 32; l++) {
			o[l] = (int8_t)(((ql[l] & 0xf) | (qh[l] & 3) << 4) - 32);
			o[l + 32] = (int8_t)(((ql[l + 32] & 0xf) |
			    (qh[l] >> 2 & 3) << 4) - 32);
			o[l + 64] = (int8_t)(((ql[l] >> 4) |
			    (qh[l] >> 4 & 3) << 4) - 32);
			o[l + 96] = (int8_t)(((ql[l + 32] >> 4) |
			    (qh[l] >> 6 & 3) << 4) - 32);
		}
	}
}

static float
quant_dotq_q6_K_ref(const void *row, const struct quant_q8x *x, int64_t n)
{
	const struct block_q6_K *b = row;
	double sum = 0;

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		float d = quant_f16_to_f32(b->d);
		int8_t q[QK_K];

		quant_q6_K_quants(b, q);
		for (int j = 0; j < 16; j++)
			sum += (double)(d * (float)b->scales[j] * x->d[i]) *
			    quant_isum(q + 16 * j, x->q + QK_K * i + 16 * j, 16);
	}
	return (float)sum;
}

static float (*const quant_dotq_ref_table[GGML_TYPE_COUNT])(const void *,
    const struct quant_q8x *, int64_t) = {
	[GGML_TYPE_Q8_0] = quant_dotq_q8_0_ref,
	[GGML_TYPE_Q4_0] = quant_dotq_q4_0_ref,
	[GGML_TYPE_Q4_K] = quant_dotq_q4_K_ref,
	[GGML_TYPE_Q5_K] = quant_dotq_q5_K_ref,
	[GGML_TYPE_Q6_K] = quant_dotq_q6_K_ref,
};

float
quant_dotq_ref(enum ggml_type t, const void *row, const struct quant_q8x *x,
    int64_t n)
{
	if (!quant_check(t, n) || quant_dotq_ref_table[t] == NULL)
		return NAN;
	return quant_dotq_ref_table[t](row, x, n);
}

/* ---- scalar vector kernels ----------------------------------------- */

static float
quant_vec_dot_f32_ref(const float *a, const float *b, int64_t n)
{
	return quant_dot_f32_ref(a, b, n);
}

static void
quant_vec_axpy_f32_ref(float *y, float a, const float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

static void
quant_vec_scale_f32_ref(float *y, float a, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] *= a;
}

static void
quant_swiglu_ref(float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void
quant_gemm_small_ref(const float *w, int64_t ldw, int nw, const float *x,
    int64_t ldx, int64_t nx, float *y, int64_t ldy, int64_t k)
{
	for (int64_t t = 0; t < nx; t++)
		for (int i = 0; i < nw; i++)
			y[t * ldy + i] = quant_dot_f32_ref(w + i * ldw,
			    x + t * ldx, k);
}

/* The scalar tile: each output is its reference dot, so every shape
 * computes the same (quant-internal.h, DESIGN 6). */
static void
quant_mmq_ref(enum ggml_type t, const void *w, size_t rs, int nr,
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n)
{
	for (int r = 0; r < nr; r++)
		for (int c = 0; c < nc; c++)
			y[c * ldy + r] = quant_dotq_ref_table[t]((const char *)w +
			    r * rs, &x[c], n);
}

#define QUANT_MMQ_REF(type, T)						\
static void								\
quant_mmq_##type##_ref(const void *w, size_t rs, int nr,		\
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n, \
    int stream)								\
{									\
	(void)stream;							\
	quant_mmq_ref(T, w, rs, nr, x, nc, y, ldy, n);			\
}

QUANT_MMQ_REF(q8_0, GGML_TYPE_Q8_0)
QUANT_MMQ_REF(q4_0, GGML_TYPE_Q4_0)
QUANT_MMQ_REF(q4_K, GGML_TYPE_Q4_K)
QUANT_MMQ_REF(q5_K, GGML_TYPE_Q5_K)
QUANT_MMQ_REF(q6_K, GGML_TYPE_Q6_K)

/* ---- packed weights (quant-internal.h, DESIGNS 8 and 9) ------------- */

int
quant_packable(enum ggml_type t, int64_t cols)
{
	if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0)
		return cols > 0 && cols % QK8_0 == 0;
	if (t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K || t == GGML_TYPE_Q6_K)
		return cols > 0 && cols % QK_K == 0;
	return 0;
}

/* Bytes of a packed group's block (8 rows' worth of one block column). */
static size_t
quant_pack_block(enum ggml_type t)
{
	switch (t) {
	case GGML_TYPE_Q8_0:
		return sizeof(struct block_q8_0x8);
	case GGML_TYPE_Q4_0:
		return sizeof(struct block_q4_0x8);
	case GGML_TYPE_Q4_K:
		return sizeof(struct block_q4_Kx8);
	case GGML_TYPE_Q5_K:
		return sizeof(struct block_q5_Kx8);
	case GGML_TYPE_Q6_K:
		return sizeof(struct block_q6_Kx8);
	default:
		return 0;
	}
}

size_t
quant_pack_size(enum ggml_type t, int64_t rows, int64_t cols)
{
	int64_t groups = (rows + QUANT_PACK_ROWS - 1) / QUANT_PACK_ROWS;
	int64_t group;

	if (!quant_packable(t, cols) || rows <= 0 || cols > INT64_MAX /
	    (int64_t)quant_pack_block(t))
		return 0;
	group = cols / quant_traits(t)->block_size *
	    (int64_t)quant_pack_block(t);
	if (groups > INT64_MAX / group)
		return 0;
	return (size_t)(groups * group);
}

/* Copy nk 4-byte pieces of a row's quants (src) to their places for row r
 * in a packed array (dst): piece k at dst[32k + 4r]. */
static void
quant_pack_pieces(uint8_t *dst, const uint8_t *src, int nk, int r)
{
	for (int k = 0; k < nk; k++)
		memcpy(dst + 32 * k + 4 * r, src + 4 * k, 4);
}

/* Row r of a packed group's block o from its block blk (DESIGNS 8, 9). */
static void
quant_pack_row(enum ggml_type t, uint8_t *o, const uint8_t *blk, int r)
{
	if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0) {
		/* the 8 scales, then the quants */
		memcpy(o + 2 * r, blk, 2);
		quant_pack_pieces(o + 2 * QUANT_PACK_ROWS, blk + 2,
		    t == GGML_TYPE_Q8_0 ? 8 : 4, r);
	} else if (t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K) {
		/* Q5_K's d, dmin and scales, and its group's, sit where
		 * Q4_K's do; its qh comes before qs */
		const struct block_q4_K *b = (const void *)blk;
		const struct block_q5_K *b5 = (const void *)blk;
		struct block_q4_Kx8 *g = (void *)o;
		struct block_q5_Kx8 *g5 = (void *)o;

		g->d[r] = b->d;
		g->dmin[r] = b->dmin;
		for (int i = 0; i < QUANT_K_SCALE_SIZE; i++)
			g->scales[QUANT_PACK_ROWS * i + r] = b->scales[i];
		if (t == GGML_TYPE_Q4_K)
			quant_pack_pieces(g->qs, b->qs, QK_K / 8, r);
		else {
			quant_pack_pieces(g5->qh, b5->qh, QK_K / 32, r);
			quant_pack_pieces(g5->qs, b5->qs, QK_K / 8, r);
		}
	} else {
		const struct block_q6_K *b = (const void *)blk;
		struct block_q6_Kx8 *g = (void *)o;
		int8_t q[QK_K];
		int32_t bias = 0;

		quant_q6_K_quants(b, q);
		for (int j = 0; j < QK_K / 16; j++) {
			int32_t sum = 0;

			for (int e = 0; e < 16; e++)
				sum += q[16 * j + e];
			bias += b->scales[j] * sum;
			g->scales[QUANT_PACK_ROWS * j + r] = b->scales[j];
		}
		g->d[r] = b->d;
		g->bias[r] = 128 * bias;
		quant_pack_pieces(g->ql, b->ql, QK_K / 8, r);
		quant_pack_pieces(g->qh, b->qh, QK_K / 16, r);
	}
}

void
quant_pack(enum ggml_type t, const void *w, int64_t rows, int64_t cols,
    void *dst)
{
	const struct quant_traits *tr = quant_traits(t);
	size_t gbs = quant_pack_block(t), rs = quant_row_size(t, cols);
	uint8_t *o = dst;

	if (quant_pack_size(t, rows, cols) == 0)
		return;
	for (int64_t g = 0; g < rows; g += QUANT_PACK_ROWS)
		for (int64_t b = 0; b < cols / tr->block_size; b++, o += gbs) {
			memset(o, 0, gbs);
			for (int r = 0; r < QUANT_PACK_ROWS && g + r < rows; r++)
				quant_pack_row(t, o, (const uint8_t *)w +
				    (size_t)(g + r) * rs + (size_t)b *
				    tr->type_size, r);
		}
}

/* Byte p of row r's quant array in a packed array a (DESIGN 8). */
static inline uint8_t
quant_packed_byte(const uint8_t *a, int r, int p)
{
	return a[32 * (p / 4) + 4 * r + p % 4];
}

/*
 * The definitions of a packed output (quant-internal.h, DESIGNS 8 and 9):
 * per block, in order, the exact integer sums, then one fused
 * multiply-add (two for Q4_K and Q5_K).  Q4_0's byte 4k + e holds
 * elements 4k + e and 4k + e + 16, each less 8.
 */
static float
quant_mmqp_b32_ref(enum ggml_type t, const uint8_t *blk, int r,
    const struct quant_q8x *x, int64_t n)
{
	int q4 = t == GGML_TYPE_Q4_0;
	size_t bs = quant_pack_block(t);
	float acc = 0.0f;

	for (int64_t b = 0; b < n / QK8_0; b++, blk += bs) {
		const int8_t *xq = x->q + QK8_0 * b;
		const uint8_t *qs = blk + 2 * QUANT_PACK_ROWS;
		uint16_t d;
		int32_t isum = 0;

		memcpy(&d, blk + 2 * r, 2);
		for (int p = 0; p < (q4 ? 16 : 32); p++) {
			int v = quant_packed_byte(qs, r, p);

			if (q4)
				isum += ((v & 0xf) - 8) * xq[p] +
				    ((v >> 4) - 8) * xq[p + 16];
			else
				isum += (int8_t)v * xq[p];
		}
		acc = fmaf((float)isum, quant_f16_to_f32(d) * x->d[b], acc);
	}
	return acc;
}

/* Q4_K and Q5_K (five): in chunk c, byte l of qs holds element 64c + l
 * (low nibble) and 64c + 32 + l (high nibble); Q5_K's bit 2c of qh byte
 * l is the fifth bit of the first, bit 2c + 1 of the second.  The two
 * groups differ only in where qs sits, after Q5_K's qh. */
static float
quant_mmqp_k45_row(const void *group, int r, const struct quant_q8x *x,
    int64_t n, int five)
{
	size_t gbs = five ? sizeof(struct block_q5_Kx8) :
	    sizeof(struct block_q4_Kx8);
	const uint8_t *p = group;
	float acc = 0.0f;

	for (int64_t b = 0; b < n / QK_K; b++, p += gbs) {
		const struct block_q4_Kx8 *g = (const void *)p;
		const struct block_q5_Kx8 *g5 = (const void *)p;
		const uint8_t *qs = five ? g5->qs : g->qs;
		const int8_t *xq = x->q + QK_K * b;
		uint8_t scales[QUANT_K_SCALE_SIZE], sc, m;
		int32_t isum = 0, msum = 0;

		for (int i = 0; i < QUANT_K_SCALE_SIZE; i++)
			scales[i] = g->scales[QUANT_PACK_ROWS * i + r];
		for (int j = 0; j < 8; j++) {
			int32_t sum = 0;

			for (int l = 0; l < 32; l++) {
				int v = quant_packed_byte(qs, r, 32 * (j / 2) +
				    l);
				int q = j % 2 ? v >> 4 : v & 0xf;

				if (five)
					q |= (quant_packed_byte(g5->qh, r, l) >>
					    j & 1) << 4;
				sum += q * xq[32 * j + l];
			}
			quant_scale_min_k4(j, scales, &sc, &m);
			isum += sc * sum;
			msum += m * x->s[8 * b + j];
		}
		acc = fmaf(-(float)msum, quant_f16_to_f32(g->dmin[r]) *
		    x->d[b], acc);
		acc = fmaf((float)isum, quant_f16_to_f32(g->d[r]) * x->d[b],
		    acc);
	}
	return acc;
}

/* Q6_K: in half h, element l < 32 of each quarter Q takes a nibble of ql
 * byte 64h + l (+ 32 for Q odd; high nibble for Q >= 2) and bits 2Q, 2Q + 1
 * of qh byte 32h + l. */
static float
quant_mmqp_q6_K_row(const struct block_q6_Kx8 *g, int r,
    const struct quant_q8x *x, int64_t n)
{
	float acc = 0.0f;

	for (int64_t b = 0; b < n / QK_K; b++, g++) {
		const int8_t *xq = x->q + QK_K * b;
		int32_t sum[QK_K / 16] = { 0 }, isum = 0;

		for (int e = 0; e < QK_K; e++) {
			int h = e / 128, qq = e % 128 / 32, l = e % 32;
			int lo = quant_packed_byte(g->ql, r, 64 * h + 32 *
			    (qq % 2) + l) >> (qq / 2 * 4) & 0xf;
			int hi = quant_packed_byte(g->qh, r, 32 * h + l) >>
			    (2 * qq) & 3;

			sum[e / 16] += ((lo | hi << 4) - 32) * xq[e];
		}
		for (int j = 0; j < QK_K / 16; j++)
			isum += g->scales[QUANT_PACK_ROWS * j + r] * sum[j];
		acc = fmaf((float)isum, quant_f16_to_f32(g->d[r]) * x->d[b],
		    acc);
	}
	return acc;
}

static void
quant_mmqp_ref(enum ggml_type t, const void *g, int nr,
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n)
{
	for (int c = 0; c < nc; c++)
		for (int r = 0; r < nr; r++)
			y[c * ldy + r] = t == GGML_TYPE_Q4_K ||
			    t == GGML_TYPE_Q5_K ? quant_mmqp_k45_row(g, r,
			    &x[c], n, t == GGML_TYPE_Q5_K) :
			    t == GGML_TYPE_Q6_K ?
			    quant_mmqp_q6_K_row(g, r, &x[c], n) :
			    quant_mmqp_b32_ref(t, g, r, &x[c], n);
}

#define QUANT_MMQP_REF(type, T)						\
static void								\
quant_mmqp_##type##_ref(const void *g, int nr, const struct quant_q8x *x, \
    int nc, float *y, int64_t ldy, int64_t n, int stream)		\
{									\
	(void)stream;							\
	quant_mmqp_ref(T, g, nr, x, nc, y, ldy, n);			\
}

QUANT_MMQP_REF(q8_0, GGML_TYPE_Q8_0)
QUANT_MMQP_REF(q4_0, GGML_TYPE_Q4_0)
QUANT_MMQP_REF(q4_K, GGML_TYPE_Q4_K)
QUANT_MMQP_REF(q5_K, GGML_TYPE_Q5_K)
QUANT_MMQP_REF(q6_K, GGML_TYPE_Q6_K)

/* Element d of a key or value row stored as kt (QUANT_KV_*). */
static float
quant_kv_at(const void *row, int d, int kt)
{
	if (kt == QUANT_KV_F16)
		return quant_f16_to_f32(((const uint16_t *)row)[d]);
	if (kt == QUANT_KV_Q8_0) {
		const struct block_q8_0 *b = (const struct block_q8_0 *)row +
		    d / QK8_0;

		return quant_f16_to_f32(b->d) * (float)b->qs[d % QK8_0];
	}
	return ((const float *)row)[d];
}

void
quant_att_scores_ref(const float *q, int nq, const void *k, size_t ks,
    int kt, int64_t nk, int hd, float *s, int64_t lds)
{
	for (int i = 0; i < nq; i++)
		for (int64_t j = 0; j < nk; j++) {
			const char *kj = (const char *)k + j * ks;
			float sum = 0;

			for (int d = 0; d < hd; d++)
				sum += q[i * hd + d] * quant_kv_at(kj, d, kt);
			s[i * lds + j] = sum;
		}
}

void
quant_att_pv_ref(const float *p, int nq, int64_t ldp, const void *v,
    size_t vs, int kt, int64_t nk, int hd, float *out)
{
	for (int i = 0; i < nq; i++)
		for (int64_t j = 0; j < nk; j++)
			for (int d = 0; d < hd; d++)
				out[i * hd + d] += p[i * ldp + j] *
				    quant_kv_at((const char *)v + j * vs, d, kt);
}

static void
quant_softmax_ref(float *s, int64_t n, float scale)
{
	float mx = -INFINITY, sum = 0;

	for (int64_t i = 0; i < n; i++)
		if ((s[i] *= scale) > mx)
			mx = s[i];
	for (int64_t i = 0; i < n; i++) {
		s[i] = expf(s[i] - mx);
		sum += s[i];
	}
	for (int64_t i = 0; i < n; i++)
		s[i] *= 1.0f / sum;
}

void
quant_scalar_fill(struct quant_kernels *k)
{
	memset(k, 0, sizeof *k);
	k->isa = QUANT_ISA_SCALAR;
	memcpy(k->dot, quant_dot_ref_table, sizeof k->dot);
	memcpy(k->dequant, quant_dequant_ref_table, sizeof k->dequant);
	k->mmq[GGML_TYPE_Q8_0] = quant_mmq_q8_0_ref;
	k->mmq[GGML_TYPE_Q4_0] = quant_mmq_q4_0_ref;
	k->mmq[GGML_TYPE_Q4_K] = quant_mmq_q4_K_ref;
	k->mmq[GGML_TYPE_Q5_K] = quant_mmq_q5_K_ref;
	k->mmq[GGML_TYPE_Q6_K] = quant_mmq_q6_K_ref;
	k->mmq_rows = 4;
	k->mmq_tile_rows = 4;
	k->mmq_tile_cols = 4;
	k->mmqp[GGML_TYPE_Q8_0] = quant_mmqp_q8_0_ref;
	k->mmqp[GGML_TYPE_Q4_0] = quant_mmqp_q4_0_ref;
	k->mmqp[GGML_TYPE_Q4_K] = quant_mmqp_q4_K_ref;
	k->mmqp[GGML_TYPE_Q5_K] = quant_mmqp_q5_K_ref;
	k->mmqp[GGML_TYPE_Q6_K] = quant_mmqp_q6_K_ref;
	k->mmqp_cols = 4;
	k->q8x_quantize = quant_q8x_quantize;
	k->att_scores = quant_att_scores_ref;
	k->att_pv = quant_att_pv_ref;
	k->softmax = quant_softmax_ref;
	k->dot_f32 = quant_vec_dot_f32_ref;
	k->axpy_f32 = quant_vec_axpy_f32_ref;
	k->scale_f32 = quant_vec_scale_f32_ref;
	k->swiglu = quant_swiglu_ref;
	k->gemm_small = quant_gemm_small_ref;
}

/* ---- quantization -------------------------------------------------- */

/* Round to nearest (ties to even), clamped to [lo, hi]; NaN gives lo. */
static inline int
quant_nearest(float v, int lo, int hi)
{
	v = fmaxf(v, (float)lo);
	v = fminf(v, (float)hi);
	return (int)lrintf(v);
}

static void
quant_quantize_q8_0(const float *x, struct block_q8_0 *b, int64_t n)
{
	for (int64_t i = 0; i < n / QK8_0; i++, b++, x += QK8_0) {
		float amax = 0, d, id;

		for (int j = 0; j < QK8_0; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		d = amax / 127;
		id = d != 0 ? 1 / d : 0;
		b->d = quant_f32_to_f16(d);
		for (int j = 0; j < QK8_0; j++)
			b->qs[j] = (int8_t)quant_nearest(x[j] * id, -127, 127);
	}
}

/* As ggml: the element of largest magnitude becomes -8 exactly. */
static void
quant_quantize_q4_0(const float *x, struct block_q4_0 *b, int64_t n)
{
	for (int64_t i = 0; i < n / QK4_0; i++, b++, x += QK4_0) {
		float amax = 0, max = 0, d, id;

		for (int j = 0; j < QK4_0; j++) {
			if (fabsf(x[j]) > amax) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		}
		d = max / -8;
		id = d != 0 ? 1 / d : 0;
		b->d = quant_f32_to_f16(d);
		for (int j = 0; j < QK4_0 / 2; j++) {
			int q0 = quant_nearest(x[j] * id + 8, 0, 15);
			int q1 = quant_nearest(x[j + QK4_0 / 2] * id + 8, 0, 15);

			b->qs[j] = (uint8_t)(q0 | q1 << 4);
		}
	}
}

/*
 * Q4_K and Q5_K: per sub-block of 32, scale = (max - min) / nmax with the
 * min clamped to <= 0 (the format subtracts a non-negative min); the 8
 * scales and mins are then stored as 6-bit multiples of d and dmin, and
 * the quants recomputed from the stored scales.  L receives the 256 quants
 * (0..nmax) in element order.
 */
static void
quant_quantize_kmin(const float *x, int nmax, uint16_t *dp, uint16_t *dminp,
    uint8_t *scales, uint8_t *L)
{
	float scale[8], minv[8], max_scale = 0, max_min = 0, d, dmin;

	for (int j = 0; j < 8; j++) {
		float lo = x[32 * j], hi = x[32 * j];

		for (int l = 1; l < 32; l++) {
			lo = fminf(lo, x[32 * j + l]);
			hi = fmaxf(hi, x[32 * j + l]);
		}
		if (lo > 0)
			lo = 0;
		scale[j] = (hi - lo) / nmax;
		minv[j] = -lo;
		max_scale = fmaxf(max_scale, scale[j]);
		max_min = fmaxf(max_min, minv[j]);
	}
	*dp = quant_f32_to_f16(max_scale / 63);
	*dminp = quant_f32_to_f16(max_min / 63);
	d = quant_f16_to_f32(*dp);
	dmin = quant_f16_to_f32(*dminp);
	memset(scales, 0, QUANT_K_SCALE_SIZE);
	for (int j = 0; j < 8; j++) {
		int ls = d > 0 ? quant_nearest(scale[j] / d, 0, 63) : 0;
		int lm = dmin > 0 ? quant_nearest(minv[j] / dmin, 0, 63) : 0;
		float sd = d * ls, sm = dmin * lm;

		if (j < 4) {
			scales[j] = (uint8_t)ls;
			scales[j + 4] = (uint8_t)lm;
		} else {
			scales[j + 4] = (uint8_t)((ls & 0xf) | (lm & 0xf) << 4);
			scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
			scales[j] |= (uint8_t)((lm >> 4) << 6);
		}
		for (int l = 0; l < 32; l++)
			L[32 * j + l] = sd > 0 ? (uint8_t)quant_nearest(
			    (x[32 * j + l] + sm) / sd, 0, nmax) : 0;
	}
}

static void
quant_quantize_q4_K(const float *x, struct block_q4_K *b, int64_t n)
{
	uint8_t L[QK_K];

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
		quant_quantize_kmin(x, 15, &b->d, &b->dmin, b->scales, L);
		for (int c = 0; c < 4; c++)
			for (int l = 0; l < 32; l++)
				b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] |
				    L[64 * c + 32 + l] << 4);
	}
}

static void
quant_quantize_q5_K(const float *x, struct block_q5_K *b, int64_t n)
{
	uint8_t L[QK_K];

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
		quant_quantize_kmin(x, 31, &b->d, &b->dmin, b->scales, L);
		memset(b->qh, 0, sizeof b->qh);
		for (int c = 0; c < 4; c++) {
			for (int l = 0; l < 32; l++) {
				uint8_t lo = L[64 * c + l];
				uint8_t hi = L[64 * c + 32 + l];

				b->qs[32 * c + l] = (uint8_t)((lo & 0xf) |
				    (hi & 0xf) << 4);
				b->qh[l] |= (uint8_t)((lo >> 4) << (2 * c) |
				    (hi >> 4) << (2 * c + 1));
			}
		}
	}
}

/*
 * Q6_K: each sub-block of 16 gets the scale that maps its element of
 * largest magnitude to -32; the scales are stored as int8 multiples of d,
 * chosen so the largest scale maps to -128.
 */
static void
quant_quantize_q6_K(const float *x, struct block_q6_K *b, int64_t n)
{
	int8_t L[QK_K];

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
		float scale[16], max_scale = 0, d;

		for (int j = 0; j < 16; j++) {
			float amax = 0, max = 0;

			for (int l = 0; l < 16; l++) {
				if (fabsf(x[16 * j + l]) > amax) {
					amax = fabsf(x[16 * j + l]);
					max = x[16 * j + l];
				}
			}
			scale[j] = max / -32;
			if (fabsf(scale[j]) > fabsf(max_scale))
				max_scale = scale[j];
		}
		memset(b, 0, sizeof *b);
		if (max_scale == 0)
			continue;
		b->d = quant_f32_to_f16(max_scale / -128);
		d = quant_f16_to_f32(b->d);
		for (int j = 0; j < 16; j++) {
			int s = d != 0 ? quant_nearest(scale[j] / d, -128, 127) : 0;
			float sd = d * s;

			b->scales[j] = (int8_t)s;
			for (int l = 0; l < 16; l++)
				L[16 * j + l] = (int8_t)(sd != 0 ? quant_nearest(
				    x[16 * j + l] / sd, -32, 31) : 0);
		}
		for (int h = 0; h < 2; h++) {
			uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
			const int8_t *q = L + 128 * h;

			for (int l = 0; l < 32; l++) {
				uint8_t q1 = (uint8_t)(q[l] + 32);
				uint8_t q2 = (uint8_t)(q[l + 32] + 32);
				uint8_t q3 = (uint8_t)(q[l + 64] + 32);
				uint8_t q4 = (uint8_t)(q[l + 96] + 32);

				ql[l] = (uint8_t)((q1 & 0xf) | (q3 & 0xf) << 4);
				ql[l + 32] = (uint8_t)((q2 & 0xf) |
				    (q4 & 0xf) << 4);
				qh[l] = (uint8_t)(q1 >> 4 | (q2 >> 4) << 2 |
				    (q3 >> 4) << 4 | (q4 >> 4) << 6);
			}
		}
	}
}

int
quant_quantize_row(enum ggml_type t, const float *src, void *dst, int64_t n)
{
	uint16_t *h = dst;

	if (!quant_check(t, n))
		return -EINVAL;
	switch (t) {
	case GGML_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof *src);
		break;
	case GGML_TYPE_F16:
		for (int64_t i = 0; i < n; i++)
			h[i] = quant_f32_to_f16(src[i]);
		break;
	case GGML_TYPE_BF16:
		for (int64_t i = 0; i < n; i++)
			h[i] = quant_f32_to_bf16(src[i]);
		break;
	case GGML_TYPE_Q8_0:
		quant_quantize_q8_0(src, dst, n);
		break;
	case GGML_TYPE_Q4_0:
		quant_quantize_q4_0(src, dst, n);
		break;
	case GGML_TYPE_Q4_K:
		quant_quantize_q4_K(src, dst, n);
		break;
	case GGML_TYPE_Q5_K:
		quant_quantize_q5_K(src, dst, n);
		break;
	case GGML_TYPE_Q6_K:
		quant_quantize_q6_K(src, dst, n);
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

/* ---- CPU detection and dispatch ------------------------------------ */

static pthread_once_t quant_once = PTHREAD_ONCE_INIT;
static struct quant_kernels quant_tables[3];
static enum quant_isa quant_best;	/* best the CPU runs */
static const struct quant_kernels *quant_current;
static int quant_q8_act;		/* quant_act_q8() */
static int quant_vnni;			/* the AVX-512 table has VNNI tiles */

/* F16C through cpuid: clang cannot ask __builtin_cpu_supports for it. */
static int
quant_cpu_has_f16c(void)
{
	unsigned int eax, ebx, ecx, edx;

	if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
		return 0;
	return (ecx & bit_F16C) != 0;
}

/* AVX-512 VNNI, for the packed int8 tiles (kernels-avx512.c, DESIGN 5) */
static int
quant_cpu_has_vnni(void)
{
#if defined(QUANT_NO_VNNI)
	return 0;	/* kernels-avx512.c has no VNNI tiles */
#elif defined(QUANT_AVX512_EMULATE)
	return 1;
#else
	unsigned int eax, ebx, ecx, edx;

	if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
		return 0;
	return (ecx & bit_AVX512VNNI) != 0;
#endif
}

static enum quant_isa
quant_cpu_detect(void)
{
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
	    !quant_cpu_has_f16c())
		return QUANT_ISA_SCALAR;
#ifdef QUANT_AVX512_EMULATE
	return QUANT_ISA_AVX512;	/* kernels-avx512.c, DESIGN 4 */
#endif
	if (!__builtin_cpu_supports("avx512f") ||
	    !__builtin_cpu_supports("avx512bw") ||
	    !__builtin_cpu_supports("avx512vl"))
		return QUANT_ISA_AVX2;
	return QUANT_ISA_AVX512;
}

static void
quant_init_once(void)
{
	const char *env;
	enum quant_isa want;
	quant_best = quant_cpu_detect();
	quant_scalar_fill(&quant_tables[QUANT_ISA_SCALAR]);
	if (quant_best >= QUANT_ISA_AVX2) {
		quant_tables[QUANT_ISA_AVX2] = quant_tables[QUANT_ISA_SCALAR];
		quant_avx2_fill(&quant_tables[QUANT_ISA_AVX2]);
	}
	if (quant_best >= QUANT_ISA_AVX512) {
		quant_tables[QUANT_ISA_AVX512] = quant_tables[QUANT_ISA_AVX2];
		quant_vnni = quant_cpu_has_vnni();
		quant_avx512_fill(&quant_tables[QUANT_ISA_AVX512],
		    quant_vnni);
	}
	env = getenv("MISTRAL_ACT_Q8");
	__atomic_store_n(&quant_q8_act, env == NULL || strcmp(env, "0") != 0,
	    __ATOMIC_RELAXED);
	env = getenv("MISTRAL_ISA");
	want = quant_best;
	if (env != NULL && strcmp(env, "scalar") == 0)
		want = QUANT_ISA_SCALAR;
	else if (env != NULL && strcmp(env, "avx2") == 0)
		want = QUANT_ISA_AVX2;
	if (want > quant_best)
		want = quant_best;
	__atomic_store_n(&quant_current, &quant_tables[want], __ATOMIC_RELEASE);
}

void
quant_init(void)
{
	pthread_once(&quant_once, quant_init_once);
}

const struct quant_kernels *
quant_kernels(void)
{
	const struct quant_kernels *k;

	k = __atomic_load_n(&quant_current, __ATOMIC_ACQUIRE);
	if (k == NULL) {
		quant_init();
		k = __atomic_load_n(&quant_current, __ATOMIC_ACQUIRE);
	}
	return k;
}

enum quant_isa
quant_isa(void)
{
	return quant_kernels()->isa;
}

const char *
quant_isa_name(enum quant_isa isa)
{
	switch (isa) {
	case QUANT_ISA_SCALAR:
		return "scalar";
	case QUANT_ISA_AVX2:
		return "avx2";
	case QUANT_ISA_AVX512:
		quant_init();
#ifdef QUANT_AVX512_EMULATE
		return quant_vnni ? "avx512+vnni (emulated)" :
		    "avx512 (emulated)";
#else
		return quant_vnni ? "avx512+vnni" : "avx512";
#endif
	}
	return "unknown";
}

enum quant_isa
quant_set_isa(enum quant_isa isa)
{
	quant_init();
	if ((int)isa < QUANT_ISA_SCALAR)
		isa = QUANT_ISA_SCALAR;
	if (isa > quant_best)
		isa = quant_best;
	__atomic_store_n(&quant_current, &quant_tables[isa], __ATOMIC_RELEASE);
	return isa;
}

int
quant_act_q8(void)
{
	quant_init();
	return __atomic_load_n(&quant_q8_act, __ATOMIC_RELAXED);
}

void
quant_set_act_q8(int on)
{
	quant_init();
	__atomic_store_n(&quant_q8_act, on != 0, __ATOMIC_RELAXED);
}

/* ---- dispatched entry points --------------------------------------- */

void
quant_dequantize_row(enum ggml_type t, const void *src, float *dst,
    int64_t n)
{
	if (!quant_check(t, n)) {
		quant_dequantize_row_ref(t, src, dst, n);
		return;
	}
	quant_kernels()->dequant[t](src, dst, n);
}

float
quant_dot(enum ggml_type t, const void *row, const float *x, int64_t n)
{
	if (!quant_check(t, n))
		return NAN;
	return quant_kernels()->dot[t](row, x, n);
}

float
vec_dot_f32(const float *a, const float *b, int64_t n)
{
	return quant_kernels()->dot_f32(a, b, n);
}

void
vec_axpy_f32(float *y, float a, const float *x, int64_t n)
{
	quant_kernels()->axpy_f32(y, a, x, n);
}

void
vec_scale_f32(float *y, float a, int64_t n)
{
	quant_kernels()->scale_f32(y, a, n);
}

void
vec_att_scores(const float *q, int nq, const void *k, size_t ks, int kt,
    int64_t nk, int hd, float *s, int64_t lds)
{
	quant_kernels()->att_scores(q, nq, k, ks, kt, nk, hd, s, lds);
}

void
vec_att_pv(const float *p, int nq, int64_t ldp, const void *v, size_t vs,
    int kt, int64_t nk, int hd, float *out)
{
	quant_kernels()->att_pv(p, nq, ldp, v, vs, kt, nk, hd, out);
}

void
vec_softmax(float *s, int64_t n, float scale)
{
	quant_kernels()->softmax(s, n, scale);
}

void
vec_swiglu(float *g, const float *u, int64_t n)
{
	quant_kernels()->swiglu(g, u, n);
}
