//! libstdc++'s sorting and selection algorithms as torch's CPU kernels call them, for the
//! half-precision merges (`--compute-dtype recipe`): with bf16's many equal values, which tied
//! entries `argsort`, `sort` and `topk` put first depends on the algorithm, so it is reproduced
//! step for step (introsort, heap sort, introselect).

/// torch's comparison on the CPU: descending puts larger first and NaN before everything,
/// ascending smaller first and NaN after everything.
#[inline]
fn before<const DESC: bool>(a: (f32, u32), b: (f32, u32)) -> bool {
    if DESC {
        a.0 > b.0 || (a.0.is_nan() && !b.0.is_nan())
    } else {
        a.0 < b.0 || (!a.0.is_nan() && b.0.is_nan())
    }
}

/// The permutation `torch.argsort(values, descending=True)` returns on the CPU (libstdc++'s
/// introsort: median-of-three quicksort down to runs of 16, heapsort past depth 2·log2 n, then
/// one insertion sort).
pub fn torch_argsort_descending(values: &[f32]) -> Vec<u32> {
    torch_argsort::<true>(values)
}

/// The permutation `torch.sort(values).indices` (ascending, not stable) returns on the CPU: the
/// same introsort with the ascending comparison.
pub fn torch_argsort_ascending(values: &[f32]) -> Vec<u32> {
    torch_argsort::<false>(values)
}

fn torch_argsort<const DESC: bool>(values: &[f32]) -> Vec<u32> {
    let mut v: Vec<(f32, u32)> = values.iter().zip(0u32..).map(|(&x, i)| (x, i)).collect();
    let n = v.len();
    if n > 1 {
        let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop::<DESC>(&mut v, 0, n, depth);
        final_insertion_sort::<DESC>(&mut v);
    }
    v.into_iter().map(|(_, i)| i).collect()
}

const THRESHOLD: usize = 16;

fn introsort_loop<const DESC: bool>(v: &mut [(f32, u32)], first: usize, mut last: usize, mut depth: usize) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_sort::<DESC>(&mut v[first..last]);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        move_median_to_first::<DESC>(v, first, first + 1, mid, last - 1);
        let cut = unguarded_partition::<DESC>(v, first + 1, last, first);
        introsort_loop::<DESC>(v, cut, last, depth);
        last = cut;
    }
}

fn move_median_to_first<const DESC: bool>(v: &mut [(f32, u32)], result: usize, a: usize, b: usize, c: usize) {
    let pick = if before::<DESC>(v[a], v[b]) {
        if before::<DESC>(v[b], v[c]) {
            b
        } else if before::<DESC>(v[a], v[c]) {
            c
        } else {
            a
        }
    } else if before::<DESC>(v[a], v[c]) {
        a
    } else if before::<DESC>(v[b], v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn unguarded_partition<const DESC: bool>(v: &mut [(f32, u32)], mut first: usize, mut last: usize, pivot: usize) -> usize {
    loop {
        while before::<DESC>(v[first], v[pivot]) {
            first += 1;
        }
        last -= 1;
        while before::<DESC>(v[pivot], v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn unguarded_linear_insert<const DESC: bool>(v: &mut [(f32, u32)], mut last: usize) {
    let value = v[last];
    while before::<DESC>(value, v[last - 1]) {
        v[last] = v[last - 1];
        last -= 1;
    }
    v[last] = value;
}

fn insertion_sort<const DESC: bool>(v: &mut [(f32, u32)]) {
    for i in 1..v.len() {
        if before::<DESC>(v[i], v[0]) {
            let value = v[i];
            v.copy_within(0..i, 1);
            v[0] = value;
        } else {
            unguarded_linear_insert::<DESC>(v, i);
        }
    }
}

fn final_insertion_sort<const DESC: bool>(v: &mut [(f32, u32)]) {
    if v.len() > THRESHOLD {
        insertion_sort::<DESC>(&mut v[..THRESHOLD]);
        for i in THRESHOLD..v.len() {
            unguarded_linear_insert::<DESC>(v, i);
        }
    } else {
        insertion_sort::<DESC>(v);
    }
}

/// libstdc++'s `__make_heap` + `__sort_heap` (its `__partial_sort` over the whole range).
fn heap_sort<const DESC: bool>(v: &mut [(f32, u32)]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    make_heap::<DESC>(v);
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = v[last];
        v[last] = v[0];
        adjust_heap::<DESC>(&mut v[..last], 0, last, value);
    }
}

fn adjust_heap<const DESC: bool>(v: &mut [(f32, u32)], mut hole: usize, len: usize, value: (f32, u32)) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if before::<DESC>(v[child], v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len % 2 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // push_heap
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && before::<DESC>(v[parent], value) {
        v[hole] = v[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[hole] = value;
}


fn make_heap<const DESC: bool>(v: &mut [(f32, u32)]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent];
        adjust_heap::<DESC>(v, parent, len, value);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
}

/// libstdc++'s `__heap_select`: the `middle` best of `v` end up in `v[..middle]`.
fn heap_select<const DESC: bool>(v: &mut [(f32, u32)], middle: usize) {
    make_heap::<DESC>(&mut v[..middle]);
    for i in middle..v.len() {
        if before::<DESC>(v[i], v[0]) {
            let value = v[i];
            v[i] = v[0];
            adjust_heap::<DESC>(&mut v[..middle], 0, middle, value);
        }
    }
}

/// libstdc++'s `std::nth_element` (introselect).
fn nth_element<const DESC: bool>(v: &mut [(f32, u32)], nth: usize) {
    let (mut first, mut last) = (0, v.len());
    if last == 0 || nth >= last {
        return;
    }
    let mut depth = 2 * (usize::BITS - 1 - last.leading_zeros()) as usize;
    while last - first > 3 {
        if depth == 0 {
            heap_select::<DESC>(&mut v[first..last], nth + 1 - first);
            v.swap(first, nth);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        move_median_to_first::<DESC>(v, first, first + 1, mid, last - 1);
        let cut = unguarded_partition::<DESC>(v, first + 1, last, first);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort::<DESC>(&mut v[first..last]);
}

/// The indices `torch.topk(values, k, largest=True)` returns on the CPU, as a set (in no
/// particular order): `std::partial_sort` when k·64 ≤ n, else `std::nth_element`.
pub fn torch_topk_indices(values: &[f32], k: usize) -> Vec<u32> {
    let n = values.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut v: Vec<(f32, u32)> = values.iter().zip(0u32..).map(|(&x, i)| (x, i)).collect();
    if k * 64 <= n {
        heap_select::<true>(&mut v, k);
    } else {
        nth_element::<true>(&mut v, k - 1);
    }
    v[..k].iter().map(|p| p.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any permutation that orders the values descending is acceptable as a sort; the heapsort
    /// fallback and the quicksort path must both give one.
    fn is_descending_permutation(values: &[f32], order: &[u32]) -> bool {
        let mut seen = vec![false; values.len()];
        order.iter().all(|&i| !std::mem::replace(&mut seen[i as usize], true))
            && order.windows(2).all(|w| values[w[0] as usize] >= values[w[1] as usize])
            && order.len() == values.len()
    }

    #[test]
    fn argsort_orders_descending_with_many_ties() {
        let values: Vec<f32> = (0..5000u32).map(|i| ((i * 7919) % 97) as f32 / 8.0).collect();
        assert!(is_descending_permutation(&values, &torch_argsort_descending(&values)));
    }

    #[test]
    fn heap_sort_orders_descending() {
        let values: Vec<f32> = (0..1001u32).map(|i| ((i * 613) % 101) as f32).collect();
        let mut v: Vec<(f32, u32)> = values.iter().zip(0u32..).map(|(&x, i)| (x, i)).collect();
        heap_sort::<true>(&mut v);
        let order: Vec<u32> = v.iter().map(|p| p.1).collect();
        assert!(is_descending_permutation(&values, &order));
    }

    #[test]
    fn argsort_breaks_ties_as_torch() {
        // torch 2.15 `torch.argsort(x, descending=True)` for this x on the CPU (not index order).
        let x = [1.0f32, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        let torch = [1u32, 19, 17, 15, 13, 11, 9, 7, 5, 3, 8, 6, 10, 12, 4, 14, 16, 2, 18, 0];
        assert_eq!(torch_argsort_descending(&x), torch);
    }


    #[test]
    fn topk_picks_the_largest() {
        for n in [5usize, 100, 5000] {
            let values: Vec<f32> = (0..n as u32).map(|i| ((i * 7919) % 97) as f32).collect();
            for k in [1, n / 64, n / 3, n - 1] {
                let picked = torch_topk_indices(&values, k);
                assert_eq!(picked.len(), k.min(n));
                let mut sorted = values.clone();
                sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
                let mut got: Vec<f32> = picked.iter().map(|&i| values[i as usize]).collect();
                got.sort_by(|a, b| b.partial_cmp(a).unwrap());
                assert_eq!(got, sorted[..k.min(n)], "n {n} k {k}");
            }
        }
    }
}
