//! Containers as modules: `Vec<M>` and `[M; N]` are PyTorch's `ModuleList` (children named
//! `0, 1, …`), `Vec<Parameter>` and `[Parameter; N]` its `ParameterList` (parameters named
//! `0, 1, …`; `Vec<Buffer>` likewise for buffers), and `Box<M>` is the module it holds.

use crate::nn::module::{Member, MemberMut, Module};
use crate::nn::parameter::{Buffer, Parameter};

/// `Module` for a list of parameters or buffers: `$variant` names the member kind.
macro_rules! leaf_list {
    ($leaf:ty, $variant:ident, $class:literal) => {
        impl Module for Vec<$leaf> {
            fn class_name(&self) -> &'static str {
                $class
            }

            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
                for (i, p) in self.iter().enumerate() {
                    f(&i.to_string(), Member::$variant(p));
                }
            }

            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
                for (i, p) in self.iter_mut().enumerate() {
                    f(&i.to_string(), MemberMut::$variant(p));
                }
            }

            fn as_dyn(&self) -> &dyn Module {
                self
            }

            fn as_dyn_mut(&mut self) -> &mut dyn Module {
                self
            }
        }

        impl<const N: usize> Module for [$leaf; N] {
            fn class_name(&self) -> &'static str {
                $class
            }

            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
                for (i, p) in self.iter().enumerate() {
                    f(&i.to_string(), Member::$variant(p));
                }
            }

            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
                for (i, p) in self.iter_mut().enumerate() {
                    f(&i.to_string(), MemberMut::$variant(p));
                }
            }

            fn as_dyn(&self) -> &dyn Module {
                self
            }

            fn as_dyn_mut(&mut self) -> &mut dyn Module {
                self
            }
        }
    };
}

leaf_list!(Parameter, Parameter, "ParameterList");
// PyTorch has no BufferList (buffers are registered one by one); this is the same list for
// tensors that are saved but not trained.
leaf_list!(Buffer, Buffer, "BufferList");

impl<M: Module> Module for Vec<M> {
    fn class_name(&self) -> &'static str {
        "ModuleList"
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        for (i, m) in self.iter().enumerate() {
            f(&i.to_string(), Member::Module(m));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        for (i, m) in self.iter_mut().enumerate() {
            f(&i.to_string(), MemberMut::Module(m));
        }
    }

    fn as_dyn(&self) -> &dyn Module {
        self
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }
}

impl<M: Module, const N: usize> Module for [M; N] {
    fn class_name(&self) -> &'static str {
        "ModuleList"
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        for (i, m) in self.iter().enumerate() {
            f(&i.to_string(), Member::Module(m));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        for (i, m) in self.iter_mut().enumerate() {
            f(&i.to_string(), MemberMut::Module(m));
        }
    }

    fn as_dyn(&self) -> &dyn Module {
        self
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }
}

/// A box is transparent: its members are the boxed module's.
impl<M: Module + ?Sized> Module for Box<M> {
    fn class_name(&self) -> &'static str {
        (**self).class_name()
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        (**self).visit(f)
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        (**self).visit_mut(f)
    }

    fn as_dyn(&self) -> &dyn Module {
        (**self).as_dyn()
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        (**self).as_dyn_mut()
    }

    fn extra_repr(&self) -> String {
        (**self).extra_repr()
    }

    fn training_flag(&self) -> Option<bool> {
        (**self).training_flag()
    }

    fn set_training_flag(&mut self, training: bool) {
        (**self).set_training_flag(training)
    }
}
