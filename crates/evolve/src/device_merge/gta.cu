// The task-arithmetic family's merge of one tensor (task_arithmetic, dare_linear, dare_ties, ties), one thread per
// entry, for evomerge's candidate merge on the GPU. It mirrors the CPU kernel (crates/merge/src/methods/gta.rs)
// operation for operation: every add, multiply and divide is an explicit round-to-nearest intrinsic, so nothing
// is contracted into an FMA and the result equals the CPU's bit for bit; the DARE draw is the same counter-based
// SplitMix64 hash (crates/merge/src/sparsify.rs), so the masks are identical for the same seed; TIES keeps
// |delta| above the threshold and ties up to the tie cut, both found on the device (device_merge/mod.rs).
//
// Compiled after merge_common.cuh (loads and stores).
//
// SRC_T / LOAD: the stacked sources [1 + n_inputs, numel] (base first), bf16 (as unsigned short) or f32.
// DST_T / STORE: the output [numel], bf16 (rounded to nearest even, as the `half` crate does) or f32.

#define MAX_INPUTS 8

struct GtaParams {
    unsigned long long numel;
    unsigned long long key[MAX_INPUTS];
    unsigned long long cut[MAX_INPUTS];
    unsigned long long tie_cut[MAX_INPUTS];
    float weight[MAX_INPUTS];
    float scale[MAX_INPUTS];
    float threshold[MAX_INPUTS];
    unsigned int keep[MAX_INPUTS];        // 0 all, 1 none, 2 random (DARE), 3 magnitude (TIES)
    unsigned int scale_kind[MAX_INPUTS];  // 0 one, 1 divide, 2 multiply
    unsigned int n_inputs;
    unsigned int consensus;               // 0 none, 1 sum, 2 count
    unsigned int normalize;
    unsigned int has_lambda;
    float lambda;
    float plain_divisor;
};

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float sign_of(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

#define GTA_KERNEL(NAME, SRC_T, LOAD, DST_T, STORE)                                                           \
extern "C" __global__ void NAME(const SRC_T* src, DST_T* dst, const GtaParams p) {                            \
    const unsigned long long golden = 0x9e3779b97f4a7c15ULL;                                                 \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel;       \
         i += (unsigned long long)blockDim.x * gridDim.x) {                                                  \
        const float b = LOAD(src, i);                                                                        \
        float d[MAX_INPUTS];                                                                                 \
        for (unsigned int k = 0; k < p.n_inputs; ++k) {                                                      \
            const float delta = __fsub_rn(LOAD(src, (unsigned long long)(k + 1) * p.numel + i), b);          \
            bool keep = p.keep[k] == 0u;                                                                     \
            if (p.keep[k] == 2u) {                                                                           \
                keep = (mix64(p.key[k] + (i + 1ULL) * golden) >> 11) < p.cut[k];                             \
            } else if (p.keep[k] == 3u) {                                                                    \
                const float a = fabsf(delta);                                                                \
                keep = a > p.threshold[k] || (a == p.threshold[k] && i <= p.tie_cut[k]);                     \
            }                                                                                                \
            float v;                                                                                         \
            if (p.scale_kind[k] == 1u) {                                                                     \
                v = __fmul_rn(__fdiv_rn(delta, p.scale[k]), p.weight[k]);                                    \
            } else if (p.scale_kind[k] == 2u) {                                                              \
                v = __fmul_rn(__fmul_rn(delta, p.scale[k]), p.weight[k]);                                    \
            } else {                                                                                         \
                v = __fmul_rn(delta, p.weight[k]);                                                           \
            }                                                                                                \
            d[k] = keep ? v : 0.0f;                                                                          \
        }                                                                                                    \
        float mixed = 0.0f;                                                                                  \
        float divisor = p.plain_divisor;                                                                     \
        if (p.consensus == 0u) {                                                                             \
            for (unsigned int k = 0; k < p.n_inputs; ++k) mixed = __fadd_rn(mixed, d[k]);                    \
        } else {                                                                                             \
            float s = 0.0f;                                                                                  \
            for (unsigned int k = 0; k < p.n_inputs; ++k) {                                                  \
                s = __fadd_rn(s, p.consensus == 2u ? sign_of(d[k]) : d[k]);                                  \
            }                                                                                                \
            const float elected = s >= 0.0f ? 1.0f : -1.0f;                                                  \
            float weight_sum = 0.0f;                                                                         \
            for (unsigned int k = 0; k < p.n_inputs; ++k) {                                                  \
                const bool agree = __fmul_rn(d[k], elected) > 0.0f;                                          \
                mixed = __fadd_rn(mixed, agree ? d[k] : 0.0f);                                               \
                weight_sum = __fadd_rn(weight_sum, agree ? p.weight[k] : 0.0f);                              \
            }                                                                                                \
            divisor = weight_sum == 0.0f ? 1.0f : weight_sum;                                                \
        }                                                                                                    \
        float m = p.normalize ? __fdiv_rn(mixed, divisor) : mixed;                                           \
        if (p.has_lambda) m = __fmul_rn(m, p.lambda);                                                        \
        STORE(dst, i, __fadd_rn(b, m));                                                                      \
    }                                                                                                        \
}

GTA_KERNEL(gta_merge_bf16_bf16, unsigned short, load_bf16, unsigned short, store_bf16)
GTA_KERNEL(gta_merge_bf16_f32, unsigned short, load_bf16, float, store_f32)
GTA_KERNEL(gta_merge_f32_bf16, float, load_f32, unsigned short, store_bf16)
GTA_KERNEL(gta_merge_f32_f32, float, load_f32, float, store_f32)
