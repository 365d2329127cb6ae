//! [`summary`]: a table of a model's layers with each one's output shape and parameter
//! count, like torchinfo's `summary(model, input_size=…)`.

use crate::autograd::no_grad;
use crate::nn::forward::Forward;
use crate::nn::module::{Member, Module};
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;

/// One row of the table.
#[derive(Clone, Debug)]
struct Row {
    /// The dotted name (`features.0`); empty for the model.
    name: String,
    class: &'static str,
    output: Option<Vec<usize>>,
    /// This module's own parameter elements (not its children's).
    params: usize,
}

/// What [`summary`] gives: print it (`Display`) or read the totals.
#[derive(Clone, Debug)]
pub struct Summary {
    input: Vec<usize>,
    rows: Vec<Row>,
    total: usize,
    trainable: usize,
}

/// Runs `model` once on `input` (in evaluation mode and without a graph, as torchinfo
/// does) and tabulates its modules: name and class, output shape, own parameter count,
/// and the totals.
///
/// The modes of `model`'s modules are restored afterwards, which is why it takes
/// `&mut`. See NOTE [ Recording output shapes ] below for which rows show a shape.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Linear, ReLU, sequential, summary};
/// use torchlet::Tensor;
///
/// let mut model = sequential![Linear::new(784, 128), ReLU, Linear::new(128, 10)];
/// let s = summary(&mut model, &Tensor::zeros(&[32, 784]));
/// assert_eq!((s.total_params(), s.trainable_params()), (101_770, 101_770));
/// assert_eq!(s.to_string().lines().nth(4).unwrap(),
///            "├─0 (Linear)                      [32, 128]                100,480");
/// ```
///
/// # NOTE [ Recording output shapes ]
/// torchinfo hooks every module's forward; torchlet has no hooks, so [`summary`] turns on a
/// thread-local recorder and each of torchlet's layers reports its output from `forward`
/// through `record` (one check of a thread-local flag when no summary runs). A layer is
/// matched to its row by its address and class name; zero-sized layers (`ReLU`) can share
/// an address, so each key keeps its outputs in call order and the rows take them in
/// registry order, which is the call order of a `Sequential`. A `Sequential` shows its last
/// layer's output; a module of the user's own (not torchlet's) shows `--` unless it is the
/// model itself.
pub fn summary<M>(model: &mut M, input: &Tensor) -> Summary
where
    M: Module + for<'a> Forward<&'a Tensor, Output = Tensor> + ?Sized,
{
    let mut modes = Vec::new();
    model.apply(&mut |m| modes.push(m.training_flag()));
    model.eval();
    let (output, mut recorded) = recording(|| no_grad(|| model.forward(input)));
    let mut modes = modes.into_iter();
    model.apply(&mut |m| {
        if let Some(Some(training)) = modes.next() {
            m.set_training_flag(training);
        }
    });
    let mut rows: Vec<Row> = model
        .named_modules()
        .into_iter()
        .map(|(name, m)| Row {
            name,
            class: m.class_name(),
            output: recorded
                .get_mut(&key(m))
                .and_then(|outputs| outputs.pop_front()),
            params: own_parameters(m),
        })
        .collect();
    rows[0].output = Some(output.shape());
    fill_sequential_outputs(&mut rows);
    let parameters = model.parameters();
    Summary {
        input: input.shape(),
        rows,
        total: parameters.iter().map(|p| p.numel()).sum(),
        trainable: parameters
            .iter()
            .filter(|p| p.requires_grad())
            .map(|p| p.numel())
            .sum(),
    }
}

impl Summary {
    /// The number of parameter elements.
    pub fn total_params(&self) -> usize {
        self.total
    }

    /// The number of parameter elements that require a gradient.
    pub fn trainable_params(&self) -> usize {
        self.trainable
    }
}

/// A module's identity while a summary runs: its address and its class (see NOTE [
/// Recording output shapes ]).
type Key = (usize, &'static str);

fn key(m: &dyn Module) -> Key {
    (m as *const dyn Module as *const () as usize, m.class_name())
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static OUTPUTS: RefCell<HashMap<Key, VecDeque<Vec<usize>>>> = RefCell::new(HashMap::new());
}

/// Notes `output` as `module`'s, when a [`summary`] is running on this thread; what each
/// torchlet layer calls at the end of its `forward`.
#[inline]
pub(crate) fn record<M: Module>(module: &M, output: &Tensor) {
    if RECORDING.with(Cell::get) {
        let shape = output.shape();
        OUTPUTS.with(|o| {
            o.borrow_mut()
                .entry(key(module))
                .or_default()
                .push_back(shape)
        });
    }
}

/// Runs `f` with the recorder on, and gives what it returned and what was recorded.
fn recording<T>(f: impl FnOnce() -> T) -> (T, HashMap<Key, VecDeque<Vec<usize>>>) {
    /// Turns the recorder off however `f` ends, so that a panic leaves no summary running.
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            RECORDING.with(|r| r.set(false));
        }
    }
    OUTPUTS.with(|o| o.borrow_mut().clear());
    RECORDING.with(|r| r.set(true));
    let off = Off;
    let value = f();
    drop(off);
    (
        value,
        OUTPUTS.with(|o| std::mem::take(&mut *o.borrow_mut())),
    )
}

fn own_parameters(m: &dyn Module) -> usize {
    let mut n = 0;
    m.visit(&mut |_, member| {
        if let Member::Parameter(p) = member {
            n += p.numel();
        }
    });
    n
}

/// A `Sequential` gives what its last layer gives; rows are visited from the last, so that
/// a chain nested last in a chain is filled before its parent.
fn fill_sequential_outputs(rows: &mut [Row]) {
    for i in (0..rows.len()).rev() {
        if rows[i].output.is_some() || rows[i].class != "Sequential" {
            continue;
        }
        let d = depth(&rows[i]);
        let last_child = rows[i + 1..]
            .iter()
            .take_while(|r| depth(r) > d)
            .filter(|r| depth(r) == d + 1)
            .last();
        rows[i].output = last_child.and_then(|r| r.output.clone());
    }
}

fn depth(row: &Row) -> usize {
    match row.name.is_empty() {
        true => 0,
        false => row.name.matches('.').count() + 1,
    }
}

/// `1,234,567`, as torchinfo prints counts.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary {
    /// `├─name (Class)` with the tree drawn for each ancestor, as torchinfo draws it.
    fn label(&self, i: usize) -> String {
        let row = &self.rows[i];
        let d = depth(row);
        if d == 0 {
            return row.class.to_string();
        }
        // Whether the ancestor at each depth (and this row, last) is the last of its siblings.
        let is_last = |j: usize, at: usize| {
            self.rows[j + 1..]
                .iter()
                .map(depth)
                .find(|&e| e <= at)
                .is_none_or(|e| e < at)
        };
        let mut label = String::new();
        for level in 1..d {
            let ancestor = (0..i).rev().find(|&j| depth(&self.rows[j]) == level);
            let last = ancestor.is_none_or(|j| is_last(j, level));
            label += if last { "  " } else { "│ " };
        }
        label += if is_last(i, d) { "└─" } else { "├─" };
        let name = row.name.rsplit('.').next().unwrap_or_default();
        label + &format!("{name} ({})", row.class)
    }
}

impl fmt::Display for Summary {
    /// The table: one row per module, then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = (0..self.rows.len()).map(|i| self.label(i)).collect();
        let width = labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
            .max(32);
        let rule = "=".repeat(width + 2 + 18 + 2 + 12);
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<width$}  {:<18}  {:>12}",
            "Layer (name)", "Output shape", "Param #"
        )?;
        writeln!(f, "{rule}")?;
        for (row, label) in self.rows.iter().zip(&labels) {
            let shape = row
                .output
                .as_ref()
                .map_or("--".into(), |s| format!("{s:?}"));
            let params = match row.params {
                0 => "--".to_string(),
                n => thousands(n),
            };
            let pad = width - label.chars().count();
            writeln!(f, "{label}{}  {shape:<18}  {params:>12}", " ".repeat(pad))?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Input shape: {:?}", self.input)?;
        writeln!(f, "Total params: {}", thousands(self.total))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable))?;
        writeln!(
            f,
            "Non-trainable params: {}",
            thousands(self.total - self.trainable)
        )?;
        write!(f, "{rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_print_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(101_770), "101,770");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
