//! [`Sequential`]: a chain of layers whose children are named `0, 1, …` (or by label).
//!
//! `sequential![a, b, c]` builds `Sequential<(A, B, C)>`, a chain whose type is known at
//! compile time: each layer's output must fit the next layer's [`Forward`] input, or the
//! program does not compile. `Sequential::new()` with [`push`](Sequential::push) builds
//! `Sequential` (the default type parameter: boxed layers) for models assembled at run time.

use crate::nn::forward::{Forward, Layer};
use crate::nn::module::{Member, MemberMut, Module};
use crate::tensor::Tensor;

/// A chain of layers, run in order (PyTorch's `nn.Sequential`).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, Linear, Module, ReLU, Sequential, sequential};
/// use torchlet::Tensor;
///
/// let model: Sequential<(Linear, ReLU, Linear)> =
///     sequential![Linear::new(784, 128), ReLU, Linear::new(128, 10)];
/// assert_eq!(model.state_dict().keys().cloned().collect::<Vec<_>>(),
///            ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// assert_eq!(model.forward(&Tensor::zeros(&[32, 784])).shape(), [32, 10]);
///
/// let mut dynamic = Sequential::new();
/// dynamic.push(Linear::new(784, 128)).push(ReLU).push(Linear::new(128, 10));
/// assert_eq!(dynamic.to_string(), model.to_string());
/// ```
pub struct Sequential<L = Vec<Box<dyn Layer>>> {
    /// The layers: a tuple for a typed chain, boxed layers for a run-time one.
    pub layers: L,
    names: Vec<String>,
}

/// What a [`Sequential`] can hold: a tuple of modules or a `Vec` of boxed layers.
pub trait Layers {
    /// Calls `f` with each layer in order.
    fn visit_layers<'a>(&'a self, f: &mut dyn FnMut(usize, &'a dyn Module));
    /// Calls `f` with each layer in order, mutably.
    fn visit_layers_mut<'a>(&'a mut self, f: &mut dyn FnMut(usize, &'a mut dyn Module));
}

impl<L: Layers> Sequential<L> {
    /// A chain of `layers` named by `names` (what `sequential!` expands to).
    ///
    /// # Panics
    /// If the number of names differs from the number of layers.
    #[track_caller]
    pub fn from_layers(layers: L, names: &[&str]) -> Sequential<L> {
        let mut count = 0;
        layers.visit_layers(&mut |_, _| count += 1);
        if count != names.len() {
            panic!(
                "Sequential::from_layers: {count} layers but {} names",
                names.len()
            );
        }
        Sequential {
            layers,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The children's names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Sequential {
    /// An empty run-time chain (its forward returns the input).
    pub fn new() -> Sequential {
        Sequential {
            layers: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Appends `layer`, named by its index (PyTorch's `append`).
    pub fn push(&mut self, layer: impl Layer + 'static) -> &mut Sequential {
        let name = self.layers.len().to_string();
        self.push_named(name, layer)
    }

    /// Appends `layer` under `name` (PyTorch's `add_module`).
    ///
    /// # Panics
    /// If `name` is empty, contains `.`, or is already taken.
    #[track_caller]
    pub fn push_named(
        &mut self,
        name: impl Into<String>,
        layer: impl Layer + 'static,
    ) -> &mut Sequential {
        let name = name.into();
        if name.is_empty() || name.contains('.') || self.names.contains(&name) {
            panic!("Sequential::push_named: `{name}` is empty, contains `.` or is already taken");
        }
        self.layers.push(Box::new(layer));
        self.names.push(name);
        self
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl Layers for Vec<Box<dyn Layer>> {
    fn visit_layers<'a>(&'a self, f: &mut dyn FnMut(usize, &'a dyn Module)) {
        for (i, l) in self.iter().enumerate() {
            f(i, l.as_dyn());
        }
    }

    fn visit_layers_mut<'a>(&'a mut self, f: &mut dyn FnMut(usize, &'a mut dyn Module)) {
        for (i, l) in self.iter_mut().enumerate() {
            f(i, l.as_dyn_mut());
        }
    }
}

impl<L: Layers> Module for Sequential<L> {
    fn class_name(&self) -> &'static str {
        "Sequential"
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        let names = &self.names;
        self.layers
            .visit_layers(&mut |i, m| f(&names[i], Member::Module(m)));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        let names = &self.names;
        self.layers
            .visit_layers_mut(&mut |i, m| f(&names[i], MemberMut::Module(m)));
    }

    fn as_dyn(&self) -> &dyn Module {
        self
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }
}

impl<L: Layers> std::fmt::Display for Sequential<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::nn::module::fmt_module(self, f)
    }
}

impl<'x> Forward<&'x Tensor> for Sequential {
    type Output = Tensor;
    fn forward(&self, input: &'x Tensor) -> Tensor {
        let mut layers = self.layers.iter();
        let Some(first) = layers.next() else {
            return input.clone();
        };
        let mut x = first.forward(input);
        for layer in layers {
            x = layer.forward(&x);
        }
        x
    }
}

/// `Layers` and `Forward` for the tuple `(A, B, …)`: `$In: $T $Out $i` says that layer `$i`
/// of type `$T` takes `$In` (the chain's input for the first, a reference to the previous
/// output for the others) and gives `$Out`.
macro_rules! tuple_chain {
    ($A:ident $OA:ident 0 $(, $T:ident $O:ident $P:ident $i:tt)*) => {
        impl<$A: Module $(, $T: Module)*> Layers for ($A, $($T,)*) {
            fn visit_layers<'a>(&'a self, f: &mut dyn FnMut(usize, &'a dyn Module)) {
                f(0, &self.0);
                $(f($i, &self.$i);)*
            }

            fn visit_layers_mut<'a>(&'a mut self, f: &mut dyn FnMut(usize, &'a mut dyn Module)) {
                f(0, &mut self.0);
                $(f($i, &mut self.$i);)*
            }
        }

        impl<In, $A, $OA $(, $T, $O)*> Forward<In> for Sequential<($A, $($T,)*)>
        where
            $A: Forward<In, Output = $OA>,
            $($T: for<'o> Forward<&'o $P, Output = $O>,)*
        {
            type Output = tuple_chain!(@last $OA $(, $O)*);

            fn forward(&self, input: In) -> Self::Output {
                let x = self.layers.0.forward(input);
                // Each output moves into the next block and is dropped as soon as the next
                // layer returns (a plain `let x = …(&x)` would keep every intermediate alive
                // to the end: 5× the memory of evaluating a CNN over a big batch).
                $(let x = {
                    let prev = x;
                    self.layers.$i.forward(&prev)
                };)*
                x
            }
        }
    };
    (@last $O:ident) => { $O };
    (@last $O:ident, $($rest:ident),+) => { tuple_chain!(@last $($rest),+) };
}

tuple_chain!(A OA 0);
tuple_chain!(A OA 0, B OB OA 1);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6, H OH OG 7);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6, H OH OG 7, I OI OH 8);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6, H OH OG 7, I OI OH 8, J OJ OI 9);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6, H OH OG 7, I OI OH 8, J OJ OI 9, K OK OJ 10);
tuple_chain!(A OA 0, B OB OA 1, C OC OB 2, D OD OC 3, E OE OD 4, F OF OE 5, G OG OF 6, H OH OG 7, I OI OH 8, J OJ OI 9, K OK OJ 10, L OL OK 11);
