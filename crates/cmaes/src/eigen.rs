//! Symmetric eigendecomposition by the cyclic Jacobi method: plain loops in a fixed order, so
//! the result is bit-identical on every machine and thread count, with no BLAS/LAPACK.
//! Cost is about 10 sweeps of n³ work, negligible next to evaluating a merged model.

/// Eigenvalues and eigenvectors of the symmetric `n`×`n` row-major matrix `a`.
/// Returns `(values, vectors)` where column `k` of the row-major `vectors` belongs to
/// `values[k]`. The upper triangle of `a` is the one read.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            m[i * n + j] = a[i * n + j];
            m[j * n + i] = a[i * n + j];
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let mut off = 0.0;
        let mut diag = 0.0;
        for i in 0..n {
            diag += m[i * n + i] * m[i * n + i];
            for j in i + 1..n {
                off += m[i * n + j] * m[i * n + j];
            }
        }
        if off == 0.0 || off <= 1e-32 * diag {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // Rotation angle that zeroes m[p][q]; t = tan(angle), the smaller root.
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| m[i * n + i]).collect();
    (values, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstructs_a_random_symmetric_matrix() {
        let n = 12;
        let mut rng = crate::rng::Rng::from_seed(7);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let x = rng.standard_normal();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let (d, v) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                // A = V diag(d) Vᵀ and VᵀV = I
                let rec: f64 = (0..n).map(|k| v[i * n + k] * d[k] * v[j * n + k]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-12, "A[{i}][{j}]");
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "VᵀV[{i}][{j}]");
            }
        }
    }

    #[test]
    fn diagonal_matrix_is_returned_as_is() {
        let (d, v) = symmetric_eigen(&[3.0, 0.0, 0.0, 1e-9], 2);
        assert_eq!(d, vec![3.0, 1e-9]);
        assert_eq!(v, vec![1.0, 0.0, 0.0, 1.0]);
    }
}
