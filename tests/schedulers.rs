//! Learning-rate schedules against PyTorch (tests/reference/schedulers.json): the learning
//! rate in effect during each epoch, with `opt.step(); sched.step();` between epochs.

mod common;

use common::{arg, assert_close, cases, flag, tensor};
use serde_json::Value;
use torchlet::optim::{
    AnnealStrategy, CosineAnnealingLr, ExponentialLr, LinearLr, LrScheduler, MultiStepLr,
    OneCycleLr, OneCycleLrConfig, Optimizer, PlateauMode, ReduceLrOnPlateau,
    ReduceLrOnPlateauConfig, Sgd, SgdConfig, StepLr, ThresholdMode,
};
use torchlet::{DType, Tensor};

fn count(case: &Value, name: &str) -> usize {
    case["args"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: args.{name} is not a count", case["name"])) as usize
}

/// The reference case's optimizer: one group, SGD with momentum 0.9.
fn optimizer(case: &Value) -> Sgd {
    let w = Tensor::zeros(&[2]).requires_grad_(true);
    let config = SgdConfig {
        lr: arg(case, "base_lr"),
        momentum: 0.9,
        ..Default::default()
    };
    Sgd::new([("w", w)], config).expect("SGD with momentum 0.9")
}

fn one_cycle_config(case: &Value) -> OneCycleLrConfig {
    OneCycleLrConfig {
        max_lr: arg(case, "max_lr"),
        total_steps: count(case, "total_steps"),
        pct_start: arg(case, "pct_start"),
        anneal_strategy: match case["args"]["anneal_strategy"].as_str() {
            Some("cos") => AnnealStrategy::Cos,
            Some("linear") => AnnealStrategy::Linear,
            s => panic!("{}: unknown anneal_strategy {s:?}", case["name"]),
        },
        cycle_momentum: flag(case, "cycle_momentum"),
        base_momentum: arg(case, "base_momentum"),
        max_momentum: arg(case, "max_momentum"),
        div_factor: arg(case, "div_factor"),
        final_div_factor: arg(case, "final_div_factor"),
        three_phase: flag(case, "three_phase"),
    }
}

fn plateau_config(case: &Value) -> ReduceLrOnPlateauConfig {
    ReduceLrOnPlateauConfig {
        mode: match case["args"]["mode"].as_str() {
            Some("min") => PlateauMode::Min,
            Some("max") => PlateauMode::Max,
            m => panic!("{}: unknown mode {m:?}", case["name"]),
        },
        factor: arg(case, "factor"),
        patience: count(case, "patience"),
        threshold: arg(case, "threshold"),
        threshold_mode: match case["args"]["threshold_mode"].as_str() {
            Some("rel") => ThresholdMode::Rel,
            Some("abs") => ThresholdMode::Abs,
            m => panic!("{}: unknown threshold_mode {m:?}", case["name"]),
        },
        cooldown: count(case, "cooldown"),
        min_lr: arg(case, "min_lr"),
        eps: arg(case, "eps"),
    }
}

/// The epoch-stepped scheduler of a case.
fn scheduler(case: &Value, opt: &Sgd) -> Box<dyn LrScheduler> {
    let gamma = || arg(case, "gamma");
    let built: torchlet::Result<Box<dyn LrScheduler>> = match case["kind"]
        .as_str()
        .unwrap_or_default()
    {
        "StepLR" => StepLr::new(opt, count(case, "step_size"), gamma()).map(|s| Box::new(s) as _),
        "MultiStepLR" => {
            let milestones: Vec<usize> = case["args"]["milestones"]
                .as_array()
                .expect("milestones")
                .iter()
                .map(|m| m.as_u64().expect("milestone") as usize)
                .collect();
            MultiStepLr::new(opt, &milestones, gamma()).map(|s| Box::new(s) as _)
        }
        "ExponentialLR" => ExponentialLr::new(opt, gamma()).map(|s| Box::new(s) as _),
        "CosineAnnealingLR" => {
            CosineAnnealingLr::new(opt, count(case, "T_max"), arg(case, "eta_min"))
                .map(|s| Box::new(s) as _)
        }
        "LinearLR" => LinearLr::new(
            opt,
            arg(case, "start_factor"),
            arg(case, "end_factor"),
            count(case, "total_iters"),
        )
        .map(|s| Box::new(s) as _),
        "OneCycleLR" => OneCycleLr::new(opt, one_cycle_config(case)).map(|s| Box::new(s) as _),
        kind => panic!("{}: torchlet has no scheduler `{kind}`", case["name"]),
    };
    built.unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
}

#[test]
fn schedules_match_pytorch() {
    let all = cases("schedulers.json");
    assert_eq!(all.len(), 7, "schedulers.json: every case runs");
    for case in &all {
        let name = case["name"].as_str().unwrap_or_default();
        let epochs = count(case, "num_epochs");
        let mut opt = optimizer(case);
        let (mut lrs, mut momenta) = (vec![], vec![]);
        if case["kind"] == "ReduceLROnPlateau" {
            let metrics = tensor(&case["inputs"]["metrics"], DType::F64).to_vec::<f64>();
            let mut sched = ReduceLrOnPlateau::new(&opt, plateau_config(case)).expect(name);
            let mut metric = metrics.iter();
            for e in 0..epochs {
                lrs.push(opt.lr());
                if e + 1 < epochs {
                    opt.step();
                    sched.step(*metric.next().expect("one metric per step call"));
                    assert_eq!(sched.get_last_lr(), [opt.lr()], "{name}");
                }
            }
        } else {
            let mut sched = scheduler(case, &opt);
            for e in 0..epochs {
                lrs.push(opt.lr());
                momenta.push(opt.group_rates()[0].momentum().unwrap_or(f64::NAN));
                if e + 1 < epochs {
                    opt.step();
                    sched.step();
                    assert_eq!(sched.get_last_lr(), [opt.lr()], "{name}");
                }
            }
        }
        let got = Tensor::from_vec(lrs, &[epochs]);
        assert_close(
            &format!("{name} lr"),
            &got,
            &case["output"]["lr"],
            1e-9,
            1e-15,
        );
        if let Some(want) = case["output"].get("momentum") {
            let got = Tensor::from_vec(momenta, &[epochs]);
            assert_close(&format!("{name} momentum"), &got, want, 1e-9, 1e-15);
        }
    }
}

#[test]
fn a_resumed_scheduler_continues_where_it_stopped() {
    let case = cases("schedulers.json")
        .into_iter()
        .find(|c| c["kind"] == "CosineAnnealingLR")
        .expect("a CosineAnnealingLR case");
    let mut opt = optimizer(&case);
    let mut sched = scheduler(&case, &opt);
    for _ in 0..4 {
        opt.step();
        sched.step();
    }
    let (opt_state, sched_state) = (opt.state_dict(), sched.state_dict());
    let mut opt2 = optimizer(&case);
    let mut sched2 = scheduler(&case, &opt2);
    opt2.load_state_dict(&opt_state).expect("optimizer state");
    sched2
        .load_state_dict(&sched_state)
        .expect("scheduler state");
    for _ in 0..3 {
        opt.step();
        sched.step();
        opt2.step();
        sched2.step();
        assert_eq!(opt.lr(), opt2.lr());
    }
    assert_eq!(sched2.last_epoch(), 7);
}

#[test]
fn one_cycle_refuses_to_step_past_total_steps() {
    let w = Tensor::zeros(&[1]).requires_grad_(true);
    let opt = Sgd::new(
        [w],
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    let mut sched = OneCycleLr::new(
        &opt,
        OneCycleLrConfig {
            total_steps: 2,
            ..Default::default()
        },
    )
    .unwrap();
    sched.step();
    sched.step();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sched.step()));
    assert!(err.is_err());
}
