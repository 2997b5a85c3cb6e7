/*
 * kernels-avx2.c: AVX2 + FMA + F16C kernels: the fused dequantize-and-dot
 * of a row of each supported type with a float vector, dequantization of
 * rows, the small float GEMM of batched decode, the vector helpers, and
 * the integer dots with int8 activations (quant-internal.h).
 *
 * The file is compiled without -m flags; every function carries the
 * target attribute and is only reached through the table filled by
 * quant_avx2_fill(), which quant_init() calls only when the CPU has AVX2,
 * FMA and F16C.  Vector types never leave these functions (arguments and
 * results are pointers and scalars), so callers need no target.
 *
 * DESIGN
 *
 * 1. Dequantizers compute exactly what the scalar references in quant.c
 *    compute (see quant-internal.h, DESIGN 3), so their output is
 *    bit-identical.  Dot products accumulate in float in a different
 *    order from the references and agree within float rounding.
 * 2. Quantized bytes are widened to 32-bit lanes straight from memory
 *    (vpmovzxbd/vpmovsxbd with a memory operand) and split into nibbles
 *    there: widening a register is a slow cross-lane shuffle on AMD Zen,
 *    and this made Q4_0 1.3x and Q4_K 1.2x faster there.  Q6_K, whose
 *    6-bit quants take more byte operations to assemble, first unpacks a
 *    half block into a byte buffer 32 bytes at a time.
 * 3. Q4_K/Q5_K subtract a min per sub-block: sum((d q - m) x) =
 *    d sum(q x) - m sum(x), so the min costs one add per 8 elements.
 *    Their scales and mins are unpacked a 32-bit word at a time.
 * 4. Hot spot: the widen, convert, fused multiply-add per 8 elements.
 * 5. The int8-activation dots multiply bytes with vpmaddubsw (unsigned
 *    times signed, pairs summed to 16 bits) and vpmaddwd; a signed weight
 *    goes in as |w| with its sign moved onto x (vpsignb).  On Zen 3 they
 *    run 2-2.5x the float kernels for Q4_K/Q5_K, 1.3-1.5x for the rest.
 */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "quant-internal.h"

#define QUANT_AVX2 __attribute__((target("avx2,fma,f16c")))

QUANT_AVX2 static inline float
quant_avx2_hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
	    _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

QUANT_AVX2 static inline float
quant_avx2_hmax(__m256 v)
{
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(v),
	    _mm256_extractf128_ps(v, 1));

	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

QUANT_AVX2 static inline int32_t
quant_avx2_hsum_i32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v),
	    _mm256_extracti128_si256(v, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

QUANT_AVX2 static inline float
quant_avx2_half(uint16_t h)
{
	return _cvtsh_ss(h);
}

/* The half at p, as 8 floats: a broadcast load and one conversion. */
QUANT_AVX2 static inline __m256
quant_avx2_half8(const uint16_t *p)
{
	uint16_t h;

	memcpy(&h, p, sizeof h);
	return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* 8 signed bytes at p, widened to floats. */
QUANT_AVX2 static inline __m256
quant_avx2_i8(const void *p)
{
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
	    _mm_loadl_epi64((const __m128i *)p)));
}

/* ---- float vectors ------------------------------------------------- */

QUANT_AVX2 static float
quant_avx2_dot_f32(const float *a, const float *b, int64_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
		    _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
		    _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16),
		    _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24),
		    _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
		    _mm256_loadu_ps(b + i), s0);
	sum = quant_avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1),
	    _mm256_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += a[i] * b[i];
	return sum;
}

QUANT_AVX2 static float
quant_avx2_dot_f32_row(const void *row, const float *x, int64_t n)
{
	return quant_avx2_dot_f32(row, x, n);
}

QUANT_AVX2 static void
quant_avx2_axpy_f32(float *y, float a, const float *x, int64_t n)
{
	__m256 va = _mm256_set1_ps(a);
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va,
		    _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}

QUANT_AVX2 static void
quant_avx2_scale_f32(float *y, float a, int64_t n)
{
	__m256 va = _mm256_set1_ps(a);
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_mul_ps(va,
		    _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] *= a;
}

/*
 * y[t * ldy + i] = w_i . x_t for 4 rows and 3 inputs at a time: 12
 * accumulators, and each step loads 7 vectors for 12 multiply-adds.
 * Left-over inputs go one at a time against the 4 rows, left-over rows
 * through the plain dot.
 */
QUANT_AVX2 static void
quant_avx2_gemm_small(const float *w, int64_t ldw, int nw, const float *x,
    int64_t ldx, int64_t nx, float *y, int64_t ldy, int64_t k)
{
	const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
	int64_t t = 0, k8 = k & ~(int64_t)7;

	if (nw == 4) {
		for (; t + 3 <= nx; t += 3) {
			const float *x0 = x + t * ldx, *x1 = x0 + ldx;
			const float *x2 = x1 + ldx;
			__m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00;
			__m256 a10 = a00, a11 = a00, a12 = a00;
			__m256 a20 = a00, a21 = a00, a22 = a00;
			__m256 a30 = a00, a31 = a00, a32 = a00;

			for (int64_t j = 0; j < k8; j += 8) {
				__m256 v0 = _mm256_loadu_ps(x0 + j);
				__m256 v1 = _mm256_loadu_ps(x1 + j);
				__m256 v2 = _mm256_loadu_ps(x2 + j);
				__m256 r;

				r = _mm256_loadu_ps(w0 + j);
				a00 = _mm256_fmadd_ps(r, v0, a00);
				a01 = _mm256_fmadd_ps(r, v1, a01);
				a02 = _mm256_fmadd_ps(r, v2, a02);
				r = _mm256_loadu_ps(w1 + j);
				a10 = _mm256_fmadd_ps(r, v0, a10);
				a11 = _mm256_fmadd_ps(r, v1, a11);
				a12 = _mm256_fmadd_ps(r, v2, a12);
				r = _mm256_loadu_ps(w2 + j);
				a20 = _mm256_fmadd_ps(r, v0, a20);
				a21 = _mm256_fmadd_ps(r, v1, a21);
				a22 = _mm256_fmadd_ps(r, v2, a22);
				r = _mm256_loadu_ps(w3 + j);
				a30 = _mm256_fmadd_ps(r, v0, a30);
				a31 = _mm256_fmadd_ps(r, v1, a31);
				a32 = _mm256_fmadd_ps(r, v2, a32);
			}
			y[t * ldy + 0] = quant_avx2_hsum(a00);
			y[t * ldy + 1] = quant_avx2_hsum(a10);
			y[t * ldy + 2] = quant_avx2_hsum(a20);
			y[t * ldy + 3] = quant_avx2_hsum(a30);
			y[(t + 1) * ldy + 0] = quant_avx2_hsum(a01);
			y[(t + 1) * ldy + 1] = quant_avx2_hsum(a11);
			y[(t + 1) * ldy + 2] = quant_avx2_hsum(a21);
			y[(t + 1) * ldy + 3] = quant_avx2_hsum(a31);
			y[(t + 2) * ldy + 0] = quant_avx2_hsum(a02);
			y[(t + 2) * ldy + 1] = quant_avx2_hsum(a12);
			y[(t + 2) * ldy + 2] = quant_avx2_hsum(a22);
			y[(t + 2) * ldy + 3] = quant_avx2_hsum(a32);
			for (int64_t j = k8; j < k; j++) {
				for (int i = 0; i < 3; i++) {
					const float *xi = x + (t + i) * ldx;

					y[(t + i) * ldy + 0] += w0[j] * xi[j];
					y[(t + i) * ldy + 1] += w1[j] * xi[j];
					y[(t + i) * ldy + 2] += w2[j] * xi[j];
					y[(t + i) * ldy + 3] += w3[j] * xi[j];
				}
			}
		}
		for (; t < nx; t++) {
			const float *x0 = x + t * ldx;
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

			for (int64_t j = 0; j < k8; j += 8) {
				__m256 v = _mm256_loadu_ps(x0 + j);

				a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), v, a0);
				a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), v, a1);
				a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), v, a2);
				a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), v, a3);
			}
			y[t * ldy + 0] = quant_avx2_hsum(a0);
			y[t * ldy + 1] = quant_avx2_hsum(a1);
			y[t * ldy + 2] = quant_avx2_hsum(a2);
			y[t * ldy + 3] = quant_avx2_hsum(a3);
			for (int64_t j = k8; j < k; j++) {
				y[t * ldy + 0] += w0[j] * x0[j];
				y[t * ldy + 1] += w1[j] * x0[j];
				y[t * ldy + 2] += w2[j] * x0[j];
				y[t * ldy + 3] += w3[j] * x0[j];
			}
		}
		return;
	}
	for (; t < nx; t++)
		for (int i = 0; i < nw; i++)
			y[t * ldy + i] = quant_avx2_dot_f32(w + i * ldw,
			    x + t * ldx, k);
}

/* ---- F16, BF16 ----------------------------------------------------- */

QUANT_AVX2 static inline __m256
quant_avx2_f16x8(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

QUANT_AVX2 static inline __m256
quant_avx2_bf16x8(const uint16_t *p)
{
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(
	    _mm_loadu_si128((const __m128i *)p)), 16));
}

QUANT_AVX2 static float
quant_avx2_dot_f16(const void *row, const float *x, int64_t n)
{
	const uint16_t *w = row;
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(quant_avx2_f16x8(w + i),
		    _mm256_loadu_ps(x + i), s0);
		s1 = _mm256_fmadd_ps(quant_avx2_f16x8(w + i + 8),
		    _mm256_loadu_ps(x + i + 8), s1);
		s2 = _mm256_fmadd_ps(quant_avx2_f16x8(w + i + 16),
		    _mm256_loadu_ps(x + i + 16), s2);
		s3 = _mm256_fmadd_ps(quant_avx2_f16x8(w + i + 24),
		    _mm256_loadu_ps(x + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(quant_avx2_f16x8(w + i),
		    _mm256_loadu_ps(x + i), s0);
	sum = quant_avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1),
	    _mm256_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += quant_avx2_half(w[i]) * x[i];
	return sum;
}

QUANT_AVX2 static void
quant_avx2_dequant_f16(const void *src, float *dst, int64_t n)
{
	const uint16_t *w = src;
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, quant_avx2_f16x8(w + i));
	for (; i < n; i++)
		dst[i] = quant_avx2_half(w[i]);
}

QUANT_AVX2 static float
quant_avx2_dot_bf16(const void *row, const float *x, int64_t n)
{
	const uint16_t *w = row;
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(quant_avx2_bf16x8(w + i),
		    _mm256_loadu_ps(x + i), s0);
		s1 = _mm256_fmadd_ps(quant_avx2_bf16x8(w + i + 8),
		    _mm256_loadu_ps(x + i + 8), s1);
		s2 = _mm256_fmadd_ps(quant_avx2_bf16x8(w + i + 16),
		    _mm256_loadu_ps(x + i + 16), s2);
		s3 = _mm256_fmadd_ps(quant_avx2_bf16x8(w + i + 24),
		    _mm256_loadu_ps(x + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(quant_avx2_bf16x8(w + i),
		    _mm256_loadu_ps(x + i), s0);
	sum = quant_avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1),
	    _mm256_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += quant_bf16_to_f32(w[i]) * x[i];
	return sum;
}

QUANT_AVX2 static void
quant_avx2_dequant_bf16(const void *src, float *dst, int64_t n)
{
	const uint16_t *w = src;
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, quant_avx2_bf16x8(w + i));
	for (; i < n; i++)
		dst[i] = quant_bf16_to_f32(w[i]);
}

/* ---- Q8_0, Q4_0 ---------------------------------------------------- */

QUANT_AVX2 static float
quant_avx2_dot_q8_0(const void *row, const float *x, int64_t n)
{
	const struct block_q8_0 *b = row;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
	int64_t nb = n / QK8_0, i = 0;

	for (; i + 2 <= nb; i += 2, b += 2, x += 2 * QK8_0) {
		__m256 p0, p1, q0, q1;

		p0 = _mm256_mul_ps(quant_avx2_i8(b[0].qs), _mm256_loadu_ps(x));
		q0 = _mm256_mul_ps(quant_avx2_i8(b[0].qs + 8),
		    _mm256_loadu_ps(x + 8));
		p0 = _mm256_fmadd_ps(quant_avx2_i8(b[0].qs + 16),
		    _mm256_loadu_ps(x + 16), p0);
		q0 = _mm256_fmadd_ps(quant_avx2_i8(b[0].qs + 24),
		    _mm256_loadu_ps(x + 24), q0);
		p1 = _mm256_mul_ps(quant_avx2_i8(b[1].qs),
		    _mm256_loadu_ps(x + 32));
		q1 = _mm256_mul_ps(quant_avx2_i8(b[1].qs + 8),
		    _mm256_loadu_ps(x + 40));
		p1 = _mm256_fmadd_ps(quant_avx2_i8(b[1].qs + 16),
		    _mm256_loadu_ps(x + 48), p1);
		q1 = _mm256_fmadd_ps(quant_avx2_i8(b[1].qs + 24),
		    _mm256_loadu_ps(x + 56), q1);
		acc0 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b[0].d)),
		    _mm256_add_ps(p0, q0), acc0);
		acc1 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b[1].d)),
		    _mm256_add_ps(p1, q1), acc1);
	}
	for (; i < nb; i++, b++, x += QK8_0) {
		__m256 p, q;

		p = _mm256_mul_ps(quant_avx2_i8(b->qs), _mm256_loadu_ps(x));
		q = _mm256_mul_ps(quant_avx2_i8(b->qs + 8),
		    _mm256_loadu_ps(x + 8));
		p = _mm256_fmadd_ps(quant_avx2_i8(b->qs + 16),
		    _mm256_loadu_ps(x + 16), p);
		q = _mm256_fmadd_ps(quant_avx2_i8(b->qs + 24),
		    _mm256_loadu_ps(x + 24), q);
		acc0 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b->d)),
		    _mm256_add_ps(p, q), acc0);
	}
	return quant_avx2_hsum(_mm256_add_ps(acc0, acc1));
}

QUANT_AVX2 static void
quant_avx2_dequant_q8_0(const void *src, float *dst, int64_t n)
{
	const struct block_q8_0 *b = src;

	for (int64_t i = 0; i < n / QK8_0; i++, b++, dst += QK8_0) {
		__m256 d = _mm256_set1_ps(quant_avx2_half(b->d));

		for (int j = 0; j < QK8_0; j += 8)
			_mm256_storeu_ps(dst + j, _mm256_mul_ps(d,
			    quant_avx2_i8(b->qs + j)));
	}
}

/*
 * The 32 quants of a Q4_0 block minus 8, as 4 vectors of floats.  Bytes
 * are widened straight from memory and split into nibbles as 32-bit
 * lanes: widening from a register is a slow cross-lane shuffle on some
 * CPUs, from memory it is not.
 */
QUANT_AVX2 static inline void
quant_avx2_q4_0(const struct block_q4_0 *b, __m256 *q)
{
	__m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
	    (const __m128i *)b->qs));
	__m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
	    (const __m128i *)(b->qs + 8)));
	__m256i m4 = _mm256_set1_epi32(0xf), e8 = _mm256_set1_epi32(8);

	q[0] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(a, m4),
	    e8));
	q[1] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(c, m4),
	    e8));
	q[2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(a, 4),
	    e8));
	q[3] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(c, 4),
	    e8));
}

QUANT_AVX2 static float
quant_avx2_dot_q4_0(const void *row, const float *x, int64_t n)
{
	const struct block_q4_0 *b = row;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
	int64_t nb = n / QK4_0, i = 0;

	for (; i + 2 <= nb; i += 2, b += 2, x += 2 * QK4_0) {
		__m256 q0[4], q1[4], p0, r0, p1, r1;

		quant_avx2_q4_0(&b[0], q0);
		quant_avx2_q4_0(&b[1], q1);
		p0 = _mm256_mul_ps(q0[0], _mm256_loadu_ps(x));
		r0 = _mm256_mul_ps(q0[1], _mm256_loadu_ps(x + 8));
		p1 = _mm256_mul_ps(q1[0], _mm256_loadu_ps(x + 32));
		r1 = _mm256_mul_ps(q1[1], _mm256_loadu_ps(x + 40));
		p0 = _mm256_fmadd_ps(q0[2], _mm256_loadu_ps(x + 16), p0);
		r0 = _mm256_fmadd_ps(q0[3], _mm256_loadu_ps(x + 24), r0);
		p1 = _mm256_fmadd_ps(q1[2], _mm256_loadu_ps(x + 48), p1);
		r1 = _mm256_fmadd_ps(q1[3], _mm256_loadu_ps(x + 56), r1);
		acc0 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b[0].d)),
		    _mm256_add_ps(p0, r0), acc0);
		acc1 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b[1].d)),
		    _mm256_add_ps(p1, r1), acc1);
	}
	for (; i < nb; i++, b++, x += QK4_0) {
		__m256 q[4], p, r;

		quant_avx2_q4_0(b, q);
		p = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
		r = _mm256_mul_ps(q[1], _mm256_loadu_ps(x + 8));
		p = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x + 16), p);
		r = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x + 24), r);
		acc0 = _mm256_fmadd_ps(_mm256_set1_ps(quant_avx2_half(b->d)),
		    _mm256_add_ps(p, r), acc0);
	}
	return quant_avx2_hsum(_mm256_add_ps(acc0, acc1));
}

QUANT_AVX2 static void
quant_avx2_dequant_q4_0(const void *src, float *dst, int64_t n)
{
	const struct block_q4_0 *b = src;

	for (int64_t i = 0; i < n / QK4_0; i++, b++, dst += QK4_0) {
		__m256 d = _mm256_set1_ps(quant_avx2_half(b->d)), q[4];

		quant_avx2_q4_0(b, q);
		for (int j = 0; j < 4; j++)
			_mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(d, q[j]));
	}
}

/* ---- K-quants ------------------------------------------------------ */

/*
 * The 8 scales and 8 mins of a Q4_K/Q5_K block (quant_scale_min_k4()) as
 * floats d*sc[j] and dmin*m[j], unpacked a word at a time: the low 6 bits
 * of bytes 0-3 and 4-7 are sc and m of sub-blocks 0-3; for sub-blocks 4-7
 * the nibbles of bytes 8-11 give the low 4 bits and the top 2 bits of
 * bytes 0-3 (sc) and 4-7 (m) the high 2.
 */
QUANT_AVX2 static inline void
quant_avx2_k45_scales(const uint8_t *scales, float d, float dmin, float *sd,
    float *sm)
{
	uint32_t u0, u1, u2;
	__m128i v;

	memcpy(&u0, scales, 4);
	memcpy(&u1, scales + 4, 4);
	memcpy(&u2, scales + 8, 4);
	v = _mm_set_epi32((int)(((u2 >> 4) & 0x0f0f0f0f) |
	    ((u1 >> 2) & 0x30303030)), (int)(u1 & 0x3f3f3f3f),
	    (int)((u2 & 0x0f0f0f0f) | ((u0 >> 2) & 0x30303030)),
	    (int)(u0 & 0x3f3f3f3f));
	_mm256_storeu_ps(sd, _mm256_mul_ps(_mm256_set1_ps(d),
	    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))));
	_mm256_storeu_ps(sm, _mm256_mul_ps(_mm256_set1_ps(dmin),
	    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)))));
}

/*
 * Quants 8k..8k+7 of sub-blocks 2c and 2c+1 of a Q4_K or Q5_K block, as
 * floats: the low and high nibbles of qs[32c + 8k ..], widened straight
 * from memory (see quant_avx2_q4_0()), plus 16 where the qh bit is set.
 * h, for Q5_K only, holds qh[8k ..] widened and shifted right by 2c, so
 * the bits wanted are bits 0 and 1.
 */
QUANT_AVX2 static inline void
quant_avx2_k45_q8(const uint8_t *qs, const __m256i *h, __m256 *lo, __m256 *hi)
{
	__m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
	__m256i l = _mm256_and_si256(a, _mm256_set1_epi32(0xf));
	__m256i u = _mm256_srli_epi32(a, 4);

	if (h != NULL) {
		l = _mm256_or_si256(l, _mm256_slli_epi32(_mm256_and_si256(*h,
		    _mm256_set1_epi32(1)), 4));
		u = _mm256_or_si256(u, _mm256_slli_epi32(_mm256_and_si256(*h,
		    _mm256_set1_epi32(2)), 3));
	}
	*lo = _mm256_cvtepi32_ps(l);
	*hi = _mm256_cvtepi32_ps(u);
}

/*
 * One Q4_K (qh == NULL) or Q5_K block: its dot with x, accumulated into
 * acc (scale times sum(q x)) and macc (min times sum(x)), or, when dst is
 * not NULL, its 256 dequantized values.  Always inlined with a constant
 * qh, so the Q4_K version carries no trace of the fifth bit.
 */
QUANT_AVX2 static inline __attribute__((always_inline)) void
quant_avx2_k45_block(uint16_t dh, uint16_t dminh, const uint8_t *scales,
    const uint8_t *qs, const uint8_t *qh, const float *x, __m256 *acc,
    __m256 *macc, float *dst)
{
	float sd[8], sm[8];
	__m256i h[4];

	quant_avx2_k45_scales(scales, quant_avx2_half(dh),
	    quant_avx2_half(dminh), sd, sm);
	if (qh != NULL) {
		for (int k = 0; k < 4; k++)
			h[k] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
			    (const __m128i *)(qh + 8 * k)));
	}
	for (int c = 0; c < 4; c++) {
		__m256 pl = _mm256_setzero_ps(), ph = pl, sl = pl, sh = pl;
		__m256 dl = _mm256_set1_ps(sd[2 * c]);
		__m256 dh8 = _mm256_set1_ps(sd[2 * c + 1]);
		__m256 ml = _mm256_set1_ps(sm[2 * c]);
		__m256 mh = _mm256_set1_ps(sm[2 * c + 1]);

#pragma GCC unroll 4
		for (int k = 0; k < 4; k++) {
			__m256 lo, hi, vl, vh;

			quant_avx2_k45_q8(qs + 32 * c + 8 * k,
			    qh != NULL ? &h[k] : NULL, &lo, &hi);
			if (qh != NULL)
				h[k] = _mm256_srli_epi32(h[k], 2);
			if (dst != NULL) {
				/* d q is exact: one rounding, as d q - m */
				_mm256_storeu_ps(dst + 64 * c + 8 * k,
				    _mm256_fmsub_ps(dl, lo, ml));
				_mm256_storeu_ps(dst + 64 * c + 32 + 8 * k,
				    _mm256_fmsub_ps(dh8, hi, mh));
				continue;
			}
			vl = _mm256_loadu_ps(x + 64 * c + 8 * k);
			vh = _mm256_loadu_ps(x + 64 * c + 32 + 8 * k);
			pl = _mm256_fmadd_ps(lo, vl, pl);
			ph = _mm256_fmadd_ps(hi, vh, ph);
			sl = _mm256_add_ps(sl, vl);
			sh = _mm256_add_ps(sh, vh);
		}
		if (dst == NULL) {
			acc[0] = _mm256_fmadd_ps(dl, pl, acc[0]);
			acc[1] = _mm256_fmadd_ps(dh8, ph, acc[1]);
			macc[0] = _mm256_fmadd_ps(ml, sl, macc[0]);
			macc[1] = _mm256_fmadd_ps(mh, sh, macc[1]);
		}
	}
}

QUANT_AVX2 static float
quant_avx2_dot_q4_K(const void *row, const float *x, int64_t n)
{
	const struct block_q4_K *b = row;
	__m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
	__m256 macc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K)
		quant_avx2_k45_block(b->d, b->dmin, b->scales, b->qs, NULL, x,
		    acc, macc, NULL);
	return quant_avx2_hsum(_mm256_sub_ps(_mm256_add_ps(acc[0], acc[1]),
	    _mm256_add_ps(macc[0], macc[1])));
}

QUANT_AVX2 static float
quant_avx2_dot_q5_K(const void *row, const float *x, int64_t n)
{
	const struct block_q5_K *b = row;
	__m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
	__m256 macc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K)
		quant_avx2_k45_block(b->d, b->dmin, b->scales, b->qs, b->qh, x,
		    acc, macc, NULL);
	return quant_avx2_hsum(_mm256_sub_ps(_mm256_add_ps(acc[0], acc[1]),
	    _mm256_add_ps(macc[0], macc[1])));
}

QUANT_AVX2 static void
quant_avx2_dequant_q4_K(const void *src, float *dst, int64_t n)
{
	const struct block_q4_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K)
		quant_avx2_k45_block(b->d, b->dmin, b->scales, b->qs, NULL, NULL,
		    NULL, NULL, dst);
}

QUANT_AVX2 static void
quant_avx2_dequant_q5_K(const void *src, float *dst, int64_t n)
{
	const struct block_q5_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K)
		quant_avx2_k45_block(b->d, b->dmin, b->scales, b->qs, b->qh, NULL,
		    NULL, NULL, dst);
}

/*
 * Half h (0, 1) of a Q6_K block's quants minus 32, as 4 x 32 signed bytes
 * in element order (quant-internal.h has the layout).
 */
QUANT_AVX2 static inline __attribute__((always_inline)) void
quant_avx2_q6_K_half(const struct block_q6_K *b, int h, __m256i q[4])
{
	const __m256i m4 = _mm256_set1_epi8(0xf), m3 = _mm256_set1_epi8(3);
	const __m256i mc = _mm256_set1_epi8(0x0c), m30 = _mm256_set1_epi8(0x30);
	const __m256i mc0 = _mm256_set1_epi8((char)0xc0);
	const __m256i e32 = _mm256_set1_epi8(32);
	__m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
	__m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
	__m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));

	q[0] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l0, m4),
	    _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)), e32);
	q[1] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l1, m4),
	    _mm256_slli_epi16(_mm256_and_si256(hb, mc), 2)), e32);
	q[2] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(
	    _mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30)), e32);
	q[3] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(
	    _mm256_srli_epi16(l1, 4), m4), _mm256_srli_epi16(_mm256_and_si256(hb,
	    mc0), 2)), e32);
}

/*
 * The 256 quants of a Q6_K block minus 32, as signed bytes in element
 * order, and, if sd is not NULL, the 16 sub-block scales d*sc.
 */
QUANT_AVX2 static inline void
quant_avx2_q6_K_unpack(const struct block_q6_K *b, int8_t *q, float *sd)
{
	float d = quant_avx2_half(b->d);

	__m256i v[8];

	/* unrolled by hand: written as loops, Q6_K tiles for 8 inputs ran
	 * at 34 GFLOP/s against 46-56 (one thread, 1024 x 4096) */
	quant_avx2_q6_K_half(b, 0, v);
	quant_avx2_q6_K_half(b, 1, v + 4);
	_mm256_store_si256((__m256i *)q, v[0]);
	_mm256_store_si256((__m256i *)(q + 32), v[1]);
	_mm256_store_si256((__m256i *)(q + 64), v[2]);
	_mm256_store_si256((__m256i *)(q + 96), v[3]);
	_mm256_store_si256((__m256i *)(q + 128), v[4]);
	_mm256_store_si256((__m256i *)(q + 160), v[5]);
	_mm256_store_si256((__m256i *)(q + 192), v[6]);
	_mm256_store_si256((__m256i *)(q + 224), v[7]);
	if (sd == NULL)
		return;
	_mm256_storeu_ps(sd, _mm256_mul_ps(_mm256_set1_ps(d),
	    quant_avx2_i8(b->scales)));
	_mm256_storeu_ps(sd + 8, _mm256_mul_ps(_mm256_set1_ps(d),
	    quant_avx2_i8(b->scales + 8)));
}

QUANT_AVX2 static float
quant_avx2_dot_q6_K(const void *row, const float *x, int64_t n)
{
	const struct block_q6_K *b = row;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
	int8_t q[QK_K] __attribute__((aligned(32)));
	float sd[16];

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
		quant_avx2_q6_K_unpack(b, q, sd);
		for (int j = 0; j < 16; j += 2) {
			const int8_t *qj = q + 16 * j;
			const float *xj = x + 16 * j;
			__m256 p0, p1;

			p0 = _mm256_mul_ps(quant_avx2_i8(qj), _mm256_loadu_ps(xj));
			p1 = _mm256_mul_ps(quant_avx2_i8(qj + 16),
			    _mm256_loadu_ps(xj + 16));
			p0 = _mm256_fmadd_ps(quant_avx2_i8(qj + 8),
			    _mm256_loadu_ps(xj + 8), p0);
			p1 = _mm256_fmadd_ps(quant_avx2_i8(qj + 24),
			    _mm256_loadu_ps(xj + 24), p1);
			acc0 = _mm256_fmadd_ps(_mm256_set1_ps(sd[j]), p0, acc0);
			acc1 = _mm256_fmadd_ps(_mm256_set1_ps(sd[j + 1]), p1,
			    acc1);
		}
	}
	return quant_avx2_hsum(_mm256_add_ps(acc0, acc1));
}

QUANT_AVX2 static void
quant_avx2_dequant_q6_K(const void *src, float *dst, int64_t n)
{
	const struct block_q6_K *b = src;
	int8_t q[QK_K] __attribute__((aligned(32)));
	float sd[16];

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		quant_avx2_q6_K_unpack(b, q, sd);
		for (int j = 0; j < 16; j++) {
			__m256 d = _mm256_set1_ps(sd[j]);

			_mm256_storeu_ps(dst, _mm256_mul_ps(d,
			    quant_avx2_i8(q + 16 * j)));
			_mm256_storeu_ps(dst + 8, _mm256_mul_ps(d,
			    quant_avx2_i8(q + 16 * j + 8)));
			dst += 16;
		}
	}
}

/* ---- int8 activations (quant-internal.h) --------------------------- */

/*
 * The activation quantizer, bit-identical to quant_q8x_quantize(): the
 * same scalar scale, the same products x * id, clamps and round-to-even
 * conversions, only eight at a time.  max_ps takes its second operand when
 * either is NaN, which is how fmaxf ignores one.
 */
QUANT_AVX2 static void
quant_avx2_q8x_quantize(const float *x, int64_t n, int kfmt, int8_t *q,
    float *d, int32_t *s)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	const __m256 lo = _mm256_set1_ps(-127), hi = _mm256_set1_ps(127);
	int bs = kfmt ? QK_K : QK8_0;

	for (int64_t b = 0; b < n / bs; b++, x += bs, q += bs) {
		__m256 m = _mm256_setzero_ps(), vid;
		float amax, max = 0, id;

		for (int j = 0; j < bs; j += 8)
			m = _mm256_max_ps(_mm256_andnot_ps(sign,
			    _mm256_loadu_ps(x + j)), m);
		amax = quant_avx2_hmax(m);
		if (kfmt) {
			for (int j = 0; j < bs; j++) {
				if (__builtin_fabsf(x[j]) == amax) {
					max = x[j];
					break;
				}
			}
			id = amax > 0 ? -127 / max : 0;
			d[b] = amax > 0 ? 1 / id : 0;
		} else {
			id = amax > 0 ? 127 / amax : 0;
			d[b] = quant_f16_to_f32(quant_f32_to_f16(amax / 127));
		}
		vid = _mm256_set1_ps(id);
		for (int j = 0; j < bs; j += 32) {
			__m256i v[4], p16, p8;

			for (int k = 0; k < 4; k++)
				v[k] = _mm256_cvtps_epi32(_mm256_min_ps(
				    _mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(
				    x + j + 8 * k), vid), lo), hi));
			/* pack to bytes; packs interleave 128-bit lanes,
			 * the permute puts them back in order */
			p16 = _mm256_packs_epi32(v[0], v[1]);
			p8 = _mm256_packs_epi16(p16, _mm256_packs_epi32(v[2],
			    v[3]));
			p8 = _mm256_permutevar8x32_epi32(p8,
			    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
			_mm256_storeu_si256((__m256i *)(q + j), p8);
			*s++ = quant_avx2_hsum_i32(_mm256_add_epi32(
			    _mm256_add_epi32(v[0], v[1]),
			    _mm256_add_epi32(v[2], v[3])));
		}
	}
}

/* sum of u[i] s[i] over each group of 4 bytes: unsigned times signed
 * bytes, pairs added to 16 bits (cannot saturate for our ranges: at most
 * 2 * 128 * 127), then pairs of those to 32 bits. */
QUANT_AVX2 static inline __m256i
quant_avx2_madd8(__m256i u, __m256i s)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s),
	    _mm256_set1_epi16(1));
}

/*
 * Tiles.  Each kernel below computes an NR x NC tile of outputs, rows
 * times inputs, and is instantiated for the tile shapes quant_avx2_mmq()
 * uses.  Within a block (32 elements, or a super-block of 256) the sums
 * are exact integers; each output then has ONE float accumulator of 8
 * lanes, updated once per block in block order (acc = scale * isum + acc)
 * and summed across lanes at the end.  That sequence does not depend on
 * the tile shape or on where the tile sits, which is what makes a
 * product's outputs independent of the batch (quant-internal.h, DESIGN 6).
 */
#define QUANT_MMQ_NR	4
#define QUANT_MMQ_NC	4

#define QUANT_MMQ_KERNEL QUANT_AVX2 static inline __attribute__((always_inline))

/* QUANT_UNROLL, QUANT_KEEP, the prefetch of decode's kernels and the
 * packed int8 tiles, shared with kernels-avx512.c's VNNI instance. */
#define QUANT_MMQP_KERNEL	QUANT_MMQ_KERNEL
#define QUANT_MMQP_ENTRY_ATTR	QUANT_AVX2 static
#define QUANT_MMQP_FN(name)	quant_avx2_##name
#define QUANT_MMQP_VNNI		0
#include "kernels-mmqp.h"

QUANT_MMQ_KERNEL void
quant_avx2_mmq_store(__m256 acc[QUANT_MMQ_NR][QUANT_MMQ_NC], int nr, int nc,
    float *y, int64_t ldy)
{
	QUANT_UNROLL
	for (int r = 0; r < nr; r++)
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			y[c * ldy + r] = quant_avx2_hsum(acc[r][c]);
}

/*
 * Q8_0 and Q4_0 tiles share one loop (quant_avx2_mmq_b32_t): per block, a
 * row's prepared quants (struct quant_avx2_b32) times each input.  With
 * one input the row is prepared and used at once, so only the four
 * accumulators stay live: preparing all four rows first spilled an
 * accumulator to the stack, and its store-to-load chain cost a quarter
 * of the decode speed.
 */
struct quant_avx2_b32 {
	__m256i	 u;	/* unsigned quants */
	__m256i	 s;	/* Q8_0: the signed quants whose sign goes onto x */
	__m256	 d;	/* the block's scale */
};

QUANT_MMQ_KERNEL struct quant_avx2_b32
quant_avx2_b32_prep(const char *row, int64_t i, const int q4)
{
	struct quant_avx2_b32 p;

	if (q4) {
		const struct block_q4_0 *b = (const struct block_q4_0 *)row + i;
		__m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(
		    (const __m128i *)b->qs));

		/* low nibbles in the low lane, high in the high */
		p.u = _mm256_and_si256(_mm256_blend_epi32(v,
		    _mm256_srli_epi16(v, 4), 0xf0), _mm256_set1_epi8(0xf));
		p.s = p.u;
		p.d = quant_avx2_half8(&b->d);
	} else {
		const struct block_q8_0 *b = (const struct block_q8_0 *)row + i;

		p.s = _mm256_loadu_si256((const __m256i *)b->qs);
		p.u = _mm256_abs_epi8(p.s);
		p.d = quant_avx2_half8(&b->d);
	}
	return p;
}

/* Q8_0: |w| times x with w's sign.  Q4_0: sum((q - 8) x) = sum(q x) - 8 s,
 * so the quants stay unsigned and each of the 8 lanes of partial sums
 * gives up s, the block's sum of x. */
QUANT_MMQ_KERNEL __m256
quant_avx2_b32_dot(struct quant_avx2_b32 p, const struct quant_q8x *x,
    int64_t i, __m256 acc, const int q4)
{
	__m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + QK8_0 * i));
	__m256i isum;

	if (q4)
		isum = _mm256_sub_epi32(quant_avx2_madd8(p.u, xv),
		    _mm256_set1_epi32(x->s[i]));
	else
		isum = quant_avx2_madd8(p.u, _mm256_sign_epi8(xv, p.s));
	return _mm256_fmadd_ps(_mm256_mul_ps(p.d, _mm256_set1_ps(x->d[i])),
	    _mm256_cvtepi32_ps(isum), acc);
}

QUANT_MMQ_KERNEL void
quant_avx2_mmq_b32_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc,
    int stream, const int q4)
{
	const size_t bs = q4 ? sizeof(struct block_q4_0) :
	    sizeof(struct block_q8_0);
	__m256 acc[QUANT_MMQ_NR][QUANT_MMQ_NC];

	QUANT_UNROLL
	for (int r = 0; r < nr; r++)
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			acc[r][c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK8_0; i++) {
		struct quant_avx2_b32 p[QUANT_MMQ_NR];

		if (stream) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				quant_avx2_prefetch(w + r * rs + i * bs, bs);
		}
		if (nc == 1) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				acc[r][0] = quant_avx2_b32_dot(
				    quant_avx2_b32_prep(w + r * rs, i, q4), x, i,
				    acc[r][0], q4);
			continue;
		}
		QUANT_UNROLL
		for (int r = 0; r < nr; r++)
			p[r] = quant_avx2_b32_prep(w + r * rs, i, q4);
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				acc[r][c] = quant_avx2_b32_dot(p[r], &x[c], i,
				    acc[r][c], q4);
	}
	quant_avx2_mmq_store(acc, nr, nc, y, ldy);
}

QUANT_MMQ_KERNEL void
quant_avx2_mmq_q8_0_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc, int stream)
{
	quant_avx2_mmq_b32_t(w, rs, x, y, ldy, n, nr, nc, stream, 0);
}

QUANT_MMQ_KERNEL void
quant_avx2_mmq_q4_0_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc, int stream)
{
	quant_avx2_mmq_b32_t(w, rs, x, y, ldy, n, nr, nc, stream, 1);
}

/*
 * One row's block i times one input, accumulated (the single-input case
 * of quant_avx2_mmq_k45_t(), with the same float arithmetic): the quants
 * go from the block to vpmaddubsw without a trip through memory, which
 * is what decode needs.
 */
QUANT_MMQ_KERNEL __m256
quant_avx2_k45_one(const char *row, int64_t i, const struct quant_q8x *x,
    __m256 acc, const int five)
{
	const size_t bsize = five ? sizeof(struct block_q5_K) :
	    sizeof(struct block_q4_K);
	const __m256i m4 = _mm256_set1_epi8(0xf);
	const uint8_t *p = (const uint8_t *)row + bsize * i;
	const struct block_q4_K *b4 = (const void *)p;
	const struct block_q5_K *b5 = (const void *)p;
	const uint8_t *qs = five ? b5->qs : b4->qs;
	const int8_t *xq = x->q + QK_K * i;
	__m256i h = _mm256_setzero_si256(), is = _mm256_setzero_si256();
	__m256 dx = _mm256_set1_ps(x->d[i]), xs, mins;
	uint32_t u0, u1, u2;
	uint8_t sc[16];
	__m128i v;

	memcpy(&u0, b4->scales, 4);
	memcpy(&u1, b4->scales + 4, 4);
	memcpy(&u2, b4->scales + 8, 4);
	v = _mm_set_epi32((int)(((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 2) &
	    0x30303030)), (int)(u1 & 0x3f3f3f3f), (int)((u2 & 0x0f0f0f0f) |
	    ((u0 >> 2) & 0x30303030)), (int)(u0 & 0x3f3f3f3f));
	_mm_storeu_si128((__m128i *)sc, v);
	if (five)
		h = _mm256_loadu_si256((const __m256i *)b5->qh);
	QUANT_UNROLL
	for (int c = 0; c < 4; c++) {
		__m256i vv = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
		__m256i l = _mm256_and_si256(vv, m4);
		__m256i u = _mm256_and_si256(_mm256_srli_epi16(vv, 4), m4);

		if (five) {
			l = _mm256_or_si256(l, _mm256_slli_epi16(
			    _mm256_and_si256(h, _mm256_set1_epi8(1)), 4));
			u = _mm256_or_si256(u, _mm256_slli_epi16(
			    _mm256_and_si256(h, _mm256_set1_epi8(2)), 3));
			h = _mm256_srli_epi16(h, 2);
		}
		is = _mm256_add_epi32(is, _mm256_madd_epi16(
		    _mm256_maddubs_epi16(l, _mm256_loadu_si256(
		    (const __m256i *)(xq + 64 * c))),
		    _mm256_set1_epi16(sc[2 * c])));
		is = _mm256_add_epi32(is, _mm256_madd_epi16(
		    _mm256_maddubs_epi16(u, _mm256_loadu_si256(
		    (const __m256i *)(xq + 64 * c + 32))),
		    _mm256_set1_epi16(sc[2 * c + 1])));
	}
	mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
	xs = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(x->s +
	    8 * i)));
	acc = _mm256_fmadd_ps(_mm256_mul_ps(quant_avx2_half8(&b4->d), dx),
	    _mm256_cvtepi32_ps(is), acc);
	return _mm256_fnmadd_ps(_mm256_mul_ps(quant_avx2_half8(&b4->dmin), dx),
	    _mm256_mul_ps(mins, xs), acc);
}

/*
 * Q4_K (five == 0) and Q5_K.  Per super-block and row, the quants are
 * unpacked once into 256 bytes in x's element order and the 8 6-bit
 * scales broadcast to 16-bit lanes, so that for each input
 *	isum = sum_j sc_j sum(q x over sub-block j)
 * is vpmaddubsw then vpmaddwd by the scale (at most 2 * 31 * 127 * 63 per
 * lane and step, 8 steps: far from overflow).  The mins, sum_j m_j s_j,
 * are exact in float (at most 63 * 4064 * 8 < 2^24).  Per block and
 * output: acc = d dx isum + acc, then acc = -(dmin dx) (m s) + acc.
 */
QUANT_MMQ_KERNEL void
quant_avx2_mmq_k45_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc,
    int stream, const int five)
{
	const size_t bsize = five ? sizeof(struct block_q5_K) :
	    sizeof(struct block_q4_K);
	const __m256i m4 = _mm256_set1_epi8(0xf), one = _mm256_set1_epi8(1);
	const __m256i two = _mm256_set1_epi8(2);
	__m256 acc[QUANT_MMQ_NR][QUANT_MMQ_NC];
	__m256i q[QUANT_MMQ_NR][8], sc[QUANT_MMQ_NR][8];
	__m256 d[QUANT_MMQ_NR], dmin[QUANT_MMQ_NR], mins[QUANT_MMQ_NR];

	QUANT_UNROLL
	for (int r = 0; r < nr; r++)
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			acc[r][c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK_K; i++) {
		if (stream) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				quant_avx2_prefetch(w + r * rs + i * bsize,
				    bsize);
		}
		if (nc == 1) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				acc[r][0] = quant_avx2_k45_one(w + r * rs, i, x,
				    acc[r][0], five);
			continue;
		}
		QUANT_UNROLL
		for (int r = 0; r < nr; r++) {
			const uint8_t *p = (const uint8_t *)(w + r * rs) +
			    bsize * i;
			const struct block_q4_K *b4 = (const void *)p;
			const struct block_q5_K *b5 = (const void *)p;
			const uint8_t *qs = five ? b5->qs : b4->qs;
			uint32_t u0, u1, u2;
			__m256i h = _mm256_setzero_si256();
			__m128i v;

			memcpy(&u0, b4->scales, 4);
			memcpy(&u1, b4->scales + 4, 4);
			memcpy(&u2, b4->scales + 8, 4);
			v = _mm_set_epi32((int)(((u2 >> 4) & 0x0f0f0f0f) |
			    ((u1 >> 2) & 0x30303030)), (int)(u1 & 0x3f3f3f3f),
			    (int)((u2 & 0x0f0f0f0f) | ((u0 >> 2) & 0x30303030)),
			    (int)(u0 & 0x3f3f3f3f));
			QUANT_UNROLL
			for (int j = 0; j < 8; j++)
				sc[r][j] = _mm256_set1_epi16(((const uint8_t *)
				    &v)[j]);
			mins[r] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
			    _mm_srli_si128(v, 8)));
			d[r] = quant_avx2_half8(&b4->d);
			dmin[r] = quant_avx2_half8(&b4->dmin);
			if (five)
				h = _mm256_loadu_si256((const __m256i *)b5->qh);
			QUANT_UNROLL
			for (int c = 0; c < 4; c++) {
				__m256i vv = _mm256_loadu_si256((const __m256i *)
				    (qs + 32 * c));
				__m256i l = _mm256_and_si256(vv, m4);
				__m256i u = _mm256_and_si256(_mm256_srli_epi16(vv,
				    4), m4);

				if (five) {
					l = _mm256_or_si256(l, _mm256_slli_epi16(
					    _mm256_and_si256(h, one), 4));
					u = _mm256_or_si256(u, _mm256_slli_epi16(
					    _mm256_and_si256(h, two), 3));
					h = _mm256_srli_epi16(h, 2);
				}
				q[r][2 * c] = l;
				q[r][2 * c + 1] = u;
			}
		}
		QUANT_UNROLL
		for (int c = 0; c < nc; c++) {
			const int8_t *xq = x[c].q + QK_K * i;
			__m256 dx = _mm256_set1_ps(x[c].d[i]);
			__m256 xs = _mm256_cvtepi32_ps(_mm256_loadu_si256(
			    (const __m256i *)(x[c].s + 8 * i)));

			QUANT_UNROLL
			for (int r = 0; r < nr; r++) {
				__m256i is = _mm256_setzero_si256();

				QUANT_UNROLL
				for (int j = 0; j < 8; j++)
					is = _mm256_add_epi32(is,
					    _mm256_madd_epi16(
					    _mm256_maddubs_epi16(q[r][j],
					    _mm256_loadu_si256((const __m256i *)
					    (xq + 32 * j))), sc[r][j]));
				acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(d[r],
				    dx), _mm256_cvtepi32_ps(is), acc[r][c]);
				acc[r][c] = _mm256_fnmadd_ps(_mm256_mul_ps(
				    dmin[r], dx), _mm256_mul_ps(mins[r], xs),
				    acc[r][c]);
			}
		}
	}
	quant_avx2_mmq_store(acc, nr, nc, y, ldy);
}

QUANT_MMQ_KERNEL void
quant_avx2_mmq_q4_K_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc, int stream)
{
	quant_avx2_mmq_k45_t(w, rs, x, y, ldy, n, nr, nc, stream, 0);
}

QUANT_MMQ_KERNEL void
quant_avx2_mmq_q5_K_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc, int stream)
{
	quant_avx2_mmq_k45_t(w, rs, x, y, ldy, n, nr, nc, stream, 1);
}

/* One row's block i times one input, accumulated: the single-input case
 * of quant_avx2_mmq_q6_K_t() (same float arithmetic), each 32 quants
 * used straight from quant_avx2_q6_K_half(). */
QUANT_MMQ_KERNEL __m256
quant_avx2_q6_K_one(const char *row, int64_t i, const struct quant_q8x *x,
    __m256 acc, __m256i pick)
{
	const struct block_q6_K *b = (const struct block_q6_K *)row + i;
	const int8_t *xq = x->q + QK_K * i;
	__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)
	    b->scales)), is = _mm256_setzero_si256();

	QUANT_UNROLL
	for (int h = 0; h < 2; h++) {
		__m256i q[4];

		quant_avx2_q6_K_half(b, h, q);
		QUANT_UNROLL
		for (int m = 0; m < 4; m++) {
			__m256i xv = _mm256_loadu_si256((const __m256i *)(xq +
			    128 * h + 32 * m));
			__m256i sc = _mm256_shuffle_epi8(
			    _mm256_permutevar8x32_epi32(sc16,
			    _mm256_set1_epi32(4 * h + m)), pick);

			is = _mm256_add_epi32(is, _mm256_madd_epi16(
			    _mm256_maddubs_epi16(_mm256_abs_epi8(q[m]),
			    _mm256_sign_epi8(xv, q[m])), sc));
		}
	}
	return _mm256_fmadd_ps(_mm256_mul_ps(quant_avx2_half8(&b->d),
	    _mm256_set1_ps(x->d[i])), _mm256_cvtepi32_ps(is), acc);
}

/*
 * Q6_K: the quants minus 32, signed, go in as |q| with their sign moved
 * onto x; the pairs' 16-bit sums are multiplied by the two sub-blocks'
 * int8 scales on the way to 32 bits (at most 8128 * 2 * 128 per lane and
 * step, 8 steps), leaving one float scale per block: d times dx.
 */
QUANT_MMQ_KERNEL void
quant_avx2_mmq_q6_K_t(const char *w, size_t rs, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nr, const int nc, int stream)
{
	/* in each 128-bit lane, the 16-bit pair of lane 0 or of lane 1 */
	const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,
	    1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
	__m256 acc[QUANT_MMQ_NR][QUANT_MMQ_NC], d[QUANT_MMQ_NR];
	int8_t qb[QUANT_MMQ_NR][QK_K] __attribute__((aligned(32)));
	__m256i qa[QUANT_MMQ_NR][8], sc[QUANT_MMQ_NR][8];

	QUANT_UNROLL
	for (int r = 0; r < nr; r++)
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			acc[r][c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK_K; i++) {
		if (stream) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				quant_avx2_prefetch(w + r * rs + i *
				    sizeof(struct block_q6_K),
				    sizeof(struct block_q6_K));
		}
		if (nc == 1) {
			QUANT_UNROLL
			for (int r = 0; r < nr; r++)
				acc[r][0] = quant_avx2_q6_K_one(w + r * rs, i, x,
				    acc[r][0], pick);
			continue;
		}
		QUANT_UNROLL
		for (int r = 0; r < nr; r++) {
			const struct block_q6_K *b =
			    (const struct block_q6_K *)(w + r * rs) + i;
			__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(
			    (const __m128i *)b->scales));

			quant_avx2_q6_K_unpack(b, qb[r], NULL);
			QUANT_UNROLL
			for (int m = 0; m < 8; m++) {
				sc[r][m] = _mm256_shuffle_epi8(
				    _mm256_permutevar8x32_epi32(sc16,
				    _mm256_set1_epi32(m)), pick);
				qa[r][m] = _mm256_abs_epi8(_mm256_load_si256(
				    (const __m256i *)(qb[r] + 32 * m)));
			}
			d[r] = quant_avx2_half8(&b->d);
		}
		QUANT_UNROLL
		for (int c = 0; c < nc; c++) {
			const int8_t *xq = x[c].q + QK_K * i;
			__m256 dx = _mm256_set1_ps(x[c].d[i]);

			QUANT_UNROLL
			for (int r = 0; r < nr; r++) {
				__m256i is = _mm256_setzero_si256();

				QUANT_UNROLL
				for (int m = 0; m < 8; m++) {
					__m256i wv = _mm256_load_si256(
					    (const __m256i *)(qb[r] + 32 * m));
					__m256i xv = _mm256_loadu_si256(
					    (const __m256i *)(xq + 32 * m));

					is = _mm256_add_epi32(is,
					    _mm256_madd_epi16(
					    _mm256_maddubs_epi16(qa[r][m],
					    _mm256_sign_epi8(xv, wv)), sc[r][m]));
				}
				acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(d[r],
				    dx), _mm256_cvtepi32_ps(is), acc[r][c]);
			}
		}
	}
	quant_avx2_mmq_store(acc, nr, nc, y, ldy);
}

/*
 * The tile shapes: one input (decode) takes one row at a time
 * (mmq_rows = 1): a single stream per thread is what the hardware
 * prefetcher keeps ahead of, and one accumulator chain per block is fast
 * enough for memory speed (four rows in lockstep decoded 1.5-2x slower
 * on Zen 3).  More inputs take 2 rows by up to 4 inputs (8 accumulators,
 * the most that stay in registers with the operands).  Every shape up
 * to 4 x 1 and 2 x 4 is instantiated, for the edges and the tests.
 */
#define QUANT_MMQ_SHAPES(K, w, rs, nr, x, nc, y, ldy, n, st) do {	\
	switch ((nr) * 8 + (nc)) {					\
	case 1 * 8 + 1: K(w, rs, x, y, ldy, n, 1, 1, st); break;	\
	case 2 * 8 + 1: K(w, rs, x, y, ldy, n, 2, 1, st); break;	\
	case 3 * 8 + 1: K(w, rs, x, y, ldy, n, 3, 1, st); break;	\
	case 4 * 8 + 1: K(w, rs, x, y, ldy, n, 4, 1, st); break;	\
	case 1 * 8 + 2: K(w, rs, x, y, ldy, n, 1, 2, st); break;	\
	case 1 * 8 + 3: K(w, rs, x, y, ldy, n, 1, 3, st); break;	\
	case 1 * 8 + 4: K(w, rs, x, y, ldy, n, 1, 4, st); break;	\
	case 2 * 8 + 2: K(w, rs, x, y, ldy, n, 2, 2, st); break;	\
	case 2 * 8 + 3: K(w, rs, x, y, ldy, n, 2, 3, st); break;	\
	case 2 * 8 + 4: K(w, rs, x, y, ldy, n, 2, 4, st); break;	\
	}								\
} while (0)

#define QUANT_MMQ_ENTRY(type)						\
QUANT_AVX2 static void							\
quant_avx2_mmq_##type(const void *w, size_t rs, int nr,		\
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n, \
    int stream)								\
{									\
	QUANT_MMQ_SHAPES(quant_avx2_mmq_##type##_t, (const char *)w, rs, \
	    nr, x, nc, y, ldy, n, stream);				\
}

QUANT_MMQ_ENTRY(q8_0)
QUANT_MMQ_ENTRY(q4_0)
QUANT_MMQ_ENTRY(q4_K)
QUANT_MMQ_ENTRY(q5_K)
QUANT_MMQ_ENTRY(q6_K)

/* ---- attention (quant-internal.h, DESIGN 7) ------------------------ */

/* Elements d..d+7 of a key or value row stored as kt (QUANT_KV_*, quant.h):
 * f16 and q8_0 convert exactly (a q8_0 element is an f16 scale times a
 * byte, a product float holds exactly), so every storage gives the same
 * floats for the same values. */
QUANT_MMQ_KERNEL __m256
quant_avx2_kv8(const uint8_t *row, int d, const int kt)
{
	if (kt == QUANT_KV_F16)
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row +
		    2 * d)));
	if (kt == QUANT_KV_Q8_0) {
		const struct block_q8_0 *b = (const struct block_q8_0 *)row +
		    d / QK8_0;

		return _mm256_mul_ps(quant_avx2_half8(&b->d), quant_avx2_i8(
		    b->qs + d % QK8_0));
	}
	return _mm256_loadu_ps((const float *)row + d);
}

/*
 * The lanes of a score's accumulator are summed as ((l0 + l1) + (l2 + l3))
 * + ((l4 + l5) + (l6 + l7)): by quant_avx2_hsum8() for eight heads at once
 * (four horizontal adds, a lane swap and an add, where eight separate
 * sums took 48 operations), and by quant_avx2_hsum_t() for one.
 */
QUANT_AVX2 static inline __m256
quant_avx2_hsum8(const __m256 *a)
{
	__m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]),
	    _mm256_hadd_ps(a[2], a[3]));
	__m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]),
	    _mm256_hadd_ps(a[6], a[7]));

	return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
	    _mm256_permute2f128_ps(u0, u1, 0x31));
}

QUANT_AVX2 static inline float
quant_avx2_hsum_t(__m256 v)
{
	__m256 t = _mm256_hadd_ps(v, v);

	t = _mm256_hadd_ps(t, t);
	return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(t),
	    _mm256_extractf128_ps(t, 1)));
}

/*
 * Scores of G query heads (G = 1, 2, 4 or 8, a constant once inlined)
 * against nk keys: one 8-lane accumulator per (head, key), fed in
 * dimension order, its lanes summed in the tree above.  Each score is
 * the same arithmetic whatever G, the key's place and its storage.
 */
QUANT_MMQ_KERNEL void
quant_avx2_att_scores_g(const float *q, const uint8_t *k, size_t ks,
    int64_t nk, int hd, float *s, int64_t lds, const int g, const int kt)
{
	for (int64_t j = 0; j < nk; j++) {
		const uint8_t *kj = k + j * ks;
		__m256 acc[8];

		QUANT_UNROLL
		for (int i = 0; i < g; i++)
			acc[i] = _mm256_setzero_ps();
		for (int d = 0; d < hd; d += 8) {
			__m256 kv = quant_avx2_kv8(kj, d, kt);

			QUANT_UNROLL
			for (int i = 0; i < g; i++)
				acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q +
				    i * hd + d), kv, acc[i]);
		}
		if (g == 8) {
			float r[8];

			_mm256_storeu_ps(r, quant_avx2_hsum8(acc));
			QUANT_UNROLL
			for (int i = 0; i < 8; i++)
				s[i * lds + j] = r[i];
		} else {
			QUANT_UNROLL
			for (int i = 0; i < g; i++)
				s[i * lds + j] = quant_avx2_hsum_t(acc[i]);
		}
	}
}

#define QUANT_ATT_GROUPS(CALL) do {					\
	int i = 0;							\
									\
	for (; nq - i >= 8; i += 8)					\
		CALL(8);						\
	if (nq - i >= 4) {						\
		CALL(4);						\
		i += 4;							\
	}								\
	if (nq - i >= 2) {						\
		CALL(2);						\
		i += 2;							\
	}								\
	if (nq - i >= 1)						\
		CALL(1);						\
} while (0)

QUANT_AVX2 static void
quant_avx2_att_scores(const float *q, int nq, const void *k, size_t ks,
    int kt, int64_t nk, int hd, float *s, int64_t lds)
{
	if (hd % 8 != 0) {
		quant_att_scores_ref(q, nq, k, ks, kt, nk, hd, s, lds);
		return;
	}
#define QUANT_ATT_SCORES(g) do {					\
	if (kt == QUANT_KV_F16)						\
		quant_avx2_att_scores_g(q + i * hd, k, ks, nk, hd,	\
		    s + i * lds, lds, g, QUANT_KV_F16);			\
	else if (kt == QUANT_KV_Q8_0)					\
		quant_avx2_att_scores_g(q + i * hd, k, ks, nk, hd,	\
		    s + i * lds, lds, g, QUANT_KV_Q8_0);		\
	else								\
		quant_avx2_att_scores_g(q + i * hd, k, ks, nk, hd,	\
		    s + i * lds, lds, g, QUANT_KV_F32);			\
} while (0)
	QUANT_ATT_GROUPS(QUANT_ATT_SCORES);
#undef QUANT_ATT_SCORES
}

/*
 * out[i][d] += sum_j p[i][j] v[j][d] for G heads (G = 1, 2 or 4) and a
 * block of at most QUANT_ATT_KBLOCK keys: each output element is one lane
 * of an accumulator fed key by key in order (fused multiply-add), stored
 * and reloaded between blocks of keys, which changes nothing.  The caller
 * takes the keys block by block for every group of heads, so a block's
 * values stay in L1/L2 across the dimension chunks and the groups; four
 * heads by two chunks of 8 keep 8 accumulators and load 6 operands per 8
 * multiply-adds.
 */
#define QUANT_ATT_KBLOCK 128

QUANT_MMQ_KERNEL void
quant_avx2_att_pv_g(const float *p, int64_t ldp, const uint8_t *v, size_t vs,
    int64_t nk, int hd, float *out, const int g, const int kt)
{
	int d = 0;

	/* two chunks of 8 per pass: each broadcast of a weight feeds two
	 * multiply-adds */
	for (; d + 16 <= hd; d += 16) {
		__m256 acc[4][2];

		QUANT_UNROLL
		for (int i = 0; i < g; i++) {
			acc[i][0] = _mm256_loadu_ps(out + i * hd + d);
			acc[i][1] = _mm256_loadu_ps(out + i * hd + d + 8);
		}
		for (int64_t j = 0; j < nk; j++) {
			__m256 v0 = quant_avx2_kv8(v + j * vs, d, kt);
			__m256 v1 = quant_avx2_kv8(v + j * vs, d + 8, kt);

			QUANT_UNROLL
			for (int i = 0; i < g; i++) {
				__m256 pb = _mm256_broadcast_ss(p + i * ldp +
				    j);

				acc[i][0] = _mm256_fmadd_ps(pb, v0, acc[i][0]);
				acc[i][1] = _mm256_fmadd_ps(pb, v1, acc[i][1]);
			}
		}
		QUANT_UNROLL
		for (int i = 0; i < g; i++) {
			_mm256_storeu_ps(out + i * hd + d, acc[i][0]);
			_mm256_storeu_ps(out + i * hd + d + 8, acc[i][1]);
		}
	}
	for (; d < hd; d += 8) {
		__m256 acc[4];

		QUANT_UNROLL
		for (int i = 0; i < g; i++)
			acc[i] = _mm256_loadu_ps(out + i * hd + d);
		for (int64_t j = 0; j < nk; j++) {
			__m256 vv = quant_avx2_kv8(v + j * vs, d, kt);

			QUANT_UNROLL
			for (int i = 0; i < g; i++)
				acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(p +
				    i * ldp + j), vv, acc[i]);
		}
		QUANT_UNROLL
		for (int i = 0; i < g; i++)
			_mm256_storeu_ps(out + i * hd + d, acc[i]);
	}
}

QUANT_AVX2 static void
quant_avx2_att_pv(const float *p, int nq, int64_t ldp, const void *v,
    size_t vs, int kt, int64_t nk, int hd, float *out)
{
	if (hd % 8 != 0) {
		quant_att_pv_ref(p, nq, ldp, v, vs, kt, nk, hd, out);
		return;
	}
#define QUANT_ATT_PV(g) do {						\
	if (kt == QUANT_KV_F16)						\
		quant_avx2_att_pv_g(pb + i * ldp, ldp, vb, vs, bn, hd,	\
		    out + i * hd, g, QUANT_KV_F16);			\
	else if (kt == QUANT_KV_Q8_0)					\
		quant_avx2_att_pv_g(pb + i * ldp, ldp, vb, vs, bn, hd,	\
		    out + i * hd, g, QUANT_KV_Q8_0);			\
	else								\
		quant_avx2_att_pv_g(pb + i * ldp, ldp, vb, vs, bn, hd,	\
		    out + i * hd, g, QUANT_KV_F32);			\
} while (0)
	/* a block of keys at a time for every group of heads, so the block's
	 * values come from memory once, not once per group */
	for (int64_t j0 = 0; j0 < nk; j0 += QUANT_ATT_KBLOCK) {
		int64_t bn = nk - j0 < QUANT_ATT_KBLOCK ? nk - j0 :
		    QUANT_ATT_KBLOCK;
		const float *pb = p + j0;
		const uint8_t *vb = (const uint8_t *)v + j0 * vs;
		int i = 0;

		for (; nq - i >= 4; i += 4)
			QUANT_ATT_PV(4);
		if (nq - i >= 2) {
			QUANT_ATT_PV(2);
			i += 2;
		}
		if (nq - i >= 1)
			QUANT_ATT_PV(1);
	}
#undef QUANT_ATT_PV
}

/*
 * exp(x) for x <= 0, 8 at a time: x = n ln2 + r with |r| <= ln2 / 2 (ln2
 * in two parts, so r is exact to float precision), a degree-6 polynomial
 * for e^r, and 2^n put into the exponent.  Below -87.3 the result is 0.
 * Within 2 ulp of expf.
 */
QUANT_AVX2 static inline __m256
quant_avx2_exp(__m256 x)
{
	const __m256 lo = _mm256_set1_ps(-87.3f);
	__m256 z = _mm256_cmp_ps(x, lo, _CMP_GE_OQ), n, r, e;
	__m256i ni;

	x = _mm256_max_ps(x, lo);
	n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
	    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	e = _mm256_set1_ps(1.3981999e-3f);
	e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(8.3334519e-3f));
	e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(4.1665795e-2f));
	e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.6666665e-1f));
	e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(5.0000001e-1f));
	e = _mm256_fmadd_ps(e, _mm256_mul_ps(r, r), _mm256_add_ps(r,
	    _mm256_set1_ps(1.0f)));
	ni = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
	    _mm256_set1_epi32(127)), 23);
	return _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(ni)), z);
}

/*
 * softmax(scale * s) in place, in three passes: scale and the maximum
 * (exact, so its order does not matter); exp(s - max) and its sum, 8
 * lanes in order, then the lanes, then the tail in order; multiply by
 * 1 / sum.
 */
QUANT_AVX2 static void
quant_avx2_softmax(float *s, int64_t n, float scale)
{
	__m256 vs = _mm256_set1_ps(scale), m8 = _mm256_set1_ps(-INFINITY);
	__m256 acc = _mm256_setzero_ps(), m, r;
	int64_t i;
	float mx, sum;

	for (i = 0; i + 8 <= n; i += 8) {
		__m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + i), vs);

		_mm256_storeu_ps(s + i, x);
		m8 = _mm256_max_ps(m8, x);
	}
	mx = quant_avx2_hmax(m8);
	for (; i < n; i++)
		if ((s[i] *= scale) > mx)
			mx = s[i];
	m = _mm256_set1_ps(mx);
	for (i = 0; i + 8 <= n; i += 8) {
		__m256 e = quant_avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(s + i),
		    m));

		_mm256_storeu_ps(s + i, e);
		acc = _mm256_add_ps(acc, e);
	}
	sum = quant_avx2_hsum(acc);
	for (; i < n; i++) {
		s[i] = _mm256_cvtss_f32(quant_avx2_exp(_mm256_set1_ps(s[i] -
		    mx)));
		sum += s[i];
	}
	r = _mm256_set1_ps(1.0f / sum);
	for (i = 0; i + 8 <= n; i += 8)
		_mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), r));
	for (; i < n; i++)
		s[i] *= 1.0f / sum;
}

/*
 * g = g / (1 + e^-g) * u.  e^-|g| is always in range of the exp above;
 * for g < 0 the sigmoid is e^g / (1 + e^g), so a large negative g gives
 * 0 rather than an overflowing e^-g.  The tail goes through the same
 * lanes, so an element's result does not depend on its place.
 */
QUANT_AVX2 static inline __m256
quant_avx2_swiglu8(__m256 g, __m256 u)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	__m256 t = quant_avx2_exp(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));
	__m256 num = _mm256_blendv_ps(one, t, _mm256_cmp_ps(g,
	    _mm256_setzero_ps(), _CMP_LT_OQ));

	return _mm256_mul_ps(_mm256_div_ps(_mm256_mul_ps(g, num),
	    _mm256_add_ps(one, t)), u);
}

QUANT_AVX2 static void
quant_avx2_swiglu(float *g, const float *u, int64_t n)
{
	int64_t i;

	for (i = 0; i + 8 <= n; i += 8)
		_mm256_storeu_ps(g + i, quant_avx2_swiglu8(_mm256_loadu_ps(g +
		    i), _mm256_loadu_ps(u + i)));
	for (; i < n; i++)
		g[i] = _mm256_cvtss_f32(quant_avx2_swiglu8(_mm256_set1_ps(g[i]),
		    _mm256_set1_ps(u[i])));
}

void
quant_avx2_fill(struct quant_kernels *k)
{
	k->isa = QUANT_ISA_AVX2;
	k->dot[GGML_TYPE_F32] = quant_avx2_dot_f32_row;
	k->dot[GGML_TYPE_F16] = quant_avx2_dot_f16;
	k->dot[GGML_TYPE_BF16] = quant_avx2_dot_bf16;
	k->dot[GGML_TYPE_Q8_0] = quant_avx2_dot_q8_0;
	k->dot[GGML_TYPE_Q4_0] = quant_avx2_dot_q4_0;
	k->dot[GGML_TYPE_Q4_K] = quant_avx2_dot_q4_K;
	k->dot[GGML_TYPE_Q5_K] = quant_avx2_dot_q5_K;
	k->dot[GGML_TYPE_Q6_K] = quant_avx2_dot_q6_K;
	k->dequant[GGML_TYPE_F16] = quant_avx2_dequant_f16;
	k->dequant[GGML_TYPE_BF16] = quant_avx2_dequant_bf16;
	k->dequant[GGML_TYPE_Q8_0] = quant_avx2_dequant_q8_0;
	k->dequant[GGML_TYPE_Q4_0] = quant_avx2_dequant_q4_0;
	k->dequant[GGML_TYPE_Q4_K] = quant_avx2_dequant_q4_K;
	k->dequant[GGML_TYPE_Q5_K] = quant_avx2_dequant_q5_K;
	k->dequant[GGML_TYPE_Q6_K] = quant_avx2_dequant_q6_K;
	k->mmq[GGML_TYPE_Q8_0] = quant_avx2_mmq_q8_0;
	k->mmq[GGML_TYPE_Q4_0] = quant_avx2_mmq_q4_0;
	k->mmq[GGML_TYPE_Q4_K] = quant_avx2_mmq_q4_K;
	k->mmq[GGML_TYPE_Q5_K] = quant_avx2_mmq_q5_K;
	k->mmq[GGML_TYPE_Q6_K] = quant_avx2_mmq_q6_K;
	k->mmq_rows = 1;
	k->mmq_tile_rows = 2;
	k->mmq_tile_cols = 4;
	k->mmqp[GGML_TYPE_Q8_0] = quant_avx2_mmqp_q8_0;
	k->mmqp[GGML_TYPE_Q4_0] = quant_avx2_mmqp_q4_0;
	k->mmqp[GGML_TYPE_Q4_K] = quant_avx2_mmqp_q4_K;
	k->mmqp[GGML_TYPE_Q5_K] = quant_avx2_mmqp_q5_K;
	k->mmqp[GGML_TYPE_Q6_K] = quant_avx2_mmqp_q6_K;
	k->mmqp_cols = QUANT_MMQP_NC;
	k->q8x_quantize = quant_avx2_q8x_quantize;
	k->att_scores = quant_avx2_att_scores;
	k->att_pv = quant_avx2_att_pv;
	k->softmax = quant_avx2_softmax;
	k->dot_f32 = quant_avx2_dot_f32;
	k->axpy_f32 = quant_avx2_axpy_f32;
	k->scale_f32 = quant_avx2_scale_f32;
	k->swiglu = quant_avx2_swiglu;
	k->gemm_small = quant_avx2_gemm_small;
}
