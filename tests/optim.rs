//! Optimizer trajectories against PyTorch (tests/reference/optim.json), resuming from a
//! state dict, param groups, and configuration errors.

mod common;

use common::{F64_TOL, arg, assert_close, cases, flag, tensor};
use serde_json::Value;
use torchlet::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, ParamGroup, RmsProp,
    RmsPropConfig, Sgd, SgdConfig, clip_grad_norm_, clip_grad_norm_with,
};
use torchlet::{DType, Tensor};

/// The optimizer a reference case describes, over `params`.
fn build(case: &Value, params: &[(&str, &Tensor)]) -> Box<dyn Optimizer> {
    let params = params.iter().map(|(n, t)| (*n, *t));
    let (lr, wd) = (arg(case, "lr"), arg(case, "weight_decay"));
    let betas = || {
        (
            case["args"]["betas"][0].as_f64().unwrap_or(f64::NAN),
            case["args"]["betas"][1].as_f64().unwrap_or(f64::NAN),
        )
    };
    let result: torchlet::Result<Box<dyn Optimizer>> =
        match case["kind"].as_str().unwrap_or_default() {
            "SGD" => Sgd::new(
                params,
                SgdConfig {
                    lr,
                    momentum: arg(case, "momentum"),
                    dampening: arg(case, "dampening"),
                    weight_decay: wd,
                    nesterov: flag(case, "nesterov"),
                    maximize: flag(case, "maximize"),
                },
            )
            .map(|o| Box::new(o) as Box<dyn Optimizer>),
            "Adam" => Adam::new(
                params,
                AdamConfig {
                    lr,
                    betas: betas(),
                    eps: arg(case, "eps"),
                    weight_decay: wd,
                    amsgrad: flag(case, "amsgrad"),
                    maximize: flag(case, "maximize"),
                },
            )
            .map(|o| Box::new(o) as Box<dyn Optimizer>),
            "AdamW" => AdamW::new(
                params,
                AdamWConfig {
                    lr,
                    betas: betas(),
                    eps: arg(case, "eps"),
                    weight_decay: wd,
                    amsgrad: flag(case, "amsgrad"),
                    maximize: flag(case, "maximize"),
                },
            )
            .map(|o| Box::new(o) as Box<dyn Optimizer>),
            "RMSprop" => RmsProp::new(
                params,
                RmsPropConfig {
                    lr,
                    alpha: arg(case, "alpha"),
                    eps: arg(case, "eps"),
                    weight_decay: wd,
                    momentum: arg(case, "momentum"),
                    centered: flag(case, "centered"),
                    maximize: flag(case, "maximize"),
                },
            )
            .map(|o| Box::new(o) as Box<dyn Optimizer>),
            "Adagrad" => Adagrad::new(
                params,
                AdagradConfig {
                    lr,
                    lr_decay: arg(case, "lr_decay"),
                    weight_decay: wd,
                    initial_accumulator_value: arg(case, "initial_accumulator_value"),
                    eps: arg(case, "eps"),
                    maximize: flag(case, "maximize"),
                },
            )
            .map(|o| Box::new(o) as Box<dyn Optimizer>),
            kind => panic!("{}: torchlet has no optimizer `{kind}`", case["name"]),
        };
    result.unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
}

fn steps(case: &Value) -> usize {
    case["args"]["steps"].as_u64().expect("args.steps") as usize
}

/// Sets the gradients of step `k` and steps.
fn step(case: &Value, opt: &mut dyn Optimizer, w: &Tensor, b: &Tensor, k: usize, dtype: DType) {
    let gw = tensor(&case["inputs"]["grad_w"], dtype).select(0, k);
    let gb = tensor(&case["inputs"]["grad_b"], dtype).select(0, k);
    w.set_grad(Some(gw.contiguous_copy()));
    b.set_grad(Some(gb.contiguous_copy()));
    opt.step();
}

fn check_trajectories(dtype: DType, (rtol, atol): (f64, f64)) {
    let all = cases("optim.json");
    assert_eq!(all.len(), 15, "optim.json: every case runs");
    for case in &all {
        let name = case["name"].as_str().unwrap_or_default();
        let w = tensor(&case["inputs"]["w"], dtype).requires_grad_(true);
        let b = tensor(&case["inputs"]["b"], dtype).requires_grad_(true);
        let mut opt = build(case, &[("w", &w), ("b", &b)]);
        for k in 0..steps(case) {
            step(case, opt.as_mut(), &w, &b, k, dtype);
            let want_w = &case["output"]["w"];
            let want = |v: &Value, k: usize| -> Value {
                let t = tensor(v, DType::F64).select(0, k);
                serde_json::json!({"shape": t.shape(), "data": t.to_vec::<f64>()})
            };
            assert_close(
                &format!("{name} ({dtype}) w after step {k}"),
                &w,
                &want(want_w, k),
                rtol,
                atol,
            );
            assert_close(
                &format!("{name} ({dtype}) b after step {k}"),
                &b,
                &want(&case["output"]["b"], k),
                rtol,
                atol,
            );
        }
    }
}

#[test]
fn optimizer_trajectories_match_pytorch_in_f64() {
    check_trajectories(DType::F64, F64_TOL);
}

#[test]
fn optimizer_trajectories_match_pytorch_in_f32() {
    check_trajectories(DType::F32, (2e-4, 2e-5));
}

#[test]
fn resuming_from_a_state_dict_continues_the_trajectory() {
    for case in &cases("optim.json") {
        let name = case["name"].as_str().unwrap_or_default();
        let n = steps(case);
        let w = tensor(&case["inputs"]["w"], DType::F64).requires_grad_(true);
        let b = tensor(&case["inputs"]["b"], DType::F64).requires_grad_(true);
        let mut opt = build(case, &[("w", &w), ("b", &b)]);
        for k in 0..n / 2 {
            step(case, opt.as_mut(), &w, &b, k, DType::F64);
        }
        let saved = opt.state_dict();
        // A fresh optimizer over the same tensors, listed in another order: state follows names.
        let mut resumed = build(case, &[("b", &b), ("w", &w)]);
        resumed
            .load_state_dict(&saved)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for k in n / 2..n {
            step(case, resumed.as_mut(), &w, &b, k, DType::F64);
        }
        let last = |v: &Value| {
            let t = tensor(v, DType::F64).select(0, n - 1);
            serde_json::json!({"shape": t.shape(), "data": t.to_vec::<f64>()})
        };
        assert_close(
            &format!("{name}: resumed w"),
            &w,
            &last(&case["output"]["w"]),
            1e-9,
            1e-12,
        );
        assert_close(
            &format!("{name}: resumed b"),
            &b,
            &last(&case["output"]["b"]),
            1e-9,
            1e-12,
        );
    }
}

#[test]
fn load_state_dict_lists_missing_and_unexpected_parameters() {
    let (a, b, c) = (
        Tensor::zeros(&[2]),
        Tensor::zeros(&[2]),
        Tensor::zeros(&[2]),
    );
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let opt = Sgd::new([("fc1.weight", &a), ("fc2.weight", &b)], config).unwrap();
    let mut other = Sgd::new([("fc1.weight", &a), ("fc3.weight", &c)], config).unwrap();
    let err = other
        .load_state_dict(&opt.state_dict())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Sgd.load_state_dict: missing parameters [\"fc3.weight\"]; unexpected parameters [\"fc2.weight\"]"
    );
}

#[test]
fn load_state_dict_rejects_mis_shaped_state_and_changes_nothing() {
    let w = Tensor::zeros(&[3]).requires_grad_(true);
    let mut opt = Adam::new(
        [("w", &w)],
        AdamConfig {
            lr: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    w.set_grad(Some(Tensor::ones(&[3])));
    opt.step();
    let mut state = opt.state_dict();
    state.insert("state.w.exp_avg", Tensor::zeros(&[4]));
    state.insert("param_groups.0.lr", Tensor::from_vec(vec![0.01f64], &[]));
    let err = opt.load_state_dict(&state).unwrap_err().to_string();
    assert!(
        err.contains("`state.w.exp_avg` has shape [4]; expected [3]"),
        "{err}"
    );
    assert_eq!(opt.lr(), 0.5);
}

#[test]
fn param_groups_have_their_own_lr_and_weight_decay() {
    let a = Tensor::from_vec(vec![1.0f64], &[1]).requires_grad_(true);
    let b = Tensor::from_vec(vec![1.0f64], &[1]).requires_grad_(true);
    let mut opt = Sgd::new(
        [&a],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    opt.add_param_group(ParamGroup::new([&b]).lr(0.01).weight_decay(1.0))
        .unwrap();
    let names: Vec<String> = opt.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0", "1"]);
    for t in [&a, &b] {
        t.set_grad(Some(Tensor::from_vec(vec![1.0f64], &[1])));
    }
    opt.step();
    // a: 1 - 0.1 · 1; b: 1 - 0.01 · (1 + 1 · 1)
    assert!((a.item() - 0.9).abs() < 1e-15 && (b.item() - 0.98).abs() < 1e-15);
    opt.set_lr(1.0).unwrap();
    assert_eq!(
        opt.group_rates().iter().map(|g| g.lr()).collect::<Vec<_>>(),
        [1.0, 1.0]
    );
    let dup = opt.add_param_group(ParamGroup::new([("0", &b)]));
    assert_eq!(
        dup.unwrap_err().to_string(),
        "Sgd: parameter `0` appears twice; each parameter may be in one group only, once"
    );
}

#[test]
fn configuration_errors_name_the_option_and_value() {
    let w = || Tensor::zeros(&[1]).requires_grad_(true);
    let msg = |r: torchlet::Result<()>| r.unwrap_err().to_string();
    assert_eq!(
        msg(Adam::new(
            [w()],
            AdamConfig {
                betas: (0.9, 1.0),
                ..Default::default()
            }
        )
        .map(drop)),
        "Adam: betas.1 must be in [0, 1), got 1"
    );
    assert_eq!(
        msg(RmsProp::new(
            [w()],
            RmsPropConfig {
                eps: -1.0,
                ..Default::default()
            }
        )
        .map(drop)),
        "RmsProp: eps must be non-negative, got -1"
    );
    assert_eq!(
        msg(Adagrad::new(
            [w()],
            AdagradConfig {
                lr_decay: -0.1,
                ..Default::default()
            }
        )
        .map(drop)),
        "Adagrad: lr_decay must be non-negative, got -0.1"
    );
    assert_eq!(
        msg(Sgd::new(Vec::<Tensor>::new(), SgdConfig::default()).map(drop)),
        "Sgd: got an empty parameter list; pass model.named_parameters() or a list of tensors"
    );
    let non_leaf = &w() * 2.0;
    assert!(msg(Sgd::new([non_leaf], SgdConfig::default()).map(drop)).contains("non-leaf"));
}

#[test]
fn clip_grad_norm_matches_pytorch() {
    let clip_cases: Vec<Value> = cases("utils.json")
        .into_iter()
        .filter(|c| c["kind"] == "clip_grad_norm_")
        .collect();
    assert_eq!(clip_cases.len(), 3, "utils.json: every clipping case runs");
    for dtype in [DType::F64, DType::F32] {
        let (rtol, atol) = if dtype == DType::F64 {
            F64_TOL
        } else {
            (1e-5, 1e-6)
        };
        for case in &clip_cases {
            let name = case["name"].as_str().unwrap_or_default();
            let norm_type = match &case["args"]["norm_type"] {
                Value::String(s) if s == "inf" => f64::INFINITY,
                v => v.as_f64().expect("norm_type"),
            };
            let params: Vec<Tensor> = ["w", "b"]
                .iter()
                .map(|p| {
                    let g = tensor(&case["inputs"][format!("grad_{p}")], dtype);
                    let t = g.zeros_like().requires_grad_(true);
                    t.set_grad(Some(g));
                    t
                })
                .collect();
            let total = clip_grad_norm_(&params, arg(case, "max_norm"), norm_type);
            let total = Tensor::from_vec(vec![total], &[]);
            assert_close(
                &format!("{name} ({dtype}) total_norm"),
                &total,
                &case["output"]["total_norm"],
                rtol,
                atol,
            );
            for (p, t) in ["w", "b"].iter().zip(&params) {
                let grad = t.grad().expect("gradient kept");
                assert_close(
                    &format!("{name} ({dtype}) grad_{p}"),
                    &grad,
                    &case["output"][format!("grad_{p}")],
                    rtol,
                    atol,
                );
            }
        }
    }
}

#[test]
fn the_same_tensor_twice_is_refused_by_identity_as_pytorch_does() {
    let w = Tensor::zeros(&[2]).requires_grad_(true);
    let b = Tensor::zeros(&[1]).requires_grad_(true);
    let config = SgdConfig::default();
    let msg = |r: torchlet::Result<()>| r.unwrap_err().to_string();
    // Unnamed, twice in one list.
    assert_eq!(
        msg(Sgd::new([&w, &w], config).map(drop)),
        "Sgd: some parameters appear in more than one parameter group: the tensor of `1` is \
         already in the optimizer as `0`; pass each tensor once"
    );
    // Under two names, in two groups.
    let mut opt = Adam::new([("fc.weight", &w), ("fc.bias", &b)], AdamConfig::default()).unwrap();
    assert_eq!(
        msg(opt.add_param_group(ParamGroup::new([("head.weight", &w)]))),
        "Adam: some parameters appear in more than one parameter group: the tensor of \
         `head.weight` is already in the optimizer as `fc.weight`; pass each tensor once"
    );
    assert_eq!(opt.num_param_groups(), 1, "the refused group is not added");
    // A clone is the same tensor; a detached copy is another one.
    assert!(Sgd::new([w.clone(), w.clone()], config).is_err());
    assert!(Sgd::new([w.clone(), w.detach().requires_grad_(true)], config).is_ok());
}

#[test]
fn set_lr_and_constructors_refuse_nan_and_negative_values() {
    let w = || Tensor::zeros(&[1]).requires_grad_(true);
    let mut opt = Sgd::new([w()], SgdConfig::default()).unwrap();
    for bad in [f64::NAN, -0.1, f64::INFINITY] {
        let err = opt.set_lr(bad).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("set_lr: lr must be a finite non-negative number, got {bad}")
        );
        assert!(opt.group_rates()[0].set_lr(bad).is_err());
    }
    assert_eq!(
        opt.lr(),
        SgdConfig::default().lr,
        "a refused lr changes nothing"
    );
    let msg = |r: torchlet::Result<()>| r.unwrap_err().to_string();
    assert_eq!(
        msg(Sgd::new(
            [w()],
            SgdConfig {
                dampening: f64::NAN,
                ..Default::default()
            }
        )
        .map(drop)),
        "Sgd: dampening must be a finite number, got NaN"
    );
    assert_eq!(
        msg(Adam::new(
            [w()],
            AdamConfig {
                lr: f64::NAN,
                ..Default::default()
            }
        )
        .map(drop)),
        "Adam: lr must be a finite number, got NaN"
    );
    assert_eq!(
        msg(opt.add_param_group(ParamGroup::new([w()]).weight_decay(f64::NAN))),
        "Sgd: weight_decay must be a finite number, got NaN"
    );
}

#[test]
fn clip_grad_norm_with_error_if_nonfinite_refuses_a_nan_norm() {
    let w = Tensor::zeros(&[2]).requires_grad_(true);
    w.set_grad(Some(Tensor::from_vec(vec![f32::INFINITY, 1.0], &[2])));
    let err = clip_grad_norm_with([&w], 1.0, 2.0, true).unwrap_err();
    assert!(matches!(err, torchlet::Error::NonFinite(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "clip_grad_norm_: the total norm of order 2 of the gradients of 1 parameters is inf, \
         so they cannot be clipped; look for the NaN with torchlet::autograd::detect_anomaly, \
         or pass error_if_nonfinite = false to scale them by the non-finite norm anyway"
    );
    assert_eq!(w.grad().unwrap().to_vec::<f32>(), [f32::INFINITY, 1.0]);
    // Without the flag, PyTorch's behaviour: the gradients are scaled by the bad norm.
    assert_eq!(
        clip_grad_norm_with([&w], 1.0, 2.0, false).unwrap(),
        f64::INFINITY
    );
    w.set_grad(Some(Tensor::from_vec(vec![3.0f32, 4.0], &[2])));
    assert_eq!(clip_grad_norm_with([&w], 10.0, 2.0, true).unwrap(), 5.0);
}
