//! The core of grouped-query attention for f32 on the CPU, fused: for each (batch row, key-value head) one task
//! computes the scores of the query heads sharing that kv head, the scaled, masked softmax and the weighted sum
//! of values, without materialising `[b, heads, q, t]` tensors between candle operations.

use crate::cpu_matmul::PackedMatrix;
use crate::cpu_ops::{parallel_for, softmax_row, SendPtr};

/// Sizes of one attention call. Query heads `h * group .. (h + 1) * group` share key-value head `h`
/// (transformers' `repeat_kv`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Query positions of this call.
    pub q_len: usize,
    /// Key positions (cached + new).
    pub kv_len: usize,
    pub head_dim: usize,
}

/// `softmax(q k^T * scale + mask) v` for `q` `[b, heads, q_len, hd]`, `k` and `v` `[b, kv_heads, kv_len, hd]`
/// (`q` contiguous; `k` and `v` made of `b * kv_heads` contiguous `[kv_len, hd]` blocks that start `kv_block_stride`
/// elements apart, so a view into a preallocated KV cache needs no copy), `mask` `[mask_batch, 1, q_len, kv_len]` with `mask_batch` 1 or `b`. Returns
/// `[b, heads, q_len, hd]`.
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_block_stride: usize,
    d: AttentionDims,
    scale: f32,
    mask: Option<(&[f32], usize)>,
) -> Vec<f32> {
    let AttentionDims {
        batch,
        heads,
        kv_heads,
        q_len,
        kv_len,
        head_dim: hd,
    } = d;
    assert!(
        kv_heads > 0 && heads % kv_heads == 0,
        "attention: {heads} heads over {kv_heads} kv heads"
    );
    assert_eq!(
        q.len(),
        batch * heads * q_len * hd,
        "attention: q does not match its shape"
    );
    assert!(
        kv_block_stride >= kv_len * hd
            && k.len() == (batch * kv_heads).saturating_sub(1) * kv_block_stride + kv_len * hd,
        "attention: k does not match its shape"
    );
    assert_eq!(v.len(), k.len(), "attention: v does not match k");
    if let Some((m, mb)) = mask {
        assert!(
            mb == 1 || mb == batch,
            "attention: mask batch {mb} for {batch} rows"
        );
        assert_eq!(
            m.len(),
            mb * q_len * kv_len,
            "attention: mask does not match [b, 1, q, t]"
        );
    }
    let group = heads / kv_heads;
    let rows = group * q_len;
    let mut out = vec![0f32; q.len()];
    let dst = SendPtr(out.as_mut_ptr());
    parallel_for(batch * kv_heads, |item| {
        let b = item / kv_heads;
        // The query heads of one kv head are consecutive, so their rows form one contiguous block.
        let q_block = &q[item * rows * hd..(item + 1) * rows * hd];
        let k_block = &k[item * kv_block_stride..item * kv_block_stride + kv_len * hd];
        let v_block = &v[item * kv_block_stride..item * kv_block_stride + kv_len * hd];
        let mut scores = vec![0f32; rows * kv_len];
        PackedMatrix::pack(k_block, kv_len, hd).matmul_t_serial(q_block, rows, &mut scores);
        let mask_block = mask.map(|(m, mb)| {
            let mi = if mb == 1 { 0 } else { b };
            &m[mi * q_len * kv_len..(mi + 1) * q_len * kv_len]
        });
        for (r, row) in scores.chunks_mut(kv_len).enumerate() {
            let i = r % q_len;
            softmax_row(
                row,
                scale,
                mask_block.map(|m| &m[i * kv_len..(i + 1) * kv_len]),
            );
        }
        // SAFETY: task `item` writes only the output rows of its own query heads.
        let out_block =
            unsafe { std::slice::from_raw_parts_mut(dst.get().add(item * rows * hd), rows * hd) };
        PackedMatrix::pack_transposed(v_block, kv_len, hd)
            .matmul_t_serial(&scores, rows, out_block);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 1013) as f32 / 1013.0 - 0.5) * 2.0)
            .collect()
    }

    #[test]
    fn matches_a_plain_computation_with_groups_and_a_mask() {
        let d = AttentionDims {
            batch: 2,
            heads: 6,
            kv_heads: 2,
            q_len: 3,
            kv_len: 7,
            head_dim: 20,
        };
        let (group, hd) = (3, 20);
        let q = values(2 * 6 * 3 * hd, 1);
        let k = values(2 * 2 * 7 * hd, 2);
        let v = values(2 * 2 * 7 * hd, 3);
        let mask: Vec<f32> = (0..2 * 3 * 7)
            .map(|i| if i % 4 == 1 { f32::MIN } else { 0.0 })
            .collect();
        let scale = 0.3f32;
        let got = attention(
            &q,
            &k,
            &v,
            d.kv_len * d.head_dim,
            d,
            scale,
            Some((&mask, 2)),
        );
        for b in 0..2 {
            for h in 0..6 {
                let kvh = h / group;
                for i in 0..3 {
                    let qrow = &q[((b * 6 + h) * 3 + i) * hd..][..hd];
                    let z: Vec<f64> = (0..7)
                        .map(|j| {
                            let krow = &k[((b * 2 + kvh) * 7 + j) * hd..][..hd];
                            let dot: f64 = qrow
                                .iter()
                                .zip(krow)
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum();
                            dot * scale as f64 + mask[(b * 3 + i) * 7 + j] as f64
                        })
                        .collect();
                    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = z.iter().map(|x| (x - max).exp()).sum();
                    for c in 0..hd {
                        let want: f64 = (0..7)
                            .map(|j| {
                                (z[j] - max).exp() / sum
                                    * v[((b * 2 + kvh) * 7 + j) * hd + c] as f64
                            })
                            .sum();
                        let g = got[((b * 6 + h) * 3 + i) * hd + c] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "b{b} h{h} i{i} c{c}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// k and v as views into a longer buffer (the preallocated KV cache: blocks `cap * hd` apart, only the first
    /// `kv_len` rows of each used) give exactly what the same values packed contiguously give.
    #[test]
    fn strided_kv_blocks_match_contiguous_ones() {
        let d = AttentionDims {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            q_len: 1,
            kv_len: 5,
            head_dim: 8,
        };
        let (cap, hd, blocks) = (9, 8, 4);
        let q = values(2 * 4 * hd, 4);
        let k_buf = values(blocks * cap * hd, 5);
        let v_buf = values(blocks * cap * hd, 6);
        let packed = |buf: &[f32]| -> Vec<f32> {
            (0..blocks)
                .flat_map(|i| buf[i * cap * hd..][..5 * hd].to_vec())
                .collect()
        };
        let want = attention(&q, &packed(&k_buf), &packed(&v_buf), 5 * hd, d, 0.5, None);
        let used = (blocks - 1) * cap * hd + 5 * hd;
        let got = attention(&q, &k_buf[..used], &v_buf[..used], cap * hd, d, 0.5, None);
        assert_eq!(got, want);
    }
}
