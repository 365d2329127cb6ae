//! The `Module` registry against PyTorch: the state-dict cases of tests/reference/utils.json
//! (keys, shapes, parameters, buffers, modules and the printed tree), and the trait's
//! behaviour: modes, freezing, zero_grad, apply, load_state_dict's errors.

mod common;

use serde_json::Value;
use torchlet::nn::{
    BatchNorm2d, Conv2d, Dropout, Forward, Linear, MaxPool2d, Module, ReLU, Sequential, StateDict,
    sequential,
};
use torchlet::{Error, Tensor};

#[derive(Module)]
struct TwoLinear {
    l1: Linear,
    l2: Linear,
}

#[derive(Module)]
struct ConvNet {
    features: Sequential<(Conv2d, ReLU, MaxPool2d)>,
    bn: BatchNorm2d,
    classifier: Linear,
}

fn shapes(v: &Value) -> Vec<(String, Vec<usize>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (e[0].as_str().unwrap().to_string(), shape.collect())
        })
        .collect()
}

fn listed<T: std::ops::Deref<Target = Tensor>>(
    items: Vec<(String, T)>,
) -> Vec<(String, Vec<usize>)> {
    items.into_iter().map(|(n, t)| (n, t.shape())).collect()
}

fn check(case: &Value, model: &dyn Module) {
    let name = case["name"].as_str().unwrap();
    let out = &case["output"];
    let sd: Vec<(String, Vec<usize>)> = model
        .state_dict()
        .iter()
        .map(|(k, t)| (k.clone(), t.shape()))
        .collect();
    assert_eq!(sd, shapes(&out["state_dict"]), "{name}: state_dict");
    assert_eq!(
        listed(model.named_parameters()),
        shapes(&out["parameters"]),
        "{name}: parameters"
    );
    assert_eq!(
        listed(model.named_buffers()),
        shapes(&out["buffers"]),
        "{name}: buffers"
    );
    let modules: Vec<(String, String)> = model
        .named_modules()
        .into_iter()
        .map(|(n, m)| (n, m.class_name().to_string()))
        .collect();
    let want: Vec<(String, String)> = out["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(modules, want, "{name}: modules");
    assert_eq!(
        model.to_string(),
        case["args"]["repr"].as_str().unwrap(),
        "{name}: repr"
    );
}

#[test]
fn state_dict_cases_of_utils_json_match_pytorch() {
    let all: Vec<Value> = common::cases("utils.json")
        .into_iter()
        .filter(|c| c["kind"] == "state_dict")
        .collect();
    assert_eq!(all.len(), 3);
    for case in &all {
        let model: Box<dyn Module> = match case["name"].as_str().unwrap() {
            "state_dict_mlp_sequential" => {
                Box::new(sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2)])
            }
            "state_dict_custom_two_linear" => Box::new(TwoLinear {
                l1: Linear::new(3, 5),
                l2: Linear::new(5, 2),
            }),
            "state_dict_nested_convnet" => Box::new(ConvNet {
                features: sequential![Conv2d::new(1, 4, 3), ReLU, MaxPool2d::new(2)],
                bn: BatchNorm2d::new(4),
                classifier: Linear::new(36, 10),
            }),
            other => panic!("utils.json state_dict case `{other}` has no torchlet model"),
        };
        check(case, model.as_ref());
    }
}

#[test]
fn runtime_sequential_has_the_typed_chains_names_and_output() {
    torchlet::manual_seed(1);
    let typed = sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2)];
    let mut dynamic = Sequential::new();
    dynamic
        .push(Linear::new(4, 8))
        .push(ReLU)
        .push(Linear::new(8, 2));
    dynamic.load_state_dict(&typed.state_dict(), true).unwrap();
    let x = Tensor::randn(&[3, 4]);
    assert_eq!(
        typed.forward(&x).to_vec::<f32>(),
        dynamic.forward(&x).to_vec::<f32>()
    );
    assert_eq!(typed.to_string(), dynamic.to_string());
    let labelled = sequential![fc1 = Linear::new(4, 8), act = ReLU, fc2 = Linear::new(8, 2)];
    let keys: Vec<String> = labelled.state_dict().keys().cloned().collect();
    assert_eq!(keys, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
}

#[test]
fn train_and_eval_reach_every_submodule() {
    let mut model = sequential![
        Linear::new(4, 4),
        Dropout::new(0.5),
        sequential![BatchNorm2d::new(1)]
    ];
    assert!(model.is_training());
    model.eval();
    assert!(!model.is_training());
    assert!(
        model
            .modules()
            .iter()
            .all(|m| m.training_flag() != Some(true))
    );
    model.train();
    assert!(
        model
            .modules()
            .iter()
            .filter_map(|m| m.training_flag())
            .all(|t| t)
    );
}

#[test]
fn freezing_zero_grad_and_counting() {
    let model = TwoLinear {
        l1: Linear::new(3, 5),
        l2: Linear::new(5, 2),
    };
    assert_eq!(model.num_parameters(), 3 * 5 + 5 + 5 * 2 + 2);
    model
        .l2
        .forward(&model.l1.forward(&Tensor::ones(&[1, 3])))
        .sum()
        .backward();
    assert!(model.parameters().iter().all(|p| p.grad().is_some()));
    model.zero_grad();
    assert!(model.parameters().iter().all(|p| p.grad().is_none()));
    model.l1.requires_grad_(false);
    let y = model.l2.forward(&model.l1.forward(&Tensor::ones(&[1, 3])));
    y.sum().backward();
    assert!(model.l1.weight.grad().is_none() && model.l2.weight.grad().is_some());
}

#[test]
fn apply_visits_children_before_the_parent() {
    let mut model = ConvNet {
        features: sequential![Conv2d::new(1, 4, 3), ReLU, MaxPool2d::new(2)],
        bn: BatchNorm2d::new(4),
        classifier: Linear::new(36, 10),
    };
    let mut order = Vec::new();
    model.apply(&mut |m| order.push(m.class_name()));
    assert_eq!(
        order,
        [
            "Conv2d",
            "ReLU",
            "MaxPool2d",
            "Sequential",
            "BatchNorm2d",
            "Linear",
            "ConvNet"
        ]
    );
    model.apply(&mut |m| {
        if m.class_name() == "Linear" {
            for p in m.parameters() {
                torchlet::nn::init::constant_(&p, 0.5);
            }
        }
    });
    assert!(
        model
            .classifier
            .weight
            .to_vec::<f32>()
            .iter()
            .all(|v| *v == 0.5)
    );
}

#[test]
fn load_state_dict_reports_every_problem_at_once() {
    let mut model = TwoLinear {
        l1: Linear::new(3, 5),
        l2: Linear::new(5, 2),
    };
    let mut sd = StateDict::new();
    sd.insert("l1.weight", Tensor::zeros(&[5, 3]));
    sd.insert("l1.bias", Tensor::zeros(&[4]));
    sd.insert("head.weight", Tensor::zeros(&[1]));
    let err = model.load_state_dict(&sd, true).unwrap_err();
    let Error::StateDict {
        missing,
        unexpected,
        mismatched,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(missing, &["l2.weight", "l2.bias"]);
    assert_eq!(unexpected, &["head.weight"]);
    assert_eq!(mismatched, &[("l1.bias".to_string(), vec![4], vec![5])]);
    let text = err.to_string();
    assert!(
        text.starts_with("Error(s) in loading state_dict for TwoLinear:"),
        "{text}"
    );
    assert!(text.contains("size mismatch for l1.bias"), "{text}");
    // Nothing was copied.
    assert!(model.l1.weight.to_vec::<f32>().iter().any(|v| *v != 0.0));

    // Not strict: missing and unexpected keys are returned; a shape mismatch still fails.
    sd.insert("l1.bias", Tensor::zeros(&[5]));
    let keys = model.load_state_dict(&sd, false).unwrap();
    assert_eq!(keys.missing_keys, ["l2.weight", "l2.bias"]);
    assert_eq!(keys.unexpected_keys, ["head.weight"]);
    assert!(model.l1.weight.to_vec::<f32>().iter().all(|v| *v == 0.0));

    // Not strict, but no key matches: refused.
    let mut other = StateDict::new();
    other.insert("module.l1.weight", Tensor::zeros(&[5, 3]));
    let err = model
        .load_state_dict(&other, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no key matches"), "{err}");
}
