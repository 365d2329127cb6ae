//! [`LSTM`], [`GRU`] and [`RNN`]: multi-layer, optionally bidirectional recurrent layers with
//! PyTorch's parameters, state-dict keys, printed form and outputs.
//!
//! The input projection of a whole sequence is one matrix product (`x @ W_ihᵀ + b_ih` over
//! all time steps, differentiated by `linear`); the recurrence of each direction of each
//! layer is one fused op with a closed-form backward (see NOTE [ Fused LSTM sequence ] in
//! `ops/recurrent.rs`, measured in `benches/lstm.rs`; GRU and RNN in
//! `ops/recurrent_gru.rs`), each gradchecked. Layers, directions and the outputs are put
//! together from differentiable primitives (narrow, select, cat, stack), so autograd
//! differentiates every output, `h_n` and `c_n` included.

use crate::nn::dropout::Dropout;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::module::{Member, MemberMut, Module, fmt_module, py_bool, py_float};
use crate::nn::parameter::Parameter;
use crate::ops::recurrent_gru::Recurrence;
use crate::random::InitDraws;
use crate::tensor::Tensor;
use std::fmt;

/// The recurrence of one layer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
}

impl Cell {
    /// Gate blocks stacked in the weights: LSTM `i, f, g, o`; GRU `r, z, n`; RNN one.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::RnnTanh | Cell::RnnRelu => 1,
        }
    }

    fn class_name(self) -> &'static str {
        match self {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
            Cell::RnnTanh | Cell::RnnRelu => "RNN",
        }
    }
}

/// One recurrent state: `h`, and `c` for an LSTM.
#[derive(Clone)]
struct State {
    h: Tensor,
    c: Option<Tensor>,
}

/// What the three layers share (PyTorch's `RNNBase`): the configuration and the parameters in
/// PyTorch's order, per layer and direction `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
struct RnnBase {
    cell: Cell,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bias: bool,
    batch_first: bool,
    dropout: f64,
    bidirectional: bool,
    params: Vec<(String, Parameter)>,
    training: bool,
    draws: InitDraws,
}

impl RnnBase {
    fn new(cell: Cell, input_size: usize, hidden_size: usize) -> RnnBase {
        let mut base = RnnBase {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            params: Vec::new(),
            training: true,
            draws: InitDraws::default(),
        };
        base.reset_parameters();
        base
    }

    fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Draws every parameter from `U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`, as PyTorch's
    /// `reset_parameters` does, for the current configuration: in place of the previous
    /// draws when nothing has drawn since them, so that a layer configured by its builders
    /// right after `new` gets PyTorch's values for the final arguments.
    fn reset_parameters(&mut self) {
        let mut draws = std::mem::take(&mut self.draws);
        self.params = draws.redo(|| self.draw_parameters());
        self.draws = draws;
    }

    /// The parameters of the current configuration, drawn in PyTorch's order.
    fn draw_parameters(&self) -> Vec<(String, Parameter)> {
        let (h, g) = (self.hidden_size, self.cell.gates() * self.hidden_size);
        let bound = if h > 0 { 1.0 / (h as f64).sqrt() } else { 0.0 };
        let mut params = Vec::new();
        for layer in 0..self.num_layers {
            let in_k = if layer == 0 {
                self.input_size
            } else {
                h * self.directions()
            };
            for direction in 0..self.directions() {
                let suffix = if direction == 1 { "_reverse" } else { "" };
                let mut shapes = vec![("weight_ih", vec![g, in_k]), ("weight_hh", vec![g, h])];
                if self.bias {
                    shapes.extend([("bias_ih", vec![g]), ("bias_hh", vec![g])]);
                }
                for (name, shape) in shapes {
                    let t = Tensor::zeros(&shape);
                    init::uniform_(&t, -bound, bound);
                    params.push((format!("{name}_l{layer}{suffix}"), Parameter::new(t)));
                }
            }
        }
        params
    }

    /// The parameters as plain tensors, in order.
    fn tensors(&self) -> Vec<&Tensor> {
        self.params.iter().map(|(_, p)| p.tensor()).collect()
    }

    /// `(weight_ih, weight_hh, bias_ih, bias_hh)` of layer-direction `index`
    /// (`2·layer + direction` when bidirectional) out of all the parameters `params`.
    fn weights<'p>(&self, params: &[&'p Tensor], index: usize) -> [Option<&'p Tensor>; 4] {
        let per = if self.bias { 4 } else { 2 };
        let p = &params[index * per..(index + 1) * per];
        let get = |i: usize| p.get(i).copied();
        [get(0), get(1), get(2), get(3)]
    }

    fn describe(&self) -> String {
        let mut s = format!("{}, {}", self.input_size, self.hidden_size);
        if self.num_layers != 1 {
            s += &format!(", num_layers={}", self.num_layers);
        }
        if !self.bias {
            s += ", bias=False";
        }
        if self.batch_first {
            s += ", batch_first=True";
        }
        if self.dropout != 0.0 {
            s += &format!(", dropout={}", py_float(self.dropout));
        }
        if self.bidirectional {
            s += &format!(", bidirectional={}", py_bool(true));
        }
        s
    }

    /// One direction of one layer over `x` `[L, N, in]`: the outputs `[L, N, H]` (each at
    /// its own time position, also when `reverse`) and the final state.
    fn run_direction(
        &self,
        params: &[&Tensor],
        x: &Tensor,
        index: usize,
        reverse: bool,
        state: State,
    ) -> (Tensor, State) {
        let [w_ih, w_hh, b_ih, b_hh] = self.weights(params, index);
        let (w_ih, w_hh) = (w_ih.expect("weight_ih"), w_hh.expect("weight_hh"));
        let (steps, n) = (x.size(0), x.size(1));
        let project = |bias: Option<&Tensor>| {
            // One product for every time step (rows are (t, n) pairs; 2-D so that any
            // layout of `x` works).
            x.reshape(&[-1, x.size(2) as isize])
                .linear(w_ih, bias)
                .reshape_usize(&[steps, n, w_ih.size(0)])
        };
        let last = if reverse { 0 } else { steps - 1 };
        if self.cell == Cell::Lstm {
            // Both biases enter the gates the same way, so they go in with the projection.
            let bias = b_ih.zip(b_hh).map(|(a, b)| a + b);
            let c0 = state
                .c
                .as_ref()
                .unwrap_or_else(|| unreachable!("LSTM has c"));
            let packed = project(bias.as_ref()).lstm_sequence(&state.h, c0, w_hh, reverse);
            let outputs = packed.narrow(0, 0, steps);
            let h = outputs.select(0, last);
            let c = Some(packed.select(0, steps));
            return (outputs, State { h, c });
        }
        let (kind, gx, b_hh) = match self.cell {
            Cell::Gru => (Recurrence::Gru, project(b_ih), b_hh),
            cell => {
                let kind = match cell {
                    Cell::RnnRelu => Recurrence::Relu,
                    _ => Recurrence::Tanh,
                };
                let bias = b_ih.zip(b_hh).map(|(a, b)| a + b);
                (kind, project(bias.as_ref()), None)
            }
        };
        let outputs = gx.recurrent_sequence(kind, &state.h, w_hh, b_hh, reverse);
        let h = outputs.select(0, last);
        (outputs, State { h, c: None })
    }

    /// The whole layer with the parameters `params` (in [`RnnBase::params`] order):
    /// `(output, h_n, c_n)` as PyTorch returns them.
    #[track_caller]
    fn run(
        &self,
        params: &[&Tensor],
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> RnnOutput {
        self.check(input, h0, c0);
        let batched = input.dim() == 3;
        let (x, h0, c0) = if batched {
            let x = if self.batch_first {
                input.transpose(0, 1)
            } else {
                input.clone()
            };
            (x, h0.cloned(), c0.cloned())
        } else {
            let un = |t: Option<&Tensor>| t.map(|t| t.unsqueeze(1));
            (input.unsqueeze(1), un(h0), un(c0))
        };
        let zeros = Tensor::full_dtype(&[x.size(1), self.hidden_size], 0.0, x.dtype());
        let initial =
            |t: &Option<Tensor>, i: usize| t.as_ref().map_or(zeros.clone(), |t| t.select(0, i));
        let mut layer_input = x;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for layer in 0..self.num_layers {
            let mut outputs = Vec::new();
            for direction in 0..self.directions() {
                let index = layer * self.directions() + direction;
                let state = State {
                    h: initial(&h0, index),
                    c: (self.cell == Cell::Lstm).then(|| initial(&c0, index)),
                };
                let (out, last) =
                    self.run_direction(params, &layer_input, index, direction == 1, state);
                outputs.push(out);
                h_n.push(last.h);
                c_n.extend(last.c);
            }
            layer_input = if outputs.len() == 1 {
                outputs.remove(0)
            } else {
                Tensor::cat(&outputs, 2)
            };
            if self.training && self.dropout > 0.0 && layer + 1 < self.num_layers {
                layer_input = Dropout::new(self.dropout).forward(&layer_input);
            }
        }
        let (h_n, c_n) = (
            Tensor::stack(&h_n, 0),
            (!c_n.is_empty()).then(|| Tensor::stack(&c_n, 0)),
        );
        if !batched {
            let sq = |t: Tensor| t.squeeze_dim(1);
            return RnnOutput {
                output: sq(layer_input),
                h_n: sq(h_n),
                c_n: c_n.map(sq),
            };
        }
        let output = if self.batch_first {
            layer_input.transpose(0, 1)
        } else {
            layer_input
        };
        RnnOutput { output, h_n, c_n }
    }

    /// Panics with the layer's name and the expected shapes unless `input`, `h0` and `c0` fit.
    #[track_caller]
    fn check(&self, input: &Tensor, h0: Option<&Tensor>, c0: Option<&Tensor>) {
        let xs = input.shape();
        let time = usize::from(xs.len() == 3 && self.batch_first);
        let fits = matches!(xs.len(), 2 | 3) && xs[xs.len() - 1] == self.input_size && xs[time] > 0;
        let batch = match (xs.len(), self.batch_first) {
            (3, true) => Some(xs[0]),
            (3, false) => Some(xs[1]),
            _ => None,
        };
        let mut state_shape = vec![self.directions() * self.num_layers];
        state_shape.extend(batch);
        state_shape.push(self.hidden_size);
        let bad_state = [("h0", h0), ("c0", c0)]
            .into_iter()
            .find(|(_, t)| t.is_some_and(|t| t.shape() != state_shape));
        if fits && bad_state.is_none() {
            return;
        }
        let layout = if self.batch_first {
            "[N, L, input_size]"
        } else {
            "[L, N, input_size]"
        };
        let got = match bad_state {
            Some((name, t)) if fits => {
                format!("{name} {:?}", t.map(Tensor::shape).unwrap_or_default())
            }
            _ => format!("input {xs:?}"),
        };
        rnn_shape_error(
            &format!("{}({})", self.cell.class_name(), self.describe()),
            layout,
            &state_shape,
            &got,
        )
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn rnn_shape_error(layer: &str, layout: &str, state: &[usize], got: &str) -> ! {
    panic!(
        "{layer}: expected input {layout} (or unbatched [L, input_size]) with L > 0 and states {state:?}, got {got}"
    )
}

/// The outputs of a recurrent layer.
struct RnnOutput {
    output: Tensor,
    h_n: Tensor,
    c_n: Option<Tensor>,
}

impl Module for RnnBase {
    fn class_name(&self) -> &'static str {
        self.cell.class_name()
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        for (name, p) in &self.params {
            f(name, Member::Parameter(p));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        for (name, p) in &mut self.params {
            f(name, MemberMut::Parameter(p));
        }
    }

    fn as_dyn(&self) -> &dyn Module {
        self
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }

    fn extra_repr(&self) -> String {
        self.describe()
    }

    fn training_flag(&self) -> Option<bool> {
        Some(self.training)
    }

    fn set_training_flag(&mut self, training: bool) {
        self.training = training;
    }
}

/// The `Module` impl, `Display` and the builder methods every recurrent layer shares.
macro_rules! recurrent_layer {
    ($name:ident) => {
        impl $name {
            /// The number of stacked layers (each layer's input is the previous one's output
            /// sequence); redraws the parameters.
            pub fn with_num_layers(mut self, num_layers: usize) -> $name {
                self.0.num_layers = num_layers;
                self.0.reset_parameters();
                self
            }

            /// Keeps the biases or drops them (PyTorch's `bias=False`); redraws the parameters.
            pub fn with_bias(mut self, bias: bool) -> $name {
                self.0.bias = bias;
                self.0.reset_parameters();
                self
            }

            /// Whether inputs and outputs are `[N, L, *]` (true) or `[L, N, *]` (false, the
            /// default). The states `h0`, `h_n` (and `c0`, `c_n`) are `[D·num_layers, N, H]`
            /// either way.
            pub fn with_batch_first(mut self, batch_first: bool) -> $name {
                self.0.batch_first = batch_first;
                self
            }

            /// The probability of zeroing each output of every layer but the last during
            /// training (PyTorch's `dropout`, 0 by default).
            ///
            /// # Panics
            /// If `p` is not in `[0, 1]`.
            #[track_caller]
            pub fn with_dropout(mut self, p: f64) -> $name {
                if !(0.0..=1.0).contains(&p) {
                    panic!("{}: dropout must be in [0, 1], got {p}", stringify!($name));
                }
                self.0.dropout = p;
                self
            }

            /// Whether to run a second direction from the last step to the first (parameters
            /// with the suffix `_reverse`); redraws the parameters.
            pub fn with_bidirectional(mut self, bidirectional: bool) -> $name {
                self.0.bidirectional = bidirectional;
                self.0.reset_parameters();
                self
            }

            /// The number of features of each input step.
            pub fn input_size(&self) -> usize {
                self.0.input_size
            }

            /// The number of features of the hidden state.
            pub fn hidden_size(&self) -> usize {
                self.0.hidden_size
            }

            /// The number of stacked layers.
            pub fn num_layers(&self) -> usize {
                self.0.num_layers
            }
        }

        impl Module for $name {
            fn class_name(&self) -> &'static str {
                self.0.class_name()
            }
            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
                self.0.visit(f)
            }
            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
                self.0.visit_mut(f)
            }
            fn as_dyn(&self) -> &dyn Module {
                self
            }
            fn as_dyn_mut(&mut self) -> &mut dyn Module {
                self
            }
            fn extra_repr(&self) -> String {
                self.0.describe()
            }
            fn training_flag(&self) -> Option<bool> {
                self.0.training_flag()
            }
            fn set_training_flag(&mut self, training: bool) {
                self.0.set_training_flag(training)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_module(self, f)
            }
        }
    };
}

/// A multi-layer long short-term memory (PyTorch's `nn.LSTM`). Per step, with the gate
/// blocks `i, f, g, o` of the weights:
///
/// `i = σ(W_ii x + b_ii + W_hi h + b_hi)`, `f`, `o` likewise, `g = tanh(…)`,
/// `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.
///
/// Parameters `weight_ih_l{k}` `[4H, in_k]`, `weight_hh_l{k}` `[4H, H]`, `bias_ih_l{k}`,
/// `bias_hh_l{k}` `[4H]` (and `…_reverse` when bidirectional), all drawn from
/// `U(-1/sqrt(H), 1/sqrt(H))`.
///
/// # Shapes
/// `input` `[L, N, input_size]` (`[N, L, input_size]` with `batch_first`, or unbatched
/// `[L, input_size]`) → `(output, (h_n, c_n))`: `output` `[L, N, D·H]` (D = 2 when
/// bidirectional, both directions concatenated, forward first), `h_n`, `c_n`
/// `[D·num_layers, N, H]`, the final states (the reverse direction's after step 0).
/// Call with `(&input, (&h0, &c0))` to start from given states instead of zeros.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, LSTM};
/// use torchlet::Tensor;
/// let lstm = LSTM::new(8, 16).with_num_layers(2).with_batch_first(true);
/// let (out, (h_n, c_n)) = lstm.forward(&Tensor::randn(&[3, 7, 8]));
/// assert_eq!((out.shape(), h_n.shape(), c_n.shape()), (vec![3, 7, 16], vec![2, 3, 16], vec![2, 3, 16]));
/// assert_eq!(lstm.to_string(), "LSTM(8, 16, num_layers=2, batch_first=True)");
/// ```
#[allow(
    clippy::upper_case_acronyms,
    reason = "PyTorch's name, nn.LSTM, so that a search finds it"
)]
pub struct LSTM(RnnBase);

/// A multi-layer gated recurrent unit (PyTorch's `nn.GRU`). Per step, with the gate blocks
/// `r, z, n` of the weights:
///
/// `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z` likewise,
/// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`.
///
/// Parameters and shapes as [`LSTM`] with `3H` rows and no cell state: `(output, h_n)`;
/// call with `(&input, &h0)` to start from a given state.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, GRU};
/// use torchlet::Tensor;
/// let gru = GRU::new(3, 5).with_bidirectional(true);
/// let (out, h_n) = gru.forward(&Tensor::randn(&[4, 2, 3]));
/// assert_eq!((out.shape(), h_n.shape()), (vec![4, 2, 10], vec![2, 2, 5]));
/// assert_eq!(gru.to_string(), "GRU(3, 5, bidirectional=True)");
/// ```
#[allow(
    clippy::upper_case_acronyms,
    reason = "PyTorch's name, nn.GRU, so that a search finds it"
)]
pub struct GRU(RnnBase);

/// A multi-layer Elman recurrent layer (PyTorch's `nn.RNN`):
/// `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)` (or ReLU with
/// [`with_nonlinearity("relu")`](RNN::with_nonlinearity)).
///
/// Parameters and shapes as [`GRU`] with `H` rows.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, RNN};
/// use torchlet::Tensor;
/// let rnn = RNN::new(2, 3).with_bias(false);
/// let (out, h_n) = rnn.forward(&Tensor::randn(&[5, 2]));
/// assert_eq!((out.shape(), h_n.shape()), (vec![5, 3], vec![1, 3]));
/// assert_eq!(rnn.to_string(), "RNN(2, 3, bias=False)");
/// ```
#[allow(
    clippy::upper_case_acronyms,
    reason = "PyTorch's name, nn.RNN, so that a search finds it"
)]
pub struct RNN(RnnBase);

recurrent_layer!(LSTM);
recurrent_layer!(GRU);
recurrent_layer!(RNN);

impl LSTM {
    /// One layer from `input_size` to `hidden_size` features, with biases, time-major,
    /// one direction.
    pub fn new(input_size: usize, hidden_size: usize) -> LSTM {
        LSTM(RnnBase::new(Cell::Lstm, input_size, hidden_size))
    }
}

impl GRU {
    /// One layer from `input_size` to `hidden_size` features, with biases, time-major,
    /// one direction.
    pub fn new(input_size: usize, hidden_size: usize) -> GRU {
        GRU(RnnBase::new(Cell::Gru, input_size, hidden_size))
    }
}

impl RNN {
    /// One tanh layer from `input_size` to `hidden_size` features, with biases, time-major,
    /// one direction.
    pub fn new(input_size: usize, hidden_size: usize) -> RNN {
        RNN(RnnBase::new(Cell::RnnTanh, input_size, hidden_size))
    }

    /// `"tanh"` (the default) or `"relu"` (PyTorch's `nonlinearity`; like PyTorch, the
    /// printed form does not show it).
    ///
    /// # Panics
    /// If `nonlinearity` is neither.
    #[track_caller]
    pub fn with_nonlinearity(mut self, nonlinearity: &str) -> RNN {
        self.0.cell = match nonlinearity {
            "tanh" => Cell::RnnTanh,
            "relu" => Cell::RnnRelu,
            other => panic!("RNN: unknown nonlinearity '{other}'; expected \"tanh\" or \"relu\""),
        };
        self
    }
}

impl<'a> Forward<&'a Tensor> for LSTM {
    /// `(output, (h_n, c_n))`.
    type Output = (Tensor, (Tensor, Tensor));

    /// # Panics
    /// If the input is not `[L, N, input_size]` (batch-first: `[N, L, input_size]`) or
    /// `[L, input_size]`.
    #[track_caller]
    fn forward(&self, input: &'a Tensor) -> Self::Output {
        let _scope = crate::nn::ModuleScope::enter(self);
        let out = self.0.run(&self.0.tensors(), input, None, None);
        crate::nn::summary::record(self, &out.output);
        (out.output, (out.h_n, out.c_n.expect("LSTM returns c_n")))
    }
}

impl<'a> Forward<(&'a Tensor, (&'a Tensor, &'a Tensor))> for LSTM {
    /// `(output, (h_n, c_n))`.
    type Output = (Tensor, (Tensor, Tensor));

    /// From the states `(h0, c0)`, each `[D·num_layers, N, H]`.
    ///
    /// # Panics
    /// If a shape does not fit.
    #[track_caller]
    fn forward(&self, (input, (h0, c0)): (&'a Tensor, (&'a Tensor, &'a Tensor))) -> Self::Output {
        let _scope = crate::nn::ModuleScope::enter(self);
        let out = self.0.run(&self.0.tensors(), input, Some(h0), Some(c0));
        crate::nn::summary::record(self, &out.output);
        (out.output, (out.h_n, out.c_n.expect("LSTM returns c_n")))
    }
}

macro_rules! forward_without_cell_state {
    ($name:ident) => {
        impl<'a> Forward<&'a Tensor> for $name {
            /// `(output, h_n)`.
            type Output = (Tensor, Tensor);

            /// # Panics
            /// If the input is not `[L, N, input_size]` (batch-first: `[N, L, input_size]`)
            /// or `[L, input_size]`.
            #[track_caller]
            fn forward(&self, input: &'a Tensor) -> Self::Output {
                let _scope = crate::nn::ModuleScope::enter(self);
                let out = self.0.run(&self.0.tensors(), input, None, None);
                crate::nn::summary::record(self, &out.output);
                (out.output, out.h_n)
            }
        }

        impl<'a> Forward<(&'a Tensor, &'a Tensor)> for $name {
            /// `(output, h_n)`.
            type Output = (Tensor, Tensor);

            /// From the state `h0` `[D·num_layers, N, H]`.
            ///
            /// # Panics
            /// If a shape does not fit.
            #[track_caller]
            fn forward(&self, (input, h0): (&'a Tensor, &'a Tensor)) -> Self::Output {
                let _scope = crate::nn::ModuleScope::enter(self);
                let out = self.0.run(&self.0.tensors(), input, Some(h0), None);
                crate::nn::summary::record(self, &out.output);
                (out.output, out.h_n)
            }
        }
    };
}

forward_without_cell_state!(GRU);
forward_without_cell_state!(RNN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn keys(m: &dyn Module) -> Vec<String> {
        m.state_dict().keys().cloned().collect()
    }

    #[test]
    fn keys_follow_pytorch_order() {
        let lstm = LSTM::new(3, 4).with_num_layers(2).with_bidirectional(true);
        let k = keys(&lstm);
        assert_eq!(k.len(), 16);
        assert_eq!(
            k[..6],
            [
                "weight_ih_l0",
                "weight_hh_l0",
                "bias_ih_l0",
                "bias_hh_l0",
                "weight_ih_l0_reverse",
                "weight_hh_l0_reverse"
            ]
        );
        // Layer 1 reads both directions of layer 0.
        assert_eq!(
            lstm.state_dict().get("weight_ih_l1").unwrap().shape(),
            [16, 8]
        );
        assert_eq!(
            keys(&RNN::new(2, 3).with_bias(false)),
            ["weight_ih_l0", "weight_hh_l0"]
        );
    }

    #[test]
    fn parameters_are_drawn_within_one_over_sqrt_hidden() {
        let gru = GRU::new(5, 16);
        for p in gru.parameters() {
            assert!(p.to_vec::<f32>().iter().all(|v| v.abs() <= 0.25));
        }
    }

    /// The parameters of `m` in f64, requiring grad, for gradcheck.
    fn f64_params(m: &RnnBase) -> Vec<Tensor> {
        m.tensors()
            .iter()
            .map(|t| t.double().detach().requires_grad_(true))
            .collect()
    }

    #[test]
    fn lstm_gradients_through_output_and_states_match_finite_differences() {
        crate::random::manual_seed(21);
        let lstm = LSTM::new(2, 3)
            .with_bidirectional(true)
            .with_batch_first(true);
        let mut inputs = vec![
            Tensor::randn(&[2, 3, 2]).double().requires_grad_(true),
            Tensor::randn(&[2, 2, 3]).double().requires_grad_(true),
            Tensor::randn(&[2, 2, 3]).double().requires_grad_(true),
        ];
        inputs.extend(f64_params(&lstm.0));
        gradcheck(
            |v| {
                let params: Vec<&Tensor> = v[3..].iter().collect();
                let out = lstm.0.run(&params, &v[0], Some(&v[1]), Some(&v[2]));
                let c = out.c_n.expect("c_n");
                &(&out.output.sum() + &(&out.h_n * &out.h_n).sum()) + &c.sum()
            },
            &inputs,
        )
        .unwrap();
    }

    #[test]
    fn gru_and_rnn_gradients_match_finite_differences() {
        crate::random::manual_seed(22);
        let layers = [
            GRU::new(3, 2).with_num_layers(2).0,
            RNN::new(3, 2).0,
            RNN::new(3, 2).with_nonlinearity("relu").with_bias(false).0,
        ];
        for layer in &layers {
            let mut inputs = vec![Tensor::randn(&[4, 2, 3]).double().requires_grad_(true)];
            inputs.extend(f64_params(layer));
            gradcheck(
                |v| {
                    let params: Vec<&Tensor> = v[1..].iter().collect();
                    let out = layer.run(&params, &v[0], None, None);
                    &(&out.output * &out.output).sum() + &out.h_n.sum()
                },
                &inputs,
            )
            .unwrap_or_else(|e| panic!("{:?}: {e}", layer.cell));
        }
    }

    #[test]
    #[should_panic(
        expected = "GRU(3, 4): expected input [L, N, input_size] (or unbatched \
                               [L, input_size]) with L > 0 and states [1, 2, 4], got input [0, 2, 3]"
    )]
    fn an_empty_sequence_is_refused() {
        let _ = GRU::new(3, 4).forward(&Tensor::zeros(&[0, 2, 3]));
    }

    #[test]
    fn dropout_acts_between_layers_in_training_only() {
        crate::random::manual_seed(5);
        let mut lstm = LSTM::new(3, 4).with_num_layers(2).with_dropout(0.5);
        assert_eq!(lstm.to_string(), "LSTM(3, 4, num_layers=2, dropout=0.5)");
        let x = Tensor::randn(&[5, 2, 3]);
        let (a, _) = lstm.forward(&x);
        let (b, _) = lstm.forward(&x);
        assert_ne!(a.to_vec::<f32>(), b.to_vec::<f32>());
        lstm.eval();
        let (a, _) = lstm.forward(&x);
        let (b, _) = lstm.forward(&x);
        assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
    }

    #[test]
    fn unbatched_input_gives_unbatched_outputs() {
        let lstm = LSTM::new(3, 4).with_num_layers(2);
        let (out, (h, c)) = lstm.forward(&Tensor::randn(&[5, 3]));
        assert_eq!(
            (out.shape(), h.shape(), c.shape()),
            (vec![5, 4], vec![2, 4], vec![2, 4])
        );
    }

    #[test]
    #[should_panic(
        expected = "LSTM(3, 4, batch_first=True): expected input [N, L, input_size] \
                               (or unbatched [L, input_size]) with L > 0 and states [1, 2, 4], got h0 [1, 4, 4]"
    )]
    fn a_wrong_initial_state_is_named() {
        let lstm = LSTM::new(3, 4).with_batch_first(true);
        let (x, h) = (Tensor::zeros(&[2, 5, 3]), Tensor::zeros(&[1, 4, 4]));
        let _ = lstm.forward((&x, (&h, &h)));
    }
}
