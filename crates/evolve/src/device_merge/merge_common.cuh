// Shared by evomerge's merge kernels (prepended to each kernel source before NVRTC or nvcc compiles it): loads of
// the stacked sources and stores of the output, bf16 (as unsigned short) or f32. The bf16 store rounds to nearest
// even, quiets NaNs, exactly as the `half` crate does on the CPU.

__device__ __forceinline__ float load_f32(const float* p, unsigned long long i) { return p[i]; }
__device__ __forceinline__ float load_bf16(const unsigned short* p, unsigned long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store_f32(float* p, unsigned long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_bf16(unsigned short* p, unsigned long long i, float v) {
    unsigned int x = __float_as_uint(v);
    unsigned short r;
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        r = (unsigned short)((x >> 16) | 0x0040u);
    } else if ((x & 0x8000u) != 0u && (x & (3u * 0x8000u - 1u)) != 0u) {
        r = (unsigned short)((x >> 16) + 1u);
    } else {
        r = (unsigned short)(x >> 16);
    }
    p[i] = r;
}
