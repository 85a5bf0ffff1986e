// The f32 FMA peak of this machine's cores, which the README's GFLOP/s shares are taken of:
// 12 independent FMA chains in registers (no memory traffic), with 256-bit and, where the CPU
// has AVX-512F, 512-bit vectors, on one thread and on one thread per core at once.
// Build and run: gcc -O3 -pthread scripts/fma_peak.c -o /tmp/fma && /tmp/fma
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define ITERS 20000000L
#define CHAINS 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float sink;

// The chains are twelve named variables (an array of them stayed in memory at -O2), each
// kept opaque to the compiler, which otherwise merged identical chains.
#define CHAIN_BODY(F)                                                                       \
    for (long n = 0; n < ITERS; n++) {                                                      \
        a0 = F(a0, m, c); a1 = F(a1, m, c); a2 = F(a2, m, c); a3 = F(a3, m, c);             \
        a4 = F(a4, m, c); a5 = F(a5, m, c); a6 = F(a6, m, c); a7 = F(a7, m, c);             \
        a8 = F(a8, m, c); a9 = F(a9, m, c); a10 = F(a10, m, c); a11 = F(a11, m, c);         \
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),   \
                         "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));   \
    }

__attribute__((target("avx2,fma"))) static double ymm(void) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = m, a1 = m, a2 = m, a3 = m, a4 = m, a5 = m, a6 = m, a7 = m, a8 = m, a9 = m,
           a10 = m, a11 = m;
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),
                     "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    double t0 = now();
    CHAIN_BODY(_mm256_fmadd_ps)
    double t = now() - t0;
    __m256 all = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                               _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    all = _mm256_add_ps(all, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    sink += _mm256_cvtss_f32(all);
    return 2.0 * 8 * CHAINS * ITERS / t / 1e9;
}

__attribute__((target("avx512f"))) static double zmm(void) {
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = m, a1 = m, a2 = m, a3 = m, a4 = m, a5 = m, a6 = m, a7 = m, a8 = m, a9 = m,
           a10 = m, a11 = m;
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),
                     "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    double t0 = now();
    CHAIN_BODY(_mm512_fmadd_ps)
    double t = now() - t0;
    __m512 all = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                               _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    all = _mm512_add_ps(all, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    sink += _mm512_cvtss_f32(all);
    return 2.0 * 16 * CHAINS * ITERS / t / 1e9;
}

static int wide;
static double result[64];

static void *worker(void *arg) {
    long cpu = (long)arg;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
    result[cpu] = wide ? zmm() : ymm();
    return 0;
}

static double run(int threads) {
    pthread_t t[64];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], 0, worker, (void *)i);
    double sum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], 0);
        sum += result[i];
    }
    return sum;
}

int main(void) {
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 64) cores = 64;
    __builtin_cpu_init();
    for (wide = 0; wide <= 1; wide++) {
        if (wide && !__builtin_cpu_supports("avx512f")) break;
        printf("%s: 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s\n", wide ? "zmm" : "ymm",
               run(1), cores, run(cores));
    }
    return sink == 12345.0f;
}
