// A merge of one tensor that is a fixed weighted sum of its rows (linear; slerp with its per-tensor coefficients),
// one thread per entry, for evomerge's candidate merge on the GPU. It mirrors the CPU kernel
// (`WeightedSum::apply` in crates/merge/src/methods/elementwise.rs) operation for operation: every add, multiply,
// fused multiply-add and divide is an explicit round-to-nearest intrinsic, so nothing is contracted differently
// and the result equals the CPU's bit for bit.
//
// Compiled after merge_common.cuh (loads and stores).
//
// SRC_T / LOAD: the stacked rows [n_rows, numel], bf16 (as unsigned short) or f32.
// DST_T / STORE: the output [numel], bf16 (rounded to nearest even, as the `half` crate does) or f32.

#define MAX_ROWS 9

struct SumParams {
    unsigned long long numel;
    float coefficient[MAX_ROWS];
    unsigned int n_rows;
    unsigned int from_zero;   // 1: 0 + c0 x0 + ...; 0: c0 x0 + ...
    unsigned int fused;       // c x + acc in one rounding
    unsigned int has_divisor;
    float divisor;
};

#define SUM_KERNEL(NAME, SRC_T, LOAD, DST_T, STORE)                                                           \
extern "C" __global__ void NAME(const SRC_T* src, DST_T* dst, const SumParams p) {                            \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel;       \
         i += (unsigned long long)blockDim.x * gridDim.x) {                                                  \
        float acc = 0.0f;                                                                                    \
        unsigned int k = 0;                                                                                  \
        if (!p.from_zero && p.n_rows > 0u) {                                                                 \
            acc = __fmul_rn(p.coefficient[0], LOAD(src, i));                                                 \
            k = 1;                                                                                           \
        }                                                                                                    \
        for (; k < p.n_rows; ++k) {                                                                          \
            const float x = LOAD(src, (unsigned long long)k * p.numel + i);                                  \
            acc = p.fused ? __fmaf_rn(x, p.coefficient[k], acc) : __fadd_rn(acc, __fmul_rn(x, p.coefficient[k])); \
        }                                                                                                    \
        if (p.has_divisor) acc = __fdiv_rn(acc, p.divisor);                                                  \
        STORE(dst, i, acc);                                                                                  \
    }                                                                                                        \
}

SUM_KERNEL(sum_merge_bf16_bf16, unsigned short, load_bf16, unsigned short, store_bf16)
SUM_KERNEL(sum_merge_bf16_f32, unsigned short, load_bf16, float, store_f32)
SUM_KERNEL(sum_merge_f32_bf16, float, load_f32, unsigned short, store_bf16)
SUM_KERNEL(sum_merge_f32_f32, float, load_f32, float, store_f32)
