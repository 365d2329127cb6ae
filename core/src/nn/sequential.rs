//! [`Sequential`]: a chain of layers whose children are named `0, 1, …` (or by label).
//!
//! `sequential![a, b, c]` builds `Sequential<(A, B, C)>`, a chain whose type is known at
//! compile time: each layer's output must fit the next layer's [`Forward`] input, or the
//! program does not compile. It holds up to [`MAX_LAYERS`] layers (see NOTE [ Chain length ]
//! there), and each layer passes through [`probe`] so that a mistake is reported at the layer.
//! `Sequential::new()` with [`push`](Sequential::push) builds `Sequential` (the default type
//! parameter: boxed layers) for models assembled at run time.

use crate::nn::forward::{Forward, Layer};
use crate::nn::module::{Member, MemberMut, Module};
use crate::nn::scope::ModuleScope;
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

/// The longest chain `sequential!` builds; nest chains for more.
///
/// # NOTE [ Chain length ]
/// A typed chain is a flat tuple so that its type reads as the layers it holds
/// (`Sequential<(Conv2d, ReLU, MaxPool2d)>`); Rust has no variadic generics, so the impls
/// are generated for every length up to [`MAX_LAYERS`]. That is deeper than any flat stack
/// in torchvision (VGG-19 with batch norm has 53 layers in `features`); `sequential!`
/// refuses a longer chain at its 65th layer and says to nest chains, which works at any
/// depth since a chain is itself a layer.
pub const MAX_LAYERS: usize = 64;

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

/// The check `sequential!` makes of each layer, spanned at the layer so that a mistake is
/// reported there and not at the call of `forward` (not for use outside the macro).
///
/// The macro calls `(&&&Probe::of(&layer)).__check(layer)`: method resolution takes the
/// first of four impls whose bounds hold (autoref specialisation, as `anyhow!` does),
///
/// 1. `&&&Probe<T, _>` for a module with `Forward<&Tensor>`, the common case;
/// 2. `&&Probe<T, I>` for a module with `Forward<I>`, `I` inferred from its only impl;
/// 3. `&Probe<T, _>` for a module without `Forward`, reported by [`NoForward`](probe::NoForward);
/// 4. `Probe<T, _>` for anything else (a closure, a tensor), reported by
///    [`NotALayer`](probe::NotALayer).
///
/// Cases 3 and 4 give `<T as NoForward>::Never` (or `NotALayer`'s), which nothing a user
/// writes defines, so the chain's type is an error and the compiler adds no follow-up
/// message to the one at the layer (at the call of `forward`, say).
#[doc(hidden)]
pub mod probe {
    use crate::nn::forward::Forward;
    use crate::nn::module::Module;
    use crate::tensor::Tensor;
    use std::marker::PhantomData;

    /// A layer's type, and the input its `forward` takes, under inspection.
    pub struct Probe<T, I>(PhantomData<fn(I) -> T>);

    impl<T, I> Probe<T, I> {
        /// The probe for `layer`'s type.
        pub fn of(_layer: &T) -> Probe<T, I> {
            Probe(PhantomData)
        }
    }

    /// Case 1: a module from tensors.
    pub trait TensorLayer {
        type Layer;
        fn __check(self, layer: Self::Layer) -> Self::Layer;
    }

    impl<T: Module + for<'a> Forward<&'a Tensor>> TensorLayer for &&&Probe<T, Tensor> {
        type Layer = T;
        fn __check(self, layer: T) -> T {
            layer
        }
    }

    /// Case 2: a module that takes something other than `&Tensor`.
    pub trait OtherLayer {
        type Layer;
        fn __check(self, layer: Self::Layer) -> Self::Layer;
    }

    impl<T: Module + Forward<I>, I> OtherLayer for &&Probe<T, I> {
        type Layer = T;
        fn __check(self, layer: T) -> T {
            layer
        }
    }

    /// Case 3: a module without `Forward`.
    pub trait ModuleOnly {
        type Layer;
        fn __check(self, layer: Self::Layer) -> <Self::Layer as NoForward>::Never
        where
            Self::Layer: NoForward;
    }

    impl<T: Module, I> ModuleOnly for &Probe<T, I> {
        type Layer = T;
        fn __check(self, layer: T) -> <T as NoForward>::Never
        where
            T: NoForward,
        {
            layer.absurd()
        }
    }

    /// Case 4: not a module.
    pub trait NotModule {
        type Layer;
        fn __check(self, layer: Self::Layer) -> <Self::Layer as NotALayer>::Never
        where
            Self::Layer: NotALayer;
    }

    impl<T, I> NotModule for Probe<T, I> {
        type Layer = T;
        fn __check(self, layer: T) -> <T as NotALayer>::Never
        where
            T: NotALayer,
        {
            layer.absurd()
        }
    }

    /// What case 3 reports; implemented by nothing a user can write.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a layer of `sequential!`: it has no `forward`",
        label = "this module does not implement `Forward`",
        note = "give it one beside its `#[derive(Module)]`: `impl Forward<&Tensor> for {Self} {{ type Output = Tensor; fn forward(&self, x: &Tensor) -> Tensor {{ … }} }}`"
    )]
    pub trait NoForward {
        type Never;
        fn absurd(self) -> Self::Never;
    }

    /// What case 4 reports; implemented by nothing a user can write.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a layer of `sequential!`: it is not a module",
        label = "not a layer",
        note = "a layer is a module with a `forward`: one of torchlet's layers (`Linear`, `ReLU`, …) or a struct with `#[derive(Module)]` and `impl Forward<&Tensor>`",
        note = "a closure or function cannot be a layer; call it in the `forward` of your own module, or use a layer that does the same (`ReLU` for `|x| x.relu()`)"
    )]
    pub trait NotALayer {
        type Never;
        fn absurd(self) -> Self::Never;
    }

    /// The one implementor of [`NoForward`] and [`NotALayer`], so that neither reads as a
    /// trait without impls; it has no values.
    pub enum Never {}

    impl NoForward for Never {
        type Never = Never;
        fn absurd(self) -> Never {
            match self {}
        }
    }

    impl NotALayer for Never {
        type Never = Never;
        fn absurd(self) -> Never {
            match self {}
        }
    }
}

impl<'x> Forward<&'x Tensor> for Sequential {
    type Output = Tensor;

    /// Runs the layers in order (the input itself when there are none).
    ///
    /// # Panics
    /// Where a layer panics; the panic points at the caller of this `forward`.
    #[track_caller]
    fn forward(&self, input: &'x Tensor) -> Tensor {
        let _scope = ModuleScope::enter(self);
        let mut x = input.clone();
        for (layer, name) in self.layers.iter().zip(&self.names) {
            let _child = ModuleScope::child(name, layer.as_dyn());
            // On the `dyn Layer` itself: `Box<dyn Layer>` is a `Layer` too, but its `forward`
            // reaches the layer through `Forward`'s vtable, which drops the caller's location.
            x = (**layer).forward_layer(&x);
        }
        x
    }
}

/// `Layers` and `Forward` for the tuple `(A, B, …)`: `($T $O $P $i)` says that layer `$i`
/// of type `$T` takes a reference to `$P`, the previous layer's output, and gives `$O`; the
/// first layer takes the chain's input. `$Last` is the last layer's output.
macro_rules! tuple_chain {
    (($A:ident $OA:ident 0) $(($T:ident $O:ident $P:ident $i:tt))*; $Last:ident) => {
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
            $A: Module + Forward<In, Output = $OA>,
            $($T: Module + for<'o> Forward<&'o $P, Output = $O>,)*
        {
            type Output = $Last;

            /// Runs the layers in order.
            ///
            /// # Panics
            /// Where a layer panics (a shape that does not fit); the panic points at the
            /// caller of this `forward`, not inside the chain.
            #[track_caller]
            fn forward(&self, input: In) -> Self::Output {
                let _scope = ModuleScope::enter(self);
                let x = {
                    let _child = ModuleScope::child(&self.names[0], &self.layers.0);
                    self.layers.0.forward(input)
                };
                // Each output moves into the next block and is dropped as soon as the next
                // layer returns (a plain `let x = …(&x)` would keep every intermediate alive
                // to the end: 5× the memory of evaluating a CNN over a big batch).
                $(let x = {
                    let prev = x;
                    let _child = ModuleScope::child(&self.names[$i], &self.layers.$i);
                    self.layers.$i.forward(&prev)
                };)*
                x
            }
        }
    };
}

/// `tuple_chain!` for every prefix of the list: lengths 1 to [`MAX_LAYERS`].
macro_rules! tuple_chains {
    ([$($done:tt)*]) => {};
    ([$($done:tt)*] ($T:ident $O:ident $($more:tt)*) $($rest:tt)*) => {
        tuple_chain!($($done)* ($T $O $($more)*); $O);
        tuple_chains!([$($done)* ($T $O $($more)*)] $($rest)*);
    };
}

tuple_chains!([] (L0 O0 0) (L1 O1 O0 1) (L2 O2 O1 2) (L3 O3 O2 3) (L4 O4 O3 4) (L5 O5 O4 5)
    (L6 O6 O5 6) (L7 O7 O6 7) (L8 O8 O7 8) (L9 O9 O8 9) (L10 O10 O9 10) (L11 O11 O10 11)
    (L12 O12 O11 12) (L13 O13 O12 13) (L14 O14 O13 14) (L15 O15 O14 15) (L16 O16 O15 16)
    (L17 O17 O16 17) (L18 O18 O17 18) (L19 O19 O18 19) (L20 O20 O19 20) (L21 O21 O20 21)
    (L22 O22 O21 22) (L23 O23 O22 23) (L24 O24 O23 24) (L25 O25 O24 25) (L26 O26 O25 26)
    (L27 O27 O26 27) (L28 O28 O27 28) (L29 O29 O28 29) (L30 O30 O29 30) (L31 O31 O30 31)
    (L32 O32 O31 32) (L33 O33 O32 33) (L34 O34 O33 34) (L35 O35 O34 35) (L36 O36 O35 36)
    (L37 O37 O36 37) (L38 O38 O37 38) (L39 O39 O38 39) (L40 O40 O39 40) (L41 O41 O40 41)
    (L42 O42 O41 42) (L43 O43 O42 43) (L44 O44 O43 44) (L45 O45 O44 45) (L46 O46 O45 46)
    (L47 O47 O46 47) (L48 O48 O47 48) (L49 O49 O48 49) (L50 O50 O49 50) (L51 O51 O50 51)
    (L52 O52 O51 52) (L53 O53 O52 53) (L54 O54 O53 54) (L55 O55 O54 55) (L56 O56 O55 56)
    (L57 O57 O56 57) (L58 O58 O57 58) (L59 O59 O58 59) (L60 O60 O59 60) (L61 O61 O60 61)
    (L62 O62 O61 62) (L63 O63 O62 63));
