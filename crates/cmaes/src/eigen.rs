//! Symmetric eigendecomposition without BLAS/LAPACK: Householder reduction to tridiagonal form,
//! then the implicit QL method with Wilkinson-type shifts (about 9n³ flops). Plain loops in a
//! fixed order make the result bit-identical on every machine and thread count. Cyclic Jacobi
//! (slower, unconditionally convergent) is the fallback should QL ever not converge.

/// Eigenvalues and eigenvectors of the symmetric `n`×`n` row-major matrix `a`.
/// Returns `(values, vectors)` where column `k` of the row-major `vectors` belongs to
/// `values[k]`. The upper triangle of `a` is the one read.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = symmetrized(a, n);
    let (mut d, mut e, mut z) = householder_tridiagonal(&mut m, n);
    if implicit_ql(&mut d, &mut e, &mut z, n) {
        (d, z)
    } else {
        jacobi(a, n)
    }
}

fn symmetrized(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            m[i * n + j] = a[i * n + j];
            m[j * n + i] = a[i * n + j];
        }
    }
    m
}

/// Reduces the symmetric `m` to a tridiagonal T = Qᵀ·m·Q. Returns the diagonal of T, its
/// subdiagonal (`e[k]` couples k and k + 1; `e[n-1]` = 0) and Q (row-major).
fn householder_tridiagonal(m: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let mut e = vec![0.0; n];
    for k in 0..n.saturating_sub(1) {
        let len = n - k - 1;
        let x: Vec<f64> = (0..len).map(|j| m[(k + 1 + j) * n + k]).collect();
        let tail: f64 = x[1..].iter().map(|v| v * v).sum();
        if tail == 0.0 {
            e[k] = x[0]; // already tridiagonal in this column
            continue;
        }
        let norm = (x[0] * x[0] + tail).sqrt();
        let alpha = if x[0] > 0.0 { -norm } else { norm };
        // H = I − β·v·vᵀ maps x onto α·e₁.
        let mut v = x;
        v[0] -= alpha;
        let beta = 2.0 / v.iter().map(|t| t * t).sum::<f64>();
        // Two-sided update of the trailing block S: S − v·qᵀ − q·vᵀ with p = β·S·v,
        // q = p − (β/2)(vᵀp)·v.
        let p: Vec<f64> = (0..len)
            .map(|i| beta * (0..len).map(|j| m[(k + 1 + i) * n + k + 1 + j] * v[j]).sum::<f64>())
            .collect();
        let half_k = 0.5 * beta * v.iter().zip(&p).map(|(a, b)| a * b).sum::<f64>();
        let qv: Vec<f64> = p.iter().zip(&v).map(|(pi, vi)| pi - half_k * vi).collect();
        for i in 0..len {
            for j in 0..len {
                m[(k + 1 + i) * n + k + 1 + j] -= v[i] * qv[j] + qv[i] * v[j];
            }
        }
        e[k] = alpha;
        // Accumulate Q ← Q·H on columns k+1…n−1.
        for r in 0..n {
            let w: f64 = (0..len).map(|j| q[r * n + k + 1 + j] * v[j]).sum();
            for j in 0..len {
                q[r * n + k + 1 + j] -= beta * w * v[j];
            }
        }
    }
    let d = (0..n).map(|i| m[i * n + i]).collect();
    if n > 0 {
        e[n - 1] = 0.0;
    }
    (d, e, q)
}

/// Diagonalises the tridiagonal (d, e) by implicit QL steps, rotating the columns of `z`
/// along. Returns false if some eigenvalue needs more than 60 iterations.
fn implicit_ql(d: &mut [f64], e: &mut [f64], z: &mut [f64], n: usize) -> bool {
    for l in 0..n {
        let mut iterations = 0;
        loop {
            // Find the first negligible subdiagonal element at or after l.
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * scale {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > 60 {
                return false;
            }
            // Shift from the leading 2×2 block.
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = libm::hypot(g, 1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0_f64, 1.0_f64, 0.0_f64);
            let mut deflated = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = libm::hypot(f, g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for k in 0..n {
                    let t = z[k * n + i + 1];
                    z[k * n + i + 1] = s * z[k * n + i] + c * t;
                    z[k * n + i] = c * z[k * n + i] - s * t;
                }
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    d.iter().all(|v| v.is_finite())
}

/// Cyclic Jacobi: rotations zero each off-diagonal element in turn until none is left.
fn jacobi(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = symmetrized(a, n);
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

    fn check(a: &[f64], n: usize) {
        let scale = a.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
        let (d, v) = symmetric_eigen(a, n);
        for i in 0..n {
            for j in 0..n {
                // A = V diag(d) Vᵀ and VᵀV = I
                let rec: f64 = (0..n).map(|k| v[i * n + k] * d[k] * v[j * n + k]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-12 * scale, "A[{i}][{j}]");
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "VᵀV[{i}][{j}]");
            }
        }
    }

    #[test]
    fn reconstructs_random_symmetric_matrices() {
        let mut rng = crate::rng::Rng::from_seed(7);
        for n in [2, 3, 12, 40] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in i..n {
                    let x = rng.standard_normal();
                    a[i * n + j] = x;
                    a[j * n + i] = x;
                }
            }
            check(&a, n);
            // Ill-conditioned (eigenvalues 1 … 1e12), as late in a CMA-ES run.
            let (_, q) = symmetric_eigen(&a, n);
            let spectrum: Vec<f64> = (0..n).map(|k| 1e12_f64.powf(k as f64 / (n as f64 - 1.0))).collect();
            let c: Vec<f64> = (0..n * n)
                .map(|ij| (0..n).map(|k| q[(ij / n) * n + k] * spectrum[k] * q[(ij % n) * n + k]).sum())
                .collect();
            let (d, _) = symmetric_eigen(&c, n);
            let mut d = d;
            d.sort_by(f64::total_cmp);
            for (got, want) in d.iter().zip(&spectrum) {
                assert!((got - want).abs() < 1e-3 * want.max(1e-3) + 1e-15 * 1e12, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn jacobi_fallback_agrees() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (mut d1, _) = symmetric_eigen(&a, 3);
        let (mut d2, _) = jacobi(&a, 3);
        d1.sort_by(f64::total_cmp);
        d2.sort_by(f64::total_cmp);
        for (x, y) in d1.iter().zip(&d2) {
            assert!((x - y).abs() < 1e-13, "{d1:?} vs {d2:?}");
        }
    }

    #[test]
    fn degenerate_matrices() {
        for (a, n) in [(vec![2.5], 1), (vec![0.0; 9], 3), (vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 3)] {
            check(&a, n);
        }
        // Repeated eigenvalues with a non-trivial basis: all-ones 5x5 plus identity.
        let a: Vec<f64> = (0..25).map(|k| if k % 6 == 0 { 2.0 } else { 1.0 }).collect();
        check(&a, 5);
    }

    #[test]
    fn diagonal_matrix_is_returned_as_is() {
        let (d, v) = symmetric_eigen(&[3.0, 0.0, 0.0, 1e-9], 2);
        assert_eq!(d, vec![3.0, 1e-9]);
        assert_eq!(v, vec![1.0, 0.0, 0.0, 1.0]);
    }
}
