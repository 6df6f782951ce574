//! Stopping a search, reloading its JSON state and continuing gives exactly the candidates
//! and the final result of a run that never stopped.
mod common;
use evomerge_cmaes::{CmaEs, Config};

fn objective(x: &[f64]) -> f64 {
    // Rastrigin: multimodal, so IPOP restarts happen within the run below.
    common::rastrigin(x)
}

/// Asks and tells `generations` times (or until stop); returns every candidate.
fn steps(es: &mut CmaEs, generations: usize) -> Vec<Vec<f64>> {
    let mut seen = Vec::new();
    for _ in 0..generations {
        if es.is_stopped() {
            break;
        }
        let xs = es.ask().unwrap();
        let fs: Vec<f64> = xs.iter().map(|x| objective(x)).collect();
        seen.extend(xs);
        es.tell(&fs).unwrap();
    }
    seen
}

fn bits(xs: &[Vec<f64>]) -> Vec<Vec<u64>> {
    xs.iter().map(|x| x.iter().map(|v| v.to_bits()).collect()).collect()
}

fn check_resume(config: Config, cut: usize) {
    let mut straight = CmaEs::new(config.clone()).unwrap();
    let all = steps(&mut straight, 100_000);
    assert!(straight.is_stopped());

    let mut first = CmaEs::new(config).unwrap();
    let mut resumed_seen = steps(&mut first, cut);
    let json = first.to_json().unwrap();
    drop(first);
    let mut resumed = CmaEs::from_json(&json).unwrap();
    resumed_seen.extend(steps(&mut resumed, 100_000));

    assert_eq!(bits(&all), bits(&resumed_seen), "candidates differ after resuming");
    assert_eq!(straight.best(), resumed.best());
    assert_eq!(straight.evaluations(), resumed.evaluations());
    assert_eq!(straight.stop_reason(), resumed.stop_reason());
    assert_eq!(straight.restarts(), resumed.restarts());
    // The state itself is identical, bit for bit.
    assert_eq!(straight.to_json().unwrap(), resumed.to_json().unwrap());
}

#[test]
fn resuming_full_cma_with_restarts_is_bit_identical() {
    let config = Config::new(vec![2.0, -1.0, 3.0, 0.5], 1.5)
        .with_restarts(3)
        .with_seed(5)
        .with_max_evals(20_000);
    check_resume(config.clone(), 7);
    check_resume(config, 150); // after at least one restart
}

#[test]
fn resuming_bounded_separable_and_margin_searches_is_bit_identical() {
    let bounded = Config::new(vec![0.5; 5], 1.0 / 6.0)
        .with_bounds(vec![0.0; 5], vec![1.0; 5])
        .with_seed(8)
        .with_max_evals(3000);
    check_resume(bounded.clone(), 11);
    check_resume(bounded.separable(true), 11);
    let margin = Config::new(vec![0.0; 6], 1.0)
        .with_bounds(vec![0.0, 0.0, 0.0, -5.0, -5.0, -5.0], vec![1.0, 2.0, 1.0, 5.0, 5.0, 5.0])
        .with_steps(vec![1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
        .with_seed(2)
        .with_max_evals(3000);
    check_resume(margin, 13);
    // Open sides are stored as "inf"/"-inf" (JSON has no infinity).
    let one_sided = Config::new(vec![2.0, -2.0, 0.0], 0.5)
        .with_bounds(vec![1.0, f64::NEG_INFINITY, -1.0], vec![f64::INFINITY, -1.0, 1.0])
        .with_seed(3)
        .with_max_evals(2000);
    let json = CmaEs::new(one_sided.clone()).unwrap().to_json().unwrap();
    assert!(json.contains("\"inf\"") && json.contains("\"-inf\""));
    check_resume(one_sided, 9);
}

#[test]
fn state_saved_between_ask_and_tell_asks_the_same_generation_again() {
    let mut es = CmaEs::new(Config::new(vec![1.0; 3], 0.3).with_seed(4)).unwrap();
    steps(&mut es, 3);
    let asked = es.ask().unwrap();
    let mut restored = CmaEs::from_json(&es.to_json().unwrap()).unwrap();
    assert_eq!(bits(&restored.ask().unwrap()), bits(&asked));
    // ask() is idempotent until tell().
    assert_eq!(bits(&es.ask().unwrap()), bits(&asked));
}
