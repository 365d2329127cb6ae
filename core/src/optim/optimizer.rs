//! The [`Optimizer`] trait, parameter groups, and the machinery every optimizer shares:
//! named parameters, per-parameter state, the step loop and the state dict.
//!
//! NOTE [ Optimizer updates ]
//! `step()` runs each optimizer's update rule element by element on the parameter's storage
//! (through `Tensor::update_in_place`), with the state buffers kept as plain vectors of the
//! parameter's dtype. A rule written with tensor ops would allocate a temporary per op and
//! per parameter on every step; the W3 benchmark (20,000 steps of a tiny MLP) is all such
//! overhead. The rules follow PyTorch's single-tensor (`foreach=False`) code line by line,
//! in the same order of floating-point operations, so f64 trajectories match PyTorch's to
//! rounding.
//!
//! NOTE [ Optimizer state by name ]
//! PyTorch keys optimizer state by parameter position, so inserting a layer shifts every
//! later parameter onto another's momentum. torchlet keys it by parameter name (the
//! model's `named_parameters()` names, or `"0"`, `"1"`, … for a plain list), and
//! `load_state_dict` matches names, listing every missing and unexpected one.

use crate::dtype::{DType, Float, Storage};
use crate::error::{Error, Result};
use crate::nn::Parameter;
use crate::state_dict::StateDict;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What every optimizer does: update parameters from their gradients, clear the
/// gradients, and expose learning rates and state for schedulers and checkpoints.
///
/// The training loop reads as in PyTorch:
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::Parameter};
/// use torchlet::optim::{Optimizer, Sgd, SgdConfig};
/// let w = Parameter::new(Tensor::from_vec(vec![1.0f32, -2.0], &[2]));
/// let mut opt = Sgd::new([("w", &w)], SgdConfig { lr: 0.1, ..Default::default() })?;
/// let loss = (&*w * &*w).sum(); // gradient 2w
/// loss.backward();
/// opt.step();
/// opt.zero_grad();
/// assert_eq!(w.to_vec::<f32>(), [0.8, -1.6]);
/// assert!(w.grad().is_none());
/// # Ok::<(), torchlet::Error>(())
/// ```
pub trait Optimizer: Send {
    /// Updates every parameter that has a gradient (parameters without one are skipped, as
    /// in PyTorch).
    ///
    /// # Panics
    /// If a gradient's shape or dtype differs from its parameter's.
    fn step(&mut self);

    /// Drops every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`, the
    /// default).
    fn zero_grad(&mut self);

    /// Adds parameters with their own learning rate and weight decay; the other
    /// hyper-parameters are the optimizer's.
    ///
    /// # Errors
    /// If the group is empty, a name is already in the optimizer, a tensor cannot be
    /// optimized, or the learning rate or weight decay is invalid.
    fn add_param_group(&mut self, group: ParamGroup) -> Result<()>;

    /// The learning rate and momentum cell of each param group, shared with the optimizer:
    /// what schedulers hold.
    fn group_rates(&self) -> Vec<GroupRates>;

    /// The parameters, in group order, with their names.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// The state as flat named tensors, ready for a safetensors checkpoint; the keys spell
    /// PyTorch's nested dict with dots:
    /// - `state.{param}.group`: the parameter's group index (i64, present for every
    ///   parameter, so a loader can tell a missing parameter from one without state yet);
    /// - `state.{param}.step` (f64 scalar) and `state.{param}.{buffer}` (the parameter's
    ///   shape and dtype), e.g. `state.0.weight.momentum_buffer`, once it has state;
    /// - `param_groups.{i}.{hyper}`: each group's hyper-parameters as f64 scalars (`lr`,
    ///   `momentum`, `betas.0`, booleans as 0/1).
    ///
    /// The tensors are copies: later steps do not change them.
    fn state_dict(&self) -> StateDict;

    /// Restores a [`state_dict`](Optimizer::state_dict), matching parameters by name.
    ///
    /// # Errors
    /// [`Error::Config`] listing every missing and unexpected key and parameter, parameters
    /// in another group, and every entry of the wrong shape or dtype (a vector where a
    /// scalar belongs, a negative step, an integer buffer, a NaN hyper-parameter), each by
    /// its key; nothing is changed then. See NOTE [ Restoring untrusted state ].
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;

    /// The number of param groups.
    fn num_param_groups(&self) -> usize {
        self.group_rates().len()
    }

    /// The learning rate of the first param group.
    fn lr(&self) -> f64 {
        self.group_rates().first().map_or(0.0, GroupRates::lr)
    }

    /// Sets the learning rate of every param group.
    ///
    /// # Errors
    /// [`Error::Config`] when `lr` is negative, NaN or infinite; no group is changed then.
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        for g in self.group_rates() {
            g.set_lr(lr)?;
        }
        Ok(())
    }
}

/// `Ok` for a learning rate an optimizer can use: finite and non-negative.
fn check_lr(lr: f64) -> Result<()> {
    require(
        "set_lr",
        "lr",
        lr,
        lr >= 0.0 && lr.is_finite(),
        "a finite non-negative number",
    )
}

/// A parameter for an optimizer: `(name, tensor)` pairs as `named_parameters()` gives them,
/// or bare tensors and parameters, which are named by position (`"0"`, `"1"`, …).
pub trait IntoParam {
    /// The name (None: name it by position) and the tensor.
    fn into_param(self) -> (Option<String>, Tensor);
}

impl IntoParam for Tensor {
    fn into_param(self) -> (Option<String>, Tensor) {
        (None, self)
    }
}

impl IntoParam for &Tensor {
    fn into_param(self) -> (Option<String>, Tensor) {
        (None, self.clone())
    }
}

impl IntoParam for Parameter {
    fn into_param(self) -> (Option<String>, Tensor) {
        (None, self.into())
    }
}

impl IntoParam for &Parameter {
    fn into_param(self) -> (Option<String>, Tensor) {
        (None, self.tensor().clone())
    }
}

impl<S: Into<String>, P: AsRef<Tensor>> IntoParam for (S, P) {
    fn into_param(self) -> (Option<String>, Tensor) {
        (Some(self.0.into()), self.1.as_ref().clone())
    }
}

/// Parameters with their own learning rate and weight decay, for
/// [`Optimizer::add_param_group`] (PyTorch's `{'params': …, 'lr': …}` dict).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{Optimizer, ParamGroup, Sgd, SgdConfig}};
/// let (a, b) = (Tensor::zeros(&[2]), Tensor::zeros(&[3]));
/// let mut opt = Sgd::new([("body", &a)], SgdConfig { lr: 0.1, ..Default::default() })?;
/// opt.add_param_group(ParamGroup::new([("head", &b)]).lr(0.01))?;
/// assert_eq!(opt.group_rates()[1].lr(), 0.01);
/// # Ok::<(), torchlet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ParamGroup {
    params: Vec<(Option<String>, Tensor)>,
    lr: Option<f64>,
    weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group of `params` using the optimizer's hyper-parameters.
    pub fn new<P: IntoParam>(params: impl IntoIterator<Item = P>) -> ParamGroup {
        ParamGroup {
            params: params.into_iter().map(IntoParam::into_param).collect(),
            lr: None,
            weight_decay: None,
        }
    }

    /// Sets the group's own learning rate.
    pub fn lr(self, lr: f64) -> ParamGroup {
        ParamGroup {
            lr: Some(lr),
            ..self
        }
    }

    /// Sets the group's own weight decay.
    pub fn weight_decay(self, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            weight_decay: Some(weight_decay),
            ..self
        }
    }
}

/// The learning rate and momentum of one param group, shared between the optimizer and the
/// schedulers that drive it (a cheap handle: clones share the values).
///
/// The momentum is SGD's and RMSprop's `momentum` or Adam's `beta1`, the value OneCycleLR
/// cycles; it is `None` for optimizers without one (Adagrad).
#[derive(Clone, Debug)]
pub struct GroupRates(Arc<Rates>);

#[derive(Debug)]
struct Rates {
    lr: AtomicU64,
    momentum: Option<AtomicU64>,
}

impl GroupRates {
    fn new(lr: f64, momentum: Option<f64>) -> GroupRates {
        GroupRates(Arc::new(Rates {
            lr: AtomicU64::new(lr.to_bits()),
            momentum: momentum.map(|m| AtomicU64::new(m.to_bits())),
        }))
    }

    /// The learning rate in effect.
    pub fn lr(&self) -> f64 {
        f64::from_bits(self.0.lr.load(Ordering::Relaxed))
    }

    /// Sets the learning rate used by the next steps.
    ///
    /// # Errors
    /// [`Error::Config`] when `lr` is negative, NaN or infinite; the rate is unchanged then.
    pub fn set_lr(&self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        self.store_lr(lr);
        Ok(())
    }

    /// Sets the learning rate without checking it: for schedulers, whose rates come from
    /// checked ones.
    pub(crate) fn store_lr(&self, lr: f64) {
        self.0.lr.store(lr.to_bits(), Ordering::Relaxed);
    }

    /// The momentum (or Adam's beta1), if the optimizer has one.
    pub fn momentum(&self) -> Option<f64> {
        self.0
            .momentum
            .as_ref()
            .map(|m| f64::from_bits(m.load(Ordering::Relaxed)))
    }

    /// Sets the momentum (or beta1); ignored by optimizers without one.
    pub fn set_momentum(&self, momentum: f64) {
        if let Some(m) = &self.0.momentum {
            m.store(momentum.to_bits(), Ordering::Relaxed);
        }
    }
}

/// A mutable view of one hyper-parameter, for the tables optimizers list them in.
pub(crate) enum Hyper<'a> {
    Float(&'a mut f64),
    Bool(&'a mut bool),
}

/// An optimizer's configuration and update rule; implemented by the `*Config` structs.
///
/// The step reads the hyper-parameters as fields; the table of [`hyper`](Rule::hyper)
/// names them only for the state dict.
pub(crate) trait Rule: Copy + Send + Sync + 'static {
    /// The optimizer's name, for messages.
    const NAME: &'static str;
    /// The per-parameter state buffers, in the order `update` receives them.
    const BUFFERS: &'static [&'static str];
    /// Whether the state has a `step` counter.
    const COUNTS_STEPS: bool;

    /// The learning rate.
    fn lr_mut(&mut self) -> &mut f64;

    /// The weight decay.
    fn weight_decay_mut(&mut self) -> &mut f64;

    /// The value OneCycleLR cycles (`momentum` or Adam's `beta1`), if any.
    fn momentum_mut(&mut self) -> Option<&mut f64>;

    /// Every hyper-parameter by its PyTorch name (tuples as `betas.0`, `betas.1`).
    fn hyper(&mut self) -> Vec<(&'static str, Hyper<'_>)>;

    /// Checks the values, naming the first bad one.
    fn validate(&self) -> Result<()>;

    /// Updates one parameter `p` with gradient `g` at step `step` (counted from 1); an
    /// empty buffer has not been created yet.
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]);

    /// This configuration with the group's current learning rate and momentum.
    fn with_rates(mut self, rates: &GroupRates) -> Self {
        *self.lr_mut() = rates.lr();
        if let (Some(m), Some(v)) = (self.momentum_mut(), rates.momentum()) {
            *m = v;
        }
        self
    }

    /// [`validate`](Rule::validate), after refusing NaN and infinite values of every
    /// hyper-parameter (those a `validate` forgets included).
    fn check(mut self) -> Result<()> {
        for (name, h) in self.hyper() {
            if let Hyper::Float(v) = h {
                require(Self::NAME, name, *v, v.is_finite(), "a finite number")?;
            }
        }
        self.validate()
    }
}

/// `Err(Config("{opt}: {name} must be {want}, got {value}"))` unless `ok`.
pub(crate) fn require(opt: &str, name: &str, value: f64, ok: bool, want: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{opt}: {name} must be {want}, got {value}"
    )))
}

/// `value >= 0` (and not NaN).
pub(crate) fn non_negative(opt: &str, name: &str, value: f64) -> Result<()> {
    require(opt, name, value, value >= 0.0, "non-negative")
}

/// PyTorch's `lerp_(end, weight)`, with its two formulas for exact end points.
pub(crate) fn lerp<T: Float>(start: T, end: T, weight: T) -> T {
    if weight < T::lit(0.5) {
        start + weight * (end - start)
    } else {
        end - (end - start) * (T::one() - weight)
    }
}

/// The state of one parameter: its step count and buffers, in the parameter's dtype.
#[derive(Clone, Debug)]
enum ParamState {
    F32(State<f32>),
    F64(State<f64>),
}

#[derive(Clone, Debug)]
struct State<T> {
    step: u64,
    bufs: Vec<Vec<T>>,
}

impl<T: Float> State<T> {
    fn new(buffers: usize) -> State<T> {
        State {
            step: 0,
            bufs: vec![Vec::new(); buffers],
        }
    }

    /// The buffers as named tensors of `shape`, skipping those not created yet.
    fn tensors(&self, names: &[&str], shape: &[usize]) -> Vec<(String, Tensor)> {
        names
            .iter()
            .zip(&self.bufs)
            .filter(|(_, b)| !b.is_empty())
            .map(|(n, b)| (n.to_string(), Tensor::from_vec(b.clone(), shape)))
            .collect()
    }
}

struct Slot {
    name: String,
    tensor: Tensor,
    state: Option<ParamState>,
}

struct Group<C> {
    slots: Vec<Slot>,
    config: C,
    rates: GroupRates,
}

/// The parameters, groups and state of an optimizer with update rule `C`; the optimizers
/// are thin wrappers around it.
pub(crate) struct Core<C> {
    defaults: C,
    groups: Vec<Group<C>>,
}

impl<C: Rule> Core<C> {
    /// One group of `params` with hyper-parameters `config`.
    pub(crate) fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: C,
    ) -> Result<Core<C>> {
        config.check()?;
        let mut core = Core {
            defaults: config,
            groups: Vec::new(),
        };
        core.add_group(ParamGroup::new(params))?;
        Ok(core)
    }

    pub(crate) fn add_group(&mut self, group: ParamGroup) -> Result<()> {
        let mut config = self.defaults;
        if let Some(lr) = group.lr {
            *config.lr_mut() = lr;
        }
        if let Some(wd) = group.weight_decay {
            *config.weight_decay_mut() = wd;
        }
        config.check()?;
        let slots = self.check_params(group.params)?;
        let lr = *config.lr_mut();
        let rates = GroupRates::new(lr, config.momentum_mut().map(|m| *m));
        self.groups.push(Group {
            slots,
            config,
            rates,
        });
        Ok(())
    }

    /// Names the unnamed parameters by position and checks that they can be optimized.
    fn check_params(&self, params: Vec<(Option<String>, Tensor)>) -> Result<Vec<Slot>> {
        if params.is_empty() {
            return Err(Error::Config(format!(
                "{}: got an empty parameter list; pass model.named_parameters() or a list of \
                 tensors",
                C::NAME
            )));
        }
        let mut seen: HashSet<String> = self.slots().map(|s| s.name.clone()).collect();
        let mut tensors: BTreeMap<usize, String> = self
            .slots()
            .map(|s| (s.tensor.identity(), s.name.clone()))
            .collect();
        let offset = seen.len();
        let mut slots = Vec::with_capacity(params.len());
        for (i, (name, tensor)) in params.into_iter().enumerate() {
            let name = name.unwrap_or_else(|| (offset + i).to_string());
            if !tensor.dtype().is_float() || !tensor.is_leaf() {
                return Err(Error::Config(format!(
                    "{}: parameter `{name}` cannot be optimized: it must be a floating-point \
                     leaf tensor, got a {} {}",
                    C::NAME,
                    tensor.dtype(),
                    if tensor.is_leaf() {
                        "leaf"
                    } else {
                        "non-leaf (an op result; use detach())"
                    }
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(Error::Config(format!(
                    "{}: parameter `{name}` appears twice; each parameter may be in one group \
                     only, once",
                    C::NAME
                )));
            }
            if let Some(first) = tensors.insert(tensor.identity(), name.clone()) {
                return Err(Error::Config(format!(
                    "{}: some parameters appear in more than one parameter group: the tensor \
                     of `{name}` is already in the optimizer as `{first}`; pass each tensor \
                     once",
                    C::NAME
                )));
            }
            slots.push(Slot {
                name,
                tensor,
                state: None,
            });
        }
        Ok(slots)
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.groups.iter().flat_map(|g| &g.slots)
    }

    pub(crate) fn step(&mut self) {
        for group in &mut self.groups {
            let config = group.config.with_rates(&group.rates);
            for slot in &mut group.slots {
                let Some(grad) = slot.tensor.grad() else {
                    continue;
                };
                let g = grad.storage();
                let Slot {
                    name,
                    tensor,
                    state,
                } = slot;
                tensor.update_in_place(|p| update_param(&config, name, p, &g, state));
            }
        }
    }

    pub(crate) fn zero_grad(&mut self) {
        for slot in self.groups.iter().flat_map(|g| &g.slots) {
            slot.tensor.set_grad(None);
        }
    }

    pub(crate) fn group_rates(&self) -> Vec<GroupRates> {
        self.groups.iter().map(|g| g.rates.clone()).collect()
    }

    pub(crate) fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.slots()
            .map(|s| (s.name.clone(), s.tensor.clone()))
            .collect()
    }

    /// See [`Optimizer::state_dict`] for the keys.
    pub(crate) fn state_dict(&self) -> StateDict {
        let mut out = StateDict::new();
        for (i, group) in self.groups.iter().enumerate() {
            for slot in &group.slots {
                let key = |k: &str| format!("state.{}.{k}", slot.name);
                out.insert(key("group"), Tensor::from_vec(vec![i as i64], &[]));
                let shape = slot.tensor.shape();
                let (step, bufs) = match &slot.state {
                    None => continue,
                    Some(ParamState::F32(s)) => (s.step, s.tensors(C::BUFFERS, &shape)),
                    Some(ParamState::F64(s)) => (s.step, s.tensors(C::BUFFERS, &shape)),
                };
                if C::COUNTS_STEPS {
                    out.insert(key("step"), Tensor::from_vec(vec![step as f64], &[]));
                }
                for (k, t) in bufs {
                    out.insert(key(&k), t);
                }
            }
        }
        for (i, group) in self.groups.iter().enumerate() {
            let mut config = group.config.with_rates(&group.rates);
            for (name, h) in config.hyper() {
                let v = match h {
                    Hyper::Float(v) => *v,
                    Hyper::Bool(b) => f64::from(u8::from(*b)),
                };
                out.insert(
                    format!("param_groups.{i}.{name}"),
                    Tensor::from_vec(vec![v], &[]),
                );
            }
        }
        out
    }

    pub(crate) fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let plan = self.plan_load(state)?;
        for (group, mut config) in self.groups.iter_mut().zip(plan.configs) {
            group.config = config;
            group.rates.store_lr(*config.lr_mut());
            if let Some(m) = config.momentum_mut() {
                group.rates.set_momentum(*m);
            }
        }
        let mut states = plan.states;
        for slot in self.groups.iter_mut().flat_map(|g| &mut g.slots) {
            slot.state = states.remove(&slot.name);
        }
        Ok(())
    }

    /// Checks a state dict against this optimizer, looking up the keys it expects and
    /// collecting every problem (see NOTE [ Restoring untrusted state ]).
    fn plan_load(&self, state: &StateDict) -> Result<LoadPlan<C>> {
        let mut problems = Vec::new();
        let mut expected: HashSet<String> = HashSet::new();
        let mut configs = Vec::with_capacity(self.groups.len());
        let mut missing = Vec::new();
        let mut states = BTreeMap::new();
        for (i, group) in self.groups.iter().enumerate() {
            let mut config = group.config;
            for (name, h) in config.hyper() {
                let key = format!("param_groups.{i}.{name}");
                match (state.scalar_f64(&key), h) {
                    (Err(e), _) => note(&mut problems, Err(e)),
                    (Ok(None), _) => note(
                        &mut problems,
                        Err(Error::Config(format!("missing key `{key}`"))),
                    ),
                    (Ok(Some(v)), Hyper::Float(f)) => *f = v,
                    (Ok(Some(v)), Hyper::Bool(b)) if v == 0.0 || v == 1.0 => *b = v == 1.0,
                    (Ok(Some(v)), Hyper::Bool(_)) => note(
                        &mut problems,
                        Err(Error::Config(format!("`{key}` is {v}; expected 0 or 1"))),
                    ),
                }
                expected.insert(key);
            }
            note(&mut problems, config.check());
            configs.push(config);
            for slot in &group.slots {
                let key = |k: &str| format!("state.{}.{k}", slot.name);
                expected.insert(key("group"));
                match state.count(&key("group")) {
                    Err(e) => note(&mut problems, Err(e)),
                    Ok(None) => missing.push(slot.name.as_str()),
                    Ok(Some(g)) if g != i as u64 => note(
                        &mut problems,
                        Err(Error::Config(format!(
                            "parameter `{}` was in param group {g}, but is in group {i} now",
                            slot.name
                        ))),
                    ),
                    Ok(Some(_)) => {}
                }
                expected.extend(C::BUFFERS.iter().map(|b| key(b)));
                if C::COUNTS_STEPS {
                    expected.insert(key("step"));
                }
                match load_state::<C>(&slot.name, &slot.tensor, state) {
                    Ok(Some(s)) => {
                        states.insert(slot.name.clone(), s);
                    }
                    Ok(None) => {}
                    Err(p) => problems.extend(p),
                }
            }
        }
        if !missing.is_empty() {
            problems.push(format!("missing parameters {missing:?}"));
        }
        let unexpected: Vec<&String> = state.keys().filter(|k| !expected.contains(*k)).collect();
        // A parameter is known by its `group` entry; its other entries need no listing.
        let params: Vec<&str> = unexpected
            .iter()
            .filter_map(|k| k.strip_prefix("state.")?.strip_suffix(".group"))
            .collect();
        let keys: Vec<&String> = unexpected
            .iter()
            .copied()
            .filter(|k| !params.iter().any(|p| k.starts_with(&format!("state.{p}."))))
            .collect();
        if !params.is_empty() {
            problems.push(format!("unexpected parameters {params:?}"));
        }
        if !keys.is_empty() {
            problems.push(format!(
                "unexpected keys {keys:?} (groups this optimizer does not have, or state a {} \
                 does not keep)",
                C::NAME
            ));
        }
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "{}.load_state_dict: {}",
                C::NAME,
                problems.join("; ")
            )));
        }
        Ok(LoadPlan { configs, states })
    }
}

/// Keeps the message of a failed check.
fn note(problems: &mut Vec<String>, result: Result<()>) {
    if let Err(e) = result {
        problems.push(e.to_string());
    }
}

struct LoadPlan<C> {
    configs: Vec<C>,
    states: BTreeMap<String, ParamState>,
}

/// The state of parameter `name` from its `state.{name}.*` entries: `None` when it has
/// none yet, every problem otherwise.
fn load_state<C: Rule>(
    name: &str,
    param: &Tensor,
    state: &StateDict,
) -> std::result::Result<Option<ParamState>, Vec<String>> {
    fn build<T: Float, C: Rule>(
        name: &str,
        param: &Tensor,
        state: &StateDict,
    ) -> std::result::Result<Option<State<T>>, Vec<String>> {
        let key = |k: &str| format!("state.{name}.{k}");
        let mut out = State::<T>::new(C::BUFFERS.len());
        let mut problems = Vec::new();
        let mut present = false;
        if C::COUNTS_STEPS {
            match state.count(&key("step")) {
                Ok(Some(step)) => {
                    out.step = step;
                    present = true;
                }
                Ok(None) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        let shape = param.shape();
        for (i, buffer) in C::BUFFERS.iter().enumerate() {
            match state.tensor_like(&key(buffer), &shape, param.dtype()) {
                Ok(Some(t)) => {
                    out.bufs[i] = t.to_vec::<T>();
                    present = true;
                }
                Ok(None) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        if present && C::COUNTS_STEPS && !state.contains_key(&key("step")) {
            problems.push(format!("missing key `{}` next to its buffers", key("step")));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(present.then_some(out))
    }
    match param.dtype() {
        DType::F32 => build::<f32, C>(name, param, state).map(|s| s.map(ParamState::F32)),
        _ => build::<f64, C>(name, param, state).map(|s| s.map(ParamState::F64)),
    }
}

#[cold]
#[inline(never)]
fn grad_mismatch(opt: &str, name: &str, param: &Storage, grad: &Storage) -> ! {
    panic!(
        "{opt}.step: the gradient of `{name}` is {} {:?} but the parameter is {} {:?}",
        grad.dtype(),
        grad.shape(),
        param.dtype(),
        param.shape()
    )
}

/// One parameter's update on its storage; see NOTE [ Optimizer updates ].
fn update_param<C: Rule>(
    config: &C,
    name: &str,
    p: &mut Storage,
    g: &Storage,
    state: &mut Option<ParamState>,
) {
    if p.shape() != g.shape() {
        grad_mismatch(C::NAME, name, p, g);
    }
    match (p, g) {
        (Storage::F32(p), Storage::F32(g)) => {
            if !matches!(state, Some(ParamState::F32(_))) {
                *state = Some(ParamState::F32(State::new(C::BUFFERS.len())));
            }
            if let Some(ParamState::F32(s)) = state {
                update_typed(config, p, g, s);
            }
        }
        (Storage::F64(p), Storage::F64(g)) => {
            if !matches!(state, Some(ParamState::F64(_))) {
                *state = Some(ParamState::F64(State::new(C::BUFFERS.len())));
            }
            if let Some(ParamState::F64(s)) = state {
                update_typed(config, p, g, s);
            }
        }
        (p, g) => grad_mismatch(C::NAME, name, p, g),
    }
}

fn update_typed<C: Rule, T: Float>(
    config: &C,
    p: &mut ArcArray<T, IxDyn>,
    g: &ArcArray<T, IxDyn>,
    state: &mut State<T>,
) {
    if !p.is_standard_layout() {
        *p = p.as_standard_layout().into_owned().into_shared();
    }
    let g = g.as_standard_layout();
    let (Some(p), Some(g)) = (p.as_slice_mut(), g.as_slice()) else {
        unreachable!("standard-layout arrays are slices")
    };
    state.step += 1;
    config.update(state.step, p, g, &mut state.bufs);
}

/// Implements [`Optimizer`] for a wrapper struct with a `core: Core<_>` field.
macro_rules! delegate_optimizer {
    ($ty:ty) => {
        impl $crate::optim::Optimizer for $ty {
            fn step(&mut self) {
                self.core.step()
            }
            fn zero_grad(&mut self) {
                self.core.zero_grad()
            }
            fn add_param_group(
                &mut self,
                group: $crate::optim::ParamGroup,
            ) -> $crate::error::Result<()> {
                self.core.add_group(group)
            }
            fn group_rates(&self) -> Vec<$crate::optim::GroupRates> {
                self.core.group_rates()
            }
            fn named_parameters(&self) -> Vec<(String, $crate::tensor::Tensor)> {
                self.core.named_parameters()
            }
            fn state_dict(&self) -> $crate::state_dict::StateDict {
                self.core.state_dict()
            }
            fn load_state_dict(
                &mut self,
                state: &$crate::state_dict::StateDict,
            ) -> $crate::error::Result<()> {
                self.core.load_state_dict(state)
            }
        }
    };
}
pub(crate) use delegate_optimizer;
