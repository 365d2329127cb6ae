//! `#[derive(Module)]` on the shapes of struct it accepts, one struct each, compiled with
//! only the `torchlet` facade in scope.

use torchlet::Tensor;
use torchlet::nn::{Buffer, Linear, Module, Parameter, ReLU};

fn names(m: &dyn Module) -> Vec<String> {
    m.state_dict().keys().cloned().collect()
}

#[derive(Module)]
struct Generic<M> {
    inner: M,
    scale: Parameter,
}

#[test]
fn generic_fields_are_submodules_and_own_parameters_come_first() {
    let m = Generic {
        inner: Linear::new(2, 3),
        scale: Parameter::new(Tensor::ones(&[1])),
    };
    // PyTorch lists a module's own parameters before its children's.
    assert_eq!(names(&m), ["scale", "inner.weight", "inner.bias"]);
    assert_eq!(
        m.to_string(),
        "Generic(\n  (inner): Linear(in_features=2, out_features=3, bias=True)\n)"
    );
}

#[derive(Module)]
struct Tuple(Linear, Buffer);

#[test]
fn tuple_struct_fields_are_named_by_index() {
    let m = Tuple(Linear::new(1, 1), Buffer::new(Tensor::zeros(&[2])));
    assert_eq!(names(&m), ["1", "0.weight", "0.bias"]);
    assert_eq!(m.named_buffers()[0].0, "1");
}

#[derive(Module)]
struct Lists {
    layers: Vec<Linear>,
    heads: [Linear; 2],
}

#[test]
fn vec_and_array_fields_are_module_lists() {
    let m = Lists {
        layers: vec![Linear::new(2, 2), Linear::new(2, 2), Linear::new(2, 1)],
        heads: [Linear::new(1, 1), Linear::new(1, 1)],
    };
    let keys = names(&m);
    assert_eq!(keys[..2], ["layers.0.weight", "layers.0.bias"]);
    assert_eq!(keys[4..6], ["layers.2.weight", "layers.2.bias"]);
    assert_eq!(keys[6], "heads.0.weight");
    let modules: Vec<String> = m.named_modules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(modules[..3], ["", "layers", "layers.0"]);
    // PyTorch's ModuleList repr folds repeated children.
    assert!(
        m.to_string()
            .contains("(0-1): 2 x Linear(in_features=2, out_features=2, bias=True)"),
        "{m}"
    );
}

#[derive(Module)]
struct Optional {
    body: Linear,
    head: Option<Linear>,
    shift: Option<Parameter>,
    stats: Option<Buffer>,
}

#[test]
fn option_fields_register_only_when_present() {
    let mut m = Optional {
        body: Linear::new(1, 1),
        head: None,
        shift: None,
        stats: None,
    };
    assert_eq!(names(&m), ["body.weight", "body.bias"]);
    m.head = Some(Linear::with_bias(1, 1, false));
    m.shift = Some(Parameter::new(Tensor::zeros(&[1])));
    m.stats = Some(Buffer::new(Tensor::zeros(&[1])));
    assert_eq!(
        names(&m),
        ["shift", "stats", "body.weight", "body.bias", "head.weight"]
    );
}

#[derive(Module)]
struct Renamed {
    #[module(rename = "fc")]
    linear: Linear,
    act: ReLU,
    #[module(skip)]
    note: String,
    #[module(training)]
    training: bool,
}

#[test]
fn rename_skip_and_training_attributes() {
    let mut m = Renamed {
        linear: Linear::new(1, 1),
        act: ReLU,
        note: "kept out".into(),
        training: true,
    };
    assert_eq!(names(&m), ["fc.weight", "fc.bias"]);
    let children: Vec<String> = m.named_children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(children, ["fc", "act"]);
    m.eval();
    assert!(!m.training && !m.is_training() && !m.linear.is_training());
    assert_eq!(m.note, "kept out");
}

#[derive(Module)]
struct Unit;

#[derive(Module)]
struct WithLifetime<'a, M: Module> {
    shared: Parameter,
    #[module(skip)]
    label: &'a str,
    inner: M,
}

#[test]
fn unit_structs_and_bounded_generics() {
    assert_eq!(Unit.to_string(), "Unit()");
    assert!(names(&Unit).is_empty());
    let w = WithLifetime {
        shared: Parameter::new(Tensor::ones(&[1])),
        label: "borrowed",
        inner: ReLU,
    };
    assert_eq!(
        (w.label, names(&w)),
        ("borrowed", vec!["shared".to_string()])
    );
}

#[test]
fn nested_modules_get_dotted_names() {
    #[derive(Module)]
    struct Block {
        fc: Linear,
    }
    #[derive(Module)]
    struct Net {
        blocks: Vec<Block>,
        out: Linear,
    }
    let net = Net {
        blocks: vec![Block {
            fc: Linear::new(2, 2),
        }],
        out: Linear::new(2, 1),
    };
    assert_eq!(
        names(&net),
        [
            "blocks.0.fc.weight",
            "blocks.0.fc.bias",
            "out.weight",
            "out.bias"
        ]
    );
}

#[derive(Module)]
struct ParameterLists {
    fc: Linear,
    extra: Vec<Parameter>,
    stats: [Buffer; 2],
}

#[test]
fn vec_of_parameters_is_a_parameter_list() {
    // PyTorch: `self.extra = nn.ParameterList([...])` gives keys `extra.0`, `extra.1`.
    let m = ParameterLists {
        fc: Linear::new(1, 1),
        extra: vec![
            Parameter::new(Tensor::ones(&[2])),
            Parameter::new(Tensor::ones(&[3])),
        ],
        stats: [
            Buffer::new(Tensor::zeros(&[1])),
            Buffer::new(Tensor::zeros(&[1])),
        ],
    };
    let params: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(params, ["fc.weight", "fc.bias", "extra.0", "extra.1"]);
    assert_eq!(m.named_buffers()[1].0, "stats.1");
    assert_eq!(m.num_parameters(), 2 + 2 + 3);
}
