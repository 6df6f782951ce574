//! Box bounds: every candidate handed out lies inside, and an optimum on the boundary is
//! reached (full and separable CMA-ES).
mod common;
use common::{drive, new};
use evomerge_cmaes::Config;

/// A shifted sphere whose unconstrained optimum lies outside [0, 1] in four of six
/// coordinates, so the constrained optimum sits on the boundary there.
const CENTRE: [f64; 6] = [-0.5, 0.3, 1.7, 0.9, -2.0, 1.25];

fn shifted(x: &[f64]) -> f64 {
    x.iter().zip(CENTRE).map(|(v, c)| (v - c) * (v - c)).sum()
}

fn check_boundary_optimum(separable: bool) {
    let optimum: Vec<f64> = CENTRE.iter().map(|c| c.clamp(0.0, 1.0)).collect();
    let f_star = shifted(&optimum);
    let config = Config::new(vec![0.5; 6], 1.0 / 6.0)
        .with_bounds(vec![0.0; 6], vec![1.0; 6])
        .with_seed(3)
        .separable(separable);
    let mut es = new(config);
    let mut handed_out = 0usize;
    drive(&mut es, shifted, 2000, |xs| {
        for x in xs {
            handed_out += 1;
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "candidate outside the box: {x:?}");
        }
    });
    let best = es.best().expect("a best candidate");
    assert!(handed_out > 100);
    assert!(best.fitness - f_star < 1e-10, "best {} vs optimum {f_star} (stop {:?})", best.fitness, es.stop_reason());
    for (got, want) in best.x.iter().zip(&optimum) {
        assert!((got - want).abs() < 1e-5, "best x {:?} vs optimum {optimum:?}", best.x);
    }
}

#[test]
fn full_cma_reaches_an_optimum_on_the_boundary_and_stays_inside() {
    check_boundary_optimum(false);
}

#[test]
fn separable_cma_reaches_an_optimum_on_the_boundary_and_stays_inside() {
    check_boundary_optimum(true);
}

#[test]
fn one_sided_bounds_are_respected() {
    // Only a lower bound at 1 (optimum of the sphere would be 0): all x_i end at 1.
    let config = Config::new(vec![2.0; 3], 0.5)
        .with_bounds(vec![1.0; 3], vec![f64::INFINITY; 3])
        .with_seed(9);
    let mut es = new(config);
    drive(&mut es, common::sphere, 3000, |xs| {
        assert!(xs.iter().flatten().all(|v| *v >= 1.0));
    });
    assert!((es.best().unwrap().fitness - 3.0).abs() < 1e-10);
}

#[test]
fn resample_then_clip_keeps_candidates_inside_and_solves_an_interior_optimum() {
    let config = Config::new(vec![0.5; 4], 0.3)
        .with_bounds(vec![0.0; 4], vec![1.0; 4])
        .with_bound_handling(evomerge_cmaes::BoundHandling::ResampleClip)
        .with_seed(4);
    let mut es = new(config);
    let interior = |x: &[f64]| x.iter().map(|v| (v - 0.2) * (v - 0.2)).sum::<f64>();
    drive(&mut es, interior, 3000, |xs| {
        assert!(xs.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
    });
    assert!(es.best().unwrap().fitness < 1e-10);
}
