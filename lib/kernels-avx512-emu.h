/*
 * kernels-avx512-emu.h: for the tests' emulated build (kernels-avx512.c,
 * DESIGN 4), the AVX-512 intrinsics kernels-avx512.c uses that SIMDe 0.7.4
 * (Debian 12's libsimde-dev) does not define, each written lane by lane
 * from its definition in Intel's intrinsics guide, and SIMDe's vpdpbusd
 * put out of line.  Included only after SIMDe's headers, so that these
 * names replace the compiler's.
 */
#ifndef KERNELS_AVX512_EMU_H
#define KERNELS_AVX512_EMU_H

#include <stdint.h>
#include <string.h>

/* 16 int32 lanes to float, rounded to nearest as the instruction does */
static inline simde__m512
quant_emu_cvtepi32_ps(simde__m512i a)
{
	int32_t i[16];
	float f[16];
	simde__m512 r;

	memcpy(i, &a, sizeof i);
	for (int k = 0; k < 16; k++)
		f[k] = (float)i[k];
	memcpy(&r, f, sizeof r);
	return r;
}

/* 16 bytes, signed or not, or 16 uint16, widened to int32 lanes */
#define QUANT_EMU_WIDEN(name, in_t, src_t)				\
static inline simde__m512i						\
name(src_t a)								\
{									\
	in_t b[16];							\
	int32_t i[16];							\
	simde__m512i r;							\
									\
	memcpy(b, &a, sizeof b);					\
	for (int k = 0; k < 16; k++)					\
		i[k] = b[k];						\
	memcpy(&r, i, sizeof r);					\
	return r;							\
}
QUANT_EMU_WIDEN(quant_emu_cvtepi8_epi32, int8_t, simde__m128i)
QUANT_EMU_WIDEN(quant_emu_cvtepu8_epi32, uint8_t, simde__m128i)
QUANT_EMU_WIDEN(quant_emu_cvtepu16_epi32, uint16_t, simde__m256i)
#undef QUANT_EMU_WIDEN

/* 16 halves to float: two conversions of 8 (F16C, through SIMDe) */
static inline simde__m512
quant_emu_cvtph_ps(simde__m256i a)
{
	simde__m128i h[2];
	simde__m256 f[2];
	simde__m512 r;

	memcpy(h, &a, sizeof h);
	f[0] = simde_mm256_cvtph_ps(h[0]);
	f[1] = simde_mm256_cvtph_ps(h[1]);
	memcpy(&r, f, sizeof r);
	return r;
}

/* vpdpbusd through SIMDe, out of line: the packed tiles use it in about
 * 1800 places once unrolled, and SIMDe's body inlined in each made this
 * file take minutes to compile */
static __attribute__((noinline)) simde__m256i
quant_emu_dpbusd(simde__m256i src, simde__m256i a, simde__m256i b)
{
	return simde_mm256_dpbusd_epi32(src, a, b);
}

#undef _mm256_dpbusd_epi32
#define _mm256_dpbusd_epi32(s, a, b) quant_emu_dpbusd(s, a, b)
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps(a)	quant_emu_cvtepi32_ps(a)
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32(a)	quant_emu_cvtepi8_epi32(a)
#undef _mm512_cvtepu8_epi32
#define _mm512_cvtepu8_epi32(a)	quant_emu_cvtepu8_epi32(a)
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32(a) quant_emu_cvtepu16_epi32(a)
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps(a)	quant_emu_cvtph_ps(a)

#endif /* KERNELS_AVX512_EMU_H */
