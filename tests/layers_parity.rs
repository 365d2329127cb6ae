//! Every case of tests/reference/layers.json (PyTorch 2.15, float64): each layer built with
//! the case's arguments and tensors, its output (and running statistics) and the gradients
//! of `x` and of its parameters for the given `grad_output`, in f64 and in f32. A case
//! torchlet cannot run fails.

mod common;

use common::{F32_TOL, F64_TOL, assert_close, cases, tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use torchlet::nn::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Buffer, Conv2d, Dropout, Flatten, Forward, LayerNorm,
    Linear, MaxPool2d, Module, Parameter,
};
use torchlet::{DType, Tensor};

fn pair(v: &Value) -> [usize; 2] {
    match v {
        Value::Array(a) => [
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
        ],
        other => [other.as_u64().unwrap() as usize; 2],
    }
}

/// The layer's output and the tensors whose gradients the case lists, by input name.
struct Run {
    y: Tensor,
    extra: Vec<(String, Tensor)>,
    grads: Vec<(String, Tensor)>,
}

fn params(m: &dyn Module) -> Vec<(String, Tensor)> {
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.tensor().clone()))
        .collect()
}

fn run(case: &Value, x: &BTreeMap<String, Tensor>) -> Run {
    let args = &case["args"];
    let input = |k: &str| x.get(k).unwrap_or_else(|| panic!("input {k}")).clone();
    let param = |k: &str| Some(Parameter::new(input(k)));
    let xin = input("x").requires_grad_(true);
    let mut extra = Vec::new();
    let (y, mut grads) = match case["op"].as_str().unwrap() {
        "Linear" => {
            let l = Linear::from_parts(input("weight"), x.get("bias").cloned());
            (l.forward(&xin), params(&l))
        }
        "Conv2d" => {
            let c = Conv2d::from_parts(input("weight"), x.get("bias").cloned())
                .with_stride(pair(&args["stride"]))
                .with_padding(pair(&args["padding"]));
            assert_eq!(c.kernel_size(), pair(&args["kernel_size"]));
            (c.forward(&xin), params(&c))
        }
        "MaxPool2d" => {
            let p = MaxPool2d::new(pair(&args["kernel_size"]))
                .with_stride(pair(&args["stride"]))
                .with_padding(pair(&args["padding"]));
            (p.forward(&xin), vec![])
        }
        "AvgPool2d" => {
            let p = AvgPool2d::new(pair(&args["kernel_size"]))
                .with_stride(pair(&args["stride"]))
                .with_padding(pair(&args["padding"]));
            (p.forward(&xin), vec![])
        }
        op @ ("BatchNorm1d" | "BatchNorm2d") => {
            let n = args["num_features"].as_u64().unwrap() as usize;
            let momentum = args["momentum"].as_f64();
            let eps = args["eps"].as_f64().unwrap();
            let mut bn: Box<dyn BatchNormLike> = if op == "BatchNorm1d" {
                Box::new(BatchNorm1d::new(n).with_eps(eps).with_momentum(momentum))
            } else {
                Box::new(BatchNorm2d::new(n).with_eps(eps).with_momentum(momentum))
            };
            bn.set(
                param("weight"),
                param("bias"),
                input("running_mean"),
                input("running_var"),
            );
            if !args["training"].as_bool().unwrap() {
                bn.eval();
            }
            let y = bn.run(&xin);
            for (name, b) in bn.named_buffers() {
                extra.push((name, b.tensor().clone()));
            }
            (y, params(bn.as_module()))
        }
        "LayerNorm" => {
            let shape: Vec<usize> = args["normalized_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let mut ln = LayerNorm::new(&shape).with_eps(args["eps"].as_f64().unwrap());
            ln.weight = param("weight");
            ln.bias = param("bias");
            (ln.forward(&xin), params(&ln))
        }
        "Dropout" => {
            let mut d = Dropout::new(args["p"].as_f64().unwrap());
            if !args["training"].as_bool().unwrap() {
                d.eval();
            }
            (d.forward(&xin), vec![])
        }
        "Flatten" => {
            let f = Flatten::with_dims(
                args["start_dim"].as_i64().unwrap() as isize,
                args["end_dim"].as_i64().unwrap() as isize,
            );
            (f.forward(&xin), vec![])
        }
        other => panic!("layers.json op `{other}` has no torchlet layer"),
    };
    grads.push(("x".to_string(), xin));
    Run { y, extra, grads }
}

/// The two batch norms behind one interface for the test.
trait BatchNormLike: Module {
    fn set(&mut self, w: Option<Parameter>, b: Option<Parameter>, rm: Tensor, rv: Tensor);
    fn run(&self, x: &Tensor) -> Tensor;
    fn as_module(&self) -> &dyn Module;
}

macro_rules! batch_norm_like {
    ($t:ty) => {
        impl BatchNormLike for $t {
            fn set(&mut self, w: Option<Parameter>, b: Option<Parameter>, rm: Tensor, rv: Tensor) {
                self.weight = w;
                self.bias = b;
                self.running_mean = Some(Buffer::new(rm));
                self.running_var = Some(Buffer::new(rv));
            }
            fn run(&self, x: &Tensor) -> Tensor {
                self.forward(x)
            }
            fn as_module(&self) -> &dyn Module {
                self
            }
        }
    };
}
batch_norm_like!(BatchNorm1d);
batch_norm_like!(BatchNorm2d);

fn check_all(dtype: DType, (rtol, atol): (f64, f64)) {
    let all = cases("layers.json");
    assert_eq!(all.len(), 14, "layers.json cases");
    for case in &all {
        let name = case["name"].as_str().unwrap();
        let inputs: BTreeMap<String, Tensor> = case["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), tensor(v, dtype)))
            .collect();
        let r = run(case, &inputs);
        let main = match case["output"].get("y") {
            Some(y) => y,
            None => &case["output"],
        };
        assert_close(&format!("{name} ({dtype}) output"), &r.y, main, rtol, atol);
        if let Some(outputs) = case["output"]
            .as_object()
            .filter(|_| case["output"].get("y").is_some())
        {
            for (key, want) in outputs.iter().filter(|(k, _)| *k != "y") {
                let (_, got) = r
                    .extra
                    .iter()
                    .find(|(n, _)| n == key)
                    .unwrap_or_else(|| panic!("{name}: torchlet has no buffer {key}"));
                assert_close(&format!("{name} ({dtype}) {key}"), got, want, rtol, atol);
            }
        }
        r.y.backward_with(&inputs["grad_output"]);
        let want = case["grads"].as_object().unwrap();
        assert_eq!(want.len(), r.grads.len(), "{name}: gradients compared");
        for (key, t) in &r.grads {
            let g = t
                .grad()
                .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
            assert_close(
                &format!("{name} ({dtype}) grad {key}"),
                &g,
                &want[key.as_str()],
                rtol,
                atol,
            );
        }
    }
}

#[test]
fn layers_match_pytorch_in_f64() {
    check_all(DType::F64, F64_TOL);
}

#[test]
fn layers_match_pytorch_in_f32() {
    check_all(DType::F32, F32_TOL);
}
