/* hooklab's fused statistics kernels: each reads its float32 input from memory once.
 *
 * Built at first use by hooklab/core/native.py with the machine's C compiler and loaded with
 * ctypes (no Python headers, no torch headers). Every function is reentrant; hl_moments,
 * hl_moments_many and hl_diff_copy split a large array over OpenMP threads (see NPART), and
 * hl_moments_many spreads small arrays over them; the others run on one thread.
 * Sums are taken in float32 over blocks of BLK elements (vectorised; the block's partial sums
 * stay small) and the block sums are added in float64.
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

/* out = [sum, sum of squares, min, max, nonzero count] of x[0..n), one thread.
 * If dst is not NULL, x is also copied into dst (block by block, summarised from the cache). */
static void moments_seq(const float *x, float *dst, int64_t n, double *out) {
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

/* Large arrays are cut into NPART fixed parts (at block boundaries), run by up to `threads`
 * OpenMP threads and added in a fixed order: a result depends on n only, never on the thread
 * count. Linked against the libgomp.so.1 torch has already loaded, the parts run on torch's
 * own (spinning) worker threads. */
#define NPART 8
#define PAR_MIN (1 << 18)

/* Part q of NPART of an array of n elements: it starts at *a and holds *m elements. */
static void part_bounds(int q, int64_t n, int64_t *a, int64_t *m) {
    int64_t per = ((n / NPART) / BLK) * BLK;
    *a = q * per;
    *m = q == NPART - 1 ? n - *a : per;
}

/* out = [sum, sum of squares, min, max, nonzero count] of x[0..n); dst as in moments_seq. */
void hl_moments(const float *x, float *dst, int64_t n, double *out, int threads) {
    if (n < PAR_MIN) {
        moments_seq(x, dst, n, out);
        return;
    }
    double part[NPART][5];
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int q = 0; q < NPART; q++) {
        int64_t a, m;
        part_bounds(q, n, &a, &m);
        moments_seq(x + a, dst != NULL ? dst + a : NULL, m, part[q]);
    }
    double s = 0, ss = 0, nz = 0, lo = INFINITY, hi = -INFINITY;
    for (int q = 0; q < NPART; q++) {
        s += part[q][0];
        ss += part[q][1];
        nz += part[q][4];
        if (part[q][2] < lo) lo = part[q][2];
        if (part[q][3] > hi) hi = part[q][3];
    }
    out[0] = s;
    out[1] = ss;
    out[2] = lo;
    out[3] = hi;
    out[4] = nz;
}

/* hl_moments of x[0..n) (n > 0) into out, and whether turning them into statistics needs the
 * array again: a non-finite moment, or a variance so small against the squared mean that the
 * sum-of-squares formula cancels (hooklab.core.stats then reads the array twice). The test is
 * looser than the Python one (2e-3 against 1e-3), so a borderline rounding of this compiler's
 * arithmetic only sends a tensor down the exact path; every tensor the Python test would send
 * there is sent (tests/core/test_native.py checks both on tensors at the threshold). */
int hl_moments_check(const float *x, int64_t n, double *out, int threads) {
    hl_moments(x, NULL, n, out, threads);
    double mean = out[0] / (double)n;
    double d = out[1] - (double)n * mean * mean;
    if (d < 0.0) d = 0.0; /* NaN stays NaN */
    double var = n > 1 ? d / (double)(n - 1) : 0.0;
    if (!(isfinite(out[2]) && isfinite(out[3]) && isfinite(mean) && isfinite(var))) return 1;
    return n > 1 && var < 2e-3 * mean * mean;
}

/* out[5 i .. 5 i + 5) = hl_moments of xs[i][0..ns[i]), for count arrays in one call (one
 * GIL release for the parameter gradients of a whole backward pass). Large arrays are split
 * as in hl_moments; the small ones are spread over the threads, one array per task: every
 * array's result is the one hl_moments gives it alone, whatever the thread count. */
void hl_moments_many(const float *const *xs, const int64_t *ns, int64_t count, double *out,
                     int threads) {
    for (int64_t i = 0; i < count; i++)
        if (ns[i] >= PAR_MIN) hl_moments(xs[i], NULL, ns[i], out + 5 * i, threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < count; i++)
        if (ns[i] < PAR_MIN) moments_seq(xs[i], NULL, ns[i], out + 5 * i);
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

static void diff_copy_seq(float *before, const float *now, int64_t n, double *out) {
    double acc_d = 0.0, acc_w = 0.0;
    for (int64_t i = 0; i < n; i += BLK) {
        int64_t m = n - i < BLK ? n - i : BLK;
        float *b = before + i;
        const float *p = now + i;
        float sd = 0.f, sw = 0.f;
#pragma omp simd reduction(+ : sd, sw)
        for (int64_t j = 0; j < m; j++) {
            float d = b[j] - p[j];
            sd += d * d;
            sw += p[j] * p[j];
            b[j] = p[j];
        }
        acc_d += sd;
        acc_w += sw;
    }
    out[0] = acc_d;
    out[1] = acc_w;
}

/* out = [sum of squares of before - now, sum of squares of now], and before = now: the update
 * of one step and the snapshot of the next in one read of each (parts as in hl_moments). */
void hl_diff_copy(float *before, const float *now, int64_t n, double *out, int threads) {
    if (n < PAR_MIN) {
        diff_copy_seq(before, now, n, out);
        return;
    }
    double part[NPART][2];
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int q = 0; q < NPART; q++) {
        int64_t a, m;
        part_bounds(q, n, &a, &m);
        diff_copy_seq(before + a, now + a, m, part[q]);
    }
    out[0] = out[1] = 0.0;
    for (int q = 0; q < NPART; q++) {
        out[0] += part[q][0];
        out[1] += part[q][1];
    }
}

/* hl_diff_copy of each (befores[i], nows[i], ns[i]) into out[2 i], out[2 i + 1], in one call:
 * the large arrays split as in hl_diff_copy, the small ones spread over the threads; each
 * result is the one hl_diff_copy gives it alone, whatever the thread count. */
void hl_diff_copy_many(float *const *befores, const float *const *nows, const int64_t *ns,
                       int64_t count, double *out, int threads) {
    for (int64_t i = 0; i < count; i++)
        if (ns[i] >= PAR_MIN) hl_diff_copy(befores[i], nows[i], ns[i], out + 2 * i, threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < count; i++)
        if (ns[i] < PAR_MIN) diff_copy_seq(befores[i], nows[i], ns[i], out + 2 * i);
}
