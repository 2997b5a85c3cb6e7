/*
 * kernels-avx512.c: AVX-512 (F, BW, VL) kernels: the same set as
 * kernels-avx2.c's float kernels, 16 floats wide.  The int8-activation
 * tiles stay 256 bits wide (the table starts as a copy of the AVX2 table):
 * they hold a product's eight accumulators in registers, one lane per row,
 * and give every product the same arithmetic on every x86 machine.  With
 * VNNI, the packed tiles sum with vpdpbusd (DESIGN 5).
 *
 * Compiled without -m flags like the AVX2 file: each function carries the
 * target attribute, is reached only through the table quant_avx512_fill()
 * fills when the CPU has AVX-512 F/BW/VL (and AVX2, FMA, F16C), and
 * passes only pointers and scalars across its boundary, since 512-bit
 * vectors may not cross into functions compiled for another target.
 *
 * DESIGN
 *
 * 1. The same structure as kernels-avx2.c (see its DESIGN): dequantizers
 *    bit-identical to the scalar references, dots within float rounding,
 *    bytes widened from memory, Q6_K unpacked through a byte buffer with
 *    32-byte operations; the float work is 16 wide.
 * 2. A Q6_K sub-block (16 elements) is exactly one vector, so its partial
 *    product is scaled with one multiply-add; a Q4_K/Q5_K sub-block (32)
 *    is two, plus one add for the sum of x the min needs.
 * 3. Hot spot: the widen, convert, fused multiply-add per 16 elements.
 * 4. Built with QUANT_AVX512_EMULATE (the tests' second build of quant.c
 *    and this file, mk/quant.am), the intrinsics below come from SIMDe,
 *    which computes each one with AVX2 or plain C, and quant.c reports
 *    AVX-512 wherever AVX2 runs.  So the same tests run this file's code
 *    on machines without AVX-512, such as the ones CI runs on.  The
 *    intrinsics SIMDe 0.7.4 lacks are defined in kernels-avx512-emu.h.
 * 5. With VNNI (Ice Lake, Sapphire Rapids and later, Zen 4), the packed
 *    products (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) take the tiles of
 *    kernels-mmqp.h summed with vpdpbusd, on 256-bit vectors like the AVX2
 *    ones, so a group of 8 rows stays one lane per row: per 4 bytes of 8
 *    rows and one input, one instruction in place of vpmaddubsw, vpmaddwd
 *    and vpaddd (Q8_0), or of vpmaddubsw and a 16-bit add (Q4_0 and the
 *    K-quants, whose sub-block sums then take one vpmulld by the scale).
 *    The sums are the same exact integers, so the outputs are the AVX2
 *    tiles' bits.
 */
#include <stddef.h>
#include <string.h>

#include "quant-internal.h"

#ifdef QUANT_AVX512_EMULATE
/* The tests' build for CPUs without AVX-512 (DESIGN 4). */
#pragma GCC target("avx2,fma,f16c")
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include "kernels-avx512-emu.h"
#define QUANT_AVX512
#else
#include <immintrin.h>
#define QUANT_AVX512 \
	__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#endif

QUANT_AVX512 static inline float
quant_avx512_hsum(__m512 v)
{
	__m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(
	    _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
	__m128 h = _mm_add_ps(_mm256_castps256_ps128(s),
	    _mm256_extractf128_ps(s, 1));

	h = _mm_add_ps(h, _mm_movehl_ps(h, h));
	h = _mm_add_ss(h, _mm_movehdup_ps(h));
	return _mm_cvtss_f32(h);
}

QUANT_AVX512 static inline float
quant_avx512_half(uint16_t h)
{
	return _cvtsh_ss(h);
}

/* 16 signed bytes at p, widened to floats. */
QUANT_AVX512 static inline __m512
quant_avx512_i8(const void *p)
{
	return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
	    _mm_loadu_si128((const __m128i *)p)));
}

/* ---- float vectors ------------------------------------------------- */

QUANT_AVX512 static float
quant_avx512_dot_f32(const float *a, const float *b, int64_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
		    _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
		    _mm512_loadu_ps(b + i + 16), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
		    _mm512_loadu_ps(b + i + 32), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
		    _mm512_loadu_ps(b + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
		    _mm512_loadu_ps(b + i), s0);
	sum = quant_avx512_hsum(_mm512_add_ps(_mm512_add_ps(s0, s1),
	    _mm512_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += a[i] * b[i];
	return sum;
}

QUANT_AVX512 static float
quant_avx512_dot_f32_row(const void *row, const float *x, int64_t n)
{
	return quant_avx512_dot_f32(row, x, n);
}

QUANT_AVX512 static void
quant_avx512_axpy_f32(float *y, float a, const float *x, int64_t n)
{
	__m512 va = _mm512_set1_ps(a);
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_fmadd_ps(va,
		    _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}

QUANT_AVX512 static void
quant_avx512_scale_f32(float *y, float a, int64_t n)
{
	__m512 va = _mm512_set1_ps(a);
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_mul_ps(va,
		    _mm512_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] *= a;
}

/*
 * 4 rows x 4 inputs: 16 accumulators; each step loads 8 vectors for 16
 * multiply-adds.  Left-over inputs go one at a time against the 4 rows,
 * left-over rows through the plain dot.
 */
QUANT_AVX512 static void
quant_avx512_gemm_small(const float *w, int64_t ldw, int nw, const float *x,
    int64_t ldx, int64_t nx, float *y, int64_t ldy, int64_t k)
{
	const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
	int64_t t = 0, k16 = k & ~(int64_t)15;

	if (nw != 4) {
		for (; t < nx; t++)
			for (int i = 0; i < nw; i++)
				y[t * ldy + i] = quant_avx512_dot_f32(w + i * ldw,
				    x + t * ldx, k);
		return;
	}
	for (; t + 4 <= nx; t += 4) {
		const float *x0 = x + t * ldx, *x1 = x0 + ldx;
		const float *x2 = x1 + ldx, *x3 = x2 + ldx;
		__m512 acc[4][4];

		for (int i = 0; i < 4; i++)
			for (int u = 0; u < 4; u++)
				acc[i][u] = _mm512_setzero_ps();
		for (int64_t j = 0; j < k16; j += 16) {
			__m512 v0 = _mm512_loadu_ps(x0 + j);
			__m512 v1 = _mm512_loadu_ps(x1 + j);
			__m512 v2 = _mm512_loadu_ps(x2 + j);
			__m512 v3 = _mm512_loadu_ps(x3 + j);
			__m512 r;

			r = _mm512_loadu_ps(w0 + j);
			acc[0][0] = _mm512_fmadd_ps(r, v0, acc[0][0]);
			acc[0][1] = _mm512_fmadd_ps(r, v1, acc[0][1]);
			acc[0][2] = _mm512_fmadd_ps(r, v2, acc[0][2]);
			acc[0][3] = _mm512_fmadd_ps(r, v3, acc[0][3]);
			r = _mm512_loadu_ps(w1 + j);
			acc[1][0] = _mm512_fmadd_ps(r, v0, acc[1][0]);
			acc[1][1] = _mm512_fmadd_ps(r, v1, acc[1][1]);
			acc[1][2] = _mm512_fmadd_ps(r, v2, acc[1][2]);
			acc[1][3] = _mm512_fmadd_ps(r, v3, acc[1][3]);
			r = _mm512_loadu_ps(w2 + j);
			acc[2][0] = _mm512_fmadd_ps(r, v0, acc[2][0]);
			acc[2][1] = _mm512_fmadd_ps(r, v1, acc[2][1]);
			acc[2][2] = _mm512_fmadd_ps(r, v2, acc[2][2]);
			acc[2][3] = _mm512_fmadd_ps(r, v3, acc[2][3]);
			r = _mm512_loadu_ps(w3 + j);
			acc[3][0] = _mm512_fmadd_ps(r, v0, acc[3][0]);
			acc[3][1] = _mm512_fmadd_ps(r, v1, acc[3][1]);
			acc[3][2] = _mm512_fmadd_ps(r, v2, acc[3][2]);
			acc[3][3] = _mm512_fmadd_ps(r, v3, acc[3][3]);
		}
		for (int u = 0; u < 4; u++) {
			const float *xu = x + (t + u) * ldx;
			float *yu = y + (t + u) * ldy;

			for (int i = 0; i < 4; i++) {
				const float *wi = w + i * ldw;
				float s = quant_avx512_hsum(acc[i][u]);

				for (int64_t j = k16; j < k; j++)
					s += wi[j] * xu[j];
				yu[i] = s;
			}
		}
	}
	for (; t < nx; t++) {
		const float *x0 = x + t * ldx;
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

		for (int64_t j = 0; j < k16; j += 16) {
			__m512 v = _mm512_loadu_ps(x0 + j);

			a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), v, a0);
			a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), v, a1);
			a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), v, a2);
			a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), v, a3);
		}
		y[t * ldy + 0] = quant_avx512_hsum(a0);
		y[t * ldy + 1] = quant_avx512_hsum(a1);
		y[t * ldy + 2] = quant_avx512_hsum(a2);
		y[t * ldy + 3] = quant_avx512_hsum(a3);
		for (int64_t j = k16; j < k; j++) {
			y[t * ldy + 0] += w0[j] * x0[j];
			y[t * ldy + 1] += w1[j] * x0[j];
			y[t * ldy + 2] += w2[j] * x0[j];
			y[t * ldy + 3] += w3[j] * x0[j];
		}
	}
}

/* ---- F16, BF16 ----------------------------------------------------- */

QUANT_AVX512 static inline __m512
quant_avx512_f16x16(const uint16_t *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

QUANT_AVX512 static inline __m512
quant_avx512_bf16x16(const uint16_t *p)
{
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
	    _mm256_loadu_si256((const __m256i *)p)), 16));
}

QUANT_AVX512 static float
quant_avx512_dot_f16(const void *row, const float *x, int64_t n)
{
	const uint16_t *w = row;
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(quant_avx512_f16x16(w + i),
		    _mm512_loadu_ps(x + i), s0);
		s1 = _mm512_fmadd_ps(quant_avx512_f16x16(w + i + 16),
		    _mm512_loadu_ps(x + i + 16), s1);
		s2 = _mm512_fmadd_ps(quant_avx512_f16x16(w + i + 32),
		    _mm512_loadu_ps(x + i + 32), s2);
		s3 = _mm512_fmadd_ps(quant_avx512_f16x16(w + i + 48),
		    _mm512_loadu_ps(x + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(quant_avx512_f16x16(w + i),
		    _mm512_loadu_ps(x + i), s0);
	sum = quant_avx512_hsum(_mm512_add_ps(_mm512_add_ps(s0, s1),
	    _mm512_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += quant_avx512_half(w[i]) * x[i];
	return sum;
}

QUANT_AVX512 static void
quant_avx512_dequant_f16(const void *src, float *dst, int64_t n)
{
	const uint16_t *w = src;
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, quant_avx512_f16x16(w + i));
	for (; i < n; i++)
		dst[i] = quant_avx512_half(w[i]);
}

QUANT_AVX512 static float
quant_avx512_dot_bf16(const void *row, const float *x, int64_t n)
{
	const uint16_t *w = row;
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	int64_t i = 0;
	float sum;

	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(quant_avx512_bf16x16(w + i),
		    _mm512_loadu_ps(x + i), s0);
		s1 = _mm512_fmadd_ps(quant_avx512_bf16x16(w + i + 16),
		    _mm512_loadu_ps(x + i + 16), s1);
		s2 = _mm512_fmadd_ps(quant_avx512_bf16x16(w + i + 32),
		    _mm512_loadu_ps(x + i + 32), s2);
		s3 = _mm512_fmadd_ps(quant_avx512_bf16x16(w + i + 48),
		    _mm512_loadu_ps(x + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(quant_avx512_bf16x16(w + i),
		    _mm512_loadu_ps(x + i), s0);
	sum = quant_avx512_hsum(_mm512_add_ps(_mm512_add_ps(s0, s1),
	    _mm512_add_ps(s2, s3)));
	for (; i < n; i++)
		sum += quant_bf16_to_f32(w[i]) * x[i];
	return sum;
}

QUANT_AVX512 static void
quant_avx512_dequant_bf16(const void *src, float *dst, int64_t n)
{
	const uint16_t *w = src;
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, quant_avx512_bf16x16(w + i));
	for (; i < n; i++)
		dst[i] = quant_bf16_to_f32(w[i]);
}

/* ---- Q8_0, Q4_0 ---------------------------------------------------- */

QUANT_AVX512 static float
quant_avx512_dot_q8_0(const void *row, const float *x, int64_t n)
{
	const struct block_q8_0 *b = row;
	__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
	int64_t nb = n / QK8_0, i = 0;

	for (; i + 2 <= nb; i += 2, b += 2, x += 2 * QK8_0) {
		__m512 p0, p1;

		p0 = _mm512_mul_ps(quant_avx512_i8(b[0].qs), _mm512_loadu_ps(x));
		p1 = _mm512_mul_ps(quant_avx512_i8(b[1].qs),
		    _mm512_loadu_ps(x + 32));
		p0 = _mm512_fmadd_ps(quant_avx512_i8(b[0].qs + 16),
		    _mm512_loadu_ps(x + 16), p0);
		p1 = _mm512_fmadd_ps(quant_avx512_i8(b[1].qs + 16),
		    _mm512_loadu_ps(x + 48), p1);
		acc0 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b[0].d)),
		    p0, acc0);
		acc1 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b[1].d)),
		    p1, acc1);
	}
	for (; i < nb; i++, b++, x += QK8_0) {
		__m512 p;

		p = _mm512_mul_ps(quant_avx512_i8(b->qs), _mm512_loadu_ps(x));
		p = _mm512_fmadd_ps(quant_avx512_i8(b->qs + 16),
		    _mm512_loadu_ps(x + 16), p);
		acc0 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b->d)),
		    p, acc0);
	}
	return quant_avx512_hsum(_mm512_add_ps(acc0, acc1));
}

QUANT_AVX512 static void
quant_avx512_dequant_q8_0(const void *src, float *dst, int64_t n)
{
	const struct block_q8_0 *b = src;

	for (int64_t i = 0; i < n / QK8_0; i++, b++, dst += QK8_0) {
		__m512 d = _mm512_set1_ps(quant_avx512_half(b->d));

		_mm512_storeu_ps(dst, _mm512_mul_ps(d, quant_avx512_i8(b->qs)));
		_mm512_storeu_ps(dst + 16, _mm512_mul_ps(d,
		    quant_avx512_i8(b->qs + 16)));
	}
}

/*
 * The two halves of a Q4_0 block minus 8, as floats: the 16 bytes are
 * widened straight from memory (a cheap load-and-widen everywhere, where
 * widening a register is a cross-lane shuffle) and split into nibbles as
 * 32-bit lanes.
 */
QUANT_AVX512 static inline void
quant_avx512_q4_0(const struct block_q4_0 *b, __m512 *lo, __m512 *hi)
{
	__m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128(
	    (const __m128i *)b->qs));
	__m512i e8 = _mm512_set1_epi32(8);

	*lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(a,
	    _mm512_set1_epi32(0xf)), e8));
	*hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(a, 4), e8));
}

QUANT_AVX512 static float
quant_avx512_dot_q4_0(const void *row, const float *x, int64_t n)
{
	const struct block_q4_0 *b = row;
	__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
	int64_t nb = n / QK4_0, i = 0;

	for (; i + 2 <= nb; i += 2, b += 2, x += 2 * QK4_0) {
		__m512 l0, h0, l1, h1, p0, p1;

		quant_avx512_q4_0(&b[0], &l0, &h0);
		quant_avx512_q4_0(&b[1], &l1, &h1);
		p0 = _mm512_mul_ps(l0, _mm512_loadu_ps(x));
		p1 = _mm512_mul_ps(l1, _mm512_loadu_ps(x + 32));
		p0 = _mm512_fmadd_ps(h0, _mm512_loadu_ps(x + 16), p0);
		p1 = _mm512_fmadd_ps(h1, _mm512_loadu_ps(x + 48), p1);
		acc0 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b[0].d)),
		    p0, acc0);
		acc1 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b[1].d)),
		    p1, acc1);
	}
	for (; i < nb; i++, b++, x += QK4_0) {
		__m512 l, h, p;

		quant_avx512_q4_0(b, &l, &h);
		p = _mm512_mul_ps(l, _mm512_loadu_ps(x));
		p = _mm512_fmadd_ps(h, _mm512_loadu_ps(x + 16), p);
		acc0 = _mm512_fmadd_ps(_mm512_set1_ps(quant_avx512_half(b->d)),
		    p, acc0);
	}
	return quant_avx512_hsum(_mm512_add_ps(acc0, acc1));
}

QUANT_AVX512 static void
quant_avx512_dequant_q4_0(const void *src, float *dst, int64_t n)
{
	const struct block_q4_0 *b = src;

	for (int64_t i = 0; i < n / QK4_0; i++, b++, dst += QK4_0) {
		__m512 d = _mm512_set1_ps(quant_avx512_half(b->d)), l, h;

		quant_avx512_q4_0(b, &l, &h);
		_mm512_storeu_ps(dst, _mm512_mul_ps(d, l));
		_mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, h));
	}
}

/* ---- K-quants ------------------------------------------------------ */

/*
 * The 8 scales and 8 mins of a Q4_K/Q5_K block (quant_scale_min_k4()) as
 * floats d*sc[j] and dmin*m[j], unpacked a word at a time: the low 6 bits
 * of bytes 0-3 and 4-7 are sc and m of sub-blocks 0-3; for sub-blocks 4-7
 * the nibbles of bytes 8-11 give the low 4 bits and the top 2 bits of
 * bytes 0-3 (sc) and 4-7 (m) the high 2.  sd and sm are contiguous:
 * sdm[0..7] scales, sdm[8..15] mins.
 */
QUANT_AVX512 static inline void
quant_avx512_k45_scales(const uint8_t *scales, float d, float dmin,
    float *sdm)
{
	uint32_t u0, u1, u2;
	__m128i v;
	__m512 f;

	memcpy(&u0, scales, 4);
	memcpy(&u1, scales + 4, 4);
	memcpy(&u2, scales + 8, 4);
	v = _mm_set_epi32((int)(((u2 >> 4) & 0x0f0f0f0f) |
	    ((u1 >> 2) & 0x30303030)), (int)(u1 & 0x3f3f3f3f),
	    (int)((u2 & 0x0f0f0f0f) | ((u0 >> 2) & 0x30303030)),
	    (int)(u0 & 0x3f3f3f3f));
	f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
	_mm512_storeu_ps(sdm, _mm512_mul_ps(f, _mm512_mask_blend_ps(0xff00,
	    _mm512_set1_ps(d), _mm512_set1_ps(dmin))));
}

/*
 * Quants 16k..16k+15 of sub-blocks 2c and 2c+1 of a Q4_K or Q5_K block,
 * as floats: the low and high nibbles of qs[32c + 16k ..], plus 16 where
 * the qh bit is set.  h, for Q5_K only, holds qh[16k ..] widened and
 * shifted right by 2c, so the bits wanted are bits 0 and 1.
 */
QUANT_AVX512 static inline void
quant_avx512_k45_q16(const uint8_t *qs, const __m512i *h, __m512 *lo,
    __m512 *hi)
{
	__m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
	__m512i l = _mm512_and_si512(a, _mm512_set1_epi32(0xf));
	__m512i u = _mm512_srli_epi32(a, 4);

	if (h != NULL) {
		l = _mm512_or_si512(l, _mm512_slli_epi32(_mm512_and_si512(*h,
		    _mm512_set1_epi32(1)), 4));
		u = _mm512_or_si512(u, _mm512_slli_epi32(_mm512_and_si512(*h,
		    _mm512_set1_epi32(2)), 3));
	}
	*lo = _mm512_cvtepi32_ps(l);
	*hi = _mm512_cvtepi32_ps(u);
}

/*
 * One Q4_K (qh == NULL) or Q5_K block: its dot with x, accumulated into
 * acc (scale times sum(q x)) and macc (min times sum(x)), or, when dst is
 * not NULL, its 256 dequantized values.  Always inlined with a constant
 * qh, so the Q4_K version carries no trace of the fifth bit.
 */
QUANT_AVX512 static inline __attribute__((always_inline)) void
quant_avx512_k45_block(uint16_t dh, uint16_t dminh, const uint8_t *scales,
    const uint8_t *qs, const uint8_t *qh, const float *x, __m512 *acc,
    __m512 *macc, float *dst)
{
	float sdm[16];
	__m512i h[2];

	quant_avx512_k45_scales(scales, quant_avx512_half(dh),
	    quant_avx512_half(dminh), sdm);
	if (qh != NULL) {
		h[0] = _mm512_cvtepu8_epi32(_mm_loadu_si128(
		    (const __m128i *)qh));
		h[1] = _mm512_cvtepu8_epi32(_mm_loadu_si128(
		    (const __m128i *)(qh + 16)));
	}
	for (int c = 0; c < 4; c++) {
		__m512 dl = _mm512_set1_ps(sdm[2 * c]);
		__m512 du = _mm512_set1_ps(sdm[2 * c + 1]);
		__m512 ml = _mm512_set1_ps(sdm[8 + 2 * c]);
		__m512 mu = _mm512_set1_ps(sdm[8 + 2 * c + 1]);
		__m512 l0, u0, l1, u1, x0, x1, x2, x3;

		quant_avx512_k45_q16(qs + 32 * c, qh != NULL ? &h[0] : NULL,
		    &l0, &u0);
		quant_avx512_k45_q16(qs + 32 * c + 16, qh != NULL ? &h[1] : NULL,
		    &l1, &u1);
		if (qh != NULL) {
			h[0] = _mm512_srli_epi32(h[0], 2);
			h[1] = _mm512_srli_epi32(h[1], 2);
		}
		if (dst != NULL) {
			/* d q is exact: one rounding, as d q - m */
			_mm512_storeu_ps(dst + 64 * c, _mm512_fmsub_ps(dl, l0, ml));
			_mm512_storeu_ps(dst + 64 * c + 16,
			    _mm512_fmsub_ps(dl, l1, ml));
			_mm512_storeu_ps(dst + 64 * c + 32,
			    _mm512_fmsub_ps(du, u0, mu));
			_mm512_storeu_ps(dst + 64 * c + 48,
			    _mm512_fmsub_ps(du, u1, mu));
			continue;
		}
		x0 = _mm512_loadu_ps(x + 64 * c);
		x1 = _mm512_loadu_ps(x + 64 * c + 16);
		x2 = _mm512_loadu_ps(x + 64 * c + 32);
		x3 = _mm512_loadu_ps(x + 64 * c + 48);
		acc[0] = _mm512_fmadd_ps(dl, _mm512_fmadd_ps(l1, x1,
		    _mm512_mul_ps(l0, x0)), acc[0]);
		acc[1] = _mm512_fmadd_ps(du, _mm512_fmadd_ps(u1, x3,
		    _mm512_mul_ps(u0, x2)), acc[1]);
		macc[0] = _mm512_fmadd_ps(ml, _mm512_add_ps(x0, x1), macc[0]);
		macc[1] = _mm512_fmadd_ps(mu, _mm512_add_ps(x2, x3), macc[1]);
	}
}

QUANT_AVX512 static float
quant_avx512_dot_q4_K(const void *row, const float *x, int64_t n)
{
	const struct block_q4_K *b = row;
	__m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };
	__m512 macc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K)
		quant_avx512_k45_block(b->d, b->dmin, b->scales, b->qs, NULL, x,
		    acc, macc, NULL);
	return quant_avx512_hsum(_mm512_sub_ps(_mm512_add_ps(acc[0], acc[1]),
	    _mm512_add_ps(macc[0], macc[1])));
}

QUANT_AVX512 static float
quant_avx512_dot_q5_K(const void *row, const float *x, int64_t n)
{
	const struct block_q5_K *b = row;
	__m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };
	__m512 macc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K)
		quant_avx512_k45_block(b->d, b->dmin, b->scales, b->qs, b->qh, x,
		    acc, macc, NULL);
	return quant_avx512_hsum(_mm512_sub_ps(_mm512_add_ps(acc[0], acc[1]),
	    _mm512_add_ps(macc[0], macc[1])));
}

QUANT_AVX512 static void
quant_avx512_dequant_q4_K(const void *src, float *dst, int64_t n)
{
	const struct block_q4_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K)
		quant_avx512_k45_block(b->d, b->dmin, b->scales, b->qs, NULL,
		    NULL, NULL, NULL, dst);
}

QUANT_AVX512 static void
quant_avx512_dequant_q5_K(const void *src, float *dst, int64_t n)
{
	const struct block_q5_K *b = src;

	for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K)
		quant_avx512_k45_block(b->d, b->dmin, b->scales, b->qs, b->qh,
		    NULL, NULL, NULL, dst);
}

/*
 * The 256 quants of a Q6_K block minus 32, as signed bytes in element
 * order, and the 16 sub-block scales d*sc.
 */
QUANT_AVX512 static inline void
quant_avx512_q6_K_unpack(const struct block_q6_K *b, int8_t *q, float *sd)
{
	__m256i m4 = _mm256_set1_epi8(0xf), m3 = _mm256_set1_epi8(3);
	__m256i mc = _mm256_set1_epi8(0x0c), m30 = _mm256_set1_epi8(0x30);
	__m256i mc0 = _mm256_set1_epi8((char)0xc0), e32 = _mm256_set1_epi8(32);
	float d = quant_avx512_half(b->d);

	for (int h = 0; h < 2; h++) {
		__m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
		__m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql +
		    64 * h + 32));
		__m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
		__m256i q1, q2, q3, q4;

		q1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
		    _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
		q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
		    _mm256_slli_epi16(_mm256_and_si256(hb, mc), 2));
		q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4),
		    m4), _mm256_and_si256(hb, m30));
		q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4),
		    m4), _mm256_srli_epi16(_mm256_and_si256(hb, mc0), 2));
		_mm256_store_si256((__m256i *)(q + 128 * h),
		    _mm256_sub_epi8(q1, e32));
		_mm256_store_si256((__m256i *)(q + 128 * h + 32),
		    _mm256_sub_epi8(q2, e32));
		_mm256_store_si256((__m256i *)(q + 128 * h + 64),
		    _mm256_sub_epi8(q3, e32));
		_mm256_store_si256((__m256i *)(q + 128 * h + 96),
		    _mm256_sub_epi8(q4, e32));
	}
	_mm512_storeu_ps(sd, _mm512_mul_ps(_mm512_set1_ps(d),
	    quant_avx512_i8(b->scales)));
}

QUANT_AVX512 static float
quant_avx512_dot_q6_K(const void *row, const float *x, int64_t n)
{
	const struct block_q6_K *b = row;
	__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
	int8_t q[QK_K] __attribute__((aligned(32)));
	float sd[16];

	for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
		quant_avx512_q6_K_unpack(b, q, sd);
		for (int j = 0; j < 16; j += 2) {
			acc0 = _mm512_fmadd_ps(_mm512_set1_ps(sd[j]),
			    _mm512_mul_ps(quant_avx512_i8(q + 16 * j),
			    _mm512_loadu_ps(x + 16 * j)), acc0);
			acc1 = _mm512_fmadd_ps(_mm512_set1_ps(sd[j + 1]),
			    _mm512_mul_ps(quant_avx512_i8(q + 16 * j + 16),
			    _mm512_loadu_ps(x + 16 * j + 16)), acc1);
		}
	}
	return quant_avx512_hsum(_mm512_add_ps(acc0, acc1));
}

QUANT_AVX512 static void
quant_avx512_dequant_q6_K(const void *src, float *dst, int64_t n)
{
	const struct block_q6_K *b = src;
	int8_t q[QK_K] __attribute__((aligned(32)));
	float sd[16];

	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		quant_avx512_q6_K_unpack(b, q, sd);
		for (int j = 0; j < 16; j++, dst += 16)
			_mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_set1_ps(sd[j]),
			    quant_avx512_i8(q + 16 * j)));
	}
}

/* ---- the packed int8 tiles with AVX-512 VNNI (DESIGN 5) ------------ */

/* The sanitizer and fuzzing builds leave them out (QUANT_NO_VNNI): these
 * unrolled tiles took 95 s each there to compile, for code that CI's
 * machines, without VNNI, never run.  The emulated build tests them. */
#ifndef QUANT_NO_VNNI
#ifdef QUANT_AVX512_EMULATE
#define QUANT_VNNI
#else
#define QUANT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl," \
	"avx512vnni,avx2,fma,f16c")))
#endif
#define QUANT_MMQP_KERNEL	QUANT_VNNI static inline \
	__attribute__((always_inline))
#define QUANT_MMQP_ENTRY_ATTR	QUANT_VNNI static
#define QUANT_MMQP_FN(name)	quant_vnni_##name
#define QUANT_MMQP_VNNI		1
#include "kernels-mmqp.h"
#endif /* QUANT_NO_VNNI */

void
quant_avx512_fill(struct quant_kernels *k, int vnni)
{
	k->isa = QUANT_ISA_AVX512;
#ifndef QUANT_NO_VNNI
	if (vnni) {
		k->mmqp[GGML_TYPE_Q8_0] = quant_vnni_mmqp_q8_0;
		k->mmqp[GGML_TYPE_Q4_0] = quant_vnni_mmqp_q4_0;
		k->mmqp[GGML_TYPE_Q4_K] = quant_vnni_mmqp_q4_K;
		k->mmqp[GGML_TYPE_Q5_K] = quant_vnni_mmqp_q5_K;
		k->mmqp[GGML_TYPE_Q6_K] = quant_vnni_mmqp_q6_K;
	}
#else
	(void)vnni;
#endif
	k->dot[GGML_TYPE_F32] = quant_avx512_dot_f32_row;
	k->dot[GGML_TYPE_F16] = quant_avx512_dot_f16;
	k->dot[GGML_TYPE_BF16] = quant_avx512_dot_bf16;
	k->dot[GGML_TYPE_Q8_0] = quant_avx512_dot_q8_0;
	k->dot[GGML_TYPE_Q4_0] = quant_avx512_dot_q4_0;
	k->dot[GGML_TYPE_Q4_K] = quant_avx512_dot_q4_K;
	k->dot[GGML_TYPE_Q5_K] = quant_avx512_dot_q5_K;
	k->dot[GGML_TYPE_Q6_K] = quant_avx512_dot_q6_K;
	k->dequant[GGML_TYPE_F16] = quant_avx512_dequant_f16;
	k->dequant[GGML_TYPE_BF16] = quant_avx512_dequant_bf16;
	k->dequant[GGML_TYPE_Q8_0] = quant_avx512_dequant_q8_0;
	k->dequant[GGML_TYPE_Q4_0] = quant_avx512_dequant_q4_0;
	k->dequant[GGML_TYPE_Q4_K] = quant_avx512_dequant_q4_K;
	k->dequant[GGML_TYPE_Q5_K] = quant_avx512_dequant_q5_K;
	k->dequant[GGML_TYPE_Q6_K] = quant_avx512_dequant_q6_K;
	k->dot_f32 = quant_avx512_dot_f32;
	k->axpy_f32 = quant_avx512_axpy_f32;
	k->scale_f32 = quant_avx512_scale_f32;
	k->gemm_small = quant_avx512_gemm_small;
}
