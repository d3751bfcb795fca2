/* hooklab's fused statistics kernels: each reads its float32 input from memory once.
 *
 * Built at first use by hooklab/core/native.py with the machine's C compiler and loaded with
 * ctypes (no Python headers, no torch headers). Every function is single-threaded and
 * reentrant. Sums are taken in float32 over blocks of BLK elements (vectorised; the block's
 * partial sums stay small) and the block sums are added in float64.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLK 2048

static void block_moments(const float *p, int64_t m, double *acc, float *lo, float *hi) {
    float bs = 0.f, bss = 0.f, bnz = 0.f, blo = INFINITY, bhi = -INFINITY;
#pragma omp simd reduction(+ : bs, bss, bnz) reduction(min : blo) reduction(max : bhi)
    for (int64_t j = 0; j < m; j++) {
        float v = p[j];
        bs += v;
        bss += v * v;
        bnz += (v != 0.0f) ? 1.0f : 0.0f; /* NaN counts as non-zero */
        blo = v < blo ? v : blo;
        bhi = v > bhi ? v : bhi;
    }
    acc[0] += bs;
    acc[1] += bss;
    acc[2] += bnz;
    if (blo < *lo) *lo = blo;
    if (bhi > *hi) *hi = bhi;
}

/* out = [sum, sum of squares, min, max, nonzero count] of x[0..n).
 * If dst is not NULL, x is also copied into dst (block by block, summarised from the cache). */
void hl_moments(const float *x, float *dst, int64_t n, double *out) {
    double acc[3] = {0.0, 0.0, 0.0};
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i += BLK) {
        int64_t m = n - i < BLK ? n - i : BLK;
        const float *p = x + i;
        if (dst != NULL) {
            memcpy(dst + i, p, (size_t)m * sizeof(float));
            p = dst + i;
        }
        block_moments(p, m, acc, &lo, &hi);
    }
    out[0] = acc[0];
    out[1] = acc[1];
    out[2] = lo;
    out[3] = hi;
    out[4] = acc[2];
}

/* x is a contiguous (N, C, inner) array: alive[c] |= some x[n, c, :] != 0 (NaN included).
 * A unit already alive is skipped and a unit's scan stops at its first non-zero value, so a
 * ReLU layer whose units are all alive costs a few reads per unit. */
void hl_alive_units(const float *x, int64_t N, int64_t C, int64_t inner, uint8_t *alive) {
    for (int64_t c = 0; c < C; c++) {
        if (alive[c]) continue;
        for (int64_t s = 0; s < N && !alive[c]; s++) {
            const float *p = x + (s * C + c) * inner;
            for (int64_t j = 0; j < inner; j++) {
                if (p[j] != 0.0f) {
                    alive[c] = 1;
                    break;
                }
            }
        }
    }
}

/* dst = src and return the sum of squares of src (one read of src). */
double hl_copy_sumsq(const float *src, float *dst, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i += BLK) {
        int64_t m = n - i < BLK ? n - i : BLK;
        memcpy(dst + i, src + i, (size_t)m * sizeof(float));
        const float *p = dst + i;
        float b = 0.f;
#pragma omp simd reduction(+ : b)
        for (int64_t j = 0; j < m; j++) b += p[j] * p[j];
        acc += b;
    }
    return acc;
}

/* Sum of squares of a - b (nothing written). */
double hl_diff_sumsq(const float *a, const float *b, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i += BLK) {
        int64_t m = n - i < BLK ? n - i : BLK;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < m; j++) {
            float d = a[i + j] - b[i + j];
            s += d * d;
        }
        acc += s;
    }
    return acc;
}
