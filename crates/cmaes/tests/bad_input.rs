//! Bad input is refused with an error that names what is wrong; nothing panics.
use evomerge_cmaes::{CmaEs, Config, Error};

fn asked(config: Config) -> (CmaEs, usize) {
    let mut es = CmaEs::new(config).unwrap();
    let n = es.ask().unwrap().len();
    (es, n)
}

#[test]
fn wrong_fitness_count_is_refused_and_the_generation_kept() {
    let (mut es, n) = asked(Config::new(vec![0.0; 4], 1.0));
    let err = es.tell(&vec![1.0; n - 1]).unwrap_err();
    assert!(matches!(err, Error::FitnessCount { expected, got } if expected == n && got == n - 1));
    assert!(err.to_string().contains(&format!("expected {n} fitness values")));
    es.tell(&vec![1.0; n]).unwrap(); // the pending generation is still there
}

#[test]
fn nan_fitness_is_refused() {
    let (mut es, n) = asked(Config::new(vec![0.0; 4], 1.0));
    let mut f = vec![1.0; n];
    f[2] = f64::NAN;
    let err = es.tell(&f).unwrap_err();
    assert!(matches!(err, Error::InvalidFitness { index: 2, .. }), "{err}");
    assert!(err.to_string().contains("fitness[2] is NaN"), "{err}");
}

#[test]
fn infinite_fitness_is_refused() {
    let (mut es, n) = asked(Config::new(vec![0.0; 4], 1.0));
    let mut f = vec![1.0; n];
    f[0] = f64::INFINITY;
    assert!(matches!(es.tell(&f).unwrap_err(), Error::InvalidFitness { index: 0, .. }));
}

#[test]
fn tell_without_ask_is_refused() {
    let mut es = CmaEs::new(Config::new(vec![0.0; 2], 1.0)).unwrap();
    assert!(matches!(es.tell(&[1.0; 6]).unwrap_err(), Error::NothingAsked));
}

#[test]
fn lower_above_upper_is_refused() {
    let config = Config::new(vec![0.5; 3], 0.1).with_bounds(vec![0.0, 1.0, 0.0], vec![1.0, 0.5, 1.0]);
    let err = CmaEs::new(config).unwrap_err();
    assert!(matches!(err, Error::LowerAboveUpper { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("dimension 1"));
}

#[test]
fn popsize_below_two_is_refused() {
    for p in [0, 1] {
        let err = CmaEs::new(Config::new(vec![0.0; 3], 1.0).with_popsize(p)).unwrap_err();
        assert!(matches!(err, Error::PopsizeTooSmall(q) if q == p), "{err}");
    }
    assert!(CmaEs::new(Config::new(vec![0.0; 3], 1.0).with_popsize(2)).is_ok());
}

#[test]
fn other_bad_configurations_are_refused() {
    let e = |c: Config| CmaEs::new(c).unwrap_err();
    assert!(matches!(e(Config::new(vec![], 1.0)), Error::NoDimensions));
    assert!(matches!(e(Config::new(vec![0.0], 0.0)), Error::InvalidSigma(_)));
    assert!(matches!(e(Config::new(vec![0.0], f64::NAN)), Error::InvalidSigma(_)));
    assert!(matches!(e(Config::new(vec![f64::NAN], 1.0)), Error::NotFinite { what: "x0", index: 0, .. }));
    assert!(matches!(
        e(Config::new(vec![0.0; 2], 1.0).with_bounds(vec![0.0; 3], vec![1.0; 2])),
        Error::LengthMismatch { what: "lower", expected: 2, got: 3 }
    ));
    assert!(matches!(
        e(Config::new(vec![2.0], 1.0).with_bounds(vec![0.0], vec![1.0])),
        Error::X0OutsideBounds { index: 0, .. }
    ));
    // A discrete gene needs finite bounds holding at least two levels.
    assert!(matches!(
        e(Config::new(vec![0.0], 1.0).with_steps(vec![1.0])),
        Error::InvalidDiscreteDimension { index: 0, .. }
    ));
    assert!(matches!(
        e(Config::new(vec![0.0], 1.0).with_bounds(vec![0.0], vec![0.5]).with_steps(vec![1.0])),
        Error::InvalidDiscreteDimension { index: 0, .. }
    ));
}

#[test]
fn corrupt_or_inconsistent_state_is_refused() {
    let (es, _) = asked(Config::new(vec![0.0; 3], 1.0));
    let json = es.to_json().unwrap();
    assert!(matches!(CmaEs::from_json(&json[..json.len() / 2]).unwrap_err(), Error::StateFormat(_)));
    // A mean of the wrong length (hand-edited file).
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["run"]["mean"] = serde_json::json!([0.0, 0.0]);
    let err = CmaEs::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(err, Error::StateInconsistent(_)), "{err}");
}
